"""The scenario table is where the package looks a scenario up: its parallel face class, its default config (of a
bare config loader, of the CLI), the default scenario, its state bounds; and the batched fraction maps' one shape
check names the bad array as before."""

from __future__ import annotations

import numpy as np
import pytest

from datagames_env.scenarios import DEFAULT_SCENARIO, SCENARIOS, entry_point, load_scenario_config, scenario_of


def test_every_row_has_its_parallel_face_class():
    from datagames_env.faces.base import FleetParallelEnv
    from datagames_env.faces.pettingzoo import PARALLEL_CLASSES, DataGamesParallelEnv, DualParallelEnv, P2PParallelEnv

    assert set(PARALLEL_CLASSES) == set(SCENARIOS)
    for name, cls in PARALLEL_CLASSES.items():
        assert issubclass(cls, FleetParallelEnv) and cls.scenario_class.name == name
    assert (PARALLEL_CLASSES["datagames"], PARALLEL_CLASSES["p2p"], PARALLEL_CLASSES["dual"]) == (
        DataGamesParallelEnv, P2PParallelEnv, DualParallelEnv)


def test_no_config_is_the_default_scenario_and_each_loader_defaults_to_its_rows_config():
    assert DEFAULT_SCENARIO in SCENARIOS
    assert scenario_of(None) == scenario_of({}) == DEFAULT_SCENARIO
    for name, info in SCENARIOS.items():
        assert load_scenario_config(None, scenario=name) == entry_point(info.config_loader)(info.default_config)


def test_the_cli_defaults_to_the_default_scenarios_config_and_aliases_the_others():
    from datagames_env.harness.cli import build_parser, scenario_aliases

    assert build_parser().parse_args(["run"]).config == SCENARIOS[DEFAULT_SCENARIO].default_config
    assert scenario_aliases() == {name: info.default_config for name, info in SCENARIOS.items()
                                  if name != DEFAULT_SCENARIO}
    assert build_parser("p2p_default").parse_args(["eval"]).config == "p2p_default"


def test_state_bounds_are_a_pair_or_none():
    for info in SCENARIOS.values():
        assert info.state_bounds is None or (len(info.state_bounds) == 2 and info.state_bounds[0] < info.state_bounds[1])
    assert SCENARIOS["datagames"].state_bounds == (-1.0, 1.0)


def _problem(b=2, n=3, c=4):
    rng = np.random.default_rng(0)
    feasible = np.broadcast_to(np.eye(c), (b, n, c, c)).copy()
    return feasible, rng.random((b, c)), rng.random((b, c)) + 1.0, np.ones((b, n, c))


@pytest.mark.parametrize("which", ["class", "sweep"])
def test_both_batched_maps_name_each_bad_shape(which):
    from baselines.fraction import class_fraction_shares
    from baselines.sweep_fraction import interactive_fraction_shares

    def call(feasible, cloud, target, available):
        if which == "class":
            return class_fraction_shares(feasible, cloud, target, np.full((2, 3, 4), 0.5), 2, available)
        return interactive_fraction_shares(feasible, cloud, target, np.full((2, 3), 0.5), 2, available, 1)

    feasible, cloud, target, available = _problem()
    assert call(feasible, cloud, target, available).shape == (2, 3, 4)
    with pytest.raises(ValueError, match=r"feasible must have shape \(B, N, C, C\), got \(2, 3, 4\)"):
        call(feasible[..., 0], cloud, target, available)
    with pytest.raises(ValueError, match=r"cloud must have shape \(B, C\) = \(2, 4\), got \(4,\)"):
        call(feasible, cloud[0], target, available)
    with pytest.raises(ValueError, match=r"available must have shape \(B, N, C\) = \(2, 3, 4\), got \(3, 4\)"):
        call(feasible, cloud, target, available[0])
    if which == "sweep":  # the sweep map needs it
        with pytest.raises(ValueError, match=r"available must have shape \(B, N, C\) = \(2, 3, 4\), got \(\)"):
            call(feasible, cloud, target, None)
    else:
        assert call(feasible, cloud, target, None).shape == (2, 3, 4)
