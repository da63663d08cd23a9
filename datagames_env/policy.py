"""One protocol for every policy (analytic baselines and learned agents), scikit-learn style.

A policy sees what its information structure allows: ``act(observations, infos)`` gets the dicts a
``parallel_env`` returned (robot -> array / info dict) and returns robot -> action. Policies that need
privileged truth (oracles) say so with ``privileged = True`` and are handed the env via ``bind``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    name: str
    privileged: bool

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, observations: dict[str, np.ndarray], infos: dict[str, dict]) -> dict[str, np.ndarray]: ...


class _Base:
    name = "base"
    privileged = False

    def __init__(self, env) -> None:
        self.action_mode = env.config.action_mode
        self.n_classes = env.n_classes
        self.width = env.action_space(env.possible_agents[0]).shape[0]
        self.rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)


class RandomPolicy(_Base):
    """Random shares per predicted class (allocation) or random scores (selection)."""

    name = "random"

    def act(self, observations, infos):
        return {agent: self.rng.random(self.width) for agent in observations}


class UniformPolicy(_Base):
    """Upload a uniformly random subset of the round: shares proportional to the predicted-class
    histogram (allocation), i.i.d. random scores (selection). The paper's 'uniform sampling' benchmark."""

    name = "uniform"

    def act(self, observations, infos):
        if self.action_mode == "selection":
            return {agent: self.rng.random(self.width) for agent in observations}
        actions = {}
        for agent in observations:
            available = np.asarray(infos[agent]["available"], dtype=np.float64)
            total = available.sum()
            actions[agent] = available / total if total > 0 else np.zeros(self.width)
        return actions


POLICIES: dict[str, type] = {"random": RandomPolicy, "uniform": UniformPolicy}


CHECKPOINT_KINDS = ("rllib", "rllib-sample", "sb3", "sb3-sample")


def is_checkpoint_spec(name: str) -> bool:
    """``rllib:PATH`` / ``sb3:PATH``: a trained policy loaded from a checkpoint (``agents.policies``)."""
    return name.partition(":")[0] in CHECKPOINT_KINDS and ":" in name


def make_policy(name: str, env) -> Policy:
    """``make_policy("oracle", env)``: random, uniform, and the analytic baselines (greedy, interactive,
    oracle) that ``baselines.policies`` registers on import; ``rllib:PATH`` and ``sb3:PATH`` load trained
    policies from checkpoints."""
    if is_checkpoint_spec(name):
        from agents.policies import load_checkpoint_policy

        return load_checkpoint_policy(name, env)
    if name not in POLICIES:
        try:
            import baselines.policies  # noqa: F401  (registers the analytic baselines)
        except ImportError:
            pass
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy '{name}'; available: {sorted(POLICIES)}") from None
    return cls(env)
