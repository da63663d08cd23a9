"""Learned communication with at most 3 sweeps (issue 18): Interactive capped at K sweeps, Gauss-Seidel or Jacobi
(``baselines.solvers.solve_interactive(order=...)``), and the structured action of ``--model sweep-fraction``
(``datagames_env.faces.comm.interactive_fraction_shares``: a learned fraction per robot, then the solver's sweeps)."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.solvers import Channel, solve_greedy, solve_interactive
from datagames_env.faces.comm import interactive_fraction_shares, sweep_messages

SMALL = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 2}
ray_group = pytest.mark.xdist_group("ray")


def _instance(seed, b=2, n=6, c=5):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(c, 0.4), size=(b, n, c)).transpose(0, 1, 3, 2)  # columns are p(y | yhat = j)
    cloud = rng.integers(0, 15, (b, c)).astype(float)
    available = rng.integers(0, 20, (b, n, c)).astype(float)
    return P, cloud, np.full(c, 30.0), available


def test_default_order_is_gauss_seidel_and_jacobi_answers_the_last_sweep():
    P, cloud, target, available = _instance(0)
    P, cloud, available = P[0], cloud[0], available[0]
    default = solve_interactive(P, cloud, target, 3, available=available, max_sweeps=2)
    explicit = solve_interactive(P, cloud, target, 3, available=available, max_sweeps=2, order="gauss-seidel")
    assert np.array_equal(default.actions, explicit.actions) and default.messages == explicit.messages
    jacobi = solve_interactive(P, cloud, target, 3, available=available, max_sweeps=1, order="jacobi")
    assert jacobi.messages == solve_interactive(P, cloud, target, 3, available=available, max_sweeps=1).messages
    # one Jacobi sweep: every robot best-responds (Greedy's solver on cloud + the others) to the Greedy start
    start = solve_greedy(P, cloud, target, 3, available)
    contributions = np.einsum("nyj,nj->ny", P, start)
    for i in range(P.shape[0]):
        others = contributions.sum(axis=0) - contributions[i]
        alone = solve_greedy(P[i:i + 1], cloud + others, target, 3, available[i:i + 1])[0]
        np.testing.assert_allclose(P[i] @ jacobi.actions[i], P[i] @ alone, rtol=0, atol=1e-7)


def test_order_is_checked_before_solving():
    P, cloud, target, available = _instance(1)
    with pytest.raises(ValueError, match="order"):
        solve_interactive(P[0], cloud[0], target, 3, available=available[0], order="random")
    with pytest.raises(ValueError, match="Gauss-Seidel"):
        solve_interactive(P[0], cloud[0], target, 3, available=available[0], order="jacobi",
                          channel=Channel(rng=np.random.default_rng(0)))


@pytest.mark.parametrize("sweeps", [1, 2, 3])
def test_fraction_one_is_interactive_capped_at_k_sweeps(sweeps):
    P, cloud, target, available = _instance(2)
    shares = interactive_fraction_shares(P, cloud, target, np.ones(P.shape[:2]), 3, available, sweeps)
    for e in range(P.shape[0]):
        capped = solve_interactive(P[e], cloud[e], target, 3, available=available[e], max_sweeps=sweeps, tol=1e-12)
        np.testing.assert_allclose(shares[e] * 3, capped.actions, rtol=0, atol=1e-8)
        # broadcast="all", as Interactive counts (it may stop early; the fixed protocol always runs its K sweeps)
        assert sweep_messages(P.shape[1], capped.sweeps) == capped.messages <= sweep_messages(P.shape[1], sweeps)


def test_fraction_map_bounds_and_errors():
    P, cloud, target, available = _instance(3)
    zero = interactive_fraction_shares(P, cloud, target, np.zeros(P.shape[:2]), 3, available, 2)
    assert not zero.any()
    half = interactive_fraction_shares(P, cloud, target, np.full(P.shape[:2], 0.5), 3, available, 2)
    assert half.min() >= 0.0 and half.max() <= 1.0
    assert np.all(half.sum(axis=-1) * 3 <= 3 + 1e-9)  # the robot's budget
    with pytest.raises(ValueError, match="fraction"):
        interactive_fraction_shares(P, cloud, target, np.full(P.shape[:2], 1.5), 3, available, 2)
    with pytest.raises(ValueError, match="message_sweeps"):
        interactive_fraction_shares(P, cloud, target, np.ones(P.shape[:2]), 3, available, 4)
    with pytest.raises(ValueError, match="available"):
        interactive_fraction_shares(P, cloud, target, np.ones(P.shape[:2]), 3, available[:, :1], 2)


def test_sweep_fraction_needs_sweeps():
    pytest.importorskip("ray.rllib")
    from agents.rllib_train import TrainSettings, build_ppo_config

    with pytest.raises(ValueError, match="--message-sweeps 1..3"):
        build_ppo_config(TrainSettings(config="default", overrides=dict(SMALL), model="sweep-fraction",
                                       vector_runner=True))


@ray_group
def test_sweep_fraction_trains_and_its_checkpoint_evaluates_through_rllib(tmp_path, monkeypatch, one_torch_thread,
                                                                          play_moved_checkpoint):
    """Two PPO updates; ``rllib:`` plays the checkpoint through the same map and counts Interactive's messages."""
    pytest.importorskip("ray.rllib")
    import ray

    from agents.rllib_train import TrainSettings, init_ray, train

    monkeypatch.chdir(tmp_path)
    ray.shutdown()
    init_ray(None, 1)
    try:
        result = train(TrainSettings(config="default", overrides=dict(SMALL), model="sweep-fraction", message_sweeps=2,
                                     vector_runner=True, train_batch_size=36, minibatch_size=18, num_epochs=1,
                                     iterations=2, progress=False, checkpoint_every=0, out="runs"))
    finally:
        ray.shutdown()
    assert [h["agent_steps"] for h in result["history"]] == [36, 72]  # the sweeps are no agent steps
    env, policy, record = play_moved_checkpoint(result, "sweep-fraction", "default", SMALL)
    assert record["messages"] == SMALL["rounds"] * sweep_messages(SMALL["n_robots"], 2)
    observations, infos = env.reset(seed=301)
    actions = policy.act(observations, infos)
    fractions = policy._decide(observations)
    agents = list(actions)
    first = infos[agents[0]]
    expected = interactive_fraction_shares(
        np.stack([infos[a]["feasible_matrix"] for a in agents])[None], np.asarray(first["cloud_counts"])[None],
        np.asarray(first["target_counts"]), np.array([[fractions[a][0] for a in agents]]), SMALL["n_cache"],
        np.stack([infos[a]["available"] for a in agents])[None], 2)[0]
    for k, agent in enumerate(agents):
        assert env.action_space(agent).contains(actions[agent])
        np.testing.assert_allclose(actions[agent], expected[k], rtol=0, atol=1e-6)
