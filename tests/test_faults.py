"""Issue 12, faults as config: the ``faults`` block (dropout / rejoin, message loss, liars, robust aggregation).
Tiny configs only; semantics in docs/reliability.md ("Faults")."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from datagames_env.config import ConfigError
from datagames_env.scenarios.p2p import aggregate_votes
from test_scenario_reliability import _actions, _make, _play_alongside, _same

from baselines.solvers import bound_contributions, solve_interactive, solve_interactive_faulty

KINDS = ["datagames", "dual", "p2p"]


def _episode(env, seed: int) -> list:
    out = [env.reset(seed=seed)]
    r = 0
    while env.agents:
        out.append(env.step(_actions(env, r)))
        r += 1
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_the_faults_block_is_validated_and_errors_name_the_key(kind):
    with pytest.raises(ConfigError, match="faults.dropout"):
        _make(kind, **{"faults.dropout": 1.5})
    with pytest.raises(ConfigError, match="faults.robust"):
        _make(kind, **{"faults.robust": "mode"})
    with pytest.raises(ConfigError, match="faults.lossy"):
        _make(kind, **{"faults.lossy": 0.1})


@pytest.mark.parametrize("kind", ["datagames", "p2p"])
def test_fault_draws_never_shift_the_scenario(kind):
    """The fault path switched on with faults that (almost surely) never fire gives the fault-free episode
    bit for bit: the fault generators are separate, and p2p's vote table with mean aggregation is the old
    fraction. (Faults absent vs main: checked by hashing whole episodes in both trees, docs/results/faults.)"""
    never = {"faults.dropout": 1e-12, "faults.message_loss": 1e-12}
    plain, faulty = _make(kind), _make(kind, **never)
    assert faulty.scenario.faults is not None and plain.scenario.faults is None
    for a, b in zip(_episode(plain, 4), _episode(faulty, 4)):
        infos = b[-1]  # with dropout on, every info says whether its robot is online (here: always)
        assert all(infos[agent].pop("online") for agent in infos)
        _same(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_and_rejoin_follow_pettingzoo_semantics(kind):
    """An offline robot stays in ``agents`` and in every dict (PettingZoo forbids reviving a terminated agent);
    ``info["online"]`` says whether its next action counts (docs/reliability.md)."""
    env = _make(kind, **{"faults.dropout": 0.4, "faults.rejoin": 0.5, "rounds": 5})
    _, infos = env.reset(seed=1)
    assert all(info["online"] for info in infos.values())
    seen_drop = seen_rejoin = False
    r = 0
    while env.agents:
        online_before = {agent: infos[agent]["online"] for agent in env.agents}
        observations, rewards, terminations, truncations, infos = env.step(_actions(env, r))
        r += 1
        assert set(observations) == set(rewards) == set(terminations) == set(truncations) == set(infos)
        assert set(observations) == set(env.possible_agents)  # offline robots too
        ended = r == env.config.rounds
        assert all(terminations[a] == ended and not truncations[a] for a in observations)
        assert env.agents == ([] if ended else env.possible_agents)
        for agent in observations:
            assert env.observation_space(agent).contains(observations[agent])
            seen_drop |= online_before[agent] and not infos[agent]["online"]
            seen_rejoin |= not online_before[agent] and infos[agent]["online"]
    assert seen_drop and seen_rejoin
    _, infos = env.reset(seed=1)  # every robot is back online at reset
    assert env.agents == env.possible_agents and all(info["online"] for info in infos.values())
    # the same seed draws the same faults
    again = _make(kind, **{"faults.dropout": 0.4, "faults.rejoin": 0.5, "rounds": 5})
    for a, b in zip(_episode(env, 1), _episode(again, 1)):
        _same(a, b)


def test_a_snapshot_keeps_the_fault_state():
    faults = {"faults.dropout": 0.3, "faults.rejoin": 0.5, "faults.message_loss": 0.3, "faults.liars": 0.34}
    env = _make("p2p", **faults)
    env.reset(seed=2)
    env.step(_actions(env, 0))
    snapshot = pickle.loads(pickle.dumps(env.snapshot()))
    fresh = _make("p2p", **faults)
    fresh.restore(snapshot)
    assert fresh.agents == env.agents
    np.testing.assert_array_equal(fresh.liars, env.liars)
    _play_alongside(env, fresh, 1)


def test_p2p_message_loss_liars_and_robust_votes():
    env = _make("p2p", **{"faults.message_loss": 1.0})  # nothing arrives: no receiver gets, keeps or votes
    env.reset(seed=0)
    _, _, _, _, infos = env.step(_actions(env, 0))
    assert all(i["n_received"] == 0 and i["n_kept"] == 0 for i in infos.values())
    assert all(not i["feedback_utilities"].any() for i in infos.values())
    honest, lying = _make("p2p"), _make("p2p", **{"faults.liars": 1.0})  # every robot lies: votes flip
    honest.reset(seed=0), lying.reset(seed=0)
    assert lying.liars.all()
    a, b = honest.step(_actions(honest, 0))[4], lying.step(_actions(lying, 0))[4]
    for agent in a:
        sent = a[agent]["sent_mask"]
        np.testing.assert_allclose(b[agent]["feedback_utilities"][sent], 1.0 - a[agent]["feedback_utilities"][sent])
        assert a[agent]["n_kept"] == b[agent]["n_kept"]  # liars keep what was really novel to them
    table = np.array([[1, 1, 0, 1, 1], [0, 0, 0, 1, np.nan], [1, np.nan, np.nan, np.nan, np.nan],
                      [np.nan] * 5, [1, 0, np.nan, np.nan, np.nan]], dtype=float)
    np.testing.assert_allclose(aggregate_votes(table, "mean"), [0.8, 0.25, 1.0, 0.0, 0.5])
    np.testing.assert_allclose(aggregate_votes(table, "median"), [1.0, 0.0, 1.0, 0.0, 0.5])
    np.testing.assert_allclose(aggregate_votes(table, "trimmed"), [1.0, 0.0, 1.0, 0.0, 0.5])


def test_interactive_over_a_faulty_channel():
    rng = np.random.default_rng(0)
    n, c, n_cache = 4, 3, 5.0
    P = rng.dirichlet(np.ones(c), size=(n, c)).transpose(0, 2, 1)  # columns sum to 1
    cloud, target = np.full(c, 2.0), np.full(c, 12.0)
    clean = solve_interactive(P, cloud, target, n_cache)
    perfect = solve_interactive_faulty(P, cloud, target, n_cache, rng=np.random.default_rng(1))
    assert perfect.converged and abs(perfect.loss - clean.loss) <= 1e-6 * max(1.0, clean.loss)
    liars = np.array([True, False, False, False])
    lied = solve_interactive_faulty(P, cloud, target, n_cache, rng=np.random.default_rng(1), liars=liars,
                                    lie_scale=3.0)
    bounded = solve_interactive_faulty(P, cloud, target, n_cache, rng=np.random.default_rng(1), liars=liars,
                                       lie_scale=3.0, bounded=True)
    assert lied.loss > clean.loss + 1e-6 and bounded.loss <= lied.loss
    np.testing.assert_allclose(bound_contributions(np.array([[3.0, 6.0, -1.0]]), 3.0), [[1.0, 2.0, 0.0]])
    lossy = solve_interactive_faulty(P, cloud, target, n_cache, rng=np.random.default_rng(1), message_loss=0.5)
    assert np.isfinite(lossy.loss) and lossy.messages > 0
    # every message a sweep late: the robots best-respond to the previous sweep all at once (Jacobi, not
    # Gauss-Seidel), and simultaneous best responses cycle here instead of converging
    late = solve_interactive_faulty(P, cloud, target, n_cache, rng=np.random.default_rng(1), message_delay=1.0)
    assert not late.converged and late.loss > clean.loss + 1e-3
    assert np.allclose(late.history[-4:-2], late.history[-2:])  # a two-sweep cycle
    # some messages late: stale beliefs cost sweeps, the protocol still ends at the optimum
    some = solve_interactive_faulty(P, cloud, target, n_cache, rng=np.random.default_rng(1), message_delay=0.3)
    assert some.converged and some.sweeps > perfect.sweeps
    assert abs(some.loss - clean.loss) <= 1e-4 * max(1.0, clean.loss)


def test_the_vector_env_refuses_dropout_rather_than_ignoring_it():
    from datagames_env.faces.vector import vector_env

    with pytest.raises(ConfigError, match="faults.dropout"):
        vector_env(2, None, **{"faults.dropout": 0.1, "n_robots": 2, "rounds": 2, "obs_per_round": 10})
