"""Action distribution for "upload the top k of n samples": Plackett-Luce over the first k picks.

A Gaussian over n scores (RLlib's default for a ``Box``) explores badly for top-k selection: only k of the n
scores decide anything, yet the policy gradient spreads over all n, so learning drowns in noise. Here the module's
n outputs are logits; a sample is k picks without replacement (Gumbel top-k), encoded as an action in the
environment's score box: pick r gets the score (k - r) / k, unpicked samples 0, so the environment's own top-k of
the scores returns exactly the picks (RLlib's action normalisation maps scores monotonically, keeping the order).
``logp`` is the exact Plackett-Luce log-likelihood of the ordered picks; ``entropy`` and ``kl`` are those of the
first pick (a categorical), which is what PPO's entropy bonus and KL penalty need as a measure of spread.
"""

from __future__ import annotations

from functools import lru_cache

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.distribution.distribution import Distribution


class _DiscreteChoice(Distribution):
    """Shared plumbing of the discrete choice distributions below: logits in, an encoded action out; subclasses
    define ``_draw`` (the picks or counts), ``_encode`` and ``logp``. Entropy and KL are those of one draw."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def _draw(self) -> torch.Tensor:
        raise NotImplementedError

    def _encode(self, choice: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, *, sample_shape=None, return_logp: bool = False, **kwargs):
        with torch.no_grad():
            action = self._encode(self._draw())
        return (action, self.logp(action)) if return_logp else action

    def rsample(self, *, sample_shape=None, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} is discrete: no reparameterised sample")

    def entropy(self) -> torch.Tensor:
        return torch.distributions.Categorical(logits=self.logits).entropy()

    def kl(self, other: _DiscreteChoice) -> torch.Tensor:
        return torch.distributions.kl_divergence(torch.distributions.Categorical(logits=self.logits),
                                                 torch.distributions.Categorical(logits=other.logits))

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        return int(np.prod(space.shape))

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> _DiscreteChoice:
        return cls(logits)


class TopKPlackettLuce(_DiscreteChoice):
    """Plackett-Luce over the first ``k`` picks of ``n`` items; subclass with ``k`` set (:func:`top_k_distribution`)."""

    k: int = 1

    def __init__(self, logits: torch.Tensor) -> None:
        if logits.shape[-1] < self.k:
            raise ValueError(f"TopKPlackettLuce: {logits.shape[-1]} items, cannot pick k = {self.k}")
        super().__init__(logits)

    def _encode(self, picks: torch.Tensor) -> torch.Tensor:
        values = (self.k - torch.arange(self.k, dtype=self.logits.dtype, device=self.logits.device)) / self.k
        action = torch.zeros_like(self.logits)
        return action.scatter(-1, picks, values.expand(picks.shape))

    def _decode(self, action: torch.Tensor) -> torch.Tensor:
        return torch.topk(action, self.k, dim=-1).indices  # picks, in order (scores strictly decreasing)

    def _draw(self) -> torch.Tensor:
        gumbel = -torch.log(-torch.log(torch.rand_like(self.logits).clamp_(1e-20, 1.0)))
        return torch.topk(self.logits + gumbel, self.k, dim=-1).indices  # Gumbel top-k = Plackett-Luce

    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        picks = self._decode(value)
        logits = self.logits
        total = torch.zeros(logits.shape[:-1], dtype=logits.dtype, device=logits.device)
        taken = torch.zeros_like(logits, dtype=torch.bool)
        for r in range(self.k):
            pick = picks[..., r:r + 1]
            masked = logits.masked_fill(taken, float("-inf"))
            total = total + logits.gather(-1, pick).squeeze(-1) - torch.logsumexp(masked, dim=-1)
            taken = taken.scatter(-1, pick, True)
        return total

    def to_deterministic(self) -> _TopKDeterministic:
        return _TopKDeterministic(self)


class _TopKDeterministic(Distribution):
    """The k largest logits, encoded like a sample (greedy picks: evaluation)."""

    def __init__(self, dist: TopKPlackettLuce) -> None:
        super().__init__()
        self.dist = dist

    def sample(self, *, sample_shape=None, **kwargs) -> torch.Tensor:
        return self.dist._encode(torch.topk(self.dist.logits, self.dist.k, dim=-1).indices)

    def rsample(self, *, sample_shape=None, **kwargs):
        raise NotImplementedError

    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.zeros(value.shape[:-1], dtype=value.dtype, device=value.device)

    def entropy(self, **kwargs):
        raise RuntimeError("a deterministic distribution has no entropy")

    def kl(self, other, **kwargs):
        raise RuntimeError("a deterministic distribution has no KL")

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        return int(np.prod(space.shape))

    def to_deterministic(self) -> _TopKDeterministic:
        return self


@lru_cache(maxsize=None)
def top_k_distribution(k: int) -> type[TopKPlackettLuce]:
    """``TopKPlackettLuce`` with ``k`` picks (one class per k, so RLlib can build it ``from_logits``)."""
    if k < 1:
        raise ValueError(f"top-k distribution needs k >= 1, got {k}")
    return type(f"TopK{k}PlackettLuce", (TopKPlackettLuce,), {"k": int(k)})


class CountsMultinomial(_DiscreteChoice):
    """Allocation of ``n`` uploads over C classes: counts ~ Multinomial(n, softmax(logits)); subclass with ``n``
    set (:func:`counts_distribution`).

    The action is encoded for RLlib's action normalisation (module actions in [-1, 1] are mapped to the env's
    [0, 1] box): ``2 * counts / n - 1``, which the environment receives as shares ``counts / n`` (summing to 1)
    and turns back into exactly these counts. ``logp`` is the exact multinomial log-probability; ``entropy`` and
    ``kl`` are those of a single draw (the categorical), a measure of spread for PPO's bonus and penalty.
    """

    n: int = 1

    def _encode(self, counts: torch.Tensor) -> torch.Tensor:
        return 2.0 * counts.to(self.logits.dtype) / self.n - 1.0

    def _decode(self, action: torch.Tensor) -> torch.Tensor:
        return torch.round((action + 1.0) * 0.5 * self.n)

    def _draw(self) -> torch.Tensor:
        draws = torch.distributions.Categorical(logits=self.logits).sample((self.n,))  # (n, ...)
        return torch.nn.functional.one_hot(draws, self.logits.shape[-1]).sum(0)

    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        counts = self._decode(value)
        log_probs = torch.log_softmax(self.logits, dim=-1)
        log_coeff = torch.lgamma(torch.tensor(self.n + 1.0, dtype=log_probs.dtype)) - torch.lgamma(counts + 1.0).sum(-1)
        return log_coeff + (counts * log_probs).sum(-1)

    def to_deterministic(self) -> _CountsMode:
        return _CountsMode(self)


class _CountsMode(_TopKDeterministic):
    """The most likely allocation, approximately: n * softmax(logits) rounded by largest remainder."""

    def sample(self, *, sample_shape=None, **kwargs) -> torch.Tensor:
        dist = self.dist
        quota = torch.softmax(dist.logits, dim=-1) * dist.n
        counts = torch.floor(quota)
        left = (dist.n - counts.sum(-1, keepdim=True)).long()
        order = torch.argsort(quota - counts, dim=-1, descending=True)
        ranks = torch.argsort(order, dim=-1)
        counts = counts + (ranks < left).to(counts.dtype)
        return dist._encode(counts)


@lru_cache(maxsize=None)
def counts_distribution(n: int) -> type[CountsMultinomial]:
    """``CountsMultinomial`` with ``n`` uploads."""
    if n < 1:
        raise ValueError(f"counts distribution needs n >= 1, got {n}")
    return type(f"Counts{n}Multinomial", (CountsMultinomial,), {"n": int(n)})
