"""Perception: the robots' classifier, trained on the cloud set and evaluated once per model version.

In the Data Games setting (paper appendix 5.2-5.4) every robot runs an imperfect classifier trained on the
current cloud dataset; its confusion matrix ``C[y, yhat] = p(yhat | y)`` is estimated on the validation split.
Training and inference are the expensive part of the environment, so they run once per *model version*, never
per step: :class:`Perception` trains a small network on a multiset of dataset rows, then in one batched pass
computes predictions, class probabilities and L2-normalised embeddings for the whole stream pool, plus the
confusion matrix and accuracy on the validation split. A step of the environment is then index lookups into
the cached :class:`ModelVersion`.

=====================  ===========================================================================
Name                   What it is
=====================  ===========================================================================
``build_model``        a small MLP (vectors ``(d,)``) or CNN (images ``(C, H, W)``) with ``embed`` / ``forward``
``train_classifier``   deterministic Adam training on a multiset of rows -> :class:`Classifier`
``train_classifiers``  several models at once: MLPs as one stacked (``baddbmm``) model
``Classifier``         inference wrapper: batched ``predict`` -> (probs, unit-norm embeddings), ``accuracy``
``confusion_matrix``   row-normalised ``p(yhat | y)``; a class without samples gets a uniform row
``ModelVersion``       frozen record of everything the environment needs from one model version
``Perception``         trains and LRU-caches model versions for one dataset + split
=====================  ===========================================================================

Determinism: the same rows, labels, config and seed give bitwise identical weights on CPU with the same number
of torch threads (1 and 2 threads differ in the last float bits). All randomness comes from the ``seed``
argument; the caller's global torch RNG state is left untouched (initialisation runs inside
:func:`torch.random.fork_rng`).

Threads: by default the caller's torch thread setting is used as is. These models are small, so extra threads
buy little, and when the CPU is oversubscribed (parallel env workers, pytest-xdist) OpenMP spin-waiting makes a
2-thread training 50-200x slower (measured: 0.3 s -> 16-76 s for digits with one busy process beside it on 2
cores). ``max_threads=1`` (``train_classifier``, ``Perception``) caps the threads only while this module's
work runs and restores the caller's setting afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import PerceptionConfig

__all__ = [
    "CNN_CHANNELS",
    "Classifier",
    "ConvNet",
    "MLPNet",
    "ModelVersion",
    "Perception",
    "build_model",
    "confusion_matrix",
    "limited_torch_threads",
    "train_classifier",
    "train_classifiers",
]

# Channels of the two conv blocks. Small on purpose: 300 Adam steps on MNIST-sized images must take about a
# second on a 2-core laptop CPU, and the model only needs to be a plausible imperfect robot classifier.
CNN_CHANNELS: tuple[int, int] = (8, 16)

_UINT64_MASK = 0xFFFF_FFFF_FFFF_FFFF


@contextlib.contextmanager
def limited_torch_threads(max_threads: int | None) -> Iterator[None]:
    """Cap torch's intra-op threads at ``max_threads`` inside the block, then restore the caller's setting.

    ``None`` (or a cap at or above the current setting) changes nothing.
    """
    previous = torch.get_num_threads()
    if max_threads is None or max_threads >= previous:
        yield
        return
    if max_threads < 1:
        raise ValueError(f"max_threads must be >= 1 or None, got {max_threads}")
    torch.set_num_threads(max_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------------- networks


class MLPNet(nn.Module):
    """``d -> hidden -> embedding_dim -> n_classes`` with ReLU; image inputs are flattened first.

    The embedding is the *pre-activation* output of the embedding layer: a post-ReLU vector can be identically
    zero, and a zero vector cannot be L2-normalised. The head sees ``relu(embedding)``.
    """

    def __init__(self, input_dim: int, n_classes: int, hidden: int, embedding_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, embedding_dim))
        self.head = nn.Linear(embedding_dim, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.embed(x)))


class ConvNet(nn.Module):
    """Two conv blocks (conv3x3 + ReLU + maxpool 2), a linear layer to ``embedding_dim`` (the embedding), a head.

    ``ceil_mode`` pooling keeps tiny images (e.g. 8x8 or smaller) valid: each block at least keeps one pixel.
    Weights and activations use the channels-last memory layout: on CPU, max-pooling and the convolutions are
    several times faster that way (measured: 300 MNIST steps 3 s -> 1.5 s on 2 cores); results are the same
    function of the input.
    """

    def __init__(self, input_shape: tuple[int, int, int], n_classes: int, embedding_dim: int,
                 channels: tuple[int, int] = CNN_CHANNELS) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(channels[0], channels[1], kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(),
        )
        pooled_h, pooled_w = math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)
        self.embedding = nn.Linear(channels[1] * pooled_h * pooled_w, embedding_dim)
        self.head = nn.Linear(embedding_dim, n_classes)
        self.to(memory_format=torch.channels_last)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.features(x.contiguous(memory_format=torch.channels_last)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.embed(x)))


def build_model(input_shape: tuple[int, ...], n_classes: int, cfg: PerceptionConfig) -> nn.Module:
    """The robots' network for one sample shape: ``(d,)`` vectors or ``(C, H, W)`` images.

    ``cfg.model``: ``"auto"`` picks the CNN for images and the MLP for vectors; ``"mlp"`` also accepts images
    (flattened); ``"cnn"`` needs images. Weights are drawn from the global torch RNG: seed it (as
    :func:`train_classifier` does, inside ``fork_rng``) for reproducible initialisation.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if len(input_shape) not in (1, 3) or any(s < 1 for s in input_shape):
        raise ValueError(f"input_shape must be (d,) for vectors or (C, H, W) for images, got {input_shape}")
    is_image = len(input_shape) == 3
    kind = cfg.model if cfg.model != "auto" else ("cnn" if is_image else "mlp")
    if kind == "cnn":
        if not is_image:
            raise ValueError(f"perception.model 'cnn' needs image inputs (C, H, W), got feature shape {input_shape}")
        return ConvNet(input_shape, n_classes, cfg.embedding_dim)  # type: ignore[arg-type]
    return MLPNet(int(np.prod(input_shape)), n_classes, cfg.hidden, cfg.embedding_dim)


# ------------------------------------------------------------------------------------------------- classifier


class Classifier:
    """A trained network plus the input standardisation it was trained with; inference only.

    ``trained`` is False for the classifier of an empty training set: its probabilities are uniform (argmax is
    class 0) and its embeddings come from the randomly initialised network (still a fixed, seeded projection).
    """

    def __init__(self, model: nn.Module, n_classes: int, input_mean: torch.Tensor, input_scale: torch.Tensor,
                 train_size: int, trained: bool = True) -> None:
        self.model = model.eval()
        self.n_classes = int(n_classes)
        self.input_mean = input_mean
        self.input_scale = input_scale
        self.train_size = int(train_size)
        self.trained = bool(trained)

    @property
    def embedding_dim(self) -> int:
        head = self.model.head
        assert isinstance(head, nn.Linear)
        return head.in_features

    def _standardise(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        return (x - self.input_mean) / self.input_scale

    def predict(self, features: np.ndarray, batch_size: int = 4096,
                indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities ``float32 (n, C)`` and L2-normalised embeddings ``float32 (n, E)``.

        Runs batched no-grad passes of ``batch_size`` rows. ``indices`` (optional) selects rows of ``features``
        batch by batch, so a pool inside a large feature array is never copied whole.
        """
        n = len(features) if indices is None else len(indices)
        batch_size = max(1, int(batch_size))
        probs = np.empty((n, self.n_classes), dtype=np.float32)
        embeddings = np.empty((n, self.embedding_dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                rows = features[start:stop] if indices is None else features[indices[start:stop]]
                embedding = self.model.embed(self._standardise(rows))
                if self.trained:  # forward() without recomputing the embedding
                    probs[start:stop] = torch.softmax(self.model.head(F.relu(embedding)), dim=1).numpy()
                else:
                    probs[start:stop] = 1.0 / self.n_classes
                embeddings[start:stop] = _unit_rows(embedding).numpy()
        return probs, embeddings

    def predict_classes(self, features: np.ndarray, batch_size: int = 4096,
                        indices: np.ndarray | None = None) -> np.ndarray:
        """Argmax class ``int64 (n,)``; ties (e.g. uniform probabilities) go to the lowest class index."""
        probs, _ = self.predict(features, batch_size, indices)
        return probs.argmax(axis=1).astype(np.int64)

    def accuracy(self, features: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None) -> float:
        """Fraction of rows whose argmax class equals the label; NaN for zero rows (nothing to measure)."""
        labels = np.asarray(labels) if indices is None else np.asarray(labels)[indices]
        if len(labels) == 0:
            return float("nan")
        return float(np.mean(self.predict_classes(features, indices=indices) == labels))


def _unit_rows(embedding: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows; a (practically impossible) all-zero row becomes the uniform unit vector."""
    norms = embedding.norm(dim=1, keepdim=True)
    uniform = torch.full_like(embedding, 1.0 / math.sqrt(embedding.shape[1]))
    return torch.where(norms > 1e-12, embedding / norms.clamp_min(1e-12), uniform)


def _derived_seeds(seed: int) -> tuple[int, int]:
    """Two independent 63-bit seeds (weight init, minibatch order) from one user seed (any Python int)."""
    init_seed, batch_seed = np.random.SeedSequence(int(seed) & _UINT64_MASK).generate_state(2, dtype=np.uint64)
    return int(init_seed) >> 1, int(batch_seed) >> 1


def _input_standardisation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and scale that standardise the training inputs (broadcastable to one sample).

    Images: per-channel mean and std. Vectors: per-feature mean, and a per-feature std floored at a tenth of
    the global std, so constant features (digit corners, a 1-sample set) are not blown up on new data.
    A degenerate set (empty, or all rows equal) falls back to scale 1.
    """
    if x.shape[0] == 0:
        return torch.zeros(x.shape[1:]), torch.ones(x.shape[1:])
    if x.dim() == 4:
        mean = x.mean(dim=(0, 2, 3)).view(-1, 1, 1)
        scale = x.std(dim=(0, 2, 3), unbiased=False).view(-1, 1, 1)
    else:
        mean = x.mean(dim=0)
        global_std = (x - mean).square().mean().sqrt()
        scale = torch.maximum(x.std(dim=0, unbiased=False), 0.1 * global_std)
    scale = torch.where(scale > 1e-6, scale, torch.ones_like(scale))
    return mean.contiguous(), scale.contiguous()


def train_classifier(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: PerceptionConfig,
                     seed: int, max_threads: int | None = None, dropout: float = 0.0) -> Classifier:
    """Train the robots' classifier on a multiset of rows: ``cfg.train_steps`` Adam steps, cross-entropy.

    ``features`` are ``(n, d)`` vectors or ``(n, C, H, W)`` images (float, cast to float32), ``labels`` ints in
    ``[0, n_classes)``. Repeated rows count as weights: minibatches are drawn over rows, so a row present k
    times is seen k times as often. Minibatches are slices of seeded random permutations (every row once per
    epoch); a set no larger than ``cfg.batch_size`` is used whole at every step. Classes missing from the set
    simply never win the softmax.

    An EMPTY set gives an untrained classifier (``trained=False``): uniform probabilities, so the argmax class is
    0 for every sample, and embeddings from the seeded random network. That is the honest model of "nothing
    has been collected yet".

    Deterministic: same inputs, config and seed -> bitwise identical weights on CPU (same thread count). The
    caller's global torch RNG state is unchanged. ``max_threads`` caps torch threads during training only.

    ``dropout`` > 0 drops units of the head's input during training (masks drawn from the seeded minibatch
    generator, so determinism holds): the training that MC dropout at test time assumes (``ood``).
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    # enable_grad: TorchRL collectors step environments inside torch.no_grad(), and reset/step train models
    with limited_torch_threads(max_threads), torch.enable_grad():
        return _train_classifier(features, labels, n_classes, cfg, seed, dropout)


@dataclass
class _TrainingJob:
    """One model to train: its seeded initialisation, standardised rows and seeded minibatch plan."""

    model: nn.Module
    x: torch.Tensor  # standardised rows
    y: torch.Tensor
    input_mean: torch.Tensor
    input_scale: torch.Tensor
    batches: torch.Tensor | None  # (steps, batch_size) row indices; None: the whole set at every step
    generator: torch.Generator  # continues after the minibatch plan (dropout masks)
    steps: int                  # Adam steps

    @property
    def n(self) -> int:
        return len(self.y)


def _prepare_training(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: PerceptionConfig,
                      seed: int, init: Classifier | None = None, steps: int | None = None) -> _TrainingJob:
    """``init``: continue from that classifier's weights and input standardisation (a warm start: the features
    its weights were fitted on keep their meaning) instead of a fresh seeded initialisation; ``steps``: Adam steps
    (default ``cfg.train_steps``)."""
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if features.ndim not in (2, 4):
        raise ValueError(f"features must be (n, d) vectors or (n, C, H, W) images, got shape {features.shape}")
    if len(labels) != len(features):
        raise ValueError(f"features have {len(features)} rows but labels have {len(labels)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got range [{labels.min()}, {labels.max()}]")
    init_seed, batch_seed = _derived_seeds(seed)
    x = torch.from_numpy(np.ascontiguousarray(features))
    if init is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = build_model(features.shape[1:], n_classes, cfg)
        input_mean, input_scale = _input_standardisation(x)
    else:
        if init.n_classes != n_classes:
            raise ValueError(f"warm start from a {init.n_classes}-class classifier for {n_classes} classes")
        model = copy.deepcopy(init.model)
        input_mean, input_scale = init.input_mean, init.input_scale
    n = len(features)
    steps, batch_size = (cfg.train_steps if steps is None else int(steps)), cfg.batch_size
    batches: torch.Tensor | None = None
    generator = torch.Generator().manual_seed(batch_seed)
    if n > batch_size:
        # All minibatch indices up front: concatenated seeded permutations cut into `steps` slices.
        n_epochs = math.ceil(steps * batch_size / n)
        order = torch.cat([torch.randperm(n, generator=generator) for _ in range(n_epochs)])
        batches = order[: steps * batch_size].view(steps, batch_size)
    return _TrainingJob(model, (x - input_mean) / input_scale if n else x, torch.from_numpy(labels.astype(np.int64)),
                        input_mean, input_scale, batches, generator, steps)


def _train_classifier(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: PerceptionConfig,
                      seed: int, dropout: float = 0.0) -> Classifier:
    job = _prepare_training(features, labels, n_classes, cfg, seed)
    if job.n:
        _fit(job, cfg, dropout)
    return Classifier(job.model, n_classes, job.input_mean, job.input_scale, train_size=job.n, trained=job.n > 0)


def _fit(job: _TrainingJob, cfg: PerceptionConfig, dropout: float) -> None:
    """Train one job's model in place: ``job.steps`` Adam steps on its minibatch plan."""
    model, x, y, generator = job.model, job.x, job.y, job.generator
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    keep = 1.0 - dropout
    for step in range(job.steps):
        if job.batches is None:
            xb, yb = x, y
        else:
            xb, yb = x[job.batches[step]], y[job.batches[step]]
        if dropout > 0:  # explicit masks from our generator: F.dropout would draw from the global RNG
            hidden = F.relu(model.embed(xb))
            hidden = hidden * (torch.rand(hidden.shape, generator=generator) < keep).to(hidden.dtype) / keep
            logits = model.head(hidden)
        else:
            logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def train_classifiers(features: list[np.ndarray], labels: list[np.ndarray], n_classes: int, cfg: PerceptionConfig,
                      seeds: list[int], max_threads: int | None = None, dropout: float = 0.0,
                      init: list[Classifier] | None = None, steps: int | None = None) -> list[Classifier]:
    """Train several classifiers of one architecture at once. MLPs train as ONE batched model: the weights are
    stacked along a leading model axis, the forward pass is batched matrix products (``baddbmm``;
    :func:`_stacked_logits`), the loss is the sum of the models' mean cross-entropies (so each model gets exactly its own gradient) and one
    Adam steps all stacked weights (Adam is elementwise: the same update as one optimizer per model).

    Model k starts from the initialisation of ``train_classifier(features[k], labels[k], ..., seeds[k])`` and
    follows its minibatch plan and dropout masks; the batched matrix products round differently in the last bits,
    so stacked weights agree with sequential training up to float32 rounding, not bitwise. Training sets may differ
    in size (shorter minibatches are padded with zero-weight rows). Deterministic for the same inputs and threads.
    Conv nets train one after another (bitwise :func:`train_classifier`): on CPU their compute-bound convolutions
    gain nothing from stacking (grouped and im2col forms measured 0.4-0.9x).

    ``init`` (one classifier per model) warm-starts each model from that classifier's weights and input
    standardisation; ``steps`` overrides ``cfg.train_steps`` (a fine-tuning is shorter than a first training).
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if len(features) != len(labels) or len(features) != len(seeds):
        raise ValueError(f"features, labels and seeds must have one entry per model, got {len(features)}, "
                         f"{len(labels)} and {len(seeds)}")
    if init is not None and len(init) != len(features):
        raise ValueError(f"init must have one classifier per model, got {len(init)} for {len(features)} models")
    shapes = {np.asarray(f).shape[1:] for f in features}
    if len(shapes) > 1:
        raise ValueError(f"train_classifiers needs one input shape for all models, got {sorted(shapes)}")
    with limited_torch_threads(max_threads), torch.enable_grad():
        inits = init if init is not None else [None] * len(features)
        jobs = [_prepare_training(f, y, n_classes, cfg, s, i, steps)
                for f, y, s, i in zip(features, labels, seeds, inits)]
        trainable = [j for j in jobs if j.n > 0]
        if len(trainable) > 1 and isinstance(trainable[0].model, MLPNet):
            _train_stacked(trainable, cfg, dropout)
        else:  # conv nets: stacking (grouped or im2col convolutions) measured 0.4-0.9x of per-model training
            for job in trainable:
                _fit(job, cfg, dropout)
    return [Classifier(j.model, n_classes, j.input_mean, j.input_scale, train_size=j.n, trained=j.n > 0)
            for j in jobs]


def _train_stacked(jobs: list[_TrainingJob], cfg: PerceptionConfig, dropout: float) -> None:
    """Train the jobs' models in place as one stacked model (see :func:`train_classifiers`)."""
    steps, n_models = jobs[0].steps, len(jobs)
    rows = torch.tensor([min(j.n, cfg.batch_size) for j in jobs])
    width = int(rows.max())
    # every model's rows in one tensor; index plan (steps, models, width) into it, padding -> row 0, weight 0
    offsets = np.cumsum([0] + [j.n for j in jobs[:-1]])
    x_all, y_all = torch.cat([j.x for j in jobs]), torch.cat([j.y for j in jobs])
    plan = torch.zeros((steps, n_models, width), dtype=torch.int64)
    for k, j in enumerate(jobs):  # set-up per model; the training loop below is batched
        own = j.batches if j.batches is not None else torch.arange(j.n).expand(steps, j.n)
        plan[:, k, :own.shape[1]] = own + int(offsets[k])
    weight = (torch.arange(width)[None, :] < rows[:, None]).to(torch.float32)  # (models, width)
    embedding_dim = jobs[0].model.head.in_features
    if dropout > 0:  # each model's masks from its own generator, in the order sequential training draws them
        keep = 1.0 - dropout
        masks = torch.zeros((steps, n_models, width, embedding_dim))
        for k, j in enumerate(jobs):
            for step in range(steps):
                masks[step, k, :rows[k]] = (torch.rand((int(rows[k]), embedding_dim), generator=j.generator)
                                            < keep).to(torch.float32) / keep
    else:
        masks = torch.ones((1, n_models, width, embedding_dim)).expand(steps, -1, -1, -1)
    names = [name for name, _ in jobs[0].model.named_parameters()]
    stacked = {name: torch.stack([dict(j.model.named_parameters())[name].detach() for j in jobs]).contiguous()
               .requires_grad_() for name in names}
    optimizer = torch.optim.Adam(list(stacked.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for step in range(steps):
        index = plan[step]
        logits = _stacked_logits(jobs[0].model, stacked, x_all[index], masks[step])
        losses = F.cross_entropy(logits.reshape(n_models * width, -1), y_all[index].reshape(-1),
                                 reduction="none").reshape(n_models, width)
        loss = ((losses * weight).sum(dim=1) / rows).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for k, j in enumerate(jobs):
            for name, parameter in j.model.named_parameters():
                parameter.copy_(stacked[name][k])


def _stacked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per model k: ``x[k] @ weight[k].T + bias[k]``; x (M, B, in), weight (M, out, in), bias (M, out)."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _stacked_logits(model: nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits (M, B, C) of M stacked models of ``model``'s architecture on their own rows x (M, B, ...):
    ``head(relu(embed(x)) * mask)``, the function :class:`MLPNet` computes."""
    n_models, batch = x.shape[:2]
    if isinstance(model, MLPNet):
        hidden = F.relu(_stacked_linear(x.reshape(n_models, batch, -1), p["body.1.weight"], p["body.1.bias"]))
        embedding = _stacked_linear(hidden, p["body.3.weight"], p["body.3.bias"])
    else:
        raise TypeError(f"stacked training supports MLPNet, got {type(model).__name__}")
    return _stacked_linear(F.relu(embedding) * mask, p["head.weight"], p["head.bias"])


# -------------------------------------------------------------------------------------------------- confusion


def confusion_matrix(true_labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``C[y, yhat] = p(yhat | y)`` as float64 ``(C, C)``; every row sums to 1.

    A class with no samples gets a uniform row: nothing is known about how the model treats it, and a uniform
    row keeps the matrix row-stochastic (the feasible-set math divides by column masses).
    """
    true_labels = np.asarray(true_labels, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true_labels.shape != predicted.shape or true_labels.ndim != 1:
        raise ValueError(f"true_labels {true_labels.shape} and predicted {predicted.shape} must be equal 1-d shapes")
    for name, values in (("true_labels", true_labels), ("predicted", predicted)):
        if len(values) and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} must lie in [0, {n_classes}), got range [{values.min()}, {values.max()}]")
    counts = np.bincount(true_labels * n_classes + predicted, minlength=n_classes * n_classes)
    counts = counts.reshape(n_classes, n_classes).astype(np.float64)
    row_totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, row_totals, out=np.full_like(counts, 1.0 / n_classes), where=row_totals > 0)


# ------------------------------------------------------------------------------------------- model versions


@dataclass(frozen=True)
class ModelVersion:
    """Everything the environment needs from one model version (arrays are read-only: versions are shared)."""

    version_id: int
    pool_predictions: np.ndarray  # int64 (n_pool,): argmax class of each pool sample
    pool_probs: np.ndarray  # float32 (n_pool, C)
    pool_embeddings: np.ndarray  # float32 (n_pool, E), unit-norm rows
    confusion: np.ndarray  # float64 (C, C), p(yhat | y) on the validation split
    validation_accuracy: float
    train_size: int  # rows in the training multiset, repeats counted


@dataclass
class _CacheEntry:
    version: ModelVersion
    classifier: Classifier
    test_accuracy: float | None = None


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _as_index_array(indices: np.ndarray, n_rows: int, name: str) -> np.ndarray:
    array = np.asarray(indices)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-d integer index array, got dtype {array.dtype} shape {array.shape}")
    array = array.astype(np.int64, copy=False)
    if array.min() < 0 or array.max() >= n_rows:
        raise ValueError(f"{name} must index rows [0, {n_rows}), got range [{array.min()}, {array.max()}]")
    return array


class Perception:
    """Trains and caches model versions for one dataset + split.

    A version is identified by the training *multiset* (sorted ``train_indices``, repeats kept) and the seed:
    the same pair returns the same :class:`ModelVersion` object without retraining, while it stays in the LRU
    cache of ``cache_size`` versions. Training always runs on the sorted indices, so even a retrain after
    eviction gives the same weights (only ``version_id``, a running counter of trainings, differs).
    ``max_threads`` caps torch threads while a version is trained and evaluated (see the module docstring).
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, pool: np.ndarray, validation: np.ndarray,
                 test: np.ndarray, n_classes: int, cfg: PerceptionConfig, cache_size: int = 64,
                 max_threads: int | None = None) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.features = np.asarray(features)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(self.features):
            raise ValueError(f"features have {len(self.features)} rows but labels have {len(self.labels)}")
        n_rows = len(self.features)
        if n_rows and (self.labels.min() < 0 or self.labels.max() >= n_classes):
            raise ValueError(f"labels must lie in [0, {n_classes}), got range [{self.labels.min()}, {self.labels.max()}]")
        self.pool = _as_index_array(pool, n_rows, "pool")
        self.validation = _as_index_array(validation, n_rows, "validation")
        self.test = _as_index_array(test, n_rows, "test")
        self.n_classes = int(n_classes)
        self.cfg = cfg
        self.cache_size = int(cache_size)
        self.max_threads = max_threads
        self._cache: OrderedDict[tuple[str, int], _CacheEntry] = OrderedDict()
        self._n_trainings = 0

    @property
    def n_trainings(self) -> int:
        """How many models were actually trained (cache misses)."""
        return self._n_trainings

    def _entry(self, train_indices: np.ndarray, seed: int) -> _CacheEntry:
        sorted_indices = np.sort(_as_index_array(train_indices, len(self.features), "train_indices"))
        key = (hashlib.sha1(sorted_indices.tobytes()).hexdigest(), int(seed))
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
            return entry
        with limited_torch_threads(self.max_threads):
            entry = self._train_version(sorted_indices, int(seed))
        self._cache[key] = entry
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def _train_version(self, sorted_indices: np.ndarray, seed: int) -> _CacheEntry:
        classifier = train_classifier(self.features[sorted_indices], self.labels[sorted_indices], self.n_classes,
                                      self.cfg, seed)
        pool_probs, pool_embeddings = classifier.predict(self.features, indices=self.pool)
        validation_predictions = classifier.predict_classes(self.features, indices=self.validation)
        validation_labels = self.labels[self.validation]
        validation_accuracy = (float(np.mean(validation_predictions == validation_labels))
                               if len(self.validation) else float("nan"))
        version = ModelVersion(
            version_id=self._n_trainings,
            pool_predictions=_read_only(pool_probs.argmax(axis=1).astype(np.int64)),
            pool_probs=_read_only(pool_probs),
            pool_embeddings=_read_only(pool_embeddings),
            confusion=_read_only(confusion_matrix(validation_labels, validation_predictions, self.n_classes)),
            validation_accuracy=validation_accuracy,
            train_size=len(sorted_indices),
        )
        self._n_trainings += 1
        return _CacheEntry(version, classifier)

    def version_for(self, train_indices: np.ndarray, seed: int) -> ModelVersion:
        """The model version trained on rows ``train_indices`` (a multiset) with ``seed``; cached."""
        return self._entry(train_indices, seed).version

    def classifier_for(self, train_indices: np.ndarray, seed: int) -> Classifier:
        """The classifier behind :meth:`version_for` (same cache), e.g. to score data outside the pool."""
        return self._entry(train_indices, seed).classifier

    def test_accuracy(self, train_indices: np.ndarray, seed: int) -> float:
        """Accuracy on the test split of the version's classifier (trains it if not cached); NaN if no test rows."""
        entry = self._entry(train_indices, seed)
        if entry.test_accuracy is None:
            with limited_torch_threads(self.max_threads):
                entry.test_accuracy = entry.classifier.accuracy(self.features, self.labels, indices=self.test)
        return entry.test_accuracy
