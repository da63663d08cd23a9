"""Perception: the robots' classifiers (MLP / small CNN, trained once per training multiset and cached per model
version), out-of-distribution detectors, and one definition of per-sample uncertainty."""

from .models import (CNN_CHANNELS, Classifier, ConvNet, MLPNet, ModelVersion, Perception, build_model,
                     confusion_matrix, limited_torch_threads, train_classifier, train_classifiers)
from .uncertainty import entropy, margin, uncertainty

__all__ = ["CNN_CHANNELS", "Classifier", "ConvNet", "MLPNet", "ModelVersion", "Perception", "build_model",
           "confusion_matrix", "entropy", "limited_torch_threads", "margin", "train_classifier", "train_classifiers",
           "uncertainty"]
