"""Stage-1 (upload) policies for the DUAL scenario, on the policy protocol of ``datagames_env.policy``.

Every policy returns, per robot, a score per observed sample in [0, 1]; the environment uploads the top
``n_cache``. Policies read the observation contract of :class:`datagames_env.faces.pettingzoo.DualParallelEnv`
(``obs_layout``, ``sample_layout``: per sample its embedding, class probabilities and coverage by the cloud set).

==========================  ====================================================================================
policy                      what it reads / does
==========================  ====================================================================================
``random``                  nothing: random scores (uniform sampling of the round)
``entropy``                 own samples: highest predictive entropy first (uncertainty sampling)
``margin``                  own samples: smallest top-1 / top-2 probability margin first
``submodular-independent``  own samples + their cloud coverage: facility location, lazy greedy (DUAL stage 1;
                            Fleet-AL "distributed")
``submodular-interactive``  the same, robots in turn; robot i also receives the embeddings robots 0..i-1 picked
                            (``k`` per robot) and folds them into its coverage vector (Fleet-AL "interactive")
``submodular-centralized``  PRIVILEGED: every robot's raw samples in one place; one greedy over the fleet's
                            round with at most ``n_cache`` per robot (Fleet-AL "centralized")
``submodular-*-badge``      the three above (class names ``Submodular*BadgePolicy``) on BADGE gradient embeddings
                            (``embedding = "badge"``, Fleet-AL's ``unc_type: badge``): diversity and uncertainty
                            mixed; the cloud's embeddings are taken as 0 (see :func:`badge_embeddings`)
``greedy``                  class-count game (Data Games Problem 2) on the robot's estimated feasible matrix,
                            quotas per predicted class -> the most confident samples of each class
``interactive``             the same with Algorithm 1 (best responses, messages = others' P_k a_k)
``oracle``                  PRIVILEGED: Problem 1 with the true feasible matrices (``env.privileged_view()``)
==========================  ====================================================================================

Class-count target: the labeled cloud's class counts should become uniform over ``labeled + n_robots *
n_cache`` samples after this round's uploads (the labeler then picks among them); ``env.target_counts`` (the
episode-level target) is reported in infos as well.
"""

from __future__ import annotations

import numpy as np

from datagames_env.core import allocation_counts
from datagames_env.perception import uncertainty
from datagames_env.perception import limited_torch_threads
from datagames_env.policy import ScenarioPolicies, make_policy

from .solvers import solve_greedy, solve_interactive, solve_oracle
from .submodular import fleet_centralized, fleet_independent, fleet_interactive

__all__ = ["DUAL_POLICIES", "EMBEDDINGS", "DualPolicy", "EntropyDualPolicy", "GreedyDualPolicy",
           "InteractiveDualPolicy", "MarginDualPolicy", "OracleDualPolicy", "RandomDualPolicy",
           "SubmodularCentralizedBadgePolicy", "SubmodularCentralizedPolicy", "SubmodularIndependentBadgePolicy",
           "SubmodularIndependentPolicy", "SubmodularInteractiveBadgePolicy", "SubmodularInteractivePolicy",
           "badge_embeddings", "badge_origin_coverage", "make_dual_policy"]

EMBEDDINGS = ("features", "badge")  # what facility location runs on (the submodular policies' ``embedding``)


def badge_embeddings(embeddings: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """BADGE gradient embeddings ``(n, C * E)`` float32: ``(onehot(argmax p) - p) (x) e``, the gradient of the
    cross-entropy loss at the predicted label with respect to a linear last layer on the features ``e``
    (Ash et al. 2020; Fleet-AL's ``unc_type: badge``). Its norm is ``|onehot - p| * |e|``: a confident sample
    sits near 0, so facility location over these mixes diversity with uncertainty.

    ``embeddings`` ``(n, E)``, ``probs`` ``(n, C)`` rows of class probabilities (argmax ties: the lowest class)."""
    e = np.asarray(embeddings, dtype=np.float32)
    p = np.asarray(probs, dtype=np.float32)
    if e.ndim != 2 or p.ndim != 2 or len(e) != len(p):
        raise ValueError(f"badge_embeddings needs embeddings (n, E) and probs (n, C) with the same n, got shapes "
                         f"{e.shape} and {p.shape}")
    if not (np.isfinite(e).all() and np.isfinite(p).all()):
        raise ValueError("badge_embeddings: embeddings or probs contain NaN or inf")
    g = -p
    g[np.arange(len(p)), p.argmax(axis=1)] += 1.0
    return (g[:, :, None] * e[:, None, :]).reshape(len(e), -1)


def badge_origin_coverage(badge: np.ndarray, kernel: str, scale: float) -> np.ndarray:
    """Coverage of BADGE embeddings by the cloud when the cloud's own embeddings are taken as 0 (a model fits its
    training set: confident, zero gradient): the kernel's similarity to the origin, ``1 / (1 + scale |g|)``.
    A robot does not see the cloud's samples, only their coverage in feature space; this stands in for them."""
    if kernel != "inverse_distance":
        raise ValueError(f"config key 'kernel': BADGE embeddings need kernel 'inverse_distance' (a distance to the "
                         f"zero gradient of a confident sample), got '{kernel}'")
    return 1.0 / (1.0 + scale * np.linalg.norm(np.asarray(badge, dtype=np.float64), axis=1))


class DualPolicy:
    """Base: decodes the per-sample block of the observations; ``act`` returns robot -> scores."""

    name = "base"
    privileged = False

    def __init__(self, env) -> None:
        self.env = env
        self.n_cache = env.config.n_cache
        self.n_samples = env.n_samples
        self.samples = env.obs_layout["samples"]
        self.sample_width = env.sample_feature_dim
        self.sample_layout = env.sample_layout
        self.kernel_kwargs = {"kernel": env.config.kernel, "scale": env.config.kernel_scale,
                              "max_block_bytes": env.config.max_block_bytes}
        self.rng = np.random.default_rng()
        self.last_stats: dict = {}

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def per_sample(self, observation: np.ndarray, part: str) -> np.ndarray:
        block = np.asarray(observation)[self.samples].reshape(self.n_samples, self.sample_width)
        return block[:, self.sample_layout[part]]

    def scores_from_picks(self, picks: np.ndarray) -> np.ndarray:
        """Picks in greedy order -> scores in [0, 1]: picks in (0.5, 1] (earlier higher), the rest 0."""
        scores = np.zeros(self.n_samples, dtype=np.float32)
        scores[picks] = 1.0 - np.arange(len(picks)) / (2.0 * max(len(picks), 1))
        return scores

    def act(self, observations: dict[str, np.ndarray], infos: dict[str, dict]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class RandomDualPolicy(DualPolicy):
    name = "random"

    def act(self, observations, infos):
        return {a: self.rng.random(self.n_samples).astype(np.float32) for a in observations}


class UncertaintyDualPolicy(DualPolicy):
    """Entropy or margin uncertainty of the robot's own model (scores scaled into [0, 1])."""

    kind = "entropy"

    def act(self, observations, infos):
        out = {}
        for agent, obs in observations.items():
            u = uncertainty(self.per_sample(obs, "probs"), self.kind)
            out[agent] = (u / max(float(u.max()), 1e-12)).astype(np.float32)
        return out


class EntropyDualPolicy(UncertaintyDualPolicy):
    name = "entropy"
    kind = "entropy"


class MarginDualPolicy(UncertaintyDualPolicy):
    name = "margin"
    kind = "margin"


class _SubmodularDualPolicy(DualPolicy):
    """Facility location on ``embedding``: ``features`` (the observation's embeddings and their cloud coverage)
    or ``badge`` (:func:`badge_embeddings` of embeddings and class probabilities, the cloud at the origin)."""

    variant = staticmethod(fleet_independent)
    embedding = "features"

    def __init__(self, env, embedding: str | None = None) -> None:
        super().__init__(env)
        if embedding is not None:
            self.embedding = embedding
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"{self.name}: embedding must be one of {list(EMBEDDINGS)}, got '{self.embedding}'")
        if self.embedding == "badge":
            badge_origin_coverage(np.zeros((0, 1)), env.config.kernel, env.config.kernel_scale)  # kernel check

    def act(self, observations, infos):
        agents = list(observations)
        embeddings = [self.per_sample(observations[a], "embedding") for a in agents]
        if self.embedding == "badge":
            embeddings = [badge_embeddings(e, self.per_sample(observations[a], "probs"))
                          for e, a in zip(embeddings, agents)]
            coverages = [badge_origin_coverage(e, self.env.config.kernel, self.env.config.kernel_scale)
                         for e in embeddings]
        else:
            coverages = [self.per_sample(observations[a], "coverage")[:, 0].astype(np.float64) for a in agents]
        with limited_torch_threads(1):
            result = self.variant(embeddings, self.n_cache, coverages, **self.kernel_kwargs)
        self.last_stats = {"messages": int(result.messages), "evaluations": int(result.evaluations)}
        return {a: self.scores_from_picks(result.selected[k]) for k, a in enumerate(agents)}


class SubmodularIndependentPolicy(_SubmodularDualPolicy):
    """Each robot alone: facility location over its round, the cloud counted as covered (DUAL stage 1)."""

    name = "submodular-independent"
    variant = staticmethod(fleet_independent)


class SubmodularInteractivePolicy(_SubmodularDualPolicy):
    """Robots in turn, each receiving the embeddings picked before it (``last_stats['messages']`` counts them)."""

    name = "submodular-interactive"
    variant = staticmethod(fleet_interactive)


class SubmodularCentralizedPolicy(_SubmodularDualPolicy):
    """Privileged: a central planner with every robot's raw round; per-robot cap ``n_cache``."""

    name = "submodular-centralized"
    privileged = True
    variant = staticmethod(fleet_centralized)


class SubmodularIndependentBadgePolicy(SubmodularIndependentPolicy):
    """``submodular-independent`` on BADGE gradient embeddings (Fleet-AL's ``badge``)."""

    name = "submodular-independent-badge"
    embedding = "badge"


class SubmodularInteractiveBadgePolicy(SubmodularInteractivePolicy):
    name = "submodular-interactive-badge"
    embedding = "badge"


class SubmodularCentralizedBadgePolicy(SubmodularCentralizedPolicy):
    name = "submodular-centralized-badge"
    embedding = "badge"


class _ClassCountDualPolicy(DualPolicy):
    """Data Games solvers -> integer quotas per predicted class -> the most confident samples of each class."""

    def _problem(self, infos, agents):
        first = infos[agents[0]]
        feasible = np.stack([infos[a]["feasible_matrix"] for a in agents])
        available = np.stack([infos[a]["available"] for a in agents]).astype(np.float64)
        cloud = np.asarray(first["cloud_counts"], dtype=np.float64)
        total = cloud.sum() + len(agents) * self.n_cache
        target = np.full(len(cloud), total / len(cloud))
        return feasible, cloud, target, available

    def _solve(self, infos, agents) -> np.ndarray:
        raise NotImplementedError

    def act(self, observations, infos):
        agents = list(observations)
        counts = self._solve(infos, agents)
        shares = np.clip(counts / self.n_cache, 0.0, 1.0)
        quotas = allocation_counts(shares, np.stack([infos[a]["available"] for a in agents]), self.n_cache)
        out = {}
        for k, agent in enumerate(agents):
            probs = self.per_sample(observations[agent], "probs")
            predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
            scores = 0.499 * confidence  # samples outside the quotas stay below every quota sample
            for j in np.flatnonzero(quotas[k]):
                members = np.flatnonzero(predicted == j)
                chosen = members[np.argsort(-confidence[members], kind="stable")[:quotas[k, j]]]
                scores[chosen] = 0.5 + 0.5 * confidence[chosen]
            out[agent] = scores.astype(np.float32)
        return out


class GreedyDualPolicy(_ClassCountDualPolicy):
    name = "greedy"

    def _solve(self, infos, agents):
        feasible, cloud, target, available = self._problem(infos, agents)
        return solve_greedy(feasible, cloud, target, self.n_cache, available=available)


class InteractiveDualPolicy(_ClassCountDualPolicy):
    name = "interactive"

    def _solve(self, infos, agents):
        feasible, cloud, target, available = self._problem(infos, agents)
        result = solve_interactive(feasible, cloud, target, self.n_cache, available=available, tol=1e-6)
        self.last_stats = {"messages": int(result.messages), "sweeps": int(result.sweeps)}
        return result.actions


class OracleDualPolicy(_ClassCountDualPolicy):
    """Privileged: true feasible matrices from ``env.privileged_view()``."""

    name = "oracle"
    privileged = True

    def _solve(self, infos, agents):
        _, cloud, target, available = self._problem(infos, agents)
        view = self.env.privileged_view()
        index = [self.env.possible_agents.index(a) for a in agents]
        return solve_oracle(view["true_feasible_matrices"][index], cloud, target, self.n_cache, available=available)


# a view of the dual scenario's policies in the one registry of datagames_env.policy
DUAL_POLICIES = ScenarioPolicies("dual")


def make_dual_policy(name: str, env) -> DualPolicy:
    """``make_dual_policy("submodular-interactive", env)``: ``make_policy(name, env, scenario="dual")``."""
    return make_policy(name, env, scenario="dual")
