"""One protocol for every policy (analytic baselines and learned agents), scikit-learn style, and one registry.

A policy sees what its information structure allows: ``act(observations, infos)`` gets the dicts a
``parallel_env`` returned (robot -> array / info dict) and returns robot -> action. Policies that need
privileged truth (oracles) say so with ``privileged = True`` and read ``env.privileged_view()``.

Policies are registered per scenario by name with an entry point ``"module:Class"`` (as PettingZoo's registry
does for environments) and imported only when built, so this package never imports ``baselines`` or ``agents``.
One spec grammar serves every scenario (``make_policy(spec, env)``, ``--policy`` / ``--policies``):

=========================  ==========================================================================
spec                       policy
=========================  ==========================================================================
``NAME``                   registered for the env's scenario (``registered_policies(scenario)``)
``NAME:ARG``               a registered policy built with one argument, ``factory(env, ARG)``
                           (``greedy-fraction:0.35``)
``rllib:PATH``             an RLlib checkpoint of ``datagames train``, deterministic actions
``rllib-sample:PATH``      the same policy, sampled (seeded by ``reset(seed)``)
``sb3:PATH``               a Stable-Baselines3 checkpoint (``model.zip`` or its folder), deterministic
``sb3-sample:PATH``        the same policy, sampled
``benchmarl:PATH``         a BenchMARL actor of ``datagames train --algo benchmarl-*`` (its ``checkpoint`` folder),
                           deterministic; ``benchmarl-sample:PATH`` sampled; ``torchrl:PATH`` /
                           ``torchrl-sample:PATH`` any TorchRL policy module saved with ``torch.save``
``module:factory``         ``factory(env)`` returns a policy
``UPLOAD/LABELER``         dual only: any spec above for the upload stage, and the cloud's labeler
=========================  ==========================================================================
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .scenarios import DEFAULT_SCENARIO


@runtime_checkable
class Policy(Protocol):
    name: str
    privileged: bool

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, observations: dict[str, np.ndarray], infos: dict[str, dict]) -> dict[str, np.ndarray]: ...


class CloudGamePolicyBase:
    """What the cloud game's policies share: action mode, class count, action width, a seeded generator."""

    name = "base"
    privileged = False

    def __init__(self, env) -> None:
        self.action_mode = env.config.action_mode
        self.n_classes = env.n_classes
        self.width = env.action_space(env.possible_agents[0]).shape[0]
        self.rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)


class RandomPolicy(CloudGamePolicyBase):
    """Random shares per predicted class (allocation) or random scores (selection)."""

    name = "random"

    def act(self, observations, infos):
        return {agent: self.rng.random(self.width) for agent in observations}


class UniformPolicy(CloudGamePolicyBase):
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


# ------------------------------------------------------------------------------------------------------ registry

_REGISTRY: dict[tuple[str, str], Any] = {}

# checkpoint kind -> (entry point of the loader class, sample the policy?); loaders take (env, path, explore)
CHECKPOINT_KINDS: dict[str, tuple[str, bool]] = {
    "rllib": ("agents.policies:RLlibCheckpointPolicy", False),
    "rllib-sample": ("agents.policies:RLlibCheckpointPolicy", True),
    "sb3": ("agents.policies:SB3CheckpointPolicy", False),
    "sb3-sample": ("agents.policies:SB3CheckpointPolicy", True),
    "benchmarl": ("agents.torchrl_policy:BenchMARLCheckpointPolicy", False),
    "benchmarl-sample": ("agents.torchrl_policy:BenchMARLCheckpointPolicy", True),
    "torchrl": ("agents.torchrl_policy:TorchRLCheckpointPolicy", False),
    "torchrl-sample": ("agents.torchrl_policy:TorchRLCheckpointPolicy", True),
}


def register_policy(scenario: str, name: str, entry_point: str | Callable[[Any], Any]) -> None:
    """Make ``name`` a policy of ``scenario``: ``entry_point`` is ``"module:Class"`` (imported when first built)
    or a callable ``factory(env) -> policy``."""
    if not name or any(c in name for c in ":/,"):
        raise ValueError(f"policy name {name!r} must be non-empty and hold none of ':', '/', ','")
    _REGISTRY[(scenario, name)] = entry_point


def registered_policies(scenario: str) -> list[str]:
    """The policy names registered for ``scenario``, in registration order."""
    return [name for (s, name) in _REGISTRY if s == scenario]


def load_entry_point(entry_point: str | Callable) -> Callable:
    """``"module:attr"`` -> the attribute (imported now); a callable is returned as is."""
    if callable(entry_point):
        return entry_point
    module_name, sep, attr = str(entry_point).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"entry point '{entry_point}' is not of the form 'module:attr'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ValueError(f"cannot import '{entry_point}': {exc}") from None
    except AttributeError:
        raise ValueError(f"cannot import '{entry_point}': module {module_name} has no attribute {attr}") from None


class ScenarioPolicies(Mapping):
    """Read-only view of one scenario's registered policies: name -> class, imported on access (the old
    ``POLICIES`` / ``P2P_POLICIES`` / ``DUAL_POLICIES`` dicts are such views)."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario

    def __getitem__(self, name: str):
        return load_entry_point(_REGISTRY[(self.scenario, name)])

    def __iter__(self) -> Iterator[str]:
        return iter(registered_policies(self.scenario))

    def __len__(self) -> int:
        return len(registered_policies(self.scenario))

    def __repr__(self) -> str:
        return f"ScenarioPolicies({self.scenario!r}: {registered_policies(self.scenario)})"


@dataclass(frozen=True)
class PolicySpec:
    """A parsed policy spec: ``kind`` is ``name``, ``checkpoint`` or ``entry_point``; ``target`` the name, the
    checkpoint path or ``module:factory``; ``labeler`` the second stage (dual) or None."""

    text: str
    scenario: str
    kind: str
    target: str
    checkpoint_kind: str | None = None
    labeler: str | None = None
    env_overrides: dict = field(default_factory=dict)
    argument: str | None = None  # NAME:ARG

    @property
    def label(self) -> str:
        """Short name for tables and legends: ``rllib:runs/train/<run>/checkpoint`` -> ``rllib:<run>``."""
        if self.kind != "checkpoint":
            return self.text
        path = Path(self.target)
        short = f"{self.checkpoint_kind}:{path.parent.name if path.name == 'checkpoint' else path.name}"
        return short + (f"/{self.labeler}" if self.labeler else "")


def spec_grammar(scenario: str) -> str:
    """What ``--policies`` accepts for ``scenario``, for error messages."""
    names = ", ".join(registered_policies(scenario)) or "(none registered)"
    text = (f"policies of scenario '{scenario}': {names}; or {', '.join(k + ':PATH' for k in CHECKPOINT_KINDS)}, "
            "module:factory")
    if _labelers(scenario):
        text += f"; optionally followed by /LABELER with LABELER one of {', '.join(_labelers(scenario))}"
    return text


def _labelers(scenario: str) -> tuple[str, ...]:
    """Second-stage names a spec of ``scenario`` may give after '/' (its row of the scenario table)."""
    from .scenarios import SCENARIOS

    info = SCENARIOS.get(scenario)
    return tuple(load_entry_point(info.labelers)) if info is not None and info.labelers else ()


def parse_policy_spec(spec: str, scenario: str) -> PolicySpec:
    """One parser for every scenario's specs (module table); an unknown name is an error that lists the
    policies known for ``scenario``. A checkpoint path is not checked here (see ``missing_checkpoint``)."""
    text = spec.strip()
    head = text.partition(":")[0]
    labeler = None
    if "/" in text and _labelers(scenario):
        # names hold no '/', paths do: a path's last part is a labeler only if it is a known one
        body, _, tail = text.rpartition("/") if ":" in text else text.partition("/")
        if ":" not in text or tail in _labelers(scenario):
            if tail not in _labelers(scenario):
                raise ValueError(f"policy spec '{spec}': labeler '{tail}' is not one of {list(_labelers(scenario))}")
            text, labeler = body, tail
    overrides = {"labeler": labeler} if labeler else {}
    argument = None
    if ":" in text and head in CHECKPOINT_KINDS:
        kind, target, checkpoint_kind = "checkpoint", text.partition(":")[2], head
        if not target:
            raise ValueError(f"policy spec '{spec}': {head}:PATH needs a path")
    elif ":" in text and (scenario, head) in _REGISTRY:
        kind, target, checkpoint_kind = "name", head, None
        argument = text.partition(":")[2]
    elif ":" in text:
        kind, target, checkpoint_kind = "entry_point", text, None
    elif (scenario, text) in _REGISTRY:
        kind, target, checkpoint_kind = "name", text, None
    else:
        raise ValueError(f"unknown policy '{text}' for scenario '{scenario}'; known {spec_grammar(scenario)}")
    return PolicySpec(spec.strip(), scenario, kind, target, checkpoint_kind, labeler, overrides, argument)


def missing_checkpoint(spec: PolicySpec) -> bool:
    return spec.kind == "checkpoint" and not Path(spec.target).exists()


def scenario_of_env(env) -> str:
    return getattr(getattr(env, "config", None), "scenario", DEFAULT_SCENARIO)


def make_policy(spec: Any, env, scenario: str | None = None) -> Policy:
    """A policy for ``env`` from a spec (module table; the scenario is the env's) or a policy object (returned as
    is). ``make_policy("oracle", env)``, ``make_policy("rllib:runs/train/<run>/checkpoint", env)``."""
    scenario = scenario or scenario_of_env(env)
    if not isinstance(spec, (str, PolicySpec)):
        if not (hasattr(spec, "act") and hasattr(spec, "reset")):
            raise TypeError(f"policy {spec!r} does not implement the Policy protocol (reset, act)")
        return spec
    parsed = spec if isinstance(spec, PolicySpec) else parse_policy_spec(spec, scenario)
    if parsed.labeler is not None and getattr(env.config, "labeler", None) != parsed.labeler:
        raise ValueError(f"policy spec '{parsed.text}' needs an env built with labeler='{parsed.labeler}' "
                         f"(this one has '{getattr(env.config, 'labeler', None)}')")
    if parsed.kind == "checkpoint":
        if missing_checkpoint(parsed):
            raise ValueError(f"policy '{parsed.text}': {parsed.target} does not exist")
        entry_point, explore = CHECKPOINT_KINDS[parsed.checkpoint_kind]
        try:
            loader = load_entry_point(entry_point)
        except ValueError as exc:
            extra = "benchmarl" if parsed.checkpoint_kind.startswith(("benchmarl", "torchrl")) else "rl"
            raise ValueError(f"policy '{parsed.text}' needs the {extra} extra (pip install -e '.[{extra}]'): {exc}") from None
        return loader(env, parsed.target, explore=explore)
    if parsed.kind == "entry_point":
        return load_entry_point(parsed.target)(env)
    factory = load_entry_point(_REGISTRY[(scenario, parsed.target)])
    return factory(env) if parsed.argument is None else factory(env, parsed.argument)


def _register_builtin() -> None:
    """Every scenario's built-in policies, as its row of the scenario table names them."""
    from .scenarios import SCENARIOS

    for scenario, info in SCENARIOS.items():
        for name, target in info.policies:
            register_policy(scenario, name, target)


_register_builtin()

# the cloud game's registered policies (name -> class), as before the registry was shared
POLICIES = ScenarioPolicies("datagames")


def is_checkpoint_spec(name: str) -> bool:
    """``rllib:PATH`` / ``sb3:PATH`` and their ``-sample`` forms: a trained policy loaded from a checkpoint."""
    return ":" in name and name.partition(":")[0] in CHECKPOINT_KINDS
