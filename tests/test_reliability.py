"""Issue 12 (faults and hardening): every finding of the hostile-user probe, reproduced, and the promise of
docs/reliability.md that holds it. Fast tests only (small envs, no timing)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from datagames_env.config import ConfigError, load_config
from datagames_env.scenarios.dual import load_dual_config
from datagames_env.scenarios.p2p import load_p2p_config

# ------------------------------------------------------------------------------ non-finite / absurd config values
NAN, INF = math.nan, math.inf
BAD_DATAGAMES = [
    ({"target": {"kind": "proportions", "proportions": [NAN] + [1.0] * 9}}, "target.proportions"),
    ({"target": {"kind": "counts", "counts": [INF] + [1.0] * 9}}, "target.counts"),
    ({"target": {"total": INF}}, "target.total"),
    ({"stream": {"kind": "matrix", "mixes": [[NAN] + [1.0] * 9] * 10}}, "stream.mixes"),
    ({"stream": {"kind": "matrix", "mixes": [[INF] + [1.0] * 9] * 10}}, "stream.mixes"),
    ({"stream.alpha": INF}, "stream.alpha"),
    ({"perception.lr": INF}, "perception.lr"),
    ({"initial_cloud_alpha": INF}, "initial_cloud_alpha"),
    ({"initial_cloud_proportions": [NAN] + [1.0] * 9}, "initial_cloud_proportions"),
    ({"world_seed": -1}, "world_seed"),
    ({"perception.seed": -1}, "perception.seed"),
    ({"dataset.split_seed": -1}, "dataset.split_seed"),
    ({"n_robots": True}, "n_robots"),
    ({"n_cache": False}, "n_cache"),
]


@pytest.mark.parametrize("overrides, key", BAD_DATAGAMES, ids=[k for _, k in BAD_DATAGAMES])
def test_datagames_config_rejects_non_finite_and_absurd_values(overrides, key):
    with pytest.raises(ConfigError, match=f"'{key}"):
        load_config(None, **overrides)


BAD_SCENARIO = [
    ({"stream.alpha": INF}, "stream.alpha"), ({"initial_cloud_alpha": INF}, "initial_cloud_alpha"),
    ({"perception.lr": NAN}, "perception.lr"), ({"kernel_scale": INF}, "kernel_scale"),
    ({"world_seed": -1}, "world_seed"), ({"n_robots": True}, "n_robots"),
    ({"privacy.blur_sigma": INF}, "privacy.blur_sigma"),
]


@pytest.mark.parametrize("overrides, key", BAD_SCENARIO, ids=[k for _, k in BAD_SCENARIO])
def test_dual_config_rejects_non_finite_and_absurd_values(overrides, key):
    with pytest.raises(ConfigError, match=f"'{key}"):
        load_dual_config(None, **overrides)


@pytest.mark.parametrize("overrides, key", [
    ({"perception.lr": INF}, "perception.lr"), ({"world_seed": -1}, "world_seed"),
    ({"split_seed": -1}, "split_seed"), ({"share_fraction": NAN}, "share_fraction"),
    ({"rounds": True}, "rounds"), ({"robots": [{"stream": {"digits": NAN}, "initial_labeled": {"digits": 5}}] * 2},
                                   "robots.0.stream"),
])
def test_p2p_config_rejects_non_finite_and_absurd_values(overrides, key):
    with pytest.raises(ConfigError, match=f"'{key}"):
        load_p2p_config("p2p_default", **overrides)


def test_finite_configs_still_load():
    assert load_config(None, n_robots=3, **{"stream.alpha": 2, "target.total": 1e6}).n_robots == 3
    assert load_dual_config(None, world_seed=None).world_seed is None
    assert load_p2p_config("p2p_default", world_seed=7).world_seed == 7
