"""Every scenario behind one PettingZoo face: dispatch on the config's ``scenario`` key, the registry ids (parallel
and AEC), PettingZoo's own test utilities, infos with a fixed schema, and stepping inside ``torch.no_grad()``."""

from __future__ import annotations

import functools
import importlib
import types

import numpy as np
import pettingzoo
import pytest
import torch
from pettingzoo import test as pz

import datagames_env
from datagames_env.faces.pettingzoo import DualParallelEnv
from datagames_env.faces.pettingzoo import DataGamesParallelEnv
from datagames_env.faces.pettingzoo import P2PParallelEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# small and fast settings of each scenario (every key is a config key of that scenario)
SCENARIOS = {
    "datagames": ("default", {"n_robots": 3, "rounds": 3, "obs_per_round": 40, "n_cache": 2}),
    "p2p": ("p2p_default", {"rounds": 3, "obs_per_round": 30, "perception.train_steps": 40}),
    "dual": ("dual_default", {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 4, "label_budget": 6,
                              "perception.train_steps": 60}),
}
CLASSES = {"datagames": DataGamesParallelEnv, "p2p": P2PParallelEnv, "dual": DualParallelEnv}
REGISTRY = {"datagames": "datagames/DataGames-v0", "p2p": "datagames/P2P-v0", "dual": "datagames/Dual-v0"}


def _parallel(name: str, **kwargs):
    config, small = SCENARIOS[name]
    return datagames_env.parallel_env(config, **{**small, **kwargs})


def _aec(name: str, **kwargs):
    config, small = SCENARIOS[name]
    return datagames_env.env(config, **{**small, **kwargs})


def _random_actions(env, rng):
    return {a: rng.random(env.action_space(a).shape).astype(np.float32) for a in env.agents}


# ------------------------------------------------------------------------------------------------- one face
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_parallel_env_dispatches_on_the_scenario_key(name):
    env = _parallel(name)
    assert type(env) is CLASSES[name]
    aec = _aec(name)
    assert type(aec.unwrapped) is CLASSES[name]
    with pytest.raises(datagames_env.ConfigError, match="scenario: 'nope'"):
        datagames_env.parallel_env({"scenario": "nope"})


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_registry_has_parallel_and_aec(name):
    config, small = SCENARIOS[name]
    par = pettingzoo.make("parallel", REGISTRY[name], config=config, **small)
    aec = pettingzoo.make("aec", REGISTRY[name], config=config, **small)
    assert type(par) is CLASSES[name] and type(aec.unwrapped) is CLASSES[name]
    info = datagames_env.scenarios.SCENARIOS[name]
    module = importlib.import_module(info.module)
    # scenarios import no face: the faces are built from the table
    assert not any(hasattr(module, face) for face in ("parallel_env", "env", "raw_env"))
    # one face over one Scenario object: the named env class adds no behaviour of its own
    from datagames_env.faces.base import FleetParallelEnv
    from datagames_env.scenarios.base import Scenario

    from datagames_env.scenarios import entry_point
    from datagames_env.scenarios.batching import BatchOfOne

    if isinstance(par.scenario, BatchOfOne):  # the B = 1 view of the config's native batched scenario
        assert type(par.scenario.batched) is type(entry_point(info.batched, info.module)(par.config, 1))
    else:
        assert isinstance(par, FleetParallelEnv) and type(par.scenario) is getattr(module, info.scenario_class)
    assert isinstance(par.scenario, Scenario) and par.metadata["name"] == aec.metadata["name"]
    assert {k for k in vars(CLASSES[name]) if not k.startswith("__")} == {"scenario_class"}


# ------------------------------------------------------------------------------------ PettingZoo test suite
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_pettingzoo_api_tests(name):
    pz.parallel_api_test(_parallel(name), num_cycles=10)
    pz.api_test(_aec(name), num_cycles=10)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_pettingzoo_seed_tests(name):
    # seed_test compares every info of the AEC loop, reset included (NaN != NaN would fail it)
    pz.seed_test(functools.partial(_aec, name), num_cycles=10)
    pz.parallel_seed_test(functools.partial(_parallel, name), num_cycles=10)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_pettingzoo_max_cycles_and_render(name):
    config, small = SCENARIOS[name]
    small = {k: v for k, v in small.items() if k != "rounds"}  # max_cycles sets the rounds
    module = types.SimpleNamespace(parallel_env=functools.partial(datagames_env.parallel_env, config, **small),
                                   env=functools.partial(datagames_env.env, config, **small))
    pz.max_cycles_test(module)
    pz.render_test(functools.partial(_aec, name))


# ----------------------------------------------------------------------------------------- infos schema
def _schema(info: dict) -> dict:
    """key -> (kind, shape, dtype) of one robot's info; fails on anything that is not a number or an array."""
    out = {}
    for key, value in info.items():
        if isinstance(value, np.ndarray):
            assert value.dtype.kind in "biuf", f"info '{key}' has dtype {value.dtype}"
            assert not (value.dtype.kind == "f" and np.isnan(value).any()), f"info '{key}' holds NaN: {value}"
            out[key] = ("array", value.shape, value.dtype)
        else:
            assert isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)), \
                f"info '{key}' is a {type(value).__name__}, not a number"
            assert not (isinstance(value, (float, np.floating)) and np.isnan(value)), f"info '{key}' is NaN"
            out[key] = ("scalar",)
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_infos_have_a_fixed_schema_and_training_runs_under_no_grad(name):
    # perception.retrain_every=1: every scenario trains a model inside step (and the first one at reset);
    # TorchRL collectors do all of it inside torch.no_grad()
    extra = {"final_accuracy": True, "perception.retrain_every": 1} if name == "datagames" else {}
    env = _parallel(name, **extra)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        _, infos = env.reset(seed=3)
        reference = {a: _schema(info) for a, info in infos.items()}
        assert set(reference) == set(env.possible_agents)
        steps = 0
        while env.agents:
            _, _, _, _, infos = env.step(_random_actions(env, rng))
            steps += 1
            for agent, info in infos.items():
                assert _schema(info) == reference[agent], f"step {steps}, {agent}: keys or shapes changed"
    assert steps == SCENARIOS[name][1]["rounds"]
    assert torch.is_grad_enabled()


def test_p2p_rare_share_cached_is_zero_before_anything_was_cached():
    env = _parallel("p2p")
    _, infos = env.reset(seed=0)
    assert all(info["rare_share_cached"] == 0.0 and info["total_cached"] == 0 for info in infos.values())
