"""Tests of datagames_env.perception: the robots' classifier, confusion matrices and cached model versions."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from datagames_env.config import PerceptionConfig
from datagames_env.perception import (
    Classifier,
    ModelVersion,
    Perception,
    build_model,
    confusion_matrix,
    train_classifier,
    train_classifiers,
)

MNIST_DIR = Path("/work/shared/datasets/MNIST")
FAST = PerceptionConfig(train_steps=60)  # enough to exercise every path; accuracy tests use the default config


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run these tests single-threaded: on an oversubscribed CPU (pytest-xdist, other jobs) OpenMP spin-waiting
    makes the tiny trainings here 50x slower with 2+ threads. The caller's setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@pytest.fixture(scope="module")
def digits_split(digits) -> dict[str, np.ndarray]:
    """Fixed pool / validation / test index arrays over the 1,797 digits."""
    order = np.random.default_rng(0).permutation(len(digits[1]))
    return {"test": order[:300], "validation": order[300:600], "pool": order[600:]}


def synthetic_images(n: int, n_classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1x28x28 images in [0, 1]: class k is a bright 7x7 square in quadrant k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n).astype(np.int64)
    images = rng.uniform(0.0, 0.3, (n, 1, 28, 28)).astype(np.float32)
    for i, k in enumerate(labels):
        top, left = 14 * (k // 2) + 3, 14 * (k % 2) + 3
        images[i, 0, top:top + 7, left:left + 7] = 1.0
    return images, labels


def make_perception(digits, split, cfg: PerceptionConfig = FAST, cache_size: int = 64) -> Perception:
    features, labels = digits
    return Perception(features, labels, split["pool"], split["validation"], split["test"], 10, cfg, cache_size)


def assert_unit_rows(embeddings: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ networks


def test_build_model_picks_mlp_for_vectors_and_cnn_for_images():
    cfg = PerceptionConfig(embedding_dim=16)
    mlp = build_model((64,), 10, cfg)
    cnn = build_model((1, 28, 28), 10, cfg)
    assert mlp.forward(torch.zeros(5, 64)).shape == (5, 10)
    assert mlp.embed(torch.zeros(5, 64)).shape == (5, 16)
    assert cnn.forward(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert cnn.embed(torch.zeros(3, 1, 28, 28)).shape == (3, 16)
    assert any(isinstance(m, torch.nn.Conv2d) for m in cnn.modules())
    assert not any(isinstance(m, torch.nn.Conv2d) for m in mlp.modules())
    # tiny and colour images still fit (ceil-mode pooling), and "mlp" flattens images
    assert build_model((3, 5, 7), 4, cfg).forward(torch.zeros(2, 3, 5, 7)).shape == (2, 4)
    assert build_model((1, 8, 8), 10, PerceptionConfig(model="mlp")).forward(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_build_model_rejects_cnn_on_vectors_and_bad_shapes():
    with pytest.raises(ValueError, match="perception.model 'cnn'"):
        build_model((64,), 10, PerceptionConfig(model="cnn"))
    with pytest.raises(ValueError, match="input_shape"):
        build_model((8, 8), 10, PerceptionConfig())


# ---------------------------------------------------------------------------------------------- classifier


def test_predict_shapes_dtypes_and_unit_norm_embeddings(digits):
    features, labels = digits
    classifier = train_classifier(features[:200], labels[:200], 10, FAST, seed=0)
    assert isinstance(classifier, Classifier) and classifier.n_classes == 10
    probs, embeddings = classifier.predict(features[200:500], batch_size=64)  # several batches
    assert probs.shape == (300, 10) and probs.dtype == np.float32
    assert embeddings.shape == (300, FAST.embedding_dim) and embeddings.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    assert_unit_rows(embeddings)
    # batch size and row selection do not change the answer
    rows = np.arange(200, 500)
    probs_by_index, embeddings_by_index = classifier.predict(features, indices=rows)
    np.testing.assert_allclose(probs_by_index, probs, atol=1e-6)
    np.testing.assert_allclose(embeddings_by_index, embeddings, atol=1e-6)
    assert classifier.predict(features[:0])[0].shape == (0, 10)


def test_training_is_deterministic_per_seed(digits):
    features, labels = digits
    first = train_classifier(features[:150], labels[:150], 10, FAST, seed=7)
    second = train_classifier(features[:150], labels[:150], 10, FAST, seed=7)
    other = train_classifier(features[:150], labels[:150], 10, FAST, seed=8)
    for name, weights in first.model.state_dict().items():
        assert torch.equal(weights, second.model.state_dict()[name]), name
    probs_first, emb_first = first.predict(features[150:400])
    probs_second, emb_second = second.predict(features[150:400])
    assert np.array_equal(probs_first, probs_second) and np.array_equal(emb_first, emb_second)
    assert not np.array_equal(probs_first, other.predict(features[150:400])[0])


def test_training_leaves_global_rng_state_alone(digits):
    features, labels = digits
    torch.manual_seed(1234)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    train_classifier(features[:100], labels[:100], 10, FAST, seed=3)
    train_classifier(features[:0], labels[:0], 10, FAST, seed=3)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])


def test_max_threads_is_scoped_to_training(digits):
    features, labels = digits
    single_threaded = train_classifier(features[:100], labels[:100], 10, FAST, seed=0)  # fixture: 1 thread
    torch.set_num_threads(2)
    capped = train_classifier(features[:100], labels[:100], 10, FAST, seed=0, max_threads=1)
    assert torch.get_num_threads() == 2
    assert np.array_equal(capped.predict(features[:50])[0], single_threaded.predict(features[:50])[0])


def test_empty_training_set_gives_uniform_predictions(digits):
    features, labels = digits
    classifier = train_classifier(features[:0], labels[:0], 10, FAST, seed=0)
    assert not classifier.trained
    probs, embeddings = classifier.predict(features[:50])
    np.testing.assert_array_equal(probs, np.full((50, 10), 0.1, dtype=np.float32))
    assert (classifier.predict_classes(features[:50]) == 0).all()
    assert_unit_rows(embeddings)
    # the embedding is still a fixed seeded projection: different inputs, different directions
    assert not np.allclose(embeddings[0], embeddings[1])


def test_single_sample_and_missing_classes(digits):
    features, labels = digits
    single = train_classifier(features[:1], labels[:1], 10, FAST, seed=0)
    probs, embeddings = single.predict(features[:20])
    assert probs.shape == (20, 10) and np.isfinite(probs).all()
    assert_unit_rows(embeddings)
    assert single.predict_classes(features[:1])[0] == labels[0]

    low_classes = np.flatnonzero(labels < 5)[:200]  # classes 5..9 never seen
    partial = train_classifier(features[low_classes], labels[low_classes], 10, FAST, seed=0)
    held_out = np.flatnonzero(labels < 5)[200:500]
    assert partial.predict(features[held_out])[0].shape == (300, 10)
    assert partial.accuracy(features[held_out], labels[held_out]) > 0.75


def test_duplicated_rows_count_as_weights():
    """One input with label 0 three times and label 1 once: cross-entropy is minimised at p(0) = 3/4."""
    cfg = PerceptionConfig(train_steps=300, weight_decay=0.0)
    row = np.ones((1, 4), dtype=np.float32)
    weighted = train_classifier(np.repeat(row, 4, axis=0), np.array([0, 0, 0, 1]), 2, cfg, seed=0)
    balanced = train_classifier(np.repeat(row, 2, axis=0), np.array([0, 1]), 2, cfg, seed=0)
    assert weighted.predict(row)[0][0, 0] == pytest.approx(0.75, abs=0.05)
    assert balanced.predict(row)[0][0, 0] == pytest.approx(0.5, abs=0.05)


def test_train_classifier_rejects_bad_labels(digits):
    features, labels = digits
    with pytest.raises(ValueError, match="labels must lie"):
        train_classifier(features[:10], labels[:10] + 10, 10, FAST, seed=0)
    with pytest.raises(ValueError, match="rows"):
        train_classifier(features[:10], labels[:9], 10, FAST, seed=0)


def test_mlp_on_digits_is_accurate_and_improves_with_data(digits):
    features, labels = digits
    order = np.random.default_rng(1).permutation(len(labels))
    train, held_out = order[:500], order[500:]
    cfg = PerceptionConfig()  # the default: 300 steps
    large = train_classifier(features[train], labels[train], 10, cfg, seed=0)
    small = train_classifier(features[train[:30]], labels[train[:30]], 10, cfg, seed=0)
    large_accuracy = large.accuracy(features[held_out], labels[held_out])
    small_accuracy = small.accuracy(features[held_out], labels[held_out])
    assert large_accuracy > 0.8
    assert large_accuracy > small_accuracy + 0.05


def test_cnn_on_synthetic_images():
    images, labels = synthetic_images(160, n_classes=4)
    cfg = PerceptionConfig(train_steps=80, embedding_dim=8)
    classifier = train_classifier(images[:120], labels[:120], 4, cfg, seed=0)
    assert any(isinstance(m, torch.nn.Conv2d) for m in classifier.model.modules())
    probs, embeddings = classifier.predict(images[120:], batch_size=16)
    assert probs.shape == (40, 4) and probs.dtype == np.float32
    assert embeddings.shape == (40, 8) and embeddings.dtype == np.float32
    assert_unit_rows(embeddings)
    assert classifier.accuracy(images[120:], labels[120:]) > 0.9
    again = train_classifier(images[:120], labels[:120], 4, cfg, seed=0)
    # the same training and the same call: bit for bit
    assert np.array_equal(again.predict(images[120:], batch_size=16)[0], probs)
    # another batch size is another code path (it differed by ~1e-10 on AVX-512/AMX CPUs): a stated tolerance
    np.testing.assert_allclose(again.predict(images[120:])[0], probs, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------- confusion


def test_confusion_matrix_rows_and_missing_class():
    true = np.array([0, 0, 0, 0, 1, 1, 3])
    predicted = np.array([0, 0, 0, 1, 1, 0, 2])
    matrix = confusion_matrix(true, predicted, 4)
    assert matrix.dtype == np.float64 and matrix.shape == (4, 4)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    np.testing.assert_allclose(matrix[0], [0.75, 0.25, 0.0, 0.0])
    np.testing.assert_allclose(matrix[1], [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(matrix[2], [0.25, 0.25, 0.25, 0.25])  # no samples of class 2: uniform
    np.testing.assert_allclose(matrix[3], [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(confusion_matrix(np.zeros(0, int), np.zeros(0, int), 3), np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 4]), np.array([0, 1]), 4)


# ---------------------------------------------------------------------------------------------- perception


def test_version_contents(digits, digits_split):
    perception = make_perception(digits, digits_split)
    train = digits_split["pool"][:200]
    version = perception.version_for(train, seed=0)
    n_pool = len(digits_split["pool"])
    assert isinstance(version, ModelVersion)
    assert version.version_id == 0 and version.train_size == 200
    assert version.pool_predictions.shape == (n_pool,) and version.pool_predictions.dtype == np.int64
    assert version.pool_probs.shape == (n_pool, 10) and version.pool_probs.dtype == np.float32
    assert version.pool_embeddings.shape == (n_pool, FAST.embedding_dim)
    assert version.pool_embeddings.dtype == np.float32
    assert_unit_rows(version.pool_embeddings)
    np.testing.assert_array_equal(version.pool_predictions, version.pool_probs.argmax(axis=1))
    assert version.confusion.dtype == np.float64 and version.confusion.shape == (10, 10)
    np.testing.assert_allclose(version.confusion.sum(axis=1), 1.0)
    # validation accuracy is the class-weighted diagonal of the confusion matrix
    validation_counts = np.bincount(digits[1][digits_split["validation"]], minlength=10)
    diagonal_accuracy = (np.diag(version.confusion) * validation_counts).sum() / validation_counts.sum()
    assert version.validation_accuracy == pytest.approx(diagonal_accuracy)
    assert version.validation_accuracy > 0.7
    with pytest.raises(ValueError):
        version.pool_probs[0, 0] = 1.0  # cached versions are shared: read-only
    # the version agrees with a classifier trained directly on the same (sorted) rows
    direct = train_classifier(digits[0][np.sort(train)], digits[1][np.sort(train)], 10, FAST, seed=0)
    np.testing.assert_allclose(direct.predict(digits[0][digits_split["pool"]])[0], version.pool_probs, atol=1e-6)


def test_versions_are_cached_by_multiset_and_seed(digits, digits_split):
    perception = make_perception(digits, digits_split)
    train = digits_split["pool"][:120]
    first = perception.version_for(train, seed=0)
    assert perception.n_trainings == 1
    assert perception.version_for(train.copy(), seed=0) is first
    assert perception.version_for(train[::-1], seed=0) is first  # same multiset, other order
    assert perception.version_for(list(train), seed=0) is first
    assert perception.n_trainings == 1

    with_duplicate = np.append(train, train[0])  # a multiset: the repeat is a different training set
    second = perception.version_for(with_duplicate, seed=0)
    assert second is not first and second.version_id == 1 and second.train_size == 121
    third = perception.version_for(train, seed=1)
    assert third.version_id == 2 and perception.n_trainings == 3
    assert perception.version_for(train, seed=0) is first


def test_cache_is_lru_bounded(digits, digits_split):
    perception = make_perception(digits, digits_split, cfg=PerceptionConfig(train_steps=5), cache_size=2)
    pool = digits_split["pool"]
    a = perception.version_for(pool[:20], 0)
    perception.version_for(pool[:30], 0)
    assert perception.version_for(pool[:20], 0) is a  # a is now the most recent
    perception.version_for(pool[:40], 0)  # evicts pool[:30]
    assert perception.version_for(pool[:20], 0) is a and perception.n_trainings == 3
    retrained = perception.version_for(pool[:30], 0)
    assert perception.n_trainings == 4 and retrained.version_id == 3


def test_test_accuracy_uses_the_cached_classifier(digits, digits_split):
    perception = make_perception(digits, digits_split)
    train = digits_split["pool"][:200]
    accuracy = perception.test_accuracy(train, seed=0)
    assert perception.n_trainings == 1
    classifier = perception.classifier_for(train, seed=0)
    features, labels = digits
    assert accuracy == classifier.accuracy(features[digits_split["test"]], labels[digits_split["test"]])
    assert 0.7 < accuracy <= 1.0
    perception.version_for(train, seed=0)
    assert perception.test_accuracy(train, seed=0) == accuracy and perception.n_trainings == 1


def test_empty_cloud_version(digits, digits_split):
    perception = make_perception(digits, digits_split)
    version = perception.version_for(np.array([], dtype=np.int64), seed=0)
    assert version.train_size == 0
    assert (version.pool_predictions == 0).all()
    np.testing.assert_allclose(version.pool_probs, 0.1)
    assert_unit_rows(version.pool_embeddings)
    # everything is predicted as class 0: column 0 of the confusion matrix is all ones
    np.testing.assert_allclose(version.confusion[:, 0], 1.0)
    validation_labels = digits[1][digits_split["validation"]]
    assert version.validation_accuracy == pytest.approx(np.mean(validation_labels == 0))


def test_perception_rejects_bad_indices(digits, digits_split):
    perception = make_perception(digits, digits_split)
    with pytest.raises(ValueError, match="train_indices"):
        perception.version_for(np.array([0, len(digits[1])]), seed=0)
    with pytest.raises(ValueError, match="train_indices"):
        perception.version_for(np.array([-1]), seed=0)
    with pytest.raises(ValueError, match="integer"):
        perception.version_for(np.array([0.5]), seed=0)


def _read_idx(path: Path, header_bytes: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=header_bytes)


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(), reason="real MNIST files not present")
def test_cnn_on_real_mnist():
    images = _read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255
    labels = _read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    perception = Perception(images, labels, pool=order[3000:], validation=order[1500:3000], test=order[:1500],
                            n_classes=10, cfg=PerceptionConfig())
    version = perception.version_for(order[3000:3500], seed=0)  # 500 cloud images, the default 300 steps
    assert version.pool_embeddings.shape == (7000, 32)
    assert_unit_rows(version.pool_embeddings)
    assert version.validation_accuracy > 0.85
    assert perception.test_accuracy(order[3000:3500], seed=0) > 0.85


# ------------------------------------------------------------------------------------------ batched training
def _max_weight_gap(a: Classifier, b: Classifier) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.model.parameters(), b.model.parameters()))


@pytest.mark.parametrize("kind, dropout", [("mlp", 0.0), ("mlp", 0.25), ("cnn", 0.25)])
def test_batched_training_matches_sequential_training(digits, kind, dropout):
    # ragged sets (one below the batch size, one empty): each model follows its own init, minibatches and masks
    if kind == "mlp":
        x, y = digits
        sets = [(x[:40], y[:40]), (x[100:400], y[100:400]), (x[:0], y[:0]), (x[500:1200], y[500:1200])]
    else:
        x, y = synthetic_images(300, seed=1)
        sets = [(x[:50], y[:50]), (x[50:300], y[50:300])]
    cfg = PerceptionConfig(model=kind, train_steps=30, batch_size=64)
    seeds = [3, 5, 7, 11][:len(sets)]
    batched = train_classifiers([f for f, _ in sets], [t for _, t in sets], 10, cfg, seeds, dropout=dropout)
    again = train_classifiers([f for f, _ in sets], [t for _, t in sets], 10, cfg, seeds, dropout=dropout)
    for (f, t), seed, model, repeat in zip(sets, seeds, batched, again):
        single = train_classifier(f, t, 10, cfg, seed, dropout=dropout)
        assert model.trained == single.trained == (len(t) > 0) and model.train_size == len(t)
        assert _max_weight_gap(model, repeat) == 0.0  # deterministic
        # the same training: MLPs stacked up to float32 rounding, conv nets one after another (bitwise)
        assert _max_weight_gap(model, single) < 1e-3 if kind == "mlp" else _max_weight_gap(model, single) == 0.0
        if len(t):
            agree = (model.predict_classes(f) == single.predict_classes(f)).mean()
            assert agree >= 0.97, agree


def test_batched_training_rejects_mismatched_inputs(digits):
    x, y = digits
    with pytest.raises(ValueError, match="one entry per model"):
        train_classifiers([x[:10]], [y[:10], y[:10]], 10, FAST, [0])
    with pytest.raises(ValueError, match="one input shape"):
        train_classifiers([x[:10], x[:10, :32]], [y[:10], y[:10]], 10, FAST, [0, 1])


def test_batched_training_runs_under_no_grad(digits):
    x, y = digits
    with torch.no_grad():
        models = train_classifiers([x[:80], x[80:200]], [y[:80], y[80:200]], 10, FAST, [0, 1])
    assert torch.is_grad_enabled()
    assert all(m.trained for m in models)
    assert models[1].accuracy(x[400:800], y[400:800]) > 0.3  # it learned (chance: 0.1)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_warm_start_continues_from_the_given_weights(digits, kind):
    # a fine-tuning starts where the previous model is (its weights and input standardisation), for `steps` steps
    if kind == "mlp":
        x, y = digits
        first_set, grown = (x[:200], y[:200]), (x[:600], y[:600])
    else:
        x, y = synthetic_images(300, seed=2)
        first_set, grown = (x[:100], y[:100]), (x[:300], y[:300])
    cfg = PerceptionConfig(model=kind, train_steps=40, batch_size=64)
    first = train_classifier(*first_set, 10, cfg, 3)
    still = train_classifiers([grown[0]], [grown[1]], 10, cfg.model_copy(update={"lr": 1e-12}), [9], init=[first],
                              steps=5)[0]
    assert _max_weight_gap(still, first) < 1e-6  # no learning rate: the warm start is the previous model
    assert torch.equal(still.input_mean, first.input_mean) and torch.equal(still.input_scale, first.input_scale)
    assert still.model is not first.model  # a copy: the previous model is left as it was
    tuned = train_classifiers([grown[0], grown[0]], [grown[1], grown[1]], 10, cfg, [9, 9], init=[first, first],
                              steps=5)
    cold = train_classifiers([grown[0]], [grown[1]], 10, cfg, [9], steps=5)[0]
    assert _max_weight_gap(tuned[0], tuned[1]) < 1e-5 and _max_weight_gap(tuned[0], first) > 0
    assert _max_weight_gap(cold, first) > 0.01  # a fresh start is elsewhere
    assert tuned[0].accuracy(*grown) > cold.accuracy(*grown)  # 5 steps from a trained model beat 5 from scratch
    with pytest.raises(ValueError, match="one classifier per model"):
        train_classifiers([grown[0]], [grown[1]], 10, cfg, [9], init=[first, first])
