"""Fast-tier perception (issue 17): a frozen, disk-cached feature extractor shared by every robot, and batched
per-robot heads on its features (running sufficient statistics, one batched solve per fit, Mahalanobis OoD)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datagames_env.config import PerceptionConfig
from datagames_env.data.datasets import DatasetError, load_dataset
from datagames_env.data.domains import corrupt
from datagames_env.perception import fast
from datagames_env.perception.fast import (CACHE_DIR_ENV_VAR, BatchedHeads, FastFeatures, cache_dir,
                                           cached_features)

# p2p_default's local-model architecture (a small MLP with a 16-d embedding), shorter training for test speed
CFG = PerceptionConfig(model="mlp", hidden=64, embedding_dim=16, train_steps=150)
N_PUBLIC = 500  # digits rows the extractor is pretrained on; disjoint from every robot's rows and the test rows


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def split(digits):
    order = np.random.default_rng(0).permutation(digits.n_samples)
    return {"public": np.sort(order[:N_PUBLIC]), "pool": np.sort(order[N_PUBLIC:1400]), "test": np.sort(order[1400:])}


@pytest.fixture(scope="module")
def extracted(digits, split, tmp_path_factory) -> FastFeatures:
    return cached_features(digits.features, digits.labels, digits.n_classes, CFG, split["public"],
                           directory=tmp_path_factory.mktemp("cache"))


def robot_sets(split, labels, sizes, seed=0):
    """(1, N, m) ids and valid mask: robot k gets sizes[k] pool rows."""
    rng = np.random.default_rng(seed)
    m = max(sizes)
    ids = np.zeros((1, len(sizes), m), dtype=np.int64)
    valid = np.zeros((1, len(sizes), m), dtype=bool)
    for k, size in enumerate(sizes):
        ids[0, k, :size] = rng.choice(split["pool"], size=size, replace=False)
        valid[0, k, :size] = True
    return ids, valid


# ------------------------------------------------------------------------------------------- cache and extractor


def test_cache_dir_default_and_env_override(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv(CACHE_DIR_ENV_VAR, raising=False)
    assert cache_dir() == Path(platformdirs.user_cache_dir("datagames_env"))
    monkeypatch.setenv(CACHE_DIR_ENV_VAR, str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"


def test_features_built_once_then_loaded_from_disk(digits, split, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV_VAR, str(tmp_path))
    first = cached_features(digits.features, digits.labels, digits.n_classes, CFG, split["public"])
    assert first.built and first.path.parent.parent == tmp_path and first.path.is_file()
    assert first.features.dtype == np.float32 and first.features.shape == (digits.n_samples, CFG.embedding_dim)
    assert np.isfinite(first.features).all()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached extractor was retrained")

    monkeypatch.setattr(fast, "train_classifier", no_training)
    second = cached_features(digits.features, digits.labels, digits.n_classes, CFG, split["public"])
    assert not second.built and second.key == first.key
    assert np.array_equal(second.features, first.features)
    # the loaded extractor is the same function: it embeds new arrays (e.g. privacy-filtered copies) identically
    rows = digits.features[:50]
    assert np.array_equal(second.extractor.transform(rows), first.extractor.transform(rows))
    assert sorted(p.name for p in first.path.parent.iterdir()) == [first.path.name]  # no temporary files left


def test_cnn_extractor_round_trips_through_the_cache(digits, tmp_path):
    images = digits.as_images()
    cfg = PerceptionConfig(model="auto", train_steps=20, embedding_dim=8)
    built = cached_features(images.features, images.labels, 10, cfg, np.arange(200), directory=tmp_path)
    loaded = cached_features(images.features, images.labels, 10, cfg, np.arange(200), directory=tmp_path)
    assert built.built and not loaded.built
    assert type(loaded.extractor.classifier.model).__name__ == "ConvNet"
    assert np.array_equal(loaded.extractor.transform(images.features[:30]), built.features[:30])


def test_extractor_is_deterministic(digits, split, tmp_path):
    a, b = (cached_features(digits.features, digits.labels, digits.n_classes, CFG, split["public"],
                            directory=tmp_path / name) for name in ("a", "b"))
    assert a.built and b.built and a.key == b.key
    assert np.array_equal(a.features, b.features)


def test_cache_key_covers_data_ids_and_config(digits, split):
    def key(features=digits.features, labels=digits.labels, ids=split["public"], cfg=CFG):
        return fast.cache_key(features, labels, digits.n_classes, cfg, ids)

    base = key()
    changed = digits.features.copy()
    changed[3, 5] += 0.25
    relabeled = digits.labels.copy()
    relabeled[split["public"][0]] = (relabeled[split["public"][0]] + 1) % 10
    assert len({base, key(features=changed), key(labels=relabeled), key(ids=split["public"][1:]),
                key(cfg=CFG.model_copy(update={"embedding_dim": 8})), key(cfg=CFG.model_copy(update={"seed": 1}))}) == 6
    # the order of the pretraining ids and knobs that do not touch the extractor leave the key alone
    assert key(ids=split["public"][::-1]) == base
    assert key(cfg=CFG.model_copy(update={"retrain_every": 3})) == base


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickled", "wrong_key", "wrong_shape"])
def test_corrupt_cache_file_is_rebuilt_with_a_warning(digits, split, tmp_path, damage, extracted):
    built = cached_features(digits.features, digits.labels, digits.n_classes, CFG, split["public"], directory=tmp_path)
    path = built.path
    if damage == "garbage":
        path.write_bytes(b"not an npz file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        if damage == "pickled":
            arrays["features"] = np.array([{"a": 1}], dtype=object)
        elif damage == "wrong_key":
            arrays["key"] = np.array("0" * 64)
        else:
            arrays["features"] = arrays["features"][:10]
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
    with pytest.warns(UserWarning, match="rebuilding"):
        again = cached_features(digits.features, digits.labels, digits.n_classes, CFG, split["public"],
                                directory=tmp_path)
    assert again.built
    assert np.array_equal(again.features, built.features)
    # the rebuilt file is sound again
    assert not cached_features(digits.features, digits.labels, digits.n_classes, CFG, split["public"],
                               directory=tmp_path).built


def test_failed_cache_write_warns_and_keeps_the_features(digits, split, tmp_path, monkeypatch):
    def broken_save(handle, arrays):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(fast, "_save_arrays", broken_save)
    with pytest.warns(UserWarning, match="disk full"):
        result = cached_features(digits.features, digits.labels, digits.n_classes, CFG, split["public"],
                                 directory=tmp_path)
    assert result.built and result.features.shape == (digits.n_samples, CFG.embedding_dim)
    assert not result.path.exists()
    assert list(result.path.parent.iterdir()) == []  # the temporary file is gone too


@pytest.mark.parametrize("ids, message", [(np.array([], dtype=np.int64), "pretrain_ids"),
                                          (np.array([0, 5000]), "pretrain_ids"),
                                          (np.array([[1, 2]]), "pretrain_ids")])
def test_bad_pretraining_ids_are_named(digits, tmp_path, ids, message):
    with pytest.raises(DatasetError, match=message):
        cached_features(digits.features, digits.labels, digits.n_classes, CFG, ids, directory=tmp_path)


def test_module_stays_in_its_layer():
    source = Path(fast.__file__)
    files = sorted(source.parent.rglob("*.py")) if source.name == "__init__.py" else [source]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                assert not any(layer in module for layer in ("scenarios", "faces", "harness", "baselines", "agents")), \
                    f"{path.name} imports {module}"


# ------------------------------------------------------------------------------------------------- batched heads


def brute_force(table, labels, n_classes, ids, valid, queries, prior_means, prior_cov, mean_prior, cov_prior, ridge,
                temperature):
    """Per-robot loop in float64 numpy, from the robot's rows (two-pass statistics, no running sums)."""
    b_envs, n_robots = ids.shape[:2]
    d = table.shape[1]
    lda = np.zeros((b_envs, n_robots, queries.shape[2], n_classes))
    rid, student = np.zeros_like(lda), np.zeros_like(lda)
    maha = np.zeros(lda.shape[:3])
    for b in range(b_envs):
        for n in range(n_robots):
            rows = ids[b, n][valid[b, n]]
            x, y = table[rows].astype(np.float64), labels[rows]
            counts = np.bincount(y, minlength=n_classes).astype(np.float64)
            scatter = np.zeros((d, d))
            means = np.zeros((n_classes, d))
            for c in range(n_classes):
                xc = x[y == c]
                if len(xc):
                    centred = xc - xc.mean(axis=0)
                    scatter += centred.T @ centred
                means[c] = (xc.sum(axis=0) + mean_prior * prior_means[c]) / (len(xc) + mean_prior)
            dof = len(x) - np.count_nonzero(counts)
            cov = (scatter + cov_prior * prior_cov) / (dof + cov_prior)
            q = queries[b, n].astype(np.float64)
            diff = q[:, None, :] - means[None, :, :]
            dist = np.einsum("mcd,de,mce->mc", diff, np.linalg.inv(cov), diff)
            maha[b, n] = dist.min(axis=1)
            log_prior = np.log((counts + 1.0) / (len(x) + n_classes))
            lda[b, n] = softmax(-0.5 * dist + log_prior)
            nu = max(dof + cov_prior - d + 1.0, 1.0)
            scale = 1.0 + 1.0 / (counts + mean_prior)
            student[b, n] = softmax(log_prior - 0.5 * d * np.log(scale)
                                    - 0.5 * (nu + d) * np.log1p(dist / (scale * nu)))
            xa = np.concatenate([x, np.ones((len(x), 1))], axis=1)
            onehot = np.eye(n_classes)[y]
            w = np.linalg.solve(xa.T @ xa + ridge * np.eye(d + 1), xa.T @ onehot)
            rid[b, n] = softmax(np.concatenate([q, np.ones((len(q), 1))], axis=1) @ w / temperature)
    return student, lda, rid, maha


def softmax(logits):
    out = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return out / out.sum(axis=-1, keepdims=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b_envs=st.integers(1, 3), n_robots=st.integers(1, 3), d=st.integers(1, 5), n_classes=st.integers(1, 4),
       n_rows=st.integers(1, 25), m=st.integers(0, 8), n_query=st.integers(1, 5), seed=st.integers(0, 2**31 - 1),
       mean_prior=st.floats(0.1, 5.0), cov_prior=st.floats(0.5, 20.0))
def test_batched_heads_equal_a_per_robot_loop(b_envs, n_robots, d, n_classes, n_rows, m, n_query, seed, mean_prior,
                                              cov_prior):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(n_rows, d)).astype(np.float32) * rng.uniform(0.5, 3.0)
    labels = rng.integers(0, n_classes, size=n_rows)
    prior_means = rng.normal(size=(n_classes, d))
    a = rng.normal(size=(d, d))
    prior_cov = a @ a.T / d + 0.5 * np.eye(d)
    ids = rng.integers(0, n_rows, size=(b_envs, n_robots, m))
    valid = rng.random((b_envs, n_robots, m)) < 0.7
    ids[~valid] = -1  # padding may hold anything
    query_ids = rng.integers(0, n_rows, size=(b_envs, n_robots, n_query))
    kwargs = dict(mean_prior=mean_prior, cov_prior=cov_prior, ridge=0.7, temperature=0.3)
    heads = {head: BatchedHeads(table, labels, n_classes, b_envs, n_robots, head=head, prior_means=prior_means,
                                prior_covariance=prior_cov, **kwargs) for head in ("student", "lda", "ridge")}
    for h in heads.values():
        h.add(ids, valid)
        h.fit()
    student, lda, rid, maha = brute_force(table, labels, n_classes, ids, valid, table[query_ids], prior_means,
                                          prior_cov, **kwargs)
    out_student, out_lda, out_ridge = (heads[h].predict(query_ids) for h in ("student", "lda", "ridge"))
    assert out_lda.probs.shape == (b_envs, n_robots, n_query, n_classes)
    np.testing.assert_allclose(out_student.probs, student, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out_lda.probs, lda, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out_ridge.probs, rid, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out_lda.mahalanobis, maha, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out_ridge.mahalanobis, maha, rtol=1e-4, atol=1e-4)
    # the same rows scored as explicit features (shared by every head) give the same answer
    np.testing.assert_allclose(heads["student"].predict_features(table[query_ids]).probs, student, rtol=1e-4,
                               atol=1e-5)
    # novelty without probabilities, probabilities without novelty
    np.testing.assert_allclose(heads["student"].novelty(query_ids), maha, rtol=1e-4, atol=1e-4)
    probs_only = heads["lda"].predict(query_ids, mahalanobis=False)
    assert probs_only.mahalanobis is None
    np.testing.assert_allclose(probs_only.probs, out_lda.probs, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="mahalanobis=False"):
        probs_only.novelty("mahalanobis")
    # rows shared by every head (test sets): classify / correct against the loop where its top two are apart
    rows = query_ids[0, 0]
    shared = np.broadcast_to(table[rows], (b_envs, n_robots) + table[rows].shape)
    for name, expected in (("student", student), ("lda", lda), ("ridge", rid)):
        expected = brute_force(table, labels, n_classes, ids, valid, shared, prior_means, prior_cov,
                               **kwargs)[("student", "lda", "ridge").index(name)]
        top2 = np.sort(expected, axis=-1)[..., -2:] if n_classes > 1 else np.zeros(expected.shape[:-1] + (2,))
        clear = (top2[..., 1] - top2[..., 0] > 1e-4) if n_classes > 1 else np.ones(expected.shape[:-1], bool)
        np.testing.assert_array_equal(heads[name].classify(rows)[clear], expected.argmax(axis=-1)[clear])
        correct = expected.argmax(axis=-1) == labels[rows]
        np.testing.assert_array_equal(heads[name].correct(rows)[clear], correct[clear])


def test_incremental_adds_equal_one_add_and_fits_are_deterministic(extracted, digits, split):
    ids, valid = robot_sets(split, digits.labels, [120, 60, 200])
    one = BatchedHeads.from_extractor(extracted, digits.labels, 1, 3)
    one.add(ids, valid)
    chunked = BatchedHeads.from_extractor(extracted, digits.labels, 1, 3)
    for part in np.array_split(np.arange(ids.shape[2]), 4):
        chunked.add(ids[:, :, part], valid[:, :, part])
    one.fit()
    chunked.fit()
    test_ids = np.broadcast_to(split["test"], (1, 3, len(split["test"])))
    np.testing.assert_allclose(chunked.predict(test_ids).probs, one.predict(test_ids).probs, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(one.counts, chunked.counts)
    first = one.predict(test_ids)
    one.fit()
    again = one.predict(test_ids)
    assert np.array_equal(first.probs, again.probs) and np.array_equal(first.mahalanobis, again.mahalanobis)


def test_predict_uses_the_last_fit_until_the_next(extracted, digits, split):
    ids, valid = robot_sets(split, digits.labels, [50, 50])
    heads = BatchedHeads.from_extractor(extracted, digits.labels, 1, 2)
    heads.add(ids[:, :, :25], valid[:, :, :25])
    heads.fit()
    test_ids = np.broadcast_to(split["test"][:40], (1, 2, 40))
    before = heads.predict(test_ids).probs
    heads.add(ids[:, :, 25:], valid[:, :, 25:])  # e.g. received samples between two retrainings
    assert np.array_equal(heads.predict(test_ids).probs, before)
    heads.fit()
    assert not np.allclose(heads.predict(test_ids).probs, before)


def test_head_accuracy_close_to_logistic_regression(extracted, digits, split):
    """Accuracy of the default (Student-t) head within 3 points of scikit-learn's logistic regression on the same frozen
    features and the same labeled sets, averaged over robots with small and large labeled sets."""
    from sklearn.linear_model import LogisticRegression

    sizes = [30, 80, 200, 400]
    ids, valid = robot_sets(split, digits.labels, sizes, seed=3)
    heads = BatchedHeads.from_extractor(extracted, digits.labels, 1, len(sizes))
    heads.add(ids, valid)
    heads.fit()
    test = split["test"]
    probs = heads.predict(np.broadcast_to(test, (1, len(sizes), len(test)))).probs[0]
    ours = [(probs[k].argmax(axis=1) == digits.labels[test]).mean() for k in range(len(sizes))]
    reference = []
    for k, size in enumerate(sizes):
        rows = ids[0, k, :size]
        lr = LogisticRegression(max_iter=5000).fit(extracted.features[rows], digits.labels[rows])
        reference.append(lr.score(extracted.features[test], digits.labels[test]))
    assert np.mean(ours) >= np.mean(reference) - 0.03, (ours, reference)
    assert min(ours) > 0.5, ours


def test_head_probabilities_are_proper_and_calibrated(extracted, digits, split):
    ids, valid = robot_sets(split, digits.labels, [100, 300], seed=5)
    heads = BatchedHeads.from_extractor(extracted, digits.labels, 1, 2)
    heads.add(ids, valid)
    heads.fit()
    test = split["test"]
    probs = heads.predict(np.broadcast_to(test, (1, 2, len(test)))).probs[0].astype(np.float64)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    for k in range(2):  # expected calibration error over 10 confidence bins
        confidence, correct = probs[k].max(axis=1), probs[k].argmax(axis=1) == digits.labels[test]
        bins = np.minimum((confidence * 10).astype(int), 9)
        ece = sum(abs(correct[bins == i].mean() - confidence[bins == i].mean()) * (bins == i).mean()
                  for i in range(10) if (bins == i).any())
        assert ece < 0.1, (k, ece)


def test_an_empty_robot_is_the_generic_pretrained_model(extracted, digits, split):
    """No labeled sample yet: the head is the extractor's public-pretraining model (class means and covariance of
    the pretraining rows), not noise."""
    heads = BatchedHeads.from_extractor(extracted, digits.labels, 2, 1)
    heads.fit()
    test = split["test"]
    probs = heads.predict(np.broadcast_to(test, (2, 1, len(test)))).probs
    assert np.isfinite(probs).all()
    assert (probs[0, 0].argmax(axis=1) == digits.labels[test]).mean() > 0.5


def test_shifted_domain_scores_higher_ood(extracted, digits, split):
    ids, valid = robot_sets(split, digits.labels, [100, 250, 60], seed=1)
    heads = BatchedHeads.from_extractor(extracted, digits.labels, 1, 3)
    heads.add(ids, valid)
    heads.fit()
    test = split["test"]
    images = digits.as_images().features[test]
    in_domain = heads.predict_features(extracted.features[test])
    for kind in ("fog", "snow", "noise"):
        shifted_rows = corrupt(images, kind, 0.8, seed=2).reshape(len(test), -1)
        shifted = heads.predict_features(extracted.extractor.transform(shifted_rows))
        assert (shifted.mahalanobis.mean(axis=-1) > in_domain.mahalanobis.mean(axis=-1)).all(), kind
        # the calibrated threshold (95% of in-domain below it) flags most shifted samples
        threshold = heads.calibrate(np.broadcast_to(test, (1, 3, len(test))), quantile=0.95)
        assert threshold.shape == (1, 3)
        assert (shifted.novelty("mahalanobis") > threshold[..., None]).mean() > 0.5, kind
        for uncertainty in ("entropy", "margin"):
            assert (shifted.uncertainty(uncertainty).mean(axis=-1)
                    >= in_domain.uncertainty(uncertainty).mean(axis=-1)).all(), (kind, uncertainty)


def test_calibrate_equals_per_robot_quantiles(extracted, digits, split):
    ids, valid = robot_sets(split, digits.labels, [80, 40], seed=2)
    heads = BatchedHeads.from_extractor(extracted, digits.labels, 1, 2)
    heads.add(ids, valid)
    heads.fit()
    cal_ids, cal_valid = robot_sets(split, digits.labels, [30, 17], seed=9)
    for kind in ("mahalanobis", "max_softmax", "entropy", "margin"):
        thresholds = heads.calibrate(cal_ids, cal_valid, quantile=0.9, kind=kind)
        scores = heads.predict(cal_ids).novelty(kind)
        for k in range(2):
            expected = np.quantile(scores[0, k][cal_valid[0, k]].astype(np.float64), 0.9)
            np.testing.assert_allclose(thresholds[0, k], expected, rtol=1e-5, atol=1e-6)
    max_softmax = heads.predict(cal_ids).novelty("max_softmax")
    assert ((max_softmax >= 0) & (max_softmax <= 1)).all()


def test_reset_clears_only_the_chosen_envs(extracted, digits, split):
    ids, valid = robot_sets(split, digits.labels, [70, 90], seed=4)
    both = np.concatenate([ids, ids]), np.concatenate([valid, valid])
    heads = BatchedHeads.from_extractor(extracted, digits.labels, 2, 2)
    heads.add(*both)
    heads.reset(np.array([True, False]))
    assert heads.counts[0].sum() == 0 and heads.counts[1].sum() == valid.sum()
    heads.fit()
    fresh = BatchedHeads.from_extractor(extracted, digits.labels, 2, 2)
    fresh.add(np.concatenate([ids, ids]), np.concatenate([np.zeros_like(valid), valid]))
    fresh.fit()
    test_ids = np.broadcast_to(split["test"][:50], (2, 2, 50))
    np.testing.assert_allclose(heads.predict(test_ids).probs, fresh.predict(test_ids).probs, rtol=1e-5, atol=1e-6)
    heads.reset()
    assert heads.counts.sum() == 0


def test_bad_input_is_named_and_loses_nothing(extracted, digits, split):
    ids, valid = robot_sets(split, digits.labels, [20, 20], seed=6)
    heads = BatchedHeads.from_extractor(extracted, digits.labels, 1, 2)
    heads.add(ids, valid)
    counts = heads.counts.copy()
    with pytest.raises(ValueError, match=r"ids.*\(B, N, m\) = \(1, 2, m\)"):
        heads.add(ids[0], valid[0])
    bad = ids.copy()
    bad[0, 1, 3] = digits.n_samples + 7
    with pytest.raises(ValueError, match="env 0, robot 1"):
        heads.add(bad, valid)
    with pytest.raises(ValueError, match="valid"):
        heads.add(ids, valid[:, :, :5])
    with pytest.raises(ValueError, match="env 0, robot 0"):
        heads.predict(np.full((1, 2, 3), -1))
    with pytest.raises(ValueError, match="features"):
        heads.predict_features(np.zeros((3, CFG.embedding_dim + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="quantile"):
        heads.calibrate(ids, valid, quantile=1.5)
    with pytest.raises(ValueError, match="envs"):
        heads.reset(np.array([True, False, True]))
    np.testing.assert_array_equal(heads.counts, counts)  # nothing already collected was lost
    with pytest.raises(ValueError, match="head"):
        BatchedHeads(extracted.features, digits.labels, 10, 1, 1, head="svm")
    with pytest.raises(ValueError, match="labels"):
        BatchedHeads(extracted.features, digits.labels[:10], 10, 1, 1)
    with pytest.raises(ValueError, match="prior_covariance"):
        BatchedHeads(extracted.features, digits.labels, 10, 1, 1, prior_covariance=-np.eye(CFG.embedding_dim))


def test_state_round_trip_restores_every_head(extracted, digits, split):
    ids, valid = robot_sets(split, digits.labels, [40, 90], seed=8)
    heads = BatchedHeads.from_extractor(extracted, digits.labels, 1, 2)
    heads.add(ids[:, :, :30], valid[:, :, :30])
    heads.fit()
    saved = heads.state()
    test_ids = np.broadcast_to(split["test"][:60], (1, 2, 60))
    before = heads.predict(test_ids)
    heads.add(ids[:, :, 30:], valid[:, :, 30:])
    heads.fit()
    heads.load_state(saved)
    after = heads.predict(test_ids)
    assert np.array_equal(after.probs, before.probs) and np.array_equal(after.mahalanobis, before.mahalanobis)
    broken = dict(saved, counts=saved["counts"][:, :1])
    with pytest.raises(ValueError, match="counts"):
        heads.load_state(broken)
    assert np.array_equal(heads.predict(test_ids).probs, before.probs)  # a rejected state changes nothing


def test_export_and_import_env_copy_every_head_of_an_env(extracted, digits, split):
    ids, valid = robot_sets(split, digits.labels, [80, 40])
    heads = BatchedHeads.from_extractor(extracted, digits.labels, 3, 2)
    heads.add(np.concatenate([ids, ids[:, ::-1], ids[:, :, :10].repeat(8, axis=2)]),
              np.concatenate([valid, valid[:, ::-1], valid[:, :, :10].repeat(8, axis=2)]))
    heads.fit()
    test_ids = np.broadcast_to(split["test"][:60], (3, 2, 60))
    before = heads.predict(test_ids)
    template = heads.export_env(0)
    heads.add(ids.repeat(3, axis=0), valid.repeat(3, axis=0))  # statistics move on; the template does not
    heads.import_env(template, np.array([False, True, True]))
    after = heads.predict(test_ids)
    for b in (1, 2):  # envs 1 and 2 now hold env 0's heads: statistics, the fit, and predictions
        np.testing.assert_allclose(after.probs[b], before.probs[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(after.mahalanobis[b], before.mahalanobis[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(heads.counts[b], heads.counts[0] - np.eye(10)[digits.labels[ids[0]]]
                                      .sum(axis=1, where=valid[0][..., None]).astype(np.int64))
    state = heads.state()
    np.testing.assert_array_equal(state["fitted_counts"][1], state["fitted_counts"][0])
    with pytest.raises(ValueError, match="template must hold"):
        heads.import_env({"counts": template["counts"]})
    with pytest.raises(ValueError, match="env must be in"):
        heads.export_env(3)


def test_fitting_a_subset_equals_fitting_all_for_those_heads(extracted, digits, split):
    ids, valid = robot_sets(split, digits.labels, [90, 30, 150])
    subset = BatchedHeads.from_extractor(extracted, digits.labels, 2, 3)
    full = BatchedHeads.from_extractor(extracted, digits.labels, 2, 3)
    test_ids = np.broadcast_to(split["test"][:80], (2, 3, 80))
    prior = subset.predict(test_ids)
    for heads in (subset, full):
        heads.add(np.concatenate([ids, ids[:, ::-1]]), np.concatenate([valid, valid[:, ::-1]]))
    some = np.array([[True, False, True], [False, True, False]])
    subset.fit(some)
    full.fit()
    got, want = subset.predict(test_ids), full.predict(test_ids)
    np.testing.assert_allclose(got.probs[some], want.probs[some], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.mahalanobis[some], want.mahalanobis[some], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.probs[~some], prior.probs[~some])  # the others keep their (prior) fit
    np.testing.assert_array_equal(subset.state()["fitted_counts"][some], full.state()["fitted_counts"][some])
    np.testing.assert_allclose(subset.correct(split["test"])[some], full.correct(split["test"])[some])
