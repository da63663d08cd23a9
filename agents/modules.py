"""Torch RLModules for the learned sharing policies (RLlib new API stack, PPO-compatible).

* :class:`SampleScoringModule` (selection mode, the GU model of the papers): one small network, shared across
  the samples of a round, scores each observed sample from its embedding and predicted probabilities together
  with the robot's context (cloud histogram, target, its own estimates). The policy is therefore independent of
  the number of samples and sees what the papers' GU model sees. The environment uploads the top ``k``
  (``select_k``); the scores are the logits of a Plackett-Luce distribution over those k picks
  (:mod:`agents.distributions`), or, without ``select_k``, the means of a diagonal Gaussian.
* :class:`ClassScoringModule` (allocation mode): the same idea over classes: a network shared across the C
  classes maps each class's features (cloud share, target share, gap, this round's predicted share, estimated
  mix, accuracy, purity, expected gap fill) plus the robot's context to that class's logit; the ``n_cache`` uploads are a
  multinomial draw over the classes (``allocate_n``; :mod:`agents.distributions`), or, without it, the logits
  are the means of a Gaussian on the shares. Equivariant to relabelling
  classes, so it learns from every class at once. The plain alternative is RLlib's default PPO MLP
  (``--model mlp``).
* :class:`GapFractionModule` (allocation mode, ``--model gap-fraction``): a structured action, one fraction f in
  [0, 1] per robot (a Beta, :class:`FractionBeta`); the robot then runs Greedy towards ``cloud + f (target -
  cloud)`` (``baselines.fraction``). The map runs outside the module, in the vector runner and in ``rllib:``
  evaluation, because Greedy needs the robot's infos (its feasible matrix, availability and the counts).

Both read the flat observation through a layout given in ``model_config``: ``context_dim`` (the context block
comes first), ``n_samples`` and ``sample_dim`` (selection), ``n_classes`` (allocation).

Centralised critic (MAPPO style, ``datagames train --critic central``): the RLlib face appends the global state
(``env.state()``, ``state_dim`` floats) to every robot's observation; the actor reads only the first
``actor_obs_dim`` features (its own observation), the value head reads its own pooled features *and* the global
state. Evaluation feeds zeros in the state slot: the actor never reads it (tested).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.distribution import Distribution
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

# the allocation-mode context blocks, in the environment's order (env.obs_layout)
CLASS_BLOCKS = ("cloud_hist", "target", "gap", "predicted_hist", "estimated_mix", "class_accuracy", "purity",
                "gap_fill")
# blocks whose per-class values are O(1/C) (rescaled by C); the message blocks of datagames_env.faces.comm are gaps too
DISTRIBUTION_BLOCKS = ("cloud_hist", "target", "gap", "predicted_hist", "estimated_mix", "gap_fill", "others_intent",
                       "residual_fill")


class TanhMLP(nn.Sequential):
    """Linear layers with tanh between them, computed as ``tanh(z) = 2 sigmoid(2 z) - 1`` with the factors folded into
    the weights: on this torch build (2.13 CPU) ``torch.tanh`` is several times slower than ``torch.sigmoid``, and the
    activation was a third of the sampling forward pass. Mathematically the same network (checkpoints keep their
    meaning, to float noise); the ``nn.Tanh`` entries stay, so the state dict and the printout are unchanged.

    Layer k gets ``z_k = W_k h + b_k`` with ``h = 2 s - 1``: ``2 W_k s + (b_k - W_k 1)``; a hidden layer's
    pre-activation is doubled again for ``s = sigmoid(2 z)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linears = [m for m in self if isinstance(m, nn.Linear)]
        last = len(linears) - 1
        for k, linear in enumerate(linears):
            weight, bias = linear.weight, linear.bias
            if k:  # input is the previous sigmoid s, not tanh = 2 s - 1
                bias = bias - weight.sum(dim=1)
                weight = weight * 2.0
            if k < last:
                x = torch.sigmoid(nn.functional.linear(x, weight * 2.0, bias * 2.0))
            else:
                x = nn.functional.linear(x, weight, bias)
        return x


def _mlp(sizes: list[int], out_gain: float = 1.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(a, b)
        last = i == len(sizes) - 2
        nn.init.orthogonal_(linear.weight, gain=out_gain if last else 2 ** 0.5)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.Tanh())
    return TanhMLP(*layers)


def _require(model_config: dict, keys: tuple[str, ...], module: str) -> None:
    missing = [k for k in keys if k not in model_config]
    if missing:
        raise ValueError(f"{module}: model_config is missing {missing} (build it with agents.rllib_train.module_spec)")


class _ScoringBase(TorchRLModule, ValueFunctionAPI):
    """Shared pieces: per-item scores -> Gaussian inputs, a value head on context + pooled items."""

    def _items(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _setup_critic_split(self, actor_obs_dim: int) -> None:
        """With ``state_dim`` > 0 the observation is the robot's own ``actor_obs_dim`` features, then the state."""
        self.state_dim = int(self.model_config.get("state_dim", 0) or 0)
        self.actor_obs_dim = actor_obs_dim
        if self.observation_space is not None and self.observation_space.shape[-1] != actor_obs_dim + self.state_dim:
            raise ValueError(f"{type(self).__name__}: observation has {self.observation_space.shape[-1]} features, the "
                             f"layout says {actor_obs_dim} own + {self.state_dim} global state")

    def _setup_heads(self, item_dim: int, context_dim: int) -> None:
        hidden = list(self.model_config.get("hidden", [64, 64]))
        self.scorer = _mlp([item_dim + context_dim, *hidden, 1], out_gain=0.01)
        self.value_head = _mlp([context_dim + item_dim + self.state_dim, *hidden, 1], out_gain=1.0)
        self.log_std = nn.Parameter(torch.tensor(float(self.model_config.get("initial_log_std", -1.0))))

    def _scores(self, obs: torch.Tensor) -> torch.Tensor:
        context, items = self._items(obs[..., :self.actor_obs_dim])
        expanded = context.unsqueeze(-2).expand(*items.shape[:-1], context.shape[-1])
        return self.scorer(torch.cat([items, expanded], dim=-1)).squeeze(-1)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        scores = self._scores(batch[Columns.OBS]) + self.score_offset
        return {Columns.ACTION_DIST_INPUTS: torch.cat([scores, self.log_std.expand_as(scores)], dim=-1)}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        obs = batch[Columns.OBS]
        context, items = self._items(obs[..., :self.actor_obs_dim])
        # the global state (centralised critic) or nothing
        return self.value_head(torch.cat([context, items.mean(dim=-2), obs[..., self.actor_obs_dim:]], dim=-1)
                               ).squeeze(-1)


class SampleScoringModule(_ScoringBase):
    """GU scoring over the samples of a round (selection mode); see the module docstring."""

    score_offset = 0.0

    def setup(self) -> None:
        _require(self.model_config, ("context_dim", "n_samples", "sample_dim"), "SampleScoringModule")
        self.context_dim = int(self.model_config["context_dim"])
        self.n_samples = int(self.model_config["n_samples"])
        self.sample_dim = int(self.model_config["sample_dim"])
        self._setup_critic_split(self.context_dim + self.n_samples * self.sample_dim)
        self._setup_heads(self.sample_dim, self.context_dim)
        # optional fixed input scales (module_spec sets them where the layout is known) so features are O(1)
        context_scale = self.model_config.get("context_scale") or [1.0] * self.context_dim
        sample_scale = self.model_config.get("sample_scale") or [1.0] * self.sample_dim
        if len(context_scale) != self.context_dim or len(sample_scale) != self.sample_dim:
            raise ValueError(f"SampleScoringModule: context_scale / sample_scale must have {self.context_dim} / "
                             f"{self.sample_dim} entries, got {len(context_scale)} / {len(sample_scale)}")
        self.register_buffer("context_scale", torch.tensor(context_scale, dtype=torch.float32), persistent=False)
        self.register_buffer("sample_scale", torch.tensor(sample_scale, dtype=torch.float32), persistent=False)
        # the environment uploads the top k: Plackett-Luce over k picks (agents.distributions) unless told otherwise
        self.select_k = self.model_config.get("select_k")
        if self.select_k:
            from .distributions import top_k_distribution

            self.action_dist_cls = top_k_distribution(int(self.select_k))

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        if not self.select_k:
            return super()._forward(batch, **kwargs)
        return {Columns.ACTION_DIST_INPUTS: self._scores(batch[Columns.OBS])}  # logits of the picks

    def _items(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context = obs[..., :self.context_dim] * self.context_scale
        samples = obs[..., self.context_dim:self.context_dim + self.n_samples * self.sample_dim]
        return context, samples.reshape(*obs.shape[:-1], self.n_samples, self.sample_dim) * self.sample_scale


class ClassScoringModule(_ScoringBase):
    """Per-class shares from one network shared across classes (allocation mode); see the module docstring."""

    # RLlib unsquashes actions from [-1, 1] to the Box [0, 1]: -0.8 is a share of 0.1 per class, so the untrained
    # policy spends exactly its budget uniformly, and raising one class or zeroing another moves the allocation
    score_offset = -0.8

    def setup(self) -> None:
        _require(self.model_config, ("n_classes",), "ClassScoringModule")
        self.n_classes = int(self.model_config["n_classes"])
        # class blocks first, then scalars (rounds_left; sweeps_left with messages, datagames_env.faces.comm)
        self.class_blocks = tuple(self.model_config.get("class_blocks") or CLASS_BLOCKS)
        self.n_scalars = int(self.model_config.get("n_scalars", 1))
        self._setup_critic_split(len(self.class_blocks) * self.n_classes + self.n_scalars)
        self.context_dim = self.n_scalars + len(self.class_blocks)  # the scalars + the mean of each block
        scale = [float(self.n_classes) if b in DISTRIBUTION_BLOCKS else 1.0 for b in self.class_blocks]
        self.register_buffer("block_scale", torch.tensor(scale), persistent=False)
        self._setup_heads(len(self.class_blocks), self.context_dim)
        # n_cache uploads over the classes: a multinomial of the class logits (agents.distributions), unless told
        # otherwise (a Gaussian on the shares)
        self.allocate_n = self.model_config.get("allocate_n")
        if self.allocate_n:
            from .distributions import counts_distribution

            self.action_dist_cls = counts_distribution(int(self.allocate_n))

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        if not self.allocate_n:
            return super()._forward(batch, **kwargs)
        return {Columns.ACTION_DIST_INPUTS: self._scores(batch[Columns.OBS])}  # class logits

    def _items(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, k = self.n_classes, len(self.class_blocks)
        per_class = obs[..., :k * c].reshape(*obs.shape[:-1], k, c).transpose(-1, -2)
        # distributions over C classes are O(1/C) per class: rescale so a uniform class reads 1, as accuracy does
        per_class = per_class * self.block_scale
        context = torch.cat([obs[..., k * c:k * c + self.n_scalars], per_class.mean(dim=-2)], dim=-1)
        return context, per_class


class FractionBeta(Distribution):
    """A fraction f in [0, 1] per row: Beta(m k, (1 - m) k) with mean ``m = sigmoid(x0)`` and concentration
    ``k = k0 exp(x1)`` (clamped to [2, 1000]) from the module's two outputs (x0, x1).

    Encoded for RLlib's action normalisation as CountsMultinomial is (module actions in [-1, 1] map to the action
    box [0, 1]): the action is ``2 f - 1``, the env-side value is f. The deterministic action is the mean m.
    Entropy and KL are the Beta's own (exact), so PPO's entropy bonus and KL penalty work unchanged."""

    initial_concentration: float = 8.0
    _EPS = 1e-4  # f is kept off 0 and 1, where a Beta's log-density can be infinite

    def __init__(self, inputs: torch.Tensor) -> None:
        super().__init__()
        self.inputs = inputs
        self.mean = torch.sigmoid(inputs[..., 0])
        log_k = math.log(self.initial_concentration) + inputs[..., 1]
        k = torch.exp(log_k.clamp(math.log(2.0), math.log(1000.0)))
        mean = self.mean.clamp(self._EPS, 1.0 - self._EPS)
        self.beta = torch.distributions.Beta(mean * k, (1.0 - mean) * k)

    def _encode(self, f: torch.Tensor) -> torch.Tensor:
        return (2.0 * f - 1.0).unsqueeze(-1)

    @classmethod
    def decode(cls, action: torch.Tensor) -> torch.Tensor:
        return ((action[..., 0] + 1.0) * 0.5).clamp(cls._EPS, 1.0 - cls._EPS)

    def sample(self, *, sample_shape=None, return_logp: bool = False, **kwargs):
        with torch.no_grad():
            action = self._encode(self.beta.sample())
        return (action, self.logp(action)) if return_logp else action

    def rsample(self, *, sample_shape=None, **kwargs):
        return self._encode(self.beta.rsample())

    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.beta.log_prob(self.decode(value))

    def entropy(self) -> torch.Tensor:
        return self.beta.entropy()

    def kl(self, other: FractionBeta) -> torch.Tensor:
        return torch.distributions.kl_divergence(self.beta, other.beta)

    @staticmethod
    def required_input_dim(space, **kwargs) -> int:
        return 2

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> FractionBeta:
        return cls(logits)

    def to_deterministic(self) -> _FractionMean:
        return _FractionMean(self)


class _FractionMean(Distribution):
    """The Beta's mean, encoded like a sample (evaluation)."""

    def __init__(self, dist: FractionBeta) -> None:
        super().__init__()
        self.dist = dist

    def sample(self, *, sample_shape=None, **kwargs) -> torch.Tensor:
        return self.dist._encode(self.dist.mean)

    def rsample(self, *, sample_shape=None, **kwargs):
        return self.sample()

    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.zeros(value.shape[:-1], dtype=value.dtype, device=value.device)

    def entropy(self, **kwargs):
        raise RuntimeError("a deterministic distribution has no entropy")

    def kl(self, other, **kwargs):
        raise RuntimeError("a deterministic distribution has no KL")

    @staticmethod
    def required_input_dim(space, **kwargs) -> int:
        return 2

    def to_deterministic(self) -> _FractionMean:
        return self


class GapFractionModule(ClassScoringModule):
    """The gap-fraction policy (``--model gap-fraction``, allocation mode): one number f in [0, 1] per robot, the
    fraction of the gap it aims at; the environment's action is Greedy towards ``cloud + f (target - cloud)``
    (``baselines.fraction.greedy_fraction_shares``, applied by the vector runner and by ``rllib:`` evaluation,
    both of which read ``env_action``). The module's action space is ``Box(0, 1, (1,))``.

    The same per-class features as :class:`ClassScoringModule` go through a network shared across classes; their
    mean and max over classes plus the context give the Beta's mean and concentration (:class:`FractionBeta`).
    ``model_config`` keys ``initial_fraction`` (default 0.5) and ``initial_concentration`` (default 8) set the
    starting Beta's mean and concentration (``--initial-fraction``, ``--fraction-concentration``).

    ``concentration_floor`` (None: off, the default) is a lower bound on the Beta's concentration, applied to the
    module's output so that sampling, the stored ``action_dist_inputs`` and the learner's forward pass see the same
    Beta. ``--fraction-concentration-final`` raises it over training (:meth:`set_concentration_floor`, called on
    the learner's and every env runner's module each iteration); it is not part of the module's state."""

    env_action = "greedy-fraction"  # what turns the module's f into the environment's action
    concentration_floor: float | None = None
    concentration_pinned: bool = False  # the floor is also a ceiling: the concentration is the schedule's

    def setup(self) -> None:
        _require(self.model_config, ("n_classes",), "GapFractionModule")
        if self.action_space is not None and tuple(self.action_space.shape) != (1,):
            raise ValueError(f"GapFractionModule: the action space must be Box(0, 1, (1,)) (the fraction), got shape "
                             f"{tuple(self.action_space.shape)}")
        self.n_classes = int(self.model_config["n_classes"])
        self.class_blocks = tuple(self.model_config.get("class_blocks") or CLASS_BLOCKS)
        self.n_scalars = int(self.model_config.get("n_scalars", 1))
        self._setup_critic_split(len(self.class_blocks) * self.n_classes + self.n_scalars)
        self.context_dim = self.n_scalars + len(self.class_blocks)
        scale = [float(self.n_classes) if b in DISTRIBUTION_BLOCKS else 1.0 for b in self.class_blocks]
        self.register_buffer("block_scale", torch.tensor(scale), persistent=False)
        hidden = list(self.model_config.get("hidden", [64, 64]))
        item_dim = len(self.class_blocks)
        self.encoder = _mlp([item_dim + self.context_dim, *hidden])
        self.head = _mlp([2 * hidden[-1] + self.context_dim, hidden[-1], 2], out_gain=0.01)
        # The starting Beta is set through the output bias (x0 = logit of the mean, x1 = log of k / k0), so the
        # distribution class and old checkpoints (whose state overwrites the bias) mean the same as before.
        fraction = float(self.model_config.get("initial_fraction", 0.5))
        concentration = float(self.model_config.get("initial_concentration", FractionBeta.initial_concentration))
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"GapFractionModule: initial_fraction must be in (0, 1), got {fraction}")
        if not 2.0 <= concentration <= 1000.0:
            raise ValueError(f"GapFractionModule: initial_concentration must be in [2, 1000] (the Beta's clamp), got "
                             f"{concentration}")
        with torch.no_grad():
            self.head[-1].bias.copy_(torch.tensor([math.log(fraction / (1.0 - fraction)),
                                                   math.log(concentration / FractionBeta.initial_concentration)]))
        self.value_head = _mlp([self.context_dim + item_dim + self.state_dim, *hidden, 1], out_gain=1.0)
        self.action_dist_cls = FractionBeta

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        context, items = self._items(batch[Columns.OBS][..., :self.actor_obs_dim])
        expanded = context.unsqueeze(-2).expand(*items.shape[:-1], context.shape[-1])
        encoded = torch.tanh(self.encoder(torch.cat([items, expanded], dim=-1)))
        pooled = torch.cat([encoded.mean(dim=-2), encoded.amax(dim=-2), context], dim=-1)
        out = self.head(pooled)
        if self.concentration_floor is not None:  # x1 = log(k / k0) >= log(floor / k0)
            floor = math.log(self.concentration_floor / FractionBeta.initial_concentration)
            x1 = out[..., 1:].clamp(min=floor, max=floor if self.concentration_pinned else None)
            out = torch.cat([out[..., :1], x1], dim=-1)
        return {Columns.ACTION_DIST_INPUTS: out}

    def set_concentration_floor(self, floor: float | None, pinned: bool = False) -> None:
        """Bound the Beta's concentration below by ``floor`` (in [2, 1000], the Beta's clamp), or lift the bound
        (None); ``pinned``: the concentration is ``floor`` (above too), the learned output is not used."""
        if floor is not None:
            floor = float(floor)
            if not (math.isfinite(floor) and 2.0 <= floor <= 1000.0):
                raise ValueError(f"GapFractionModule: the concentration floor must be in [2, 1000] (the Beta's "
                                 f"clamp), got {floor}")
        self.concentration_floor, self.concentration_pinned = floor, bool(pinned) and floor is not None


INITIAL_SWEEP_FRACTION = 0.9


class SweepFractionModule(GapFractionModule):
    """Learned communication with a structured action (``--model sweep-fraction --message-sweeps K``): the same
    network and Beta as :class:`GapFractionModule` (one fraction f per robot, from the robot's own observation);
    the environment's action is ``datagames_env.faces.comm.interactive_fraction_shares``: Greedy towards f of the
    gap as the first announcement, then K Gauss-Seidel sweeps of best responses (Greedy's solver) towards f of the
    gap the others' announcements leave. What is learned: f. What is solver: everything after it."""

    def setup(self) -> None:
        super().setup()
        from datagames_env.faces.comm import check_sweeps

        self.env_action = f"interactive-fraction:{check_sweeps(int(self.model_config.get('sweeps', 3)))}"
        # start near f = 1 (Interactive capped at K sweeps, the solver alone) rather than the Beta's 0.5
        f0 = float(self.model_config.get("initial_fraction", INITIAL_SWEEP_FRACTION))
        if not 0.0 < f0 < 1.0:
            raise ValueError(f"SweepFractionModule: initial_fraction must be in (0, 1), got {f0}")
        with torch.no_grad():
            self.head[-1].bias[0] = math.log(f0 / (1.0 - f0))

