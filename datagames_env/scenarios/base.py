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
``step(actions,        ``(N, A)`` float64 -> :class:`Transition`; raises before changing any state on bad input,
active)``              and is atomic (:func:`atomic_step`). ``active`` (bool ``(N,)``, None = all): robots that
                       left ``agents``; an inactive robot's row is the neutral action (zeros) and it must have no
                       effect on the others (it uploads / shares / receives nothing), though its stream still
                       draws so the others' draws do not shift
``snapshot_state()``   a small picklable dict of what a step changes (no dataset, no model that the config
``restore_state(s)``   rebuilds); restoring it on a scenario of the same config continues bit-exactly
``check_snapshot_``    raises :class:`SnapshotError` naming the field when a snapshot state does not fit this
``state(s)``           scenario (shapes, ranges, indices); called before ``restore_state`` changes anything
``content_arrays()``   ``(owner, arrays)``: the data behind the scenario, hashed into the snapshot digest once
                       per owner object (a dataset, a world)
``state()``            the global state (privileged where it says so), flat float32
``privileged_view()``  oracle-only truth, a dict of arrays
``start_faults(seed)`` (base class) the ``faults`` block's generators and liars for the episode of ``seed``; the
                       face calls it after ``reset``. ``fault_rngs`` is None when the block is off
``render(mode)``       ``ansi`` text, ``rgb_array`` image; ``human``: shows it and returns None, or returns
                       text that the face prints
=====================  ============================================================================

Infos have a fixed schema: the same keys at reset and at every step, numbers and arrays only, never NaN.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import json
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["FAULT_STREAMS", "SNAPSHOT_VERSION", "BatchTransition", "BatchedScenario", "SampleSpec", "fault_rng", "Scenario", "Snapshot", "SnapshotDefaults", "SnapshotError", "Transition", "active_mask",
           "atomic_step", "check_snapshot_array", "check_snapshot_int", "check_snapshot_rng", "config_digest",
           "content_digest", "snapshot_entry"]

# bump when the content of any scenario's snapshot_state() or of the face's part changes. 2: the digest covers
# the data's content, offline robots (dropout) stay in ``agents``
SNAPSHOT_VERSION = 2


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


class SnapshotError(ValueError):
    """A snapshot that does not fit the env it is restored into (other scenario, config or version)."""


@dataclass(frozen=True)
class Snapshot:
    """What ``env.snapshot()`` returns: plain data (numpy arrays, numbers, dicts), picklable, versioned."""

    version: int
    scenario: str        # metadata["name"]
    config_digest: str   # sha256 of the config: restore refuses a snapshot of another config
    face: dict           # the face's own state (agents, seed sequence)
    state: Any           # the scenario's (or core's) snapshot_state()

    def check(self, scenario: str, digest: str) -> None:
        if self.version != SNAPSHOT_VERSION:
            raise SnapshotError(f"snapshot version {self.version} cannot be restored by this library (version "
                                f"{SNAPSHOT_VERSION})")
        if self.scenario != scenario:
            raise SnapshotError(f"snapshot of scenario '{self.scenario}' cannot be restored into '{scenario}'")
        if self.config_digest != digest:
            raise SnapshotError("snapshot was taken with another config or other data (digest "
                                f"{self.config_digest[:12]} != {digest[:12]}): build the env from the same config "
                                "and the same dataset content")


def config_digest(config: Any, content: str | None = None) -> str:
    """sha256 of the config (a default ``faults`` block left out) and of ``content``, the data's digest
    (:func:`content_digest`): a dataset of the same name with other arrays is another env."""
    data = config.model_dump(mode="json")
    faults = getattr(config, "faults", None)
    if faults is not None and faults == type(faults)():  # the default block: the digest of a config without it
        data.pop("faults")
    if content is not None:
        data = {"config": data, "content": content}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


_CONTENT_DIGESTS: dict[int, tuple[Any, str]] = {}  # id(owner) -> (weak reference to it, digest)


def content_digest(owner: Any, arrays) -> str:
    """sha256 of ``arrays`` (dtype, shape and bytes of each), computed once per ``owner`` (a dataset or a world
    whose arrays never change) and cached while it lives: hashing 31 MB of MNIST-sized images took 67 ms here, once."""
    key = id(owner)
    hit = _CONTENT_DIGESTS.get(key)
    if hit is not None and hit[0]() is owner:
        return hit[1]
    sha = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        sha.update(repr((array.dtype.str, array.shape)).encode())
        sha.update(array.view(np.uint8).reshape(-1) if array.size else b"")
    digest = sha.hexdigest()
    try:
        ref = weakref.ref(owner, lambda _ref, key=key: _CONTENT_DIGESTS.pop(key, None))
    except TypeError:  # an owner without weak references: not cached
        return digest
    _CONTENT_DIGESTS[key] = (ref, digest)
    return digest


# ---- snapshot validation: every check names the field, and runs before anything is changed
def snapshot_entry(state: Any, key: str, field: str) -> Any:
    """``state[key]``, or a :class:`SnapshotError` naming ``field`` when ``state`` is no dict or lacks it."""
    if not isinstance(state, dict) or key not in state:
        raise SnapshotError(f"snapshot field '{field}' is missing")
    return state[key]


def check_snapshot_int(value: Any, field: str, low: int, high: int) -> int:
    """An integer (not a bool) in ``[low, high]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise SnapshotError(f"snapshot field '{field}' must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


_KINDS = {"f": ("f", "a float array"), "i": ("iu", "an integer array"), "b": ("b", "a bool array")}


def check_snapshot_array(value: Any, field: str, shape: tuple, kind: str = "f", low: float | None = None,
                         high: float | None = None) -> np.ndarray:
    """A numpy array of ``kind`` (``f`` finite floats, ``i`` integers, ``b`` bools) and ``shape`` (None: any
    length), every value in ``[low, high]``."""
    kinds, what = _KINDS[kind]
    if not isinstance(value, np.ndarray) or value.dtype.kind not in kinds:
        got = f"{value.dtype} array" if isinstance(value, np.ndarray) else type(value).__name__
        raise SnapshotError(f"snapshot field '{field}' must be {what}, got {got}")
    if len(value.shape) != len(shape) or any(want is not None and want != got
                                              for want, got in zip(shape, value.shape)):
        wanted = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise SnapshotError(f"snapshot field '{field}' must have shape {wanted}, got {value.shape}")
    if value.size:
        if kind == "f" and not np.isfinite(value).all():
            raise SnapshotError(f"snapshot field '{field}' holds NaN or inf")
        if (low is not None and value.min() < low) or (high is not None and value.max() > high):
            raise SnapshotError(f"snapshot field '{field}' must lie in [{low}, {high}], got values in "
                                f"[{value.min()}, {value.max()}]")
    return value


def check_snapshot_rng(value: Any, field: str) -> Any:
    """A numpy bit generator state that a PCG64 generator accepts."""
    try:
        np.random.Generator(np.random.PCG64()).bit_generator.state = value
    except (TypeError, ValueError, KeyError) as exc:
        raise SnapshotError(f"snapshot field '{field}' is not a PCG64 generator state ({exc!r})") from None
    return value


FAULT_STREAMS = {"agents": 1, "messages": 2, "protocol": 3, "liars": 4}  # one generator per kind of fault draw


def fault_rng(seed: int, faults: Any, stream: str) -> np.random.Generator:
    """The generator of one kind of fault draw in the episode of ``seed``: derived from the episode seed, the
    block's ``seed`` offset and the kind, and from nothing else, so the scenario's own draws never shift."""
    return np.random.default_rng([int(seed), int(faults.seed), 0xFA017, FAULT_STREAMS[stream]])


def active_mask(active: np.ndarray | None, n: int) -> np.ndarray:
    """The robots still in ``agents`` as bool ``(n,)`` (None: every robot)."""
    return np.ones(n, dtype=bool) if active is None else np.asarray(active, dtype=bool).reshape(n)


def atomic_step(step):
    """Make ``step`` atomic: if anything inside raises, the scenario is put back exactly as it was.

    A step rebinds most attributes (keeping the old references is enough); the few it changes in place are
    copied by the scenario's ``_begin_step`` and put back by ``_rollback_step``."""

    @functools.wraps(step)
    def wrapper(self, actions, active=None):
        saved = self._begin_step()
        rngs = getattr(self, "fault_rngs", None) or {}
        fault_states = {name: rng.bit_generator.state for name, rng in rngs.items()}
        try:
            return step(self, actions, active)
        except BaseException:
            self._rollback_step(saved)
            for name, state in fault_states.items():  # generators advance in place
                rngs[name].bit_generator.state = state
            raise

    return wrapper


class SnapshotDefaults:
    """What a scenario without snapshots answers (both protocols below share it); scenarios with snapshots
    override all four."""

    def snapshot_state(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__} does not support snapshots")

    def check_snapshot_state(self, state: dict) -> None:
        """Raise :class:`SnapshotError` naming the field if ``state`` does not fit this scenario."""

    def restore_state(self, state: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support snapshots")

    def content_arrays(self) -> tuple[Any, list[np.ndarray]]:
        """``(owner, arrays)``: the data behind the scenario (hashed once per owner into the snapshot digest)."""
        return None, []


class Scenario(SnapshotDefaults, abc.ABC):
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
    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> Transition:
        """Play one round with the robots' ``(N, A)`` actions; ``active`` masks the robots that left."""

    fault_rngs: dict[str, np.random.Generator] | None = None
    liars: np.ndarray | None = None

    @property
    def faults(self) -> Any:
        """The config's ``faults`` block when it changes anything, else None."""
        faults = getattr(self.config, "faults", None)
        return faults if faults is not None and faults.enabled else None

    def start_faults(self, seed: int) -> None:
        """The episode's fault generators (one per kind, :func:`fault_rng`) and its liars: ``round(liars * N)``
        robots drawn from the episode seed. Nothing is drawn when the block is off."""
        faults = self.faults
        if faults is None:
            self.fault_rngs, self.liars = None, np.zeros(self.n_robots, dtype=bool)
            return
        self.fault_rngs = {name: fault_rng(seed, faults, name) for name in ("agents", "messages", "protocol")}
        liars = np.zeros(self.n_robots, dtype=bool)
        liars[fault_rng(seed, faults, "liars").permutation(self.n_robots)[:round(faults.liars * self.n_robots)]] = True
        self.liars = liars

    def fault_state(self) -> dict | None:
        if self.fault_rngs is None:
            return None
        return {"rngs": {name: rng.bit_generator.state for name, rng in self.fault_rngs.items()},
                "liars": self.liars.copy()}

    def restore_fault_state(self, state: dict | None) -> None:
        if state is None:
            self.fault_rngs, self.liars = None, np.zeros(self.n_robots, dtype=bool)
            return
        self.fault_rngs = {}
        for name, rng_state in state["rngs"].items():
            rng = np.random.default_rng()
            rng.bit_generator.state = rng_state
            self.fault_rngs[name] = rng
        self.liars = np.asarray(state["liars"], dtype=bool).copy()

    def _begin_step(self) -> dict:
        """What :func:`atomic_step` needs to undo a step: a shallow copy of the attributes (override to copy
        what the step changes in place)."""
        return dict(vars(self))

    def _rollback_step(self, saved: dict) -> None:
        vars(self).clear()
        vars(self).update(saved)

    def snapshot_digest(self) -> str:
        """The digest a snapshot carries: the config and the content of the data (:func:`config_digest`)."""
        owner, arrays = self.content_arrays()
        return config_digest(self.config, content_digest(owner, arrays) if owner is not None else None)

    def check_fault_state(self, state: Any, field: str) -> None:
        """The face's check of :meth:`fault_state` in a snapshot (None exactly when the block is off)."""
        if self.faults is None:
            if state is not None:
                raise SnapshotError(f"snapshot field '{field}' holds fault state, but this config has no faults")
            return
        rngs = snapshot_entry(state, "rngs", f"{field}.rngs")
        if not isinstance(rngs, dict) or set(rngs) != {"agents", "messages", "protocol"}:
            raise SnapshotError(f"snapshot field '{field}.rngs' must hold the generators agents, messages, protocol")
        for name, rng_state in rngs.items():
            check_snapshot_rng(rng_state, f"{field}.rngs.{name}")
        check_snapshot_array(snapshot_entry(state, "liars", f"{field}.liars"), f"{field}.liars", (self.n_robots,),
                             "b")

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


# ---------------------------------------------------------------------------------------------- batched protocol
@dataclass
class BatchTransition:
    """What one round of a batched scenario returns for its B envs; ``[b, i]`` is robot i of env b."""

    observations: np.ndarray  # (B, N, obs_dim) float32
    rewards: np.ndarray       # (B, N) float64
    terminated: np.ndarray    # (B,) bool: the env's round was its episode's last
    infos: dict[str, Any]     # fixed schema: ``robot_info_keys`` lead with (B, N), ``env_info_keys`` with (B,)


class BatchedScenario(SnapshotDefaults, abc.ABC):
    """A scenario over B environments at once (VMAS's batched ``Scenario``, JaxMARL's ``step_env``): the contract
    every batched face (``vector_env``, ``torchrl_env``, BenchMARL, the SB3 and RLlib fast paths) is built on.

    =====================  ============================================================================
    Member                 Contract
    =====================  ============================================================================
    ``metadata``,          as :class:`Scenario` (per env: ``obs_layout``, bounds ``(obs_dim,)``, ``action_width``,
    ``config``, ...        ``action_meaning``, ``sample_spec``, ``checks_finite``)
    ``num_envs``           B
    ``n_robots``           N
    ``state_dim``          width of :meth:`state`
    ``robot_info_keys``    info entries whose arrays lead with ``(B, N)`` (row ``[b, i]`` is robot i's info value)
    ``env_info_keys``      info entries whose arrays lead with ``(B,)`` (one value per env, shared by its robots)
    ``reset(seeds)``       ``seeds`` int ``(B,)`` -> ``(observations (B, N, obs_dim) float32, infos)``; env b
                           equals the B = 1 scenario reset with ``seeds[b]``, draw for draw
    ``step(actions,        ``(B, N, A)`` float64 -> :class:`BatchTransition`; envs step in lockstep (one round
    active)``              counter); ``active`` bool ``(B, N)`` (None = all) as in :class:`Scenario`; raises before
                           changing any state on bad input (naming env and robot), atomic
    ``state()``            ``(B, state_dim)`` float32 global state (privileged where it says so)
    ``privileged_view()``  oracle-only truth, a dict of arrays that lead with ``(B, ...)``
    snapshots              ``snapshot_state()``, ``check_snapshot_state(s)``, ``restore_state(s)``,
                           ``content_arrays()`` as in :class:`Scenario`, for all B envs
    ``render(mode, b)``    env b, as :meth:`Scenario.render`
    =====================  ============================================================================

    Infos hold numbers and arrays only, never NaN, with the same keys at reset and at every step.
    """

    metadata: ClassVar[dict[str, Any]]
    action_meaning: ClassVar[str] = "a score per observed sample"
    checks_finite: ClassVar[bool] = True
    sample_spec: SampleSpec | None = None
    robot_info_keys: tuple[str, ...] = ()
    env_info_keys: tuple[str, ...] = ()

    config: Any
    num_envs: int
    n_robots: int
    obs_layout: dict[str, slice]
    observation_low: np.ndarray
    observation_high: np.ndarray
    action_width: int
    state_dim: int

    @abc.abstractmethod
    def reset(self, seeds: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Start one episode per env, env b from ``seeds[b]``."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> BatchTransition:
        """One round of every env with the ``(B, N, A)`` actions; ``active`` ``(B, N)`` masks robots that left."""

    @abc.abstractmethod
    def state(self) -> np.ndarray:
        """``(B, state_dim)`` float32."""

    @abc.abstractmethod
    def privileged_view(self) -> dict[str, Any]:
        """Oracle-only truth of every env."""

    def render(self, mode: str, b: int = 0) -> str | np.ndarray | None:
        raise NotImplementedError(f"{type(self).__name__} does not render")

    def close(self) -> None:
        """Release resources (none by default)."""
