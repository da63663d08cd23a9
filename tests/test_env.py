"""Tests of the PettingZoo faces (parallel, AEC), the vector env and their shared semantics.

Environments are small (``SMALL``: 4 robots, 3 rounds, 50 observations, 2 uploads) and share the default
config's cached world, so the model behind them is trained once per process.
"""

from __future__ import annotations

import pickle
import types
from collections import defaultdict

import numpy as np
import pettingzoo
import pytest
from gymnasium import spaces
from pettingzoo.test import (
    api_test,
    max_cycles_test,
    parallel_api_test,
    parallel_seed_test,
    render_test,
    seed_test,
    state_test,
)

import datagames_env
from datagames_env import DataGamesParallelEnv, DataGamesVectorEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"n_robots": 4, "rounds": 3, "obs_per_round": 50, "n_cache": 2}  # as conftest.small_kwargs
N_CLASSES = 10  # the embedded digits
INFO_KEYS_AT_RESET = {"feasible_matrix", "available", "estimated_mix", "round", "uploaded_true_labels",
                      "uploaded_predicted_labels", "n_uploaded", "cloud_counts", "distance"}
INFO_KEYS_AFTER_STEP = INFO_KEYS_AT_RESET


def _used(slots: np.ndarray) -> np.ndarray:
    """The filled upload slots of a fixed-shape info array (-1 = unused)."""
    assert slots.ndim == 1 and slots.dtype == np.int64
    filled = slots[slots >= 0]
    assert (slots[:len(filled)] >= 0).all(), f"slots must be filled from the left: {slots}"
    return filled

# configs that exercise different code paths; all share one world (same dataset and perception)
CONFIGS = {
    "allocation": {},
    "selection_em": {"action_mode": "selection", "mix_estimator": "em"},
    "kl_drift": {"loss": "kl", "stream": {"drift": 0.3}},
    "rare_truth": {"stream": {"kind": "rare_specialists"}, "mix_estimator": "truth",
                   "target": {"kind": "proportions", "proportions": [1.0] * 8 + [2.0, 2.0]}},
}


def make(**overrides) -> DataGamesParallelEnv:
    return datagames_env.parallel_env(**{**SMALL, **overrides})


def random_actions(env, rng, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {a: (rng.random(env.action_space(a).shape) * scale).astype(np.float32) for a in env.agents}


def assert_same(a, b, path="root"):
    """Exact equality of nested dicts / lists / arrays / scalars (dtype and shape included)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, sorted(a), sorted(b) if isinstance(b, dict) else b)
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{k}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, (path, a, b)
        assert np.array_equal(a, b, equal_nan=True), (path, a, b)
    else:
        assert type(a) is type(b) and a == b, (path, a, b)


def play_episode(env, seed, action_seed, scale=1.0, reset_seed=True):
    """Reset (with ``seed`` unless reset_seed is False) and play to the end with seeded random actions; returns
    the reset output and every step's output, plus the ledger."""
    rng = np.random.default_rng(action_seed)
    record = [env.reset(seed=seed) if reset_seed else env.reset()]
    while env.agents:
        record.append(env.step(random_actions(env, rng, scale)))
    return record, env.ledger()


# ---------------------------------------------------------------------------------- PettingZoo conformance
def test_parallel_api_test():
    parallel_api_test(make(), num_cycles=10)
    parallel_api_test(make(**CONFIGS["selection_em"]), num_cycles=10)


def test_aec_api_test():
    api_test(datagames_env.env(**SMALL), num_cycles=10)


def test_parallel_seed_test():
    parallel_seed_test(lambda: make(), num_cycles=10)
    parallel_seed_test(lambda: make(**CONFIGS["selection_em"]), num_cycles=10)


def test_aec_seed_test():
    seed_test(lambda: datagames_env.env(**SMALL), num_cycles=10)


def test_state_test():
    state_test(datagames_env.env(**SMALL), make(), num_cycles=5)


def test_render_test():
    render_test(lambda render_mode=None: datagames_env.env(render_mode=render_mode, **SMALL))


def test_render_modes_of_the_parallel_env():
    env = make(render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert isinstance(text, str) and "round 0/3" in text
    env.step(random_actions(env, np.random.default_rng(0)))
    assert "round 1/3" in env.render()
    env = make(render_mode="rgb_array")
    env.reset(seed=0)
    image = env.render()
    assert isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    env.close()
    env = make()
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None  # no render_mode: a warning, no output
    with pytest.raises(ValueError, match="render_mode"):
        make(render_mode="video")


def test_max_cycles_test():
    # ``max_cycles`` is PettingZoo's name for ``rounds``: the package module has the parallel_env / env pair
    max_cycles_test(datagames_env)
    assert datagames_env.parallel_env(max_cycles=2, **{k: v for k, v in SMALL.items() if k != "rounds"}
                                      ).config.rounds == 2
    env = pettingzoo.make("parallel", "datagames/DataGames-v0", max_cycles=2, n_robots=2)
    assert env.config.rounds == 2


def test_max_cycles_test_with_rounds_as_the_horizon():
    # the same check through ``rounds`` itself, on the small config
    mod = types.SimpleNamespace(
        parallel_env=lambda max_cycles: datagames_env.parallel_env(**{**SMALL, "rounds": max_cycles}),
        env=lambda max_cycles: datagames_env.env(**{**SMALL, "rounds": max_cycles}),
    )
    max_cycles_test(mod)


@pytest.mark.parametrize("name", ["allocation", "selection_em"])
def test_episode_lasts_exactly_rounds_steps(name):
    env = make(**CONFIGS[name])
    for seed in (0, 1):
        env.reset(seed=seed)
        steps = 0
        rng = np.random.default_rng(seed)
        while env.agents:
            obs, rewards, terminations, truncations, infos = env.step(random_actions(env, rng))
            steps += 1
            assert set(obs) == set(rewards) == set(terminations) == set(truncations) == set(infos) \
                == set(env.possible_agents)
            assert not any(truncations.values())
            last = steps == SMALL["rounds"]
            assert all(t is last for t in terminations.values())  # the task ends for everyone at the last round
            assert env.agents == ([] if last else env.possible_agents)
        assert steps == SMALL["rounds"]
        with pytest.raises(RuntimeError, match="reset"):
            env.step({a: np.zeros(env.action_space(a).shape, np.float32) for a in env.possible_agents})


def test_step_before_reset_fails():
    env = make()
    with pytest.raises(RuntimeError):
        env.step({})


# ------------------------------------------------------------------------------------ spaces and obs / infos
def test_spaces_are_the_same_objects_and_as_documented():
    env = make()
    c = N_CLASSES
    for agent in env.possible_agents:
        assert env.observation_space(agent) is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)
        obs_space = env.observation_space(agent)
        assert isinstance(obs_space, spaces.Box) and obs_space.dtype == np.float32
        assert obs_space.shape == (8 * c + 1,)
        assert np.isfinite(obs_space.low).all() and np.isfinite(obs_space.high).all()
        act = env.action_space(agent)
        assert act.shape == (c,) and (act.low == 0).all() and (act.high == 1).all()
    assert env.possible_agents == [f"robot_{i}" for i in range(SMALL["n_robots"])]
    sel = make(**CONFIGS["selection_em"])
    e = sel.config.perception.embedding_dim
    assert sel.observation_space("robot_0").shape == (8 * c + 1 + SMALL["obs_per_round"] * (e + c),)
    assert sel.action_space("robot_0").shape == (SMALL["obs_per_round"],)
    layout = env.obs_layout
    widths = {k: s.stop - s.start for k, s in layout.items()}
    assert list(layout) == ["cloud_hist", "target", "gap", "predicted_hist", "estimated_mix", "class_accuracy",
                            "purity", "gap_fill", "rounds_left"]
    assert widths == {"cloud_hist": c, "target": c, "gap": c, "predicted_hist": c, "estimated_mix": c,
                      "class_accuracy": c, "purity": c, "gap_fill": c, "rounds_left": 1}
    assert layout["cloud_hist"].start == 0 and layout["rounds_left"].stop == 8 * c + 1


PER_ROBOT = {"perception": {"per_robot": True, "train_steps": 20}}  # one model per robot (own world: cheap models)
EDGE_CONFIGS = {
    **CONFIGS,
    "empty_initial_cloud_em": {"initial_cloud_size": 0, "mix_estimator": "em"},
    "one_class_streams": {"stream": {"kind": "matrix", "mixes": [[1.0] + [0.0] * 9] * 4}},
    "per_robot_models": PER_ROBOT,
    "per_robot_selection": {**PER_ROBOT, "action_mode": "selection"},
}


@pytest.mark.parametrize("name", sorted(EDGE_CONFIGS))
def test_observations_lie_in_their_spaces_for_whole_episodes(name):
    env = make(**EDGE_CONFIGS[name])
    for seed in (0, 7):
        record, _ = play_episode(env, seed, seed, scale=1.5)
        for out in record:
            obs = out[0]
            assert "__all__" not in obs
            for agent, o in obs.items():
                assert o.dtype == np.float32
                assert env.observation_space(agent).contains(o), (agent, o)
            for d in out[1:]:
                assert "__all__" not in d
            if len(out) == 5:
                rewards = out[1]
                assert all(isinstance(r, float) and np.isfinite(r) for r in rewards.values())
                assert len(set(rewards.values())) == 1  # one shared reward


def test_observation_layout_holds_the_documented_quantities():
    env = make()
    obs, infos = env.reset(seed=3)
    rng = np.random.default_rng(3)
    lay = env.obs_layout
    version = env.core.model_versions()[0]
    target = env.privileged_view()["target_counts"]
    for step in range(SMALL["rounds"]):
        cloud = infos["robot_0"]["cloud_counts"] if "cloud_counts" in infos["robot_0"] else env.core.cloud_counts[0]
        for agent, o in obs.items():
            info = infos[agent]
            np.testing.assert_allclose(o[lay["cloud_hist"]], cloud / cloud.sum(), atol=1e-6)
            np.testing.assert_allclose(o[lay["target"]], target / target.sum(), atol=1e-6)
            np.testing.assert_allclose(o[lay["gap"]], np.clip((target - cloud) / target.sum(), -1, 1), atol=1e-6)
            np.testing.assert_allclose(o[lay["predicted_hist"]], info["available"] / SMALL["obs_per_round"],
                                       atol=1e-6)
            np.testing.assert_allclose(o[lay["estimated_mix"]], info["estimated_mix"], atol=1e-6)
            np.testing.assert_allclose(o[lay["class_accuracy"]], np.diag(version.confusion), atol=1e-6)
            np.testing.assert_allclose(o[lay["purity"]], np.diag(info["feasible_matrix"]), atol=1e-6)
            gap = np.clip((target - cloud) / target.sum(), -1, 1)
            np.testing.assert_allclose(o[lay["gap_fill"]], gap @ info["feasible_matrix"], atol=1e-6)
            np.testing.assert_allclose(o[lay["rounds_left"]], (SMALL["rounds"] - step) / SMALL["rounds"], atol=1e-6)
        obs, _, _, _, infos = env.step(random_actions(env, rng))
        if not env.agents:
            break


@pytest.mark.parametrize("name", ["allocation", "selection_em"])
def test_infos_hold_the_documented_keys(name):
    env = make(**CONFIGS[name])
    _, infos = env.reset(seed=1)
    rng = np.random.default_rng(1)
    c = N_CLASSES
    step = 0
    while True:
        assert set(infos) == set(env.agents)
        for info in infos.values():
            assert (INFO_KEYS_AFTER_STEP if step else INFO_KEYS_AT_RESET) <= set(info), sorted(info)
            assert info["round"] == step
            available = info["available"]
            assert available.shape == (c,) and np.issubdtype(available.dtype, np.integer)
            assert available.sum() == SMALL["obs_per_round"] and (available >= 0).all()
            mix = info["estimated_mix"]
            assert mix.shape == (c,) and (mix >= 0).all() and mix.sum() == pytest.approx(1.0)
            feasible = info["feasible_matrix"]
            assert feasible.shape == (c, c) and (feasible >= 0).all()
            col = feasible.sum(axis=0)
            assert np.all(np.isclose(col, 1.0) | (col == 0.0)), col
            # an empty column is a prediction the robot does not expect to make: no mass anywhere in it
            assert np.all((col == 0.0) == np.all(feasible == 0.0, axis=0))
            if "target_counts" in info:  # public constants, documented since max_cycles landed
                np.testing.assert_array_equal(info["target_counts"], env.privileged_view()["target_counts"])
                assert not info["target_counts"].flags.writeable or info["target_counts"] is not env.core.target_counts
            if "n_cache" in info:
                assert info["n_cache"] == SMALL["n_cache"]
            if step:
                assert len(_used(info["uploaded_true_labels"])) == len(_used(info["uploaded_predicted_labels"])) <= SMALL["n_cache"]
                assert info["cloud_counts"].shape == (c,)
                assert isinstance(info["distance"], float)
        if not env.agents:
            break
        _obs, _, _, _, infos = env.step(random_actions(env, rng))
        step += 1
        if not env.agents:  # the final step's infos are still checked above, once
            assert step == SMALL["rounds"]
            assert set(infos) == set(env.possible_agents)
            for info in infos.values():
                assert INFO_KEYS_AFTER_STEP <= set(info)
            break


def test_privileged_truths_are_not_in_observations_or_infos():
    env = make()  # bbse: the robots estimate their mixes
    obs, infos = env.reset(seed=5)
    rng = np.random.default_rng(5)
    while True:
        view = env.privileged_view()
        for i, agent in enumerate(env.agents):
            truth = view["true_mixes"][i].astype(np.float32)
            o = obs[agent]
            windows = np.lib.stride_tricks.sliding_window_view(o, len(truth))
            assert not np.any(np.all(np.isclose(windows, truth, atol=1e-7, rtol=0), axis=1)), agent
            assert not np.allclose(infos[agent]["estimated_mix"], view["true_mixes"][i])
            assert not np.allclose(infos[agent]["feasible_matrix"], view["true_feasible_matrices"][i])
            for value in infos[agent].values():
                if isinstance(value, np.ndarray) and value.shape == truth.shape:
                    assert not np.allclose(value, view["true_mixes"][i])
        if not env.agents:
            break
        obs, _, _, _, infos = env.step(random_actions(env, rng))
        if not env.agents:
            break


def test_returned_arrays_are_fresh_and_mutating_them_changes_nothing():
    """Mutate every array and dict the env returns (as RLlib does); a twin env without mutation must produce the
    same future, and new dicts / arrays must come every step."""
    a, b = make(), make()
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    out_a, out_b = a.reset(seed=2), b.reset(seed=2)
    previous = None
    while True:
        assert_same(out_a, out_b)
        obs = out_a[0]
        if previous is not None:
            assert obs is not previous[0]
            for agent in obs:
                assert not np.shares_memory(obs[agent], previous[0][agent])
        # robots' observation rows are distinct memory
        rows = list(obs.values())
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                assert not np.shares_memory(rows[i], rows[j])
        previous = out_a
        if not a.agents:
            break
        acts_a, acts_b = random_actions(a, rng_a), random_actions(b, rng_b)
        for part in out_a:  # vandalise what the env handed out
            for value in part.values():
                if isinstance(value, np.ndarray) and value.flags.writeable:
                    value.fill(7)
                elif isinstance(value, dict):
                    for inner in value.values():
                        # read-only arrays (shared constants) cannot be vandalised: fine
                        if isinstance(inner, np.ndarray) and inner.size and inner.flags.writeable:
                            inner.fill(7)
                    value["junk"] = 1
            part["__junk__"] = None
        # the env keeps no reference to the action arrays either
        out_a = a.step(acts_a)
        for v in acts_a.values():
            v.fill(np.nan)
        out_b = b.step(acts_b)


# --------------------------------------------------------------------------------------------- determinism
DETERMINISM_CONFIGS = {
    "allocation": {},
    "selection_em": CONFIGS["selection_em"],
    "kl_drift": CONFIGS["kl_drift"],
    "world_seed_none": {"world_seed": None, "stream": {"kind": "uniform"}},
}


@pytest.mark.parametrize("name", sorted(DETERMINISM_CONFIGS))
def test_same_seed_same_actions_same_episode(name):
    kwargs = DETERMINISM_CONFIGS[name]
    a, b = make(**kwargs), make(**kwargs)
    rec_a, ledger_a = play_episode(a, 11, 0)
    rec_b, ledger_b = play_episode(b, 11, 0)
    assert len(rec_a) == SMALL["rounds"] + 1
    assert_same(rec_a, rec_b)
    assert_same(ledger_a, ledger_b)
    assert a.distance_history == b.distance_history
    # a second episode on the same objects is the same again
    rec_c, ledger_c = play_episode(a, 11, 0)
    assert_same(rec_a, rec_c)
    assert_same(ledger_a, ledger_c)


@pytest.mark.parametrize("name", ["allocation", "selection_em"])
def test_different_seeds_differ(name):
    env = make(**CONFIGS[name])
    rec_1, ledger_1 = play_episode(env, 1, 0)
    rec_2, ledger_2 = play_episode(env, 2, 0)
    obs_1 = np.stack([out[0]["robot_0"] for out in rec_1[:-1]])
    obs_2 = np.stack([out[0]["robot_0"] for out in rec_2[:-1]])
    assert not np.array_equal(obs_1, obs_2)
    assert not np.array_equal(ledger_1["sample_id"], ledger_2["sample_id"])


def test_numpy_integer_seeds_equal_python_int_seeds():
    a, b = make(), make()
    assert_same(play_episode(a, np.int64(17), 0), play_episode(b, 17, 0))
    assert_same(play_episode(a, np.uint32(18), 0), play_episode(b, 18, 0))


def test_large_seeds_are_accepted():
    a, b = make(), make()
    seed = 2**64 + 12345  # e.g. random.getrandbits(80) or SeedSequence().entropy
    assert_same(play_episode(a, seed, 0), play_episode(b, seed, 0))


def test_reset_without_seed_continues_a_reproducible_sequence():
    a, b = make(), make()
    for env in (a, b):
        play_episode(env, 42, 0)
    rec_a = [play_episode(a, None, k, reset_seed=False) for k in range(2)]
    rec_b = [play_episode(b, None, k, reset_seed=False) for k in range(2)]
    assert_same(rec_a, rec_b)
    # ... and those unseeded episodes are not a replay of the seeded one, nor of each other
    seeded, _ = play_episode(make(), 42, 0)
    first_obs = [r[0][0][0]["robot_0"] for r in rec_a]
    assert not np.array_equal(first_obs[0], seeded[0][0]["robot_0"])
    assert not np.array_equal(first_obs[0], first_obs[1])


# ------------------------------------------------------------------------------------- vector == parallel
@pytest.mark.parametrize("name", ["allocation", "selection_em", "kl_drift", "per_robot_models"])
def test_vector_env_equals_parallel_envs_step_for_step(name):
    kwargs = {**SMALL, **EDGE_CONFIGS[name]}
    seeds = [3, 10, 42]
    vec = datagames_env.vector_env(3, **kwargs)
    assert isinstance(vec, DataGamesVectorEnv)
    pars = [datagames_env.parallel_env(**kwargs) for _ in seeds]
    vobs, vinfos = vec.reset(seed=seeds)
    outs = [p.reset(seed=s) for p, s in zip(pars, seeds)]
    agents = vec.possible_agents
    n, k = SMALL["n_robots"], SMALL["n_cache"]
    rng = np.random.default_rng(0)
    vrew = vterm = vtrunc = None  # set by the first step
    assert vec.observation_space.contains(vobs)
    for step in range(SMALL["rounds"] + 1):
        for b, (obs, infos) in enumerate((o[0], o[-1]) for o in outs):
            # B = 3 against B = 1: floats of two batch sizes get a tolerance, integers must be equal
            np.testing.assert_allclose(vobs[b], np.stack([obs[a] for a in agents]), rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(vinfos["available"][b], np.stack([infos[a]["available"] for a in agents]))
            if step:
                np.testing.assert_array_equal(vinfos["cloud_counts"][b], infos[agents[0]]["cloud_counts"])
                assert vinfos["distance"][b] == pytest.approx(infos[agents[0]]["distance"], rel=1e-9, abs=1e-12)
                padded = np.full((n, k), -1)
                for i, a in enumerate(agents):
                    labels = _used(infos[a]["uploaded_true_labels"])
                    padded[i, :len(labels)] = labels
                np.testing.assert_array_equal(vinfos["uploaded_labels"][b], padded)
                np.testing.assert_allclose(vrew[b], np.float32(outs[b][1][agents[0]]), rtol=1e-6, atol=1e-7)
                assert (vterm[b] == outs[b][2][agents[0]]).all()
                assert not vtrunc.any()
            assert (vinfos["round"] == step).all()
            np.testing.assert_array_equal(vec.privileged_view()["true_mixes"][b], pars[b].privileged_view()["true_mixes"])
        if step == SMALL["rounds"]:
            assert all(not p.agents for p in pars) and vterm.all()
            break
        actions = (rng.random((3, n) + vec.single_action_space.shape) * 1.3).astype(np.float32)
        actions[0, 1] = 0.0  # an idle robot: its slots stay empty
        vobs, vrew, vterm, vtrunc, vinfos = vec.step(actions)
        assert vrew.shape == vterm.shape == vtrunc.shape == (3, n)
        outs = [p.step({a: actions[b, i] for i, a in enumerate(agents)}) for b, p in enumerate(pars)]


def test_vector_env_int_seed_means_seed_plus_b():
    vec = datagames_env.vector_env(3, **SMALL)
    vobs, _ = vec.reset(seed=100)
    for b in range(3):
        obs, _ = make().reset(seed=100 + b)
        np.testing.assert_allclose(vobs[b], np.stack([obs[a] for a in vec.possible_agents]), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        vec.reset(seed=[1, 2])


def test_vector_env_names_env_and_robot_in_errors():
    vec = datagames_env.vector_env(3, **SMALL)
    vec.reset(seed=0)
    actions = np.zeros((3, SMALL["n_robots"], N_CLASSES), dtype=np.float32)
    actions[1, 2, 4] = np.nan
    with pytest.raises(ValueError, match=r"env 1.*robot_2"):
        vec.step(actions)
    with pytest.raises(ValueError, match="shape"):
        vec.step(actions[:2])


# ------------------------------------------------------------------------------------------------ reward
@pytest.mark.parametrize("loss", ["l2", "kl"])
def test_reward_is_the_normalised_distance_decrease(loss):
    env = make(loss=loss)
    budget = SMALL["n_robots"] * SMALL["n_cache"]
    for seed in (0, 1, 2):
        record, _ = play_episode(env, seed, seed)
        history = env.distance_history
        assert len(history) == SMALL["rounds"] + 1
        assert history[0] == record[0][1]["robot_0"]["distance"]
        rewards = [out[1]["robot_0"] for out in record[1:]]
        for t, out in enumerate(record[1:], start=1):
            assert out[4]["robot_0"]["distance"] == history[t]
            assert rewards[t - 1] == pytest.approx((history[t - 1] - history[t]) / budget, rel=1e-12, abs=1e-15)
        assert sum(rewards) == pytest.approx((history[0] - history[-1]) / budget, rel=1e-9, abs=1e-12)
        target = env.privileged_view()["target_counts"]
        cloud = record[-1][4]["robot_0"]["cloud_counts"]
        if loss == "l2":
            assert history[-1] == pytest.approx(np.linalg.norm(cloud - target), rel=1e-12)
        else:
            assert all(d >= 0 for d in history)
    assert env.privileged_view()["target_counts"].sum() == pytest.approx(
        env.config.initial_cloud_size + SMALL["rounds"] * budget)


@pytest.mark.parametrize("loss", ["l2", "kl"])
def test_marginal_reward_is_each_robots_own_gain_given_the_others(loss):
    """reward: marginal gives robot i (d(cloud without i's uploads) - d(cloud)) / n_cache, from the uploads' true
    labels in its info; the vector env hands out the same per-robot rewards."""
    env = make(loss=loss, reward="marginal")
    obs, infos = env.reset(seed=4)
    rng = np.random.default_rng(0)
    distinct = False
    while env.agents:
        actions = {a: rng.random(env.action_space(a).shape) for a in env.agents}
        obs, rewards, _, _, infos = env.step(actions)
        cloud = np.asarray(infos["robot_0"]["cloud_counts"], dtype=float)
        for a in rewards:
            without = cloud - np.bincount(_used(infos[a]["uploaded_true_labels"]), minlength=len(cloud))
            expected = (env.core.objective.distance(without[None])[0] - infos[a]["distance"]) / SMALL["n_cache"]
            assert rewards[a] == pytest.approx(expected, rel=1e-12, abs=1e-12)
        distinct |= len(set(rewards.values())) > 1
    assert distinct
    venv = datagames_env.vector_env(2, reward="marginal", loss=loss, **SMALL)
    venv.reset(seed=[4, 4])
    env.reset(seed=4)
    rng = np.random.default_rng(1)
    for _ in range(SMALL["rounds"]):
        batch = rng.random((2, SMALL["n_robots"], env.n_classes))
        _, vec_rewards, _, _, _ = venv.step(batch)
        _, rewards, _, _, _ = env.step({a: batch[0, i] for i, a in enumerate(env.possible_agents)})
        np.testing.assert_allclose(vec_rewards[0], [rewards[a] for a in env.possible_agents], rtol=1e-6)


# ------------------------------------------------------------------------------------------------ uploads
def _pool_positions(env) -> np.ndarray:
    world = env.core.world
    position = np.full(len(world.dataset.labels), -1)
    position[world.pool] = np.arange(len(world.pool))
    return position


@pytest.mark.parametrize("seed", [0, 1])
def test_uploads_respect_budget_availability_and_ledger(seed):
    env = make()
    n_cache = SMALL["n_cache"]
    rng = np.random.default_rng(seed)
    _, infos = env.reset(seed=seed)
    initial_cloud = env.core.cloud_counts[0].copy()
    uploads = []
    for r in range(SMALL["rounds"]):
        actions = {}
        for i, agent in enumerate(env.agents):
            kind = (i + r) % 4
            if kind == 0:
                actions[agent] = rng.random(N_CLASSES).astype(np.float32) * 3  # sum above 1: normalised
            elif kind == 1:
                actions[agent] = np.eye(N_CLASSES, dtype=np.float32)[int(np.argmax(infos[agent]["available"]))]
            elif kind == 2:
                actions[agent] = np.zeros(N_CLASSES, np.float32)
            else:
                actions[agent] = (rng.random(N_CLASSES) < 0.3).astype(np.float32)
        before = {a: infos[a]["available"].copy() for a in env.agents}
        _obs, _rewards, _, _, infos = env.step(actions)
        for i, agent in enumerate(env.possible_agents):
            true, predicted = _used(infos[agent]["uploaded_true_labels"]), _used(infos[agent]["uploaded_predicted_labels"])
            assert len(true) == len(predicted) <= n_cache
            assert (np.bincount(predicted, minlength=N_CLASSES) <= before[agent]).all()
            share = np.clip(actions[agent], 0, 1).sum()
            if share == 0:
                assert len(true) == 0
            elif share >= 1 and before[agent].sum() >= n_cache:
                assert len(true) == n_cache  # a full budget is spent
            if actions[agent].max() == 1.0 and share == 1.0 and before[agent].max() >= n_cache:
                assert (predicted == np.argmax(actions[agent])).all()  # one-hot on a class with enough samples
            uploads.append((r, i, true, predicted))
    ledger = env.ledger()
    final_cloud = infos["robot_0"]["cloud_counts"]
    np.testing.assert_array_equal(np.bincount(ledger["true_label"], minlength=N_CLASSES), final_cloud - initial_cloud)
    # the ledger lists exactly the uploads reported in the infos, round by round, robot by robot
    np.testing.assert_array_equal(ledger["round"], np.concatenate([[r] * len(t) for r, _, t, _ in uploads]))
    np.testing.assert_array_equal(ledger["robot"], np.concatenate([[i] * len(t) for _, i, t, _ in uploads]))
    np.testing.assert_array_equal(ledger["true_label"], np.concatenate([t for _, _, t, _ in uploads]))
    np.testing.assert_array_equal(ledger["predicted_label"], np.concatenate([p for _, _, _, p in uploads]))
    # and each upload is a real pool sample: its dataset label and its model prediction
    world = env.core.world
    np.testing.assert_array_equal(world.dataset.labels[ledger["sample_id"]], ledger["true_label"])
    positions = _pool_positions(env)[ledger["sample_id"]]
    assert (positions >= 0).all()
    version = env.core.model_versions()[0]
    np.testing.assert_array_equal(version.pool_predictions[positions], ledger["predicted_label"])


def test_all_zero_allocation_uploads_nothing():
    env = make()
    _, infos = env.reset(seed=4)
    cloud = infos["robot_0"]["cloud_counts"].copy() if "cloud_counts" in infos["robot_0"] else env.core.cloud_counts[0].copy()
    while env.agents:
        _, rewards, _, _, infos = env.step({a: np.zeros(N_CLASSES, np.float32) for a in env.agents})
        assert all(r == 0.0 for r in rewards.values())
        for info in infos.values():
            assert len(_used(info["uploaded_true_labels"])) == 0
            np.testing.assert_array_equal(info["cloud_counts"], cloud)
    assert len(env.ledger()["sample_id"]) == 0
    assert len(set(env.distance_history)) == 1


def test_selection_uploads_the_top_scored_samples():
    env = make(**CONFIGS["selection_em"])
    obs, infos = env.reset(seed=6)
    rng = np.random.default_rng(6)
    e, c, k = env.config.perception.embedding_dim, N_CLASSES, SMALL["n_cache"]
    lay = env.obs_layout
    while env.agents:
        actions = {a: rng.random(SMALL["obs_per_round"]).astype(np.float32) for a in env.agents}
        samples = {a: obs[a][lay["samples"]].reshape(SMALL["obs_per_round"], e + c) for a in env.agents}
        for a in env.agents:
            predicted_round = samples[a][:, e:].argmax(axis=1)
            np.testing.assert_array_equal(np.bincount(predicted_round, minlength=c), infos[a]["available"])
            np.testing.assert_allclose(np.linalg.norm(samples[a][:, :e], axis=1), 1.0, atol=1e-5)
        obs, _, _, _, infos = env.step(actions)
        for a in env.possible_agents:
            top = np.argsort(-actions[a], kind="stable")[:k]
            want = samples[a][top, e:].argmax(axis=1)
            np.testing.assert_array_equal(_used(infos[a]["uploaded_predicted_labels"]), want)
            assert len(_used(infos[a]["uploaded_true_labels"])) == k


# --------------------------------------------------------------------------------------- invalid actions
def _bad_actions(env, kind):
    good = {a: np.full(N_CLASSES, 0.1, np.float32) for a in env.agents}
    bad = dict(good)
    if kind == "wide":
        bad["robot_2"] = np.zeros(N_CLASSES + 1, np.float32)
    elif kind == "2d":
        bad["robot_2"] = np.zeros((1, N_CLASSES), np.float32)
    elif kind == "scalar":
        bad["robot_2"] = np.float32(0.5)
    elif kind == "nan":
        bad["robot_2"] = good["robot_2"].copy()
        bad["robot_2"][3] = np.nan
    elif kind == "inf":
        bad["robot_2"] = good["robot_2"].copy()
        bad["robot_2"][0] = np.inf
    elif kind == "-inf":
        bad["robot_2"] = good["robot_2"].copy()
        bad["robot_2"][9] = -np.inf
    elif kind == "missing":
        del bad["robot_2"]
    elif kind == "unknown":
        bad["robot_99"] = good["robot_0"]
    return good, bad


@pytest.mark.parametrize("kind", ["wide", "2d", "scalar", "nan", "inf", "-inf", "missing", "unknown"])
def test_invalid_actions_raise_naming_the_robot_and_change_nothing(kind):
    env, twin = make(), make()
    env.reset(seed=8)
    twin.reset(seed=8)
    good, bad = _bad_actions(env, kind)
    env.step(good)
    twin.step(good)
    cloud, round_index = env.core.cloud_counts.copy(), env.core.round_index
    observations, history, agents = env.core.observations(), env.distance_history, list(env.agents)
    with pytest.raises(ValueError) as info:
        env.step(bad)
    assert ("robot_99" if kind == "unknown" else "robot_2") in str(info.value), str(info.value)
    np.testing.assert_array_equal(env.core.cloud_counts, cloud)
    assert env.core.round_index == round_index
    np.testing.assert_array_equal(env.core.observations(), observations)
    assert env.distance_history == history and env.agents == agents
    # a valid step still works, and the failed one drew nothing from the random streams
    assert_same(env.step(good), twin.step(good))
    assert_same(env.ledger(), twin.ledger())


def test_invalid_selection_scores_raise():
    env = make(**CONFIGS["selection_em"])
    env.reset(seed=0)
    scores = {a: np.zeros(SMALL["obs_per_round"], np.float32) for a in env.agents}
    scores["robot_2"] = scores["robot_2"].copy()
    scores["robot_2"][5] = np.nan
    with pytest.raises(ValueError, match="robot_2"):
        env.step(scores)
    scores["robot_2"] = np.zeros(N_CLASSES, np.float32)  # an allocation-shaped action in selection mode
    with pytest.raises(ValueError, match="robot_2"):
        env.step(scores)
    assert env.core.round_index == 0


def test_out_of_range_actions_are_clipped():
    rng = np.random.default_rng(0)
    raw = [{f"robot_{i}": (rng.random(N_CLASSES) * 8 - 4).astype(np.float32) for i in range(SMALL["n_robots"])}
           for _ in range(SMALL["rounds"])]
    a, b = make(), make()
    out_a, out_b = [a.reset(seed=9)], [b.reset(seed=9)]
    for acts in raw:
        out_a.append(a.step(acts))
        out_b.append(b.step({k: np.clip(v, 0.0, 1.0) for k, v in acts.items()}))
    assert_same(out_a, out_b)
    # an action of 5.0 behaves like 1.0
    a, b = make(), make()
    a.reset(seed=1)
    b.reset(seed=1)
    five = {ag: np.where(np.arange(N_CLASSES) == 3, 5.0, -2.0).astype(np.float32) for ag in a.agents}
    one = {ag: np.where(np.arange(N_CLASSES) == 3, 1.0, 0.0).astype(np.float32) for ag in a.agents}
    assert_same(a.step(five), b.step(one))


def test_actions_as_lists_and_float64_are_accepted():
    a, b = make(), make()
    a.reset(seed=2)
    b.reset(seed=2)
    acts = {ag: np.linspace(0, 1, N_CLASSES, dtype=np.float32) for ag in a.agents}
    assert_same(a.step({k: v.tolist() for k, v in acts.items()}), b.step({k: v.astype(np.float64) for k, v in acts.items()}))


# ----------------------------------------------------------------------------------------------- pickling
@pytest.mark.parametrize("name", ["allocation", "selection_em"])
def test_pickle_round_trip_steps_identically(name):
    env = make(**CONFIGS[name])
    env.reset(seed=12)
    rng = np.random.default_rng(12)
    env.step(random_actions(env, rng))
    copy = pickle.loads(pickle.dumps(env))
    assert isinstance(copy, DataGamesParallelEnv)
    assert copy.agents == env.agents and copy.distance_history == env.distance_history
    while env.agents:
        acts = random_actions(env, rng)
        assert_same(env.step(acts), copy.step(acts))
    assert_same(env.ledger(), copy.ledger())
    assert not copy.agents
    # the copy is independent: a new episode on it leaves the original as it was
    history = env.distance_history
    copy.reset(seed=99)
    assert env.distance_history == history
    fresh = pickle.loads(pickle.dumps(make(**CONFIGS[name])))  # also before any reset
    assert_same(play_episode(fresh, 5, 5)[0], play_episode(make(**CONFIGS[name]), 5, 5)[0])


# ----------------------------------------------------------------------------------- state / privileged
def test_state_and_privileged_view():
    env = make()
    n, c = SMALL["n_robots"], N_CLASSES
    _, infos = env.reset(seed=13)
    rng = np.random.default_rng(13)
    assert env.state_space.shape == (3 * c + 1 + 3 * n * c,)
    while True:
        state = env.state()
        assert state.dtype == np.float32 and env.state_space.contains(state)
        view = env.privileged_view()
        assert set(view) == {"true_mixes", "true_feasible_matrices", "available", "cloud_counts", "target_counts",
                             "n_cache"}
        assert view["true_mixes"].shape == (n, c)
        np.testing.assert_allclose(view["true_mixes"].sum(axis=1), 1.0)
        assert view["true_feasible_matrices"].shape == (n, c, c)
        cols = view["true_feasible_matrices"].sum(axis=1)
        assert np.all(np.isclose(cols, 1.0) | (cols == 0.0))
        assert view["available"].shape == (n, c) and view["cloud_counts"].shape == (c,)
        assert view["target_counts"].shape == (c,) and view["n_cache"] == SMALL["n_cache"]
        np.testing.assert_array_equal(state[3 * c + 1:3 * c + 1 + n * c], view["true_mixes"].ravel().astype(np.float32))
        if env.agents:
            for i, a in enumerate(env.agents):
                np.testing.assert_array_equal(view["available"][i], infos[a]["available"])
        # the privileged view is a copy
        view["true_mixes"][:] = -1
        assert (env.privileged_view()["true_mixes"] >= 0).all()
        if not env.agents:
            break
        _obs, _, _, _, infos = env.step(random_actions(env, rng))


def test_true_feasible_matrix_matches_its_definition():
    env = make()
    env.reset(seed=14)
    version = env.core.model_versions()[0]
    world = env.core.world
    labels = world.pool_labels
    joint = np.zeros((N_CLASSES, N_CLASSES))
    np.add.at(joint, (labels, version.pool_predictions), 1.0)
    conditionals = joint / joint.sum(axis=1, keepdims=True)  # the pool's p(yhat | y)
    view = env.privileged_view()
    for i in range(SMALL["n_robots"]):
        weights = view["true_mixes"][i][:, None] * conditionals
        mass = weights.sum(axis=0)
        want = np.where(mass > 1e-12, weights / np.where(mass > 1e-12, mass, 1.0), 0.0)
        np.testing.assert_allclose(view["true_feasible_matrices"][i], want, atol=1e-12)


# --------------------------------------------------------------------------------------------- AEC face
def test_aec_face_plays_an_episode_like_the_parallel_env():
    aec = datagames_env.env(**SMALL)
    par = make()
    aec.reset(seed=21)
    par.reset(seed=21)
    rng = np.random.default_rng(21)
    n = SMALL["n_robots"]
    pending, totals, live_steps = {}, defaultdict(float), 0
    par_totals = defaultdict(float)
    for agent in aec.agent_iter():
        obs, reward, terminated, truncated, _info = aec.last()
        totals[agent] += reward
        assert not truncated
        if terminated:
            action = None
        else:
            assert aec.observation_space(agent).contains(obs)
            action = rng.random(N_CLASSES).astype(np.float32)
            pending[agent] = action
            live_steps += 1
        aec.step(action)
        if len(pending) == n:
            out = par.step(pending)
            pending = {}
            for a, r in out[1].items():
                par_totals[a] += r
            if par.agents:
                for a in par.agents:
                    np.testing.assert_array_equal(aec.observe(a), out[0][a])
    assert live_steps == SMALL["rounds"] * n
    assert aec.agents == [] and not par.agents
    for a in aec.possible_agents:
        assert totals[a] == pytest.approx(par_totals[a], rel=1e-12, abs=1e-15)
    assert aec.unwrapped.distance_history == par.distance_history


# ------------------------------------------------------------------------------------------------ registry
def test_registry_builds_both_faces():
    par = pettingzoo.make("parallel", "datagames/DataGames-v0", **SMALL)
    assert isinstance(par, DataGamesParallelEnv)
    assert par.config.n_robots == SMALL["n_robots"]
    obs, _ = par.reset(seed=0)
    assert set(obs) == set(par.possible_agents)
    aec = pettingzoo.make("aec", "datagames/DataGames-v0", **SMALL)
    assert isinstance(aec, pettingzoo.AECEnv)
    aec.reset(seed=0)
    assert aec.agent_selection == "robot_0"
    assert pettingzoo.spec("parallel", "datagames/DataGames-v0").id == "datagames/DataGames-v0"


def test_registry_has_the_other_scenarios():
    from datagames_env.faces.pettingzoo import DualParallelEnv, P2PParallelEnv

    p2p = pettingzoo.make("parallel", "datagames/P2P-v0", rounds=2)  # the scenario's default config
    assert isinstance(p2p, P2PParallelEnv) and p2p.config.rounds == 2 and p2p.config.scenario == "p2p"
    dual = pettingzoo.make("parallel", "datagames/Dual-v0", rounds=2)
    assert isinstance(dual, DualParallelEnv) and dual.config.rounds == 2


# ------------------------------------------------------------------------------------------ real datasets
def test_mnist_env_resets_and_steps(shared_datasets, monkeypatch):
    monkeypatch.setenv("DATAGAMES_DATA_DIR", str(shared_datasets))
    env = datagames_env.parallel_env("mnist_datagames", **{"perception.retrain_every": 0, "rounds": 2})
    obs, infos = env.reset(seed=0)
    assert len(env.agents) == 20 and len(obs) == 20
    assert env.core.world.dataset.name == "mnist"
    assert obs["robot_0"].shape == (81,)
    rng = np.random.default_rng(0)
    steps = 0
    while env.agents:
        for a, o in obs.items():
            assert env.observation_space(a).contains(o)
        obs, _rewards, terminations, _, infos = env.step(random_actions(env, rng))
        steps += 1
        for info in infos.values():
            assert info["available"].sum() == 2000
            assert len(_used(info["uploaded_true_labels"])) <= 2
    assert steps == 2 and all(terminations.values())
    assert len(env.ledger()["sample_id"]) <= 20 * 2 * 2


def test_mnist_via_dotted_data_dir(shared_datasets):
    env = datagames_env.parallel_env("mnist_datagames", **{"perception.retrain_every": 0, "rounds": 2,
                                                           "dataset.data_dir": str(shared_datasets)})
    obs, _ = env.reset(seed=1)
    assert obs["robot_19"].shape == (81,)


def test_dataset_config_dict_as_a_keyword(shared_datasets):
    kwargs = {"dataset": {"name": "mnist", "data_dir": str(shared_datasets)}, "perception.retrain_every": 0,
              "n_robots": 2, "rounds": 2, "obs_per_round": 50}
    vec = datagames_env.vector_env(1, **kwargs)  # the vector env takes it as the config key
    assert vec.core.world.dataset.name == "mnist"
    env = datagames_env.parallel_env(**kwargs)
    assert env.core.world.dataset.name == "mnist"


# ---------------------------------------------------------------------------------- accuracy / retraining
def test_final_accuracy_in_the_last_infos():
    env = make(final_accuracy=True)
    record, _ = play_episode(env, 0, 0)
    for out in record[1:-1]:  # the key is always there (fixed schema), -1 until the last step computed it
        assert all(info["final_test_accuracy"] == -1.0 for info in out[4].values())
    last = record[-1][4]
    values = {info["final_test_accuracy"] for info in last.values()}
    assert len(values) == 1
    accuracy = values.pop()
    assert isinstance(accuracy, float) and 0.0 <= accuracy <= 1.0
    vec = datagames_env.vector_env(2, **SMALL, final_accuracy=True)
    vec.reset(seed=0)
    for _ in range(SMALL["rounds"]):
        _, _, term, _, infos = vec.step(np.full((2, SMALL["n_robots"], N_CLASSES), 0.1, np.float32))
    assert term.all() and infos["final_test_accuracy"].shape == (2,)
    assert ((infos["final_test_accuracy"] >= 0) & (infos["final_test_accuracy"] <= 1)).all()


def test_retraining_changes_the_model_versions():
    kwargs = {"perception": {"retrain_every": 1, "train_steps": 50}}
    env = make(**kwargs)
    env.reset(seed=0)
    ids = [[v.version_id for v in env.core.model_versions()]]
    while env.agents:
        # upload something every round so the cloud set (the training set) changes
        env.step({a: np.ones(N_CLASSES, np.float32) for a in env.agents})
        if env.agents:
            ids.append([v.version_id for v in env.core.model_versions()])
    assert len(ids) == SMALL["rounds"]
    assert all(len(v) == 1 for v in ids)
    assert len({v[0] for v in ids}) == SMALL["rounds"], ids  # a new model after every round
    # still deterministic: a second env with the same seed replays the same episode
    a, b = make(**kwargs), make(**kwargs)
    assert_same(play_episode(a, 3, 3), play_episode(b, 3, 3))


def test_pooled_mix_estimate_is_bbse_of_the_summed_rounds_and_less_noisy():
    """mix_estimator 'pooled' = BBSE on the histograms summed since the model last changed; over an episode
    without retraining or drift its error shrinks below the single-round estimate's."""
    from datagames_env.core import kernels

    kwargs = dict(n_robots=6, rounds=6, obs_per_round=100, n_cache=2)
    pooled = datagames_env.parallel_env(mix_estimator="pooled", **kwargs)
    single = datagames_env.parallel_env(mix_estimator="bbse", **kwargs)
    errors = {"pooled": [], "bbse": []}
    summed = 0
    for seed in range(3):
        for env in (pooled, single):
            env.reset(seed=seed)
        summed = pooled.core.histograms.copy()
        for _ in range(kwargs["rounds"] - 1):
            actions = {a: np.full(pooled.n_classes, 0.1) for a in pooled.agents}
            pooled.step(actions)
            single.step(actions)
            summed = summed + pooled.core.histograms
        core = pooled.core
        expected = np.empty_like(core.estimated_mixes)
        kernels.estimate_mixes(summed, core.robot_version, core._versions.confusions,
                               core._versions.pinv_confusion_t, 0, 50, expected)
        np.testing.assert_allclose(core.estimated_mixes, expected)
        np.testing.assert_array_equal(single.core.histograms, core.histograms)  # same draws, only the estimate differs
        errors["pooled"].append(np.abs(core.estimated_mixes - core.mixes).sum(axis=-1).mean())
        errors["bbse"].append(np.abs(single.core.estimated_mixes - single.core.mixes).sum(axis=-1).mean())
    assert np.mean(errors["pooled"]) < np.mean(errors["bbse"])


def test_pooled_estimate_restarts_when_the_model_changes():
    env = datagames_env.parallel_env(mix_estimator="pooled", n_robots=3, rounds=3, obs_per_round=50, n_cache=2,
                                     **{"perception.retrain_every": 1})
    env.reset(seed=0)
    env.step({a: np.full(env.n_classes, 0.1) for a in env.agents})
    np.testing.assert_array_equal(env.core.pooled_histograms, env.core.histograms)
