"""Sharing policies of the peer-to-peer scenario (:mod:`datagames_env.scenarios.p2p`), on the common ``Policy`` protocol.

Every policy returns, per robot, a score per observed sample (``Box(0, 1, (obs_per_round,))``); the environment
caches and shares the top ``n_share``.

============  ==================================================================================================
policy        reads / how it scores
============  ==================================================================================================
``random``    nothing: i.i.d. uniform scores (the paper's lower bound)
``oracle``    PRIVILEGED (``env.privileged_view()``): the true domain and class of every observation and every
              peer's labeled (domain, class) counts; a sample scores the mean over the robot's peers of how much
              that peer lacks its cell, ``max(0, 1 - count / potential_cell_target)`` ("shares exactly what the
              peers lack", the paper's unrealisable upper bound)
``gu``        its own observation and infos only: a small MLP per robot (the global-utility model) maps a
              sample's features (embedding + predicted probabilities of the robot's own model) to the utility
              its peers returned; trained online (supervised) on all feedback received so far. Until the first
              feedback it scores at random, as in the paper; afterwards ``explore`` of the share slots still go
              to random samples so that the model keeps seeing both kinds of feedback
============  ==================================================================================================

``make_p2p_policy(spec, env)``: ``spec`` is a name above, a name added with :func:`register_p2p_policy`, a
``"module:factory"`` string (``factory(env)`` returns a policy), or a policy object (returned as is). The learned
RL policies plug in the same way (see docs/p2p.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from datagames_env.perception import limited_torch_threads
from datagames_env.policy import ScenarioPolicies, make_policy, register_policy

__all__ = [
    "P2P_POLICIES",
    "GUPolicy",
    "OraclePolicy",
    "RandomSharePolicy",
    "make_p2p_policy",
    "register_p2p_policy",
]


class _P2PBase:
    name = "base"
    privileged = False

    def __init__(self, env) -> None:
        self.env = env
        self.n_samples = env.n_samples
        self.n_share = env.n_share
        self.rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)


class RandomSharePolicy(_P2PBase):
    """Uniform random scores: a uniformly random subset of each round is shared."""

    name = "random"

    def act(self, observations, infos):
        return {agent: self.rng.random(self.n_samples).astype(np.float32) for agent in observations}


class OraclePolicy(_P2PBase):
    """PRIVILEGED: shares the samples whose (domain, class) cell the robot's peers lack most (see module table)."""

    name = "oracle"
    privileged = True

    def act(self, observations, infos):
        view = self.env.privileged_view()
        lack = np.clip(1.0 - view["labeled_cell_counts"] / view["potential_cell_target"], 0.0, 1.0)  # (N, D, C)
        actions = {}
        for agent in observations:
            i = self.env.possible_agents.index(agent)
            peers = view["neighbors"][i]
            domains, labels = view["observed_domains"][i], view["observed_labels"][i]
            need = lack[peers][:, domains, labels].mean(axis=0) if peers else np.zeros(self.n_samples)
            # Small random tie-break so equal needs are not always resolved by position.
            actions[agent] = np.clip(0.98 * need + 0.02 * self.rng.random(self.n_samples), 0, 1).astype(np.float32)
        return actions


class _UtilityNet(nn.Module):
    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class GUPolicy(_P2PBase):
    """The paper's global-utility model: per robot, an MLP on (embedding + prediction) -> utility, trained on the
    peers' feedback (binary cross-entropy on the fraction of peers that found a sample novel)."""

    name = "gu"

    def __init__(self, env, hidden: int = 64, train_steps: int = 200, lr: float = 3e-3, explore: float = 0.1,
                 max_buffer: int = 5000) -> None:
        super().__init__(env)
        self.samples = env.obs_layout["samples"]
        self.feature_dim = env.sample_feature_dim
        self.hidden, self.train_steps, self.lr = hidden, train_steps, lr
        self.explore, self.max_buffer = explore, max_buffer
        self.reset(None)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._seed = int(self.rng.integers(2**62))
        self._nets: dict[str, _UtilityNet] = {}
        self._optimizers: dict[str, torch.optim.Optimizer] = {}
        self._buffer_x: dict[str, list[np.ndarray]] = {}
        self._buffer_u: dict[str, list[np.ndarray]] = {}
        self._last_features: dict[str, np.ndarray] = {}
        self._scaling: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.n_updates = 0

    def _net(self, agent: str) -> _UtilityNet:
        if agent not in self._nets:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._seed + self.env.possible_agents.index(agent))
                self._nets[agent] = _UtilityNet(self.feature_dim, self.hidden)
            self._optimizers[agent] = torch.optim.Adam(self._nets[agent].parameters(), lr=self.lr)
        return self._nets[agent]

    def _training_set(self, agent: str, info: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """Everything this robot shared so far and the utility it earned. Preferred: the env's feedback memory,
        re-embedded by the robot's current model (a retrained model has a new embedding space, so features
        remembered from older observations would no longer match). Else the features remembered here."""
        size = int(info.get("feedback_memory_size", 0))  # the env pads its memory to a fixed shape
        if size:
            start = max(0, size - self.max_buffer)
            return (np.asarray(info["feedback_memory_features"], np.float32)[start:size],
                    np.asarray(info["feedback_memory_utilities"], np.float32)[start:size])
        previous = self._last_features.get(agent)
        if previous is None or "cached_slots" not in info:
            return None
        sent = np.asarray(info["sent_mask"], dtype=bool)
        if sent.any():
            self._buffer_x.setdefault(agent, []).append(previous[np.asarray(info["cached_slots"])[sent]])
            self._buffer_u.setdefault(agent, []).append(np.asarray(info["feedback_utilities"], np.float32)[sent])
        if agent not in self._buffer_x:
            return None
        return (np.concatenate(self._buffer_x[agent])[-self.max_buffer:],
                np.concatenate(self._buffer_u[agent])[-self.max_buffer:])

    def _learn(self, agent: str, info: dict) -> None:
        """Fit the utility model to the feedback (supervised, binary cross-entropy on the utility)."""
        data = self._training_set(agent, info)
        if data is None:
            return
        # Standardise with the training set's statistics (unit-norm embeddings have tiny coordinates); kept for
        # scoring. Recomputed every round: the robot's model, hence its feature space, may have changed.
        mean, std = data[0].mean(axis=0), data[0].std(axis=0) + 1e-3
        self._scaling[agent] = (mean, std)
        x, u = torch.from_numpy((data[0] - mean) / std), torch.from_numpy(data[1])
        net, optimizer = self._net(agent), self._optimizers[agent]
        generator = torch.Generator().manual_seed(self._seed + 7919 * self.n_updates)
        net.train()
        for _ in range(self.train_steps):
            batch = torch.randint(len(x), (min(len(x), 128),), generator=generator)
            loss = F.binary_cross_entropy_with_logits(net(x[batch]), u[batch]) + 1e-4 * sum(
                (p ** 2).sum() for p in net.parameters())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.n_updates += 1

    def act(self, observations, infos):
        actions = {}
        with limited_torch_threads(1):
            for agent, obs in observations.items():
                self._learn(agent, infos.get(agent, {}))
                features = np.asarray(obs[self.samples], np.float32).reshape(self.n_samples, self.feature_dim)
                self._last_features[agent] = features
                if agent not in self._nets:  # no feedback yet: random sharing, as the paper's untrained GU model
                    actions[agent] = self.rng.random(self.n_samples).astype(np.float32)
                    continue
                net = self._nets[agent].eval()
                mean, std = self._scaling[agent]
                with torch.inference_mode():
                    scores = torch.sigmoid(net(torch.from_numpy((features - mean) / std))).numpy().astype(np.float64)
                scores = 0.5 * scores  # learned utility in [0, 0.5]; exploration picks go above
                n_explore = round(self.explore * self.n_share)
                if n_explore:
                    rest = np.argsort(-scores, kind="stable")[self.n_share - n_explore:]
                    scores[self.rng.choice(rest, size=n_explore, replace=False)] = 0.5 + 0.5 * self.rng.random(n_explore)
                actions[agent] = scores.astype(np.float32)
        return actions


# a view of the p2p scenario's policies in the one registry of datagames_env.policy
P2P_POLICIES = ScenarioPolicies("p2p")


def register_p2p_policy(name: str, factory: Callable[[Any], Any] | str) -> None:
    """Make ``name`` usable in ``make_p2p_policy`` and ``datagames eval --config p2p_... --policies``
    (``factory(env)`` or ``"module:factory"``); same as ``register_policy("p2p", name, factory)``."""
    register_policy("p2p", name, factory)


def make_p2p_policy(spec: Any, env) -> Any:
    """``make_policy(spec, env, scenario="p2p")``: a registered name, ``rllib:PATH`` / ``sb3:PATH`` (a checkpoint
    of ``datagames train``), a ``"module:factory"`` string, or a policy object."""
    return make_policy(spec, env, scenario="p2p")
