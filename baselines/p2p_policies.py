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
              to random samples so that the model keeps seeing both kinds of feedback. ``feedback`` picks how
              the votes become training targets (:data:`FEEDBACK_TARGETS`; default ``fraction``)
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
    "FEEDBACK_TARGETS",
    "P2P_POLICIES",
    "BatchedGUPolicy",
    "GUPolicy",
    "OraclePolicy",
    "RandomSharePolicy",
    "make_p2p_policy",
    "register_p2p_policy",
]


# How the gu rule turns its peers' feedback (the env's utility of a shared sample: the fraction of its receivers
# that voted it novel) into the targets of its utility net's binary cross-entropy (issue 19's ablation):
FEEDBACK_TARGETS = (
    "fraction",  # the utility as given (votes / receivers), the paper's target
    "binary",  # 1 if any receiver voted the sample novel, else 0
    "rank",  # the utility's mid-rank within the robot's training set, scaled to [0, 1]
    "zscore",  # z-scored within the round it was shared in, mapped to (0, 1) by a logistic (sigmoid(1.7 z))
)


def feedback_targets(u: np.ndarray, size: np.ndarray, rounds: np.ndarray | None, kind: str) -> np.ndarray:
    """Targets (R, M) in [0, 1] from utilities ``u`` (R, M) of which robot r's first ``size[r]`` rows are real;
    ``rounds`` (R, M) int: the round each row was shared in (``zscore`` only). Padding rows come back as 0."""
    if kind not in FEEDBACK_TARGETS:
        raise ValueError(f"feedback must be one of {list(FEEDBACK_TARGETS)}, got {kind!r}")
    u = np.asarray(u, dtype=np.float64)
    valid = np.arange(u.shape[1])[None, :] < np.asarray(size)[:, None]
    if kind == "fraction":
        out = u
    elif kind == "binary":
        out = (u > 0).astype(np.float64)
    elif kind == "rank":
        out = np.zeros_like(u)
        for r in np.flatnonzero(size > 1):
            values = u[r, :size[r]]
            order = np.sort(values)
            mid = 0.5 * (np.searchsorted(order, values, "left") + np.searchsorted(order, values, "right") - 1)
            out[r, :size[r]] = mid / (size[r] - 1)
        out[size == 1] = 0.5
    else:
        if rounds is None:
            raise ValueError("feedback 'zscore' needs the round of every row")
        out = np.zeros_like(u)
        for r in np.flatnonzero(size > 0):
            values, groups = u[r, :size[r]], np.asarray(rounds)[r, :size[r]]
            z = np.zeros_like(values)
            for g in np.unique(groups):
                here = groups == g
                spread = values[here].std()
                z[here] = (values[here] - values[here].mean()) / spread if spread > 0 else 0.0
            out[r, :size[r]] = 1.0 / (1.0 + np.exp(-1.7 * z))
    return np.where(valid, out, 0.0)


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
    """One robot's utility MLP (in -> hidden -> hidden -> 1); its initial weights seed :class:`_StackedUtilityNets`."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class _StackedUtilityNets:
    """R independent utility MLPs as stacked weights, trained in one batched call per step. Each robot's gradient
    is that of its own loss and Adam is elementwise with a per-robot step count, so this is R separate nets with R
    separate Adams, minus R - 1 Python loops; robots outside ``mask`` are left untouched (no momentum drift)."""

    def __init__(self, seeds: list[int], in_dim: int, hidden: int, lr: float, l2: float = 1e-4) -> None:
        layers = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = _UtilityNet(in_dim, hidden)
            layers.append([m for m in net.net if isinstance(m, nn.Linear)])
        self.params = []
        for k in range(3):  # (R, in, out) weights and (R, 1, out) biases
            self.params.append(torch.stack([ls[k].weight.detach().T for ls in layers]).contiguous().requires_grad_())
            self.params.append(torch.stack([ls[k].bias.detach()[None] for ls in layers]).contiguous().requires_grad_())
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = torch.zeros(len(seeds))
        self.lr, self.l2 = lr, l2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (R, M) of x (R, M, in)."""
        w1, b1, w2, b2, w3, b3 = self.params
        h = torch.relu(torch.baddbmm(b1, x, w1))
        h = torch.relu(torch.baddbmm(b2, h, w2))
        return torch.baddbmm(b3, h, w3).squeeze(-1)

    def train(self, x: torch.Tensor, u: torch.Tensor, size: torch.Tensor, mask: torch.Tensor, steps: int,
              generator: torch.Generator, batch: int = 128) -> None:
        """``steps`` Adam steps on binary cross-entropy (+ L2) for the robots in ``mask``; robot r's rows are
        x[r, :size[r]] with targets u[r, :size[r]]; minibatches of ``batch`` rows drawn with replacement."""
        rows = torch.arange(len(x))[:, None]
        keep = mask.to(x.dtype)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for _ in range(steps):
            index = (torch.rand(len(x), batch, generator=generator) * size[:, None]).long()
            logits = self(x[rows, index])
            loss = F.binary_cross_entropy_with_logits(logits, u[rows, index], reduction="none").mean(dim=1)
            loss = loss + self.l2 * sum((p ** 2).flatten(1).sum(dim=1) for p in self.params)
            grads = torch.autograd.grad((loss * keep).sum(), self.params)
            with torch.no_grad():
                self.t += keep
                t = self.t.clamp(min=1)
                for p, g, m, v in zip(self.params, grads, self.m, self.v):
                    on = keep.view(-1, *([1] * (p.dim() - 1)))
                    m.mul_(1 - on * (1 - beta1)).add_(on * (1 - beta1) * g)
                    v.mul_(1 - on * (1 - beta2)).add_(on * (1 - beta2) * g * g)
                    shape = (-1, *([1] * (p.dim() - 1)))
                    m_hat = m / (1 - beta1 ** t).view(shape)
                    v_hat = v / (1 - beta2 ** t).view(shape)
                    p.sub_(on * self.lr * m_hat / (v_hat.sqrt() + eps))


class _GUCore:
    """The GU rule for R robots at once (R = robots of one env, or envs x robots): standardise each robot's
    training set, fit its utility net on it, score the round's samples, keep ``explore`` of the slots random."""

    def __init__(self, n: int, feature_dim: int, n_samples: int, n_share: int, hidden: int, train_steps: int,
                 lr: float, explore: float, seed: int, rng: np.random.Generator, feedback: str = "fraction") -> None:
        if feedback not in FEEDBACK_TARGETS:
            raise ValueError(f"feedback must be one of {list(FEEDBACK_TARGETS)}, got {feedback!r}")
        self.n, self.feature_dim, self.n_samples, self.n_share = n, feature_dim, n_samples, n_share
        self.feedback = feedback
        self.sent_total = np.zeros(n, dtype=np.int64)  # rows ever added to each robot's training set
        self.round_ends: list[np.ndarray] = []  # sent_total after each round: tells the rows' rounds apart
        self.train_steps, self.explore, self.seed, self.rng = train_steps, explore, seed, rng
        self.nets = _StackedUtilityNets([seed + r for r in range(n)], feature_dim, hidden, lr)
        self.trained = np.zeros(n, dtype=bool)
        self.mean = np.zeros((n, feature_dim), dtype=np.float32)
        self.std = np.ones((n, feature_dim), dtype=np.float32)
        self.n_updates = 0

    def learn(self, x: np.ndarray, u: np.ndarray, size: np.ndarray, added: np.ndarray | None = None) -> None:
        """x (R, M, F), u (R, M), size (R,): robot r's training set is its first size[r] rows (its last shares, in
        order); ``added`` (R,): how many of them arrived this round (``zscore`` feedback needs it)."""
        if added is not None:
            self.sent_total = self.sent_total + np.asarray(added, dtype=np.int64)
            self.round_ends.append(self.sent_total.copy())
        rounds = None
        if self.feedback == "zscore":
            if added is None:
                raise ValueError("feedback 'zscore' needs the rows added per round (added)")
            ends = np.stack(self.round_ends, axis=1)  # (R, calls)
            index = (self.sent_total - size)[:, None] + np.arange(x.shape[1])[None, :]  # each row's global index
            rounds = np.stack([np.searchsorted(ends[r], index[r], "right") for r in range(len(size))])
        u = feedback_targets(u, size, rounds, self.feedback)
        mask = size > 0
        if not mask.any():
            return
        valid = (np.arange(x.shape[1])[None, :] < size[:, None])[..., None]
        count = np.maximum(size, 1)[:, None].astype(np.float64)
        mean = np.where(valid, x, 0).sum(axis=1) / count
        var = (np.where(valid, x - mean[:, None], 0) ** 2).sum(axis=1) / count
        # Standardise with the training set's statistics (unit-norm embeddings have tiny coordinates); recomputed
        # every round: the robot's model, hence its feature space, may have changed.
        self.mean = np.where(mask[:, None], mean, self.mean).astype(np.float32)
        self.std = np.where(mask[:, None], np.sqrt(var) + 1e-3, self.std).astype(np.float32)
        z = torch.from_numpy(((x - self.mean[:, None]) / self.std[:, None]).astype(np.float32))
        generator = torch.Generator().manual_seed(self.seed + 7919 * self.n_updates)
        self.nets.train(z, torch.from_numpy(u.astype(np.float32)), torch.from_numpy(size.astype(np.float32)),
                        torch.from_numpy(mask), self.train_steps, generator)
        self.trained |= mask
        self.n_updates += 1

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(R, S) scores of the round's samples (R, S, F); a robot without feedback yet scores at random."""
        z = torch.from_numpy(((features - self.mean[:, None]) / self.std[:, None]).astype(np.float32))
        with torch.no_grad():
            learned = 0.5 * torch.sigmoid(self.nets(z)).numpy().astype(np.float64)  # in [0, 0.5]
        out = self.rng.random(learned.shape)
        n_explore = round(self.explore * self.n_share)
        for r in np.flatnonzero(self.trained):
            scores = learned[r]
            if n_explore:  # exploration picks go above every learned score
                rest = np.argsort(-scores, kind="stable")[self.n_share - n_explore:]
                scores[self.rng.choice(rest, size=n_explore, replace=False)] = 0.5 + 0.5 * self.rng.random(n_explore)
            out[r] = scores
        return out.astype(np.float32)


class GUPolicy(_P2PBase):
    """The paper's global-utility model: per robot, an MLP on (embedding + prediction) -> utility, trained on the
    peers' feedback (binary cross-entropy on the fraction of peers that found a sample novel). The robots' nets
    are trained together (:class:`_StackedUtilityNets`), each on its own data."""

    name = "gu"

    def __init__(self, env, hidden: int = 64, train_steps: int = 200, lr: float = 3e-3, explore: float = 0.1,
                 max_buffer: int = 5000, feedback: str = "fraction") -> None:
        super().__init__(env)
        if feedback not in FEEDBACK_TARGETS:
            raise ValueError(f"feedback must be one of {list(FEEDBACK_TARGETS)}, got {feedback!r}")
        self.samples = env.obs_layout["samples"]
        self.feature_dim = env.sample_feature_dim
        self.feedback = feedback
        self.hidden, self.train_steps, self.lr = hidden, train_steps, lr
        self.explore, self.max_buffer = explore, max_buffer
        self.reset(None)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._seed = int(self.rng.integers(2**62))
        self._core: _GUCore | None = None
        self._buffer_x: dict[str, list[np.ndarray]] = {}
        self._buffer_u: dict[str, list[np.ndarray]] = {}
        self._last_features: dict[str, np.ndarray] = {}

    @property
    def n_updates(self) -> int:
        return 0 if self._core is None else self._core.n_updates

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

    def act(self, observations, infos):
        agents = [a for a in self.env.possible_agents if a in observations]
        if self._core is None:
            self._core = _GUCore(len(self.env.possible_agents), self.feature_dim, self.n_samples, self.n_share,
                                 self.hidden, self.train_steps, self.lr, self.explore, self._seed, self.rng,
                                 self.feedback)
        index = [self.env.possible_agents.index(a) for a in agents]
        data = {a: self._training_set(a, infos.get(a, {})) for a in agents}
        width = max([len(d[0]) for d in data.values() if d is not None], default=0)
        n = self._core.n
        x = np.zeros((n, max(width, 1), self.feature_dim), dtype=np.float32)
        u = np.zeros((n, max(width, 1)), dtype=np.float32)
        size = np.zeros(n, dtype=np.int64)
        added = np.zeros(n, dtype=np.int64)  # rows shared last round (feedback came back for them now)
        for a, i in zip(agents, index):
            if "sent_mask" in infos.get(a, {}):
                added[i] = int(np.asarray(infos[a]["sent_mask"], dtype=bool).sum())
        for a, i in zip(agents, index):
            if data[a] is not None and len(data[a][0]):
                size[i] = len(data[a][0])
                x[i, :size[i]], u[i, :size[i]] = data[a]
        features = np.zeros((n, self.n_samples, self.feature_dim), dtype=np.float32)
        for a, i in zip(agents, index):
            features[i] = np.asarray(observations[a][self.samples], np.float32).reshape(self.n_samples,
                                                                                        self.feature_dim)
            self._last_features[a] = features[i]
        with limited_torch_threads(1):
            self._core.learn(x, u, size, added)
            scores = self._core.scores(features)
        return {a: scores[i] for a, i in zip(agents, index)}


class BatchedGUPolicy:
    """The ``gu`` rule over a batched p2p scenario (``make_batched``): ``act(obs (B, N, obs_dim), infos)`` ->
    scores (B, N, obs_per_round), all B x N utility nets trained in one call per step. Reads the env's feedback
    memory (``feedback_memory`` > 0 is required)."""

    name = "gu"

    def __init__(self, batch, hidden: int = 64, train_steps: int = 200, lr: float = 3e-3, explore: float = 0.1,
                 max_buffer: int = 5000, feedback: str = "fraction") -> None:
        if not batch.config.feedback_memory:
            raise ValueError("BatchedGUPolicy reads the feedback memory: feedback_memory must be > 0")
        if feedback not in FEEDBACK_TARGETS:
            raise ValueError(f"feedback must be one of {list(FEEDBACK_TARGETS)}, got {feedback!r}")
        self.batch = batch
        self.kwargs = dict(hidden=hidden, train_steps=train_steps, lr=lr, explore=explore, feedback=feedback)
        self.max_buffer = max_buffer
        self.reset(None)

    def reset(self, seed: int | None = None) -> None:
        rng = np.random.default_rng(seed)
        b = self.batch
        self.core = _GUCore(b.num_envs * b.n_robots, b.sample_feature_dim, b.n_samples, b.n_share,
                            seed=int(rng.integers(2**62)), rng=rng, **self.kwargs)

    def act(self, observations: np.ndarray, infos: dict) -> np.ndarray:
        b = self.batch
        shape = (b.num_envs * b.n_robots,)
        full = np.asarray(infos["feedback_memory_size"]).reshape(shape)
        size = np.minimum(full, self.max_buffer)
        width = max(int(size.max()), 1)
        x = np.asarray(infos["feedback_memory_features"], np.float32).reshape(*shape, -1, b.sample_feature_dim)
        u = np.asarray(infos["feedback_memory_utilities"], np.float32).reshape(*shape, -1)
        if (full > size).any():  # the last max_buffer rows, as GUPolicy
            rows = np.minimum((full - size)[:, None] + np.arange(width)[None, :], x.shape[1] - 1)
            x, u = np.take_along_axis(x, rows[..., None], axis=1), np.take_along_axis(u, rows, axis=1)
        features = np.asarray(observations[..., b.obs_layout["samples"]], np.float32).reshape(
            *shape, b.n_samples, b.sample_feature_dim)
        added = np.asarray(infos["sent_mask"], dtype=bool).sum(axis=-1).reshape(shape) if "sent_mask" in infos \
            else None  # without it the rows' rounds are unknown (only feedback 'zscore' needs them)
        with limited_torch_threads(1):
            self.core.learn(x[:, :width], u[:, :width], size, added)
            scores = self.core.scores(features)
        return scores.reshape(b.num_envs, b.n_robots, b.n_samples)


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
