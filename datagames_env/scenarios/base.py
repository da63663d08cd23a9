"""The Scenario protocol: one object per system of the papers, on the shared core (VMAS's ``BaseScenario``,
JaxMARL's ``step`` / ``step_env`` split).

A scenario owns its config, observation layout, reset, transition, reward, infos and privileged view, and speaks
arrays only: row i of every matrix is robot i. The face (:class:`datagames_env.faces.base.FleetParallelEnv`)
owns everything PettingZoo: agent names and dicts, spaces, the seed sequence, action checks, ``agents`` emptying
at the episode end and render-mode dispatch. So one face serves every scenario, and a new scenario is one class.

=====================  ============================================================================
Member                 Contract
=====================  ============================================================================
``metadata``           PettingZoo metadata (``name``, ``render_modes``, ...)
``config``             the validated config object
``n_robots``           N
``obs_layout``         name -> slice of the flat observation (the declared contract policies read)
``observation_low``,   float32 ``(obs_dim,)`` bounds of every robot's observation
``observation_high``
``action_width``       A: every robot's action is ``Box(0, 1, (A,), float32)``
``action_meaning``     what one action row means (for error messages)
``sample_spec``        :class:`SampleSpec` when the observation ends in per-sample features and the action
                       scores those samples (selection), else None: the contract learned policies read
``checks_finite``      whether the face rejects NaN / inf actions (False: the scenario names the robot itself)
``reset(seed)``        -> ``(observations (N, obs_dim) float32, infos: list of N dicts)``
``step(actions)``      ``(N, A)`` float64 -> :class:`Transition`; raises before changing any state on bad input
``state()``            the global state (privileged where it says so), flat float32
``privileged_view()``  oracle-only truth, a dict of arrays
``render(mode)``       ``ansi`` text, ``rgb_array`` image; ``human``: shows it and returns None, or returns
                       text that the face prints
=====================  ============================================================================

Infos have a fixed schema: the same keys at reset and at every step, numbers and arrays only, never NaN.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["SampleSpec", "Scenario", "Transition"]


@dataclass(frozen=True)
class SampleSpec:
    """The per-sample part of a selection scenario's observation: ``obs = [context | n_samples x sample_dim]``, each
    sample's features starting with its ``embedding_dim`` embedding; the action scores the samples and the top
    ``select_k`` are taken. ``rescale``: the features are unit-norm embeddings and distributions over classes that a
    learned module should rescale to O(1) (the cloud game's modules were trained so)."""

    context_dim: int
    n_samples: int
    sample_dim: int
    embedding_dim: int
    select_k: int
    rescale: bool = False


@dataclass
class Transition:
    """What one round of a scenario returns; row i is robot i."""

    observations: np.ndarray  # (N, obs_dim) float32
    rewards: np.ndarray       # (N,) float64
    terminated: bool          # the round was the episode's last (the task's horizon: a termination)
    infos: list[dict]         # N dicts, fixed schema


class Scenario(abc.ABC):
    """Base of the scenarios (see the module docstring)."""

    metadata: ClassVar[dict[str, Any]]
    action_meaning: ClassVar[str] = "a score per observed sample"
    checks_finite: ClassVar[bool] = True
    sample_spec: SampleSpec | None = None

    config: Any
    n_robots: int
    obs_layout: dict[str, slice]
    observation_low: np.ndarray
    observation_high: np.ndarray
    action_width: int

    @abc.abstractmethod
    def reset(self, seed: int) -> tuple[np.ndarray, list[dict]]:
        """Start an episode from ``seed``: the robots' first observations and infos."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> Transition:
        """Play one round with the robots' ``(N, A)`` actions."""

    @abc.abstractmethod
    def state(self) -> np.ndarray:
        """The global state, flat float32."""

    @abc.abstractmethod
    def privileged_view(self) -> dict[str, Any]:
        """Oracle-only truth."""

    @abc.abstractmethod
    def render(self, mode: str) -> str | np.ndarray | None:
        """``ansi``: text; ``rgb_array``: an image; ``human``: show it and return None, or return text to print."""

    def close(self) -> None:
        """Release windows or other resources (none by default)."""
