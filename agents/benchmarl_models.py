"""BenchMARL models for the datagames tasks: ``datagames train --algo benchmarl-* --model sample-scoring``.

:class:`SampleScoringConfig` / :class:`SampleScoring`: the BenchMARL counterpart of RLlib's
:class:`agents.modules.SampleScoringModule` (the GU model of the papers). A selection scenario's observation is
``[context | n_samples x sample_dim]`` (``scenario.sample_spec``); the model applies one MLP to every sample's
features concatenated with the robot's context, so the policy is shared across samples (and, with parameter
sharing, across robots) and its size does not grow with the number of samples. BenchMARL's MLP instead reads the
whole flat observation and writes all scores at once.

=====================  ======================================================================================
Input                  ``("robots", "observation")`` ``(..., N, obs_dim)`` (decentralised, shared parameters)
Output                 ``k`` values per sample, laid out as ``k`` blocks of ``n_samples``: MAPPO / IPPO / MASAC's
                       Gaussian head wants ``2 n_samples`` (every loc, then every scale), so ``k = 2``
Layout                 ``context_dim``, ``n_samples``, ``sample_dim``, ``context_scale`` and ``sample_scale``
                       (fixed input scales so features are O(1)): :func:`sample_layout` reads them from the task
Network                ``num_cells`` hidden layers with ``activation_class`` between them; the last layer's
                       weights start small (gain 0.01), so every sample starts at the same score
=====================  ======================================================================================

Not for critics over the global state (no sample rows there) nor for layouts without samples (the cloud game in
allocation mode): both are refused when the model is built.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Sequence, Type

import torch
from benchmarl.models.common import Model, ModelConfig
from tensordict import TensorDictBase
from torch import nn

__all__ = ["SampleScoring", "SampleScoringConfig", "sample_layout"]

LAYOUT_KEYS = ("context_dim", "n_samples", "sample_dim", "context_scale", "sample_scale")


def sample_layout(config) -> dict:
    """The per-sample layout of a datagames config's observation (what :class:`SampleScoringConfig` needs), from a
    one-env batch of it; raises ``ValueError`` naming the scenario where the observation has no sample rows."""
    from types import SimpleNamespace

    import datagames_env
    from datagames_env.scenarios import scenario_of

    from .rllib_train import env_layout

    venv = datagames_env.vector_env(1, config)
    spec = venv.batched.sample_spec
    if spec is None:
        mode = getattr(venv.config, "action_mode", None)
        raise ValueError(f"--model sample-scoring: the '{scenario_of(venv.config)}' scenario's observation "
                         f"(action_mode {mode!r}) has no per-sample rows; it needs a selection layout (p2p, dual, "
                         "or the cloud game with action_mode: selection)")
    shim = SimpleNamespace(obs_layout=venv.obs_layout, scenario=SimpleNamespace(sample_spec=spec),
                           n_classes=getattr(venv.batched, "n_classes", None) or getattr(venv.config, "n_classes", 0),
                           config=venv.config)
    layout = env_layout(shim)
    n_ctx, n_feat = layout["context_dim"], layout["sample_dim"]
    return {"context_dim": n_ctx, "n_samples": layout["n_samples"], "sample_dim": n_feat,
            "context_scale": list(layout.get("context_scale") or [1.0] * n_ctx),
            "sample_scale": list(layout.get("sample_scale") or [1.0] * n_feat)}


class SampleScoring(Model):
    """One MLP over ``[sample features * sample_scale | context * context_scale]`` per sample (module table)."""

    def __init__(self, **kwargs) -> None:
        layout = {k: kwargs.pop(k) for k in LAYOUT_KEYS}
        num_cells = list(kwargs.pop("num_cells"))
        activation_class = kwargs.pop("activation_class")
        self.context_dim, self.n_samples, self.sample_dim = (int(layout[k]) for k in LAYOUT_KEYS[:3])
        super().__init__(**kwargs)  # calls _perform_checks
        self.per_sample = self.output_leaf_spec.shape[-1] // self.n_samples
        self.register_buffer("context_scale", torch.tensor(layout["context_scale"], dtype=torch.float32,
                                                           device=self.device))
        self.register_buffer("sample_scale", torch.tensor(layout["sample_scale"], dtype=torch.float32,
                                                          device=self.device))
        sizes = [self.sample_dim + self.context_dim, *num_cells, self.per_sample]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            linear = nn.Linear(a, b, device=self.device)
            last = i == len(sizes) - 2
            nn.init.orthogonal_(linear.weight, gain=0.01 if last else 2 ** 0.5)
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if not last:
                layers.append(activation_class())
        self.scorer = nn.Sequential(*layers)

    def _perform_checks(self) -> None:
        super()._perform_checks()
        name = "SampleScoring (--model sample-scoring)"
        if not self.input_has_agent_dim or self.centralised:
            raise ValueError(f"{name} reads each robot's own observation (a decentralised actor), not the global "
                             "state or all robots' observations: use it as the actor model, not the critic")
        if not self.share_params:
            raise ValueError(f"{name}: one network shared by all robots; set share_policy_params: True")
        if len(self.in_keys) != 1:
            raise ValueError(f"{name} reads one observation key, got {self.in_keys}")
        width = self.input_leaf_spec.shape[-1]
        need = self.context_dim + self.n_samples * self.sample_dim
        if width < need:
            raise ValueError(f"{name}: the observation has {width} features, the layout needs context "
                             f"{self.context_dim} + {self.n_samples} x {self.sample_dim} = {need}")
        out = self.output_leaf_spec.shape[-1]
        if out % self.n_samples:
            raise ValueError(f"{name}: the output has {out} features, not a multiple of the {self.n_samples} samples")

    def _forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        obs = tensordict.get(self.in_key)
        context = obs[..., :self.context_dim] * self.context_scale
        samples = obs[..., self.context_dim:self.context_dim + self.n_samples * self.sample_dim]
        samples = samples.reshape(*obs.shape[:-1], self.n_samples, self.sample_dim) * self.sample_scale
        expanded = context.unsqueeze(-2).expand(*samples.shape[:-1], self.context_dim)
        out = self.scorer(torch.cat([samples, expanded], dim=-1))  # (..., n_samples, k)
        tensordict.set(self.out_key, out.transpose(-1, -2).reshape(*obs.shape[:-1], -1))  # k blocks of n_samples
        return tensordict


@dataclass
class SampleScoringConfig(ModelConfig):
    """Config of :class:`SampleScoring`; build the layout fields with :func:`sample_layout`."""

    context_dim: int = MISSING
    n_samples: int = MISSING
    sample_dim: int = MISSING
    context_scale: Sequence[float] = MISSING
    sample_scale: Sequence[float] = MISSING
    num_cells: Sequence[int] = field(default_factory=lambda: [64, 64])
    activation_class: Type[nn.Module] = nn.Tanh

    def __post_init__(self) -> None:
        for key in ("context_scale", "sample_scale"):
            want = self.context_dim if key == "context_scale" else self.sample_dim
            if len(self.__dict__[key]) != want:
                raise ValueError(f"SampleScoringConfig: {key} must have {want} entries, got {len(self.__dict__[key])}")

    @staticmethod
    def associated_class():
        return SampleScoring

    @classmethod
    def from_config(cls, config, num_cells: Sequence[int] = (64, 64)) -> "SampleScoringConfig":
        """The config for a datagames config's layout (:func:`sample_layout`)."""
        return cls(**sample_layout(config), num_cells=list(num_cells))
