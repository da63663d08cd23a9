"""Issue 16 (hardening): a fault that never fires must not change results. Interactive over a faulty channel whose
faults (almost surely) never fire plans exactly as the fault-free protocol: the same sweeps, caps and tolerance,
the same actions. Two code paths are compared with a stated tolerance (TOL), never bit for bit."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from datagames_env.policy import make_policy
import datagames_env

from baselines.solvers import Channel, solve_interactive, solve_interactive_faulty

NEVER = 1e-12  # a fault probability that never fires in these runs
TOL = 1e-9
SEEDS = [0, 1, 2]
NEVER_FIRING = {
    "message_loss": {"faults.message_loss": NEVER},
    "message_delay": {"faults.message_delay": NEVER},
    "liars": {"faults.liars": NEVER},  # round(1e-12 * N) = 0 liars
    "bounded": {"faults.robust": "median"},  # bounded messages with no fault: honest messages are within the bound
}


def _interactive_episode(seed: int, **overrides) -> dict:
    """Whole episode of the ``interactive`` policy on config ``default``: every round's actions and sweeps."""
    env = datagames_env.parallel_env(None, **overrides)
    policy = make_policy("interactive", env)
    observations, infos = env.reset(seed=seed)
    policy.reset(seed)
    actions, sweeps, converged = [], [], []
    while env.agents:
        act = policy.act(observations, infos)
        actions.append(np.stack([act[a] for a in env.agents]))
        sweeps.append(policy.last_stats["sweeps"])
        converged.append(policy.last_stats["converged"])
        observations, _, _, _, infos = env.step(act)
    distance = float(next(iter(infos.values()))["distance"])
    return {"actions": actions, "sweeps": sweeps, "converged": converged, "distance": distance}


@pytest.fixture(scope="module")
def fault_free() -> dict:
    return {seed: _interactive_episode(seed) for seed in SEEDS}


@pytest.mark.parametrize("kind", list(NEVER_FIRING))
def test_a_channel_whose_faults_never_fire_plays_the_fault_free_episode(kind, fault_free):
    for seed in SEEDS:
        clean, faulty = fault_free[seed], _interactive_episode(seed, **NEVER_FIRING[kind])
        assert faulty["sweeps"] == clean["sweeps"], f"{kind}, seed {seed}: sweeps per round"
        assert faulty["converged"] == clean["converged"], f"{kind}, seed {seed}"
        for r, (a, b) in enumerate(zip(clean["actions"], faulty["actions"])):
            np.testing.assert_allclose(b, a, rtol=0, atol=TOL, err_msg=f"{kind}, seed {seed}, round {r}")
        assert faulty["distance"] == pytest.approx(clean["distance"], rel=TOL, abs=TOL), f"{kind}, seed {seed}"


def _instance(seed: int, n: int = 20, c: int = 10):
    """A fleet that cannot reach the target (uniform, 5 rounds' worth of budget above the cloud): budgets bind and
    best responses contract slowly, so Interactive runs to its sweep cap (benchmarks/bench_solvers.py)."""
    rng = np.random.default_rng(seed)
    accuracy = rng.uniform(0.6, 0.95, c)
    confusion = (1.0 - accuracy)[:, None] * rng.dirichlet(np.ones(c), size=c)  # rows: p(yhat | y)
    confusion[np.arange(c), np.arange(c)] += accuracy
    joint = rng.dirichlet(np.full(c, 0.5), size=n)[:, :, None] * confusion[None]  # (n, y, yhat)
    P = joint / joint.sum(axis=1, keepdims=True)
    available = np.stack([rng.multinomial(200, m / m.sum()) for m in joint.sum(axis=1)]).astype(float)
    cloud = rng.multinomial(200, rng.dirichlet(np.full(c, 0.5))).astype(float)
    n_cache = 20.0
    target = np.full(c, (cloud.sum() + 5 * n * n_cache) / c)
    return P, cloud, target, n_cache, available


def test_the_faulty_channel_has_the_fault_free_sweep_cap_and_tolerance():
    plain, faulty = inspect.signature(solve_interactive), inspect.signature(solve_interactive_faulty)
    assert faulty.parameters["max_sweeps"].default == plain.parameters["max_sweeps"].default
    assert faulty.parameters["tol"].default == plain.parameters["tol"].default


@pytest.mark.parametrize("channel", [{"message_loss": NEVER}, {"message_delay": NEVER},
                                     {"liars": np.zeros(20, dtype=bool), "lie_scale": 3.0}, {"bounded": True}])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_solver_over_a_never_firing_channel_is_the_fault_free_solver(channel, seed):
    """Hard instances (N = 20, C = 10) run to the sweep cap or stop on the tolerance: either way the same
    sweeps, the same history and the same actions."""
    P, cloud, target, n_cache, available = _instance(seed)
    for kwargs in ({}, {"tol": 1e-3}, {"max_sweeps": 7}):
        clean = solve_interactive(P, cloud, target, n_cache, available=available, **kwargs)
        faulty = solve_interactive_faulty(P, cloud, target, n_cache, available=available,
                                          rng=np.random.default_rng(seed), **channel, **kwargs)
        assert (faulty.sweeps, faulty.converged) == (clean.sweeps, clean.converged), kwargs
        assert faulty.messages == clean.messages
        np.testing.assert_allclose(faulty.history, clean.history, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(faulty.actions, clean.actions, rtol=0, atol=TOL)


def test_the_reference_backend_takes_the_same_channel():
    """cvxpy (the KL backend) runs the same sweep rules: a never-firing channel changes nothing, a lossy one
    changes the beliefs the robots act on."""
    P, cloud, target, n_cache, available = _instance(0, n=4, c=3)
    clean = solve_interactive(P, cloud, target, n_cache, available=available, backend="cvxpy", max_sweeps=5)
    never = solve_interactive_faulty(P, cloud, target, n_cache, available=available, backend="cvxpy", max_sweeps=5,
                                     rng=np.random.default_rng(0), message_loss=NEVER, message_delay=NEVER)
    assert (never.sweeps, never.converged) == (clean.sweeps, clean.converged)
    np.testing.assert_allclose(never.actions, clean.actions, rtol=0, atol=TOL)
    liars = np.array([True, False, False, False])
    native = solve_interactive_faulty(P, cloud, target, n_cache, available=available, max_sweeps=5,
                                      rng=np.random.default_rng(0), liars=liars, lie_scale=3.0)
    reference = solve_interactive_faulty(P, cloud, target, n_cache, available=available, backend="cvxpy",
                                         max_sweeps=5, rng=np.random.default_rng(0), liars=liars, lie_scale=3.0)
    assert native.loss == pytest.approx(reference.loss, rel=1e-5)


@pytest.mark.parametrize("bad, match", [({"message_loss": 1.5}, "message_loss"),
                                        ({"message_delay": -0.1}, "message_delay"),
                                        ({"delay_sweeps": 0}, "delay_sweeps"), ({"liars": [True]}, "liars"),
                                        ({"rng": 3}, "rng"), ({"lie_scale": np.nan}, "lie_scale")])
def test_a_bad_channel_is_refused_by_name(bad, match):
    P, cloud, target, n_cache, available = _instance(0, n=4, c=3)
    with pytest.raises(ValueError, match=match):
        solve_interactive_faulty(P, cloud, target, n_cache, **{"rng": np.random.default_rng(0), **bad})
    with pytest.raises(ValueError, match="broadcast"):
        solve_interactive(P, cloud, target, n_cache, broadcast="sum", channel=Channel(rng=np.random.default_rng(0)))
