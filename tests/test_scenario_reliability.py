"""Issue 12, part 2: atomic steps of p2p and dual, robots leaving ``agents`` (every scenario), snapshots (every
scenario and the vector env). Tiny configs only; see docs/reliability.md for the promises."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from datagames_env.faces.vector import vector_env
import datagames_env
from datagames_env.faces.pettingzoo import DualParallelEnv, P2PParallelEnv
from datagames_env.scenarios import dual as dual_module
from datagames_env.scenarios import p2p as p2p_module
from datagames_env.scenarios.base import SnapshotError

DATAGAMES = {"n_robots": 3, "rounds": 4, "obs_per_round": 20, "n_cache": 3}
DUAL = {"n_robots": 3, "rounds": 4, "obs_per_round": 20, "n_cache": 3, "label_budget": 4,
        "initial_cloud_size": 30, "perception.train_steps": 30,
        "privacy.private_fraction": 0.02}
P2P = {"rounds": 4, "obs_per_round": 20, "perception.train_steps": 30, "ood.calibration_size": 20,
       "perception.tier": "paper"}  # these tests patch P2PScenario internals (the fast tier: test_p2p_fast.py)


def _make(kind: str, **extra):
    if kind == "datagames":
        return datagames_env.parallel_env(None, **{**DATAGAMES, **extra})
    if kind == "dual":
        return DualParallelEnv(None, **{**DUAL, **extra})
    return P2PParallelEnv("p2p_default", **{**P2P, **extra})


def _actions(env, r: int) -> dict:
    rng = np.random.default_rng(1000 + r)
    return {a: rng.random(env.action_space(a).shape).astype(np.float32) for a in env.agents}


def _same(a, b, where="") -> None:
    """Deep equality of observations / infos (arrays by content and dtype)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def _play_alongside(env, other, first_round: int) -> int:
    """Step both envs with the same actions to the episode's end, every output equal; returns rounds played."""
    r = first_round
    while env.agents:
        actions = _actions(env, r)
        _same(env.step(actions), other.step(actions), f"round {r}")
        r += 1
    assert not other.agents
    return r - first_round


def _fingerprint(value, seen=None):
    """Everything a scenario holds, as comparable data (arrays by content, generators by state, dataclasses and
    robots by their fields); config, world, models and other shared objects by identity."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.random.Generator):
        return ("rng", repr(value.bit_generator.state))
    if isinstance(value, dict):
        return ("dict", tuple((k, _fingerprint(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_fingerprint(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(value)))
    if isinstance(value, (int, float, str, bool, type(None), np.integer, np.floating)):
        return value
    if isinstance(value, (p2p_module._Robot, p2p_module.LocalModel)):
        return ("fields", _fingerprint(vars(value)))
    return ("object", id(value))


class _Injected(RuntimeError):
    pass


def _fail(*_args, **_kwargs):
    raise _Injected("injected fault")


# (scenario, what to break, overrides): retraining, the OoD detector, the labeler, the privacy filter, drift,
# the next round's observation
FAULTS = [
    ("p2p", "_train", {}),
    ("p2p", "detector.novel", {}),
    ("p2p", "filter.apply", {"privacy.private_fraction": 0.3}),
    ("p2p", "_predict_round", {}),
    ("p2p", "_train", {"perception.warm_start": True, "perception.retrain_steps": 5}),
    ("dual", "_set_model", {"perception.tier": "paper"}),
    ("dual", "_label", {"perception.tier": "paper"}),
    ("dual", "filter.apply", {"perception.tier": "paper"}),
    ("dual", "_observe_round", {"stream.drift": 0.3, "perception.tier": "paper"}),
    ("dual", "drift_mixes", {"stream.drift": 0.3, "labeler": "random", "perception.tier": "paper"}),
]


@pytest.mark.parametrize("kind, target, overrides", FAULTS, ids=[f"{k}-{t}" for k, t, _ in FAULTS])
def test_a_fault_inside_a_step_leaves_the_scenario_exactly_as_it_was(monkeypatch, kind, target, overrides):
    env, clean = _make(kind, **overrides), _make(kind, **overrides)
    env.reset(seed=3), clean.reset(seed=3)
    env.step(_actions(env, 0)), clean.step(_actions(clean, 0))
    scenario = env.scenario
    before = _fingerprint(vars(scenario))
    owner, _, name = target.rpartition(".")
    # frozen dataclasses (detector, filter) are patched on their class
    obj = {"": scenario, "detector": type(getattr(scenario, "detector", None)), "filter": type(scenario.filter)
           }[owner] if target != "drift_mixes" else dual_module
    with monkeypatch.context() as patch:
        patch.setattr(obj, name, _fail)
        with pytest.raises(_Injected):
            env.step(_actions(env, 1))
    assert _fingerprint(vars(scenario)) == before
    assert env.agents == clean.agents
    assert _play_alongside(env, clean, 1) == 3  # and the rest equals an env that never saw the fault


# ------------------------------------------------------------------------------------------- robots leaving
@pytest.mark.parametrize("kind, overrides", [("datagames", {}), ("datagames", {"action_mode": "selection"}),
                                             ("dual", {}), ("p2p", {})],
                         ids=["datagames", "datagames-selection", "dual", "p2p"])
def test_a_robot_removed_from_agents_uploads_nothing_and_the_others_go_on(kind, overrides):
    env = _make(kind, **overrides)
    env.reset(seed=5)
    env.step(_actions(env, 0))
    env.agents.remove("robot_1")
    if kind == "p2p":
        totals_before = env.scenario._totals[1].copy()
        labeled_before = int(env.scenario._cell_counts[1].sum())
    rounds = 0
    while env.agents:
        observations, rewards, terminations, truncations, infos = env.step(_actions(env, rounds + 1))
        for out in (observations, rewards, terminations, truncations, infos):
            assert set(out) == {"robot_0", "robot_2"}
        assert all(np.isfinite(r) for r in rewards.values())
        if kind == "p2p":
            sent = env.scenario.last_transmissions[1]
            assert len(sent["sent_ids"]) == 0 and not sent["sent_mask"].any()
            assert infos["robot_0"]["n_received"] == infos["robot_0"]["n_sent"] > 0  # only robot_2 sent to it
        rounds += 1
    assert rounds == 3  # the others played the whole episode
    if kind == "datagames":
        ledger = env.ledger()
        assert not (ledger["robot"][ledger["round"] >= 1] == 1).any()
        assert (ledger["robot"][ledger["round"] >= 1] == 0).any()
    elif kind == "dual":
        cloud = env.cloud()
        assert not ((cloud["robot"] == 1) & (cloud["round"] >= 1)).any()
        assert ((cloud["robot"] == 0) & (cloud["round"] >= 1)).any()
    else:  # it cached, sent and received nothing after it left
        np.testing.assert_array_equal(env.scenario._totals[1], totals_before)
        assert int(env.scenario._cell_counts[1].sum()) == labeled_before
    env.reset(seed=5)  # a reset brings every robot back
    assert env.agents == env.possible_agents


def test_a_name_in_agents_that_is_not_a_robot_is_an_error():
    env = _make("datagames")
    env.reset(seed=0)
    actions = _actions(env, 0)
    env.agents.append("robot_9")
    with pytest.raises(ValueError, match="robot_9"):
        env.step(actions)


# ---------------------------------------------------------------------------------------------------- snapshots
SNAPSHOT_CASES = [("datagames", {}), ("datagames", {"action_mode": "selection", "perception.retrain_every": 3,
                                                    "world_seed": None, "stream.drift": 0.2}),
                  ("dual", {}), ("dual", {"world_seed": None, "perception.retrain_every": 2, "labeler": "random"}),
                  ("p2p", {}), ("p2p", {"perception.warm_start": True, "perception.retrain_steps": 5})]


@pytest.mark.parametrize("kind, overrides", SNAPSHOT_CASES,
                         ids=["datagames", "datagames-selection-retrain", "dual", "dual-retrain-random", "p2p",
                              "p2p-warm-start"])
def test_a_snapshot_restored_into_a_fresh_env_continues_bit_exactly(kind, overrides):
    env = _make(kind, **overrides)
    env.reset(seed=11)
    for r in range(2):
        env.step(_actions(env, r))
    snapshot = pickle.loads(pickle.dumps(env.snapshot()))  # plain data: survives a pickle round trip
    # p2p holds every robot's labeled set and model weights (docs/reliability.md): ~230 kB here
    assert len(pickle.dumps(snapshot)) < (400_000 if kind == "p2p" else 50_000)
    fresh = _make(kind, **overrides)  # never reset: restore alone makes it the same env
    fresh.restore(snapshot)
    assert fresh.agents == env.agents
    assert _play_alongside(env, fresh, 2) == 2
    for a, b in zip(env.reset(), fresh.reset()):  # the seed sequence is part of the snapshot
        _same(a, b)


def test_the_vector_env_snapshot_continues_bit_exactly():
    venv, fresh = vector_env(3, None, **DATAGAMES), vector_env(3, None, **DATAGAMES)
    venv.reset(seed=4)
    rng = np.random.default_rng(0)
    actions = rng.random((4, 3, 3, venv.single_action_space.shape[0]))
    venv.step(actions[0])
    snapshot = pickle.loads(pickle.dumps(venv.snapshot()))
    fresh.restore(snapshot)
    for r in range(1, 4):
        _same(venv.step(actions[r]), fresh.step(actions[r]), f"round {r}")
    with pytest.raises(SnapshotError, match="3 environments"):
        vector_env(2, None, **DATAGAMES).restore(snapshot)
    active = np.ones((3, 3), dtype=bool)
    active[1, 2] = False  # robot_2 of env 1 left: it uploads nothing, every other robot does
    venv.reset(seed=4)
    uploaded = venv.step(actions[0] * 0 + 1, active)[4]["uploaded_labels"]
    assert (uploaded[1, 2] == -1).all() and (uploaded[active] >= 0).any(axis=-1).all()


def test_the_default_digits_snapshot_is_small():
    env = datagames_env.parallel_env()
    env.reset(seed=0)
    for r in range(3):
        env.step(_actions(env, r))
    size = len(pickle.dumps(env.snapshot()))
    assert size < 100_000, f"default snapshot is {size} bytes"


def test_a_snapshot_of_another_config_scenario_or_version_is_refused():
    env = _make("datagames")
    env.reset(seed=0)
    snapshot = env.snapshot()
    with pytest.raises(SnapshotError, match="another config"):
        _make("datagames", n_cache=4).restore(snapshot)
    with pytest.raises(SnapshotError, match="version 0"):
        _make("datagames").restore(dataclasses.replace(snapshot, version=0))
    with pytest.raises(SnapshotError, match="scenario 'datagames_v0'"):
        _make("dual").restore(snapshot)
    with pytest.raises(TypeError, match="Snapshot"):
        env.restore({"state": 1})
    with pytest.raises(RuntimeError, match="before reset"):
        _make("dual").snapshot()


_RESTORE_ELSEWHERE = """
import pickle, sys
sys.path.insert(0, sys.argv[2])
from test_scenario_reliability import _actions, _make, _same
for kind, overrides, snapshot, outputs in pickle.load(open(sys.argv[1], "rb")):
    env = _make(kind, **overrides)
    env.restore(snapshot)
    for r, expected in enumerate(outputs, start=2):
        _same(env.step(_actions(env, r)), expected, f"{kind} round {r}")
print("restored")
"""


def test_a_snapshot_restores_bit_exactly_in_another_process(tmp_path):
    """In one process the worlds' model caches answer a restore; a fresh process retrains what the snapshot leaves
    out (cloud-game and dual models), so this holds the claim that those rebuilds are deterministic."""
    import pathlib
    import subprocess
    import sys

    cases = []
    # p2p is left out: its snapshot carries the weights, nothing is retrained on restore
    for kind, overrides in [("datagames", {"perception.retrain_every": 1}), ("dual", {"world_seed": None})]:
        env = _make(kind, **overrides)
        env.reset(seed=11)
        for r in range(2):
            env.step(_actions(env, r))
        snapshot, outputs, r = env.snapshot(), [], 2
        while env.agents:
            outputs.append(env.step(_actions(env, r)))
            r += 1
        cases.append((kind, overrides, snapshot, outputs))
    path = tmp_path / "snapshots.pkl"
    path.write_bytes(pickle.dumps(cases))
    tests_dir = pathlib.Path(__file__).parent
    done = subprocess.run([sys.executable, "-c", _RESTORE_ELSEWHERE, str(path), str(tests_dir)],
                          cwd=tests_dir.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "restored" in done.stdout, done.stderr[-3000:]
