"""Issue 16, faces / PettingZoo semantics / snapshots: the AEC face copies actions, dropout with rejoin passes
PettingZoo's own API tests, info arrays are writable and per robot, actions that are not arrays name the robot,
snapshots are validated before anything changes. Tiny configs only; the promises are in docs/reliability.md."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test

from datagames_env.data.datasets import from_arrays
from datagames_env.faces.pettingzoo import aec_of
from datagames_env.faces.vector import vector_env
import datagames_env
from datagames_env.scenarios.base import SnapshotError
from test_scenario_reliability import DATAGAMES, _actions, _make, _play_alongside, _same

KINDS = ["datagames", "dual", "p2p"]
DROPOUT = {"faults.dropout": 0.5, "faults.rejoin": 0.5, "rounds": 6}


# ----------------------------------------------------------------------------------------- AEC copies actions
@pytest.mark.parametrize("container", ["array", "list"])
def test_the_aec_face_copies_an_action_when_it_checks_it(container):
    """An action buffer reused (or a list changed) after its step must not reach the round's resolution."""
    env, twin = aec_of(_make("datagames")), aec_of(_make("datagames"))
    env.reset(seed=2), twin.reset(seed=2)
    for r in range(2):
        actions = _actions(env, r)
        for agent in list(env.agents):
            assert env.agent_selection == twin.agent_selection == agent
            buffer = actions[agent].copy() if container == "array" else actions[agent].tolist()
            env.step(buffer)
            twin.step(actions[agent].copy())
            if container == "array":
                buffer[:] = np.nan
            else:
                buffer[0] = float("nan")
                buffer.append(1.0)
        for agent in env.possible_agents:
            assert env.rewards[agent] == twin.rewards[agent]
            _same(env.observe(agent), twin.observe(agent))


# -------------------------------------------------------------------------------------- dropout with rejoin
def _count_offline(env) -> int:
    """Play one seeded episode; how many (round, robot) pairs were offline, checking the semantics on the way."""
    observations, infos = env.reset(seed=0)
    assert all(info["online"] for info in infos.values())
    offline, r = 0, 0
    while env.agents:
        assert env.agents == env.possible_agents  # a fixed agent set: offline robots stay in agents
        observations, rewards, terminations, truncations, infos = env.step(_actions(env, r))
        r += 1
        assert set(observations) == set(rewards) == set(infos) == set(env.possible_agents)
        last = r == env.config.rounds
        assert all(terminations[a] == last and not truncations[a] for a in observations)
        offline += sum(not info["online"] for info in infos.values())
    return offline


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_with_rejoin_passes_pettingzoo_api_tests(kind):
    """PettingZoo forbids reviving an agent that terminated ("agent cannot be revived once dead"): an offline
    robot stays in ``agents`` with ``info["online"]`` False, and its action is ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parallel_api_test(_make(kind, **DROPOUT), num_cycles=10)
        api_test(aec_of(_make(kind, **DROPOUT)), num_cycles=10)
    assert _count_offline(_make(kind, **DROPOUT)) > 0  # the faults fired in this configuration


def test_an_offline_robot_acts_with_the_neutral_action_and_may_omit_it():
    """While offline a robot's action changes nothing (any action, or none, gives the same episode)."""
    zeros, wild, absent = (_make("datagames", **DROPOUT) for _ in range(3))
    runs = {id(e): [] for e in (zeros, wild, absent)}
    for env in (zeros, wild, absent):
        _, infos = env.reset(seed=0)
        r = 0
        while env.agents:
            actions = _actions(env, r)
            for agent, info in infos.items():
                if not info["online"]:
                    if env is zeros:
                        actions[agent] = np.zeros_like(actions[agent])
                    elif env is wild:
                        actions[agent] = np.ones_like(actions[agent])
                    else:
                        del actions[agent]
            out = env.step(actions)
            infos = out[4]
            runs[id(env)].append(out)
            r += 1
    offline = sum(not i["online"] for step in runs[id(zeros)] for i in step[4].values())
    assert offline > 0
    for a, b, c in zip(runs[id(zeros)], runs[id(wild)], runs[id(absent)]):
        _same(a, b)
        _same(a, c)
    ledger = zeros.ledger()  # an offline robot uploads nothing in the rounds it is offline
    online = {(r, i): True for r in range(zeros.config.rounds) for i in range(zeros.config.n_robots)}
    for r, step in enumerate(runs[id(zeros)][:-1]):
        for agent, info in step[4].items():
            online[(r + 1, int(agent.split("_")[1]))] = bool(info["online"])
    for r, robot in zip(ledger["round"], ledger["robot"]):
        assert online[(int(r), int(robot))]


# ------------------------------------------------------------------------------------------- conventions
@pytest.mark.parametrize("kind", KINDS)
def test_metadata_has_render_fps(kind):
    env = _make(kind)
    assert isinstance(env.metadata.get("render_fps"), (int, float)) and env.metadata["render_fps"] > 0
    assert aec_of(env).metadata["render_fps"] == env.metadata["render_fps"]


def _check_info_arrays(infos: dict) -> None:
    arrays = [(agent, key, value) for agent, info in infos.items() for key, value in info.items()
              if isinstance(value, np.ndarray)]
    assert arrays
    for agent, key, value in arrays:
        assert value.flags.writeable, f"{agent}.{key} is read-only"
    for k, (agent, key, value) in enumerate(arrays):  # every robot owns its arrays
        for other, other_key, other_value in arrays[k + 1:]:
            if other != agent:
                assert not np.shares_memory(value, other_value), f"{agent}.{key} shares memory with {other}.{other_key}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_info_array_is_writable_and_owned_by_its_robot(kind):
    """TorchRL's PettingZooWrapper warns about read-only arrays; a robot's info must not alias another's, and a
    user writing into an info changes nothing in the env."""
    env, twin = _make(kind), _make(kind)
    _, infos = env.reset(seed=1)
    twin.reset(seed=1)
    _check_info_arrays(infos)
    for r in range(2):
        infos = env.step(_actions(env, r))[4]
        twin.step(_actions(twin, r))
        _check_info_arrays(infos)
        for info in infos.values():  # scribble over everything handed out
            for value in info.values():
                if isinstance(value, np.ndarray):
                    value[...] = 7
    _play_alongside(env, twin, 2)


def test_vector_env_info_arrays_are_writable():
    venv = vector_env(2, None, **DATAGAMES)
    _, infos = venv.reset(seed=0)
    steps = [infos, venv.step(np.full((2, 3, venv.single_action_space.shape[0]), 0.5))[4]]
    for infos in steps:
        for key, value in infos.items():
            if isinstance(value, np.ndarray):
                assert value.flags.writeable, key


# ------------------------------------------------------------------------------------------ action errors
@pytest.mark.parametrize("bad", ["abc", {"share": 1.0}, None, [[0.1], [0.2, 0.3]]],
                         ids=["string", "dict", "none", "ragged"])
def test_an_action_that_is_not_an_array_names_the_robot(bad):
    env = _make("datagames")
    env.reset(seed=0)
    actions = _actions(env, 0)
    actions["robot_1"] = bad
    with pytest.raises(ValueError, match="robot_1"):
        env.step(actions)
    env.step(_actions(env, 0))  # nothing changed: the env goes on
    aec = aec_of(_make("datagames"))
    aec.reset(seed=0)
    aec.step(_actions(aec, 0)["robot_0"])
    with pytest.raises(ValueError, match="robot_1"):
        aec.step(bad)
    aec.step(_actions(aec, 0)["robot_1"])
    assert aec.agent_selection == "robot_2"


def test_a_vector_active_mask_of_the_wrong_shape_names_the_expected_shape():
    venv = vector_env(2, None, **DATAGAMES)
    venv.reset(seed=0)
    actions = np.full((2, 3, venv.single_action_space.shape[0]), 0.5)
    for mask in (np.ones(5, bool), np.ones((3, 2), bool), np.ones((2, 3, 1), bool)):
        with pytest.raises(ValueError, match=r"active.*\(2, 3\)"):
            venv.step(actions, mask)
    venv.step(actions, np.ones((2, 3), bool))


# ------------------------------------------------------------------------------------------------ snapshots
def test_a_snapshot_is_refused_by_an_env_over_other_data_of_the_same_name():
    rng = np.random.default_rng(0)
    features = rng.random((240, 16)).astype(np.float32)
    labels = np.arange(240) % 4
    small = {"n_robots": 2, "rounds": 3, "obs_per_round": 20, "n_cache": 2, "initial_cloud_size": 20}
    env = datagames_env.parallel_env(None, dataset=from_arrays(features, labels, name="mine"), **small)
    env.reset(seed=0)
    env.step(_actions(env, 0))
    snapshot = env.snapshot()
    shuffled = datagames_env.parallel_env(
        None, dataset=from_arrays(features[rng.permutation(240)], labels, name="mine"), **small)
    with pytest.raises(SnapshotError, match="data"):
        shuffled.restore(snapshot)
    assert shuffled.agents == []  # nothing changed: still never reset
    same = datagames_env.parallel_env(None, dataset=from_arrays(features.copy(), labels, name="mine"), **small)
    same.restore(snapshot)  # equal content under the same name is the same env
    _play_alongside(env, same, 1)


def _tampered(snapshot, path: tuple, value):
    """A deep copy of ``snapshot`` with the entry at ``path`` (attribute, then keys) replaced."""
    snapshot = copy.deepcopy(snapshot)
    holder = getattr(snapshot, path[0])
    for key in path[1:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return snapshot


TAMPERING = [
    ("datagames", ("state", "core", "round_index"), -5, "round_index"),
    ("datagames", ("state", "core", "round_index"), 99, "round_index"),
    ("datagames", ("state", "core", "mixes"), np.ones((1, 2, 10)), "mixes"),
    ("datagames", ("state", "history"), [1.0], "history"),
    ("datagames", ("face", "agents"), ["robot_0", "robot_7"], "agents"),
    ("datagames", ("face", "seed_rng"), {"bit_generator": "PCG64"}, "seed_rng"),
    ("dual", ("state", "round_index"), -5, "round_index"),
    ("dual", ("state", "round_index"), 99, "round_index"),
    ("dual", ("face", "agents"), ["robot_0", "robot_7"], "agents"),
    ("p2p", ("state", "round_index"), 99, "round_index"),
    ("p2p", ("face", "agents"), ["robot_0", "robot_7"], "agents"),
]


@pytest.mark.parametrize("kind, path, value, field", TAMPERING,
                         ids=[f"{k}-{p[-1]}={v if isinstance(v, int) else 'x'}" for k, p, v, _ in TAMPERING])
def test_a_tampered_snapshot_is_refused_and_changes_nothing(kind, path, value, field):
    env, clean = _make(kind), _make(kind)
    env.reset(seed=3), clean.reset(seed=3)
    env.step(_actions(env, 0)), clean.step(_actions(clean, 0))
    snapshot = pickle.loads(pickle.dumps(env.snapshot()))
    env.step(_actions(env, 1)), clean.step(_actions(clean, 1))
    with pytest.raises(SnapshotError, match=field):
        env.restore(_tampered(snapshot, path, value))
    assert env.agents == clean.agents
    np.testing.assert_array_equal(env.state(), clean.state())
    assert _play_alongside(env, clean, 2) == 2  # the rest of the episode equals one that never saw it
    env.restore(snapshot)  # the untampered snapshot still restores
    assert env.agents == env.possible_agents


def test_a_tampered_vector_snapshot_is_refused_and_changes_nothing():
    venv, clean = vector_env(2, None, **DATAGAMES), vector_env(2, None, **DATAGAMES)
    actions = np.random.default_rng(0).random((4, 2, 3, venv.single_action_space.shape[0]))
    venv.reset(seed=1), clean.reset(seed=1)
    venv.step(actions[0]), clean.step(actions[0])
    snapshot = venv.snapshot()
    for path, value in ((("state", "round_index"), 99), (("state", "round_index"), -1),
                        (("state", "stream_positions"), np.zeros(3))):
        if path[-1] not in snapshot.state:
            continue
        with pytest.raises(SnapshotError, match=path[-1]):
            venv.restore(_tampered(snapshot, path, value))
    for r in range(1, 4):
        _same(venv.step(actions[r]), clean.step(actions[r]), f"round {r}")


def test_restore_says_snapshots_are_pickles():
    from datagames_env.faces.base import FleetParallelEnv

    for method in (FleetParallelEnv.restore, vector_env(1, None, **DATAGAMES).restore):
        assert "pickle" in method.__doc__ and "untrusted" in method.__doc__


@pytest.mark.parametrize("kind", KINDS)
def test_an_episode_goes_on_while_every_robot_is_offline(kind):
    """With every robot offline nobody acts (an empty action dict), and the episode still runs to its end."""
    env = _make(kind, **{"faults.dropout": 1.0, "faults.rejoin": 0.0})
    _, infos = env.reset(seed=0)
    r = 0
    while env.agents:
        actions = {a: x for a, x in _actions(env, r).items() if infos[a]["online"]}
        assert (not actions) == (r > 0)
        observations, rewards, _, _, infos = env.step(actions)
        assert all(np.isfinite(v) for v in rewards.values())
        assert not any(info["online"] for info in infos.values()) or not env.agents
        r += 1
    assert r == env.config.rounds


def test_the_harness_hands_a_policy_only_the_online_robots():
    from datagames_env.harness.episode import run_episode
    from datagames_env.policy import make_policy

    env = _make("datagames", **DROPOUT)
    inner = make_policy("greedy", env)
    seen = []

    class Spy:
        name = "spy"

        def reset(self, seed):
            inner.reset(seed)

        def act(self, observations, infos):
            assert set(observations) == set(infos) and all(info["online"] for info in infos.values())
            seen.append(len(observations))
            return inner.act(observations, infos)

    episode = run_episode(env, Spy(), seed=0)
    assert len(episode["rounds"]) == env.config.rounds + 1
    assert min(seen) < env.config.n_robots  # some round had a robot offline
