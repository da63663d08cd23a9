"""The Data Games baselines as policies that act in the environment (one protocol: ``datagames_env.policy``;
registered there by name as entry points, built with ``make_policy(name, env)``).

| policy        | reads                                                         | solves                          |
|---------------|---------------------------------------------------------------|---------------------------------|
| `greedy`      | each robot: its own estimated feasible matrix + availability  | Problem 2, robot by robot       |
| `interactive` | the same, plus the protocol's messages (others' P_k a_k)      | Algorithm 1 (best responses)    |
| `interactive-sum` | the same, messages are only the running sum (O(N))        | Algorithm 1, same actions       |
| `oracle`      | privileged truth via ``env.privileged_view()``                | Problem 1, all robots jointly   |
| `uniform`, `random` | see ``datagames_env.policy``                            |                                 |

Continuous solutions a_i (counts per predicted class, sum <= n_cache) become the environment's allocation
action a_i / n_cache; the environment rounds them by largest remainder. In selection mode the same
integer quotas become per-sample scores: the most confident samples of each predicted class up to its quota
score in [1, 2], every other sample in [0, 1).
"""

from __future__ import annotations

import numpy as np

from datagames_env.core import allocation_counts
from datagames_env.policy import CloudGamePolicyBase

from .solvers import Channel, solve_greedy, solve_interactive, solve_oracle


class _SolverPolicy(CloudGamePolicyBase):
    """Shared plumbing: stack the robots' infos, solve, convert counts to the env's action format."""

    def __init__(self, env, loss: str | None = None) -> None:
        super().__init__(env)
        self.env = env
        self.loss = loss or env.config.loss
        self.n_cache = env.config.n_cache
        self.last_stats: dict = {}
        if self.action_mode == "selection":
            lay = env.obs_layout
            self._samples = lay["samples"]
            self._obs_per_round = env.config.obs_per_round
            self._sample_width = env.core.sample_feature_dim
            self._prob_start = env.core.embedding_dim

    def _problem(self, infos: dict, agents: list[str]):
        first = infos[agents[0]]
        feasible = np.stack([infos[a]["feasible_matrix"] for a in agents])
        available = np.stack([infos[a]["available"] for a in agents]).astype(np.float64)
        return feasible, np.asarray(first["cloud_counts"], float), np.asarray(first["target_counts"], float), available

    def _solve(self, observations, infos, agents) -> np.ndarray:
        raise NotImplementedError

    def act(self, observations, infos):
        agents = list(observations)
        counts = self._solve(observations, infos, agents)  # (N, C) continuous counts per predicted class
        shares = np.clip(counts / max(self.n_cache, 1), 0.0, 1.0)
        if self.action_mode == "allocation":
            return {a: shares[k] for k, a in enumerate(agents)}
        return self._scores(observations, infos, agents, shares)

    def _scores(self, observations, infos, agents, shares) -> dict[str, np.ndarray]:
        quotas = allocation_counts(shares, np.stack([infos[a]["available"] for a in agents]), self.n_cache)
        actions = {}
        for k, agent in enumerate(agents):
            samples = observations[agent][self._samples].reshape(self._obs_per_round, self._sample_width)
            probs = samples[:, self._prob_start:]
            predicted = probs.argmax(axis=1)
            confidence = probs.max(axis=1)
            scores = 0.999 * confidence  # unselected samples stay below 1
            for j in np.flatnonzero(quotas[k]):
                members = np.flatnonzero(predicted == j)
                chosen = members[np.argsort(-confidence[members], kind="stable")[:quotas[k, j]]]
                scores[chosen] = 1.0 + confidence[chosen]
            actions[agent] = scores
        return actions


class GreedyPolicy(_SolverPolicy):
    """Each robot alone minimises the distance it would leave (Problem 2), from its own estimates."""

    name = "greedy"

    def _solve(self, observations, infos, agents):
        feasible, cloud, target, available = self._problem(infos, agents)
        self.last_stats = {"messages": 0, "sweeps": 0}
        return solve_greedy(feasible, cloud, target, self.n_cache, available=available, loss=self.loss)


class InteractivePolicy(_SolverPolicy):
    """Algorithm 1: Greedy start, best responses against the others' shared contributions until no robot's
    contribution moves by more than ``tol``. Robots use their own estimated feasible matrices."""

    name = "interactive"

    def __init__(self, env, loss: str | None = None, tol: float = 1e-6, broadcast: str = "all") -> None:
        super().__init__(env, loss)
        self.tol = tol
        self.broadcast = broadcast

    def _solve(self, observations, infos, agents):
        feasible, cloud, target, available = self._problem(infos, agents)
        channel = self._channel(agents)
        # the faulty channel carries the all-to-all messages (docs/reliability.md): interactive-sum counts those
        broadcast = self.broadcast if channel is None else "all"
        result = solve_interactive(feasible, cloud, target, self.n_cache, available=available, tol=self.tol,
                                   loss=self.loss, broadcast=broadcast, channel=channel)
        self.last_stats = {"messages": int(result.messages), "sweeps": int(result.sweeps),
                           "converged": bool(result.converged)}
        return result.actions

    def _channel(self, agents) -> Channel | None:
        """The env config's faulty channel (``faults``), or None: losses and delays drawn from the episode's
        ``protocol`` fault generator, liars from the episode (``env.liars``); ``robust`` median / trimmed =
        receivers bound every message (:func:`baselines.solvers.bound_contributions`). The robots' own decisions
        read nothing more than before: the channel is the environment's. The solver is the same either way, so a
        fault that never fires changes nothing."""
        faults = getattr(getattr(self.env, "scenario", None), "faults", None)
        if faults is None or not (faults.message_loss or faults.message_delay or faults.liars
                                  or faults.robust != "mean"):
            return None
        index = [self.env.possible_agents.index(a) for a in agents]
        return Channel(rng=self.env.scenario.fault_rngs["protocol"], message_loss=faults.message_loss,
                       message_delay=faults.message_delay, delay_sweeps=faults.delay_sweeps,
                       liars=self.env.liars[index], lie_scale=faults.lie_scale, bounded=faults.robust != "mean")


class InteractiveSumPolicy(InteractivePolicy):
    """Algorithm 1 where robots exchange only the running sum of contributions: O(N) messages per sweep
    instead of N(N-1); the same actions."""

    name = "interactive-sum"

    def __init__(self, env, loss: str | None = None, tol: float = 1e-6) -> None:
        super().__init__(env, loss, tol, broadcast="sum")


class OraclePolicy(_SolverPolicy):
    """Problem 1 with the truth: every robot's true feasible matrix (privileged_view). An upper reference,
    not a deployable policy."""

    name = "oracle"
    privileged = True

    def _solve(self, observations, infos, agents):
        view = self.env.privileged_view()
        index = [self.env.possible_agents.index(a) for a in agents]
        self.last_stats = {"messages": 0, "sweeps": 0}
        return solve_oracle(view["true_feasible_matrices"][index], view["cloud_counts"], view["target_counts"],
                            self.n_cache, available=view["available"][index].astype(np.float64), loss=self.loss)
