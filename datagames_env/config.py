"""Typed configuration of a datagames environment.

A config is data: a YAML file in ``configs/`` (or any path), keyword overrides on top, validated into one
:class:`EnvConfig`. An unknown key or an invalid value raises :class:`ConfigError` naming the key
(``stream.alpha``, ``n_cache`` ...). Checks that need the dataset (number of classes) run when the
environment is built and raise the same error.

Bounds beyond "finite" (issue 16), each because a larger value broke something far from the key:

=============================  ===========  =========================================================================
Keys                           Bound        Why
=============================  ===========  =========================================================================
target counts and weights,     <= 1e12      the reward is a difference of L2 distances of counts: 1e200 squared is
``target.total``, class mixes               inf (NaN rewards); weights of 1e308 sum to inf (division by zero)
and stream shares
``obs_per_round``              <= 1e12      a count of samples: larger ones overflow the int64 kernels
``perception.lr``              <= 1         Adam moves every weight by about lr per step; 1e30 gave NaN embeddings
``faults.lie_scale``           <= 1e6       a lie a million times the truth is already unbounded; more overflows sums
every integer                  int64        numpy / numba arrays hold 64-bit integers (2**64 was a numba TypingError)
sizes (robots x rounds x ...)  memory       what an episode would allocate is estimated before any array exists and
                                            refused above :func:`memory_limit` (2 GiB, ``$DATAGAMES_MAX_BYTES``)
=============================  ===========  =========================================================================

YAML files are read with duplicate keys refused, and aliases (``*name``) may add at most ``MAX_ALIAS_VALUES`` values
to the document (a "billion laughs" file of 300 bytes would otherwise expand to 10**12); values echoed in error
messages are cut to ``MAX_ECHO_CHARS`` characters.
"""

from __future__ import annotations

import difflib
import os
import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

# a wheel ships the YAMLs as package data (datagames_env/configs, see setup.py); a source tree has them at the root
_PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
CONFIG_DIR = _PACKAGED_CONFIGS if _PACKAGED_CONFIGS.is_dir() else Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending key."""


MAX_COUNT = 10**12  # counts, totals and relative weights (see the module table)
MAX_LR = 1.0
MAX_ALIAS_VALUES = 100_000  # values YAML aliases may add to a config (a real config has a few hundred)
MAX_ECHO_CHARS = 200  # an offending value is echoed up to this length
MAX_ERRORS_SHOWN = 10
MAX_BYTES_ENV_VAR = "DATAGAMES_MAX_BYTES"
DEFAULT_MAX_BYTES = 1 << 31  # 2 GiB, as the IDX file cap (datasets.MAX_IDX_BYTES)
_INT64 = 1 << 63


def memory_limit() -> int:
    """Bytes an episode's pre-flight estimate may reach: ``$DATAGAMES_MAX_BYTES`` (an integer, ``8e9`` is fine),
    else 2 GiB."""
    raw = os.environ.get(MAX_BYTES_ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        limit = int(float(raw))
    except (ValueError, OverflowError):
        raise ConfigError(f"${MAX_BYTES_ENV_VAR} must be a number of bytes, got {raw!r}") from None
    if limit <= 0:
        raise ConfigError(f"${MAX_BYTES_ENV_VAR} must be positive, got {raw!r}")
    return limit


def check_memory(keys: tuple[str, ...], what: str, needed_bytes: int) -> None:
    """Refuse a config whose episode would allocate ``needed_bytes`` (estimated before anything is allocated) above
    :func:`memory_limit`, naming ``keys`` (the config keys that set the size) and what the memory is for."""
    limit = memory_limit()
    if needed_bytes > limit:
        names = ", ".join(f"'{k}'" for k in keys)
        raise ConfigError(f"config key{'s' if len(keys) > 1 else ''} {names}: {what} would need "
                          f"{_gib(needed_bytes)} ({needed_bytes:,} bytes), more than the limit of {_gib(limit)}; "
                          f"lower {' or '.join(keys)}, or raise the limit with ${MAX_BYTES_ENV_VAR}=<bytes>")


def _gib(n_bytes: int | float) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n_bytes >= 1 << shift:
            return f"{n_bytes / (1 << shift):.2f} {unit}"
    return f"{n_bytes:.0f} bytes"


_echo = reprlib.Repr()
_echo.maxlevel, _echo.maxlist, _echo.maxdict, _echo.maxstring, _echo.maxother = 3, 12, 12, MAX_ECHO_CHARS, 80


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to about ``MAX_ECHO_CHARS`` characters, in time bounded by the cut (reprlib stops
    descending: an aliased structure of 10**12 values costs what its first few do)."""
    text = _echo.repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS - 3] + "..."


class _Strict(BaseModel):
    """Base of every config block. ``allow_inf_nan=False``: every float, also inside lists and dicts, must be
    finite (NaN / inf would surface as NaN rewards or diverged models far from the key). A bool is refused where a
    number is expected (pydantic would read ``True`` as 1). Seeds (``seed``, ``*_seed``) are non-negative:
    numpy's seeding refuses negative ones with an error that does not name the key."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        annotation = str(cls.model_fields[info.field_name].annotation)
        if "bool" not in annotation and _has_bool(value, "dict[" in annotation):
            raise ValueError("a boolean is not a number here")
        if "int" in annotation and _has_huge_int(value):
            raise ValueError("integers must fit in 64 bits (numpy and the kernels hold int64)")
        if info.field_name.endswith("seed") and isinstance(value, int) and value < 0:
            raise ValueError("a seed must be a non-negative integer")
        return value


def _has_huge_int(value: Any) -> bool:
    """An int outside int64, also inside a list or among a dict's values (one level, as the int fields nest)."""
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, int) and not -_INT64 <= v < _INT64 for v in value)
    if isinstance(value, dict):
        return any(isinstance(v, int) and not -_INT64 <= v < _INT64 for v in value.values())
    return isinstance(value, int) and not -_INT64 <= value < _INT64


def check_weights(values: list[float] | None, what: str = "entries") -> list[float] | None:
    """Relative weights or counts: each in [0, MAX_COUNT] (their sum, norms and squares stay finite)."""
    if values is not None and any(v > MAX_COUNT for v in values):
        raise ValueError(f"{what} must be at most {MAX_COUNT:.0e} (sums and squared distances stay finite in "
                         f"float64), got {short_repr(max(values))}")
    return values


def _has_bool(value: Any, in_dict: bool) -> bool:
    """A bool in a number field, a list of numbers or (``in_dict``: a dict[str, number] field) a dict's values."""
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_bool(v, False) for v in value if isinstance(v, (bool, list, tuple)))
    return in_dict and isinstance(value, dict) and any(isinstance(v, bool) for v in value.values())


class DatasetConfig(_Strict):
    name: str = Field("digits", description="digits | mnist | kmnist | fashion_mnist | cifar10 | path to .npz")
    data_dir: str | None = Field(None, description="folder with the dataset files (else $DATAGAMES_DATA_DIR, else a user cache)")
    download: bool = Field(False, description="fetch missing official files (md5-checked)")
    validation_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    split_seed: int = 0

    @model_validator(mode="after")
    def _fractions_leave_a_pool(self) -> DatasetConfig:
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError("dataset.validation_fraction + dataset.test_fraction must leave at least 10% for the stream pool")
        return self


class StreamConfig(_Strict):
    """How each robot's class mix p_i(y) is drawn (heterogeneous by default)."""

    kind: Literal["dirichlet", "rare_specialists", "matrix", "uniform"] = "dirichlet"
    alpha: float = Field(0.5, gt=0.0, description="Dirichlet concentration; small = more heterogeneous robots")
    rare_classes: list[int] | None = Field(None, description="rare_specialists: classes only specialists see (default: last two)")
    n_specialists: int = Field(2, ge=0, description="rare_specialists: how many robots see the rare classes")
    specialist_rare_share: float = Field(0.5, ge=0.0, le=1.0, description="share of a specialist's stream that is rare")
    others_rare_share: float = Field(0.0, ge=0.0, le=1.0, description="share of a non-specialist's stream that is rare")
    mixes: list[list[float]] | None = Field(None, description="matrix: explicit (n_robots, n_classes) class mixes")
    drift: float = Field(0.0, ge=0.0, le=1.0, description="per round, each mix moves this far toward a fresh Dirichlet draw")

    @field_validator("mixes")
    @classmethod
    def _mixes_are_distributions(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        if value is None:
            return value
        for i, row in enumerate(value):
            if any(x < 0 for x in row) or sum(row) <= 0:
                raise ValueError(f"row {i} (robot_{i}) must be non-negative with a positive sum, got {short_repr(row)}")
            check_weights(row, f"row {i} (robot_{i}) entries")
        if len({len(r) for r in value}) > 1:
            raise ValueError("all rows must have the same length (one entry per class)")
        return value


class PerceptionConfig(_Strict):
    """The robots' classifier: trained on the cloud set, evaluated on the validation split."""

    model: Literal["auto", "mlp", "cnn"] = Field("auto", description="auto: cnn for images, mlp for vectors")
    per_robot: bool = Field(False, description="one model per robot (bootstrap of the cloud set, own seed)")
    retrain_every: int = Field(0, ge=0, description="retrain on the cloud set every k rounds; 0 = never")
    train_steps: int = Field(300, ge=1, description="Adam steps per training")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0.0, le=MAX_LR, description="Adam step size; above 1 the models only diverge")
    weight_decay: float = Field(1e-4, ge=0.0)
    hidden: int = Field(128, ge=1)
    embedding_dim: int = Field(32, ge=2)
    seed: int = 0


class TargetConfig(_Strict):
    """Target class counts of the cloud dataset."""

    kind: Literal["uniform", "proportions", "counts"] = "uniform"
    proportions: list[float] | None = None
    counts: list[float] | None = None
    total: float | None = Field(None, gt=0.0, le=MAX_COUNT,
                                description="default: initial cloud + rounds * n_robots * n_cache")

    @field_validator("proportions", "counts")
    @classmethod
    def _bounded(cls, value: list[float] | None) -> list[float] | None:
        return check_weights(value)

    @model_validator(mode="after")
    def _kind_has_its_values(self) -> TargetConfig:
        if self.kind == "proportions":
            if not self.proportions:
                raise ValueError("target.kind 'proportions' needs target.proportions")
            if any(p < 0 for p in self.proportions) or sum(self.proportions) <= 0:
                raise ValueError("target.proportions must be non-negative with a positive sum")
        if self.kind == "counts":
            if not self.counts:
                raise ValueError("target.kind 'counts' needs target.counts")
            if any(c < 0 for c in self.counts) or sum(self.counts) <= 0:
                raise ValueError("target.counts must be non-negative with a positive sum")
        return self


class FaultsConfig(_Strict):
    """Faults injected into an episode (issue 12), off by default: every probability 0 and ``liars`` 0 leave the
    episode bit-identical to one without the block. Fault draws come from their own generators, derived from the
    episode seed and ``seed`` (``scenarios.base.fault_rng``), never from the scenario's own RNGs."""

    dropout: float = Field(0.0, ge=0.0, le=1.0, description="per round, probability that an active robot drops out "
                                                           "(it terminates and leaves agents)")
    rejoin: float = Field(0.0, ge=0.0, le=1.0, description="per round, probability that a dropped robot comes back")
    message_loss: float = Field(0.0, ge=0.0, le=1.0, description="probability that one message / transmission is "
                                                                "lost (p2p shared samples; Interactive messages)")
    message_delay: float = Field(0.0, ge=0.0, le=1.0, description="Interactive: probability that one message arrives "
                                                                 "delay_sweeps sweeps late instead of at once")
    delay_sweeps: int = Field(1, ge=1, description="how many sweeps a delayed Interactive message is late")
    liars: float = Field(0.0, ge=0.0, le=1.0, description="fraction of robots that lie (which ones: drawn from the "
                                                         "episode seed)")
    lie_scale: float = Field(3.0, ge=0.0, le=1e6, description="Interactive: a liar sends lie_scale x its contribution")
    robust: Literal["mean", "median", "trimmed"] = Field(
        "mean", description="p2p: aggregation of the receivers' votes; Interactive: median / trimmed = bounded "
                            "messages (a contribution is clipped to what the robot could upload, n_cache samples)")
    seed: int = Field(0, description="offset of the fault generators")

    @property
    def enabled(self) -> bool:
        """Whether the block changes anything: a fault, or a non-default ``robust`` (the median of votes is not
        their mean even without faults). ``rejoin`` alone does nothing (no robot drops)."""
        return bool(self.dropout or self.message_loss or self.message_delay or self.liars or self.robust != "mean")


class EnvConfig(_Strict):
    """Every knob of the environment. See docs/configuration.md for the table."""

    scenario: Literal["datagames"] = Field(
        "datagames", description="the cloud potential game; other scenarios (p2p, dual) have configs of their own"
    )
    dataset: DatasetConfig = DatasetConfig()
    n_robots: int = Field(10, ge=1)
    rounds: int = Field(10, ge=1)
    obs_per_round: int = Field(200, ge=1, le=MAX_COUNT)
    n_cache: int = Field(5, ge=1, description="uploads per robot per round")
    action_mode: Literal["allocation", "selection"] = "allocation"
    initial_cloud_size: int = Field(100, ge=0)
    initial_cloud_alpha: float = Field(1.0, gt=0.0, description="Dirichlet skew of the initial cloud's class mix")
    initial_cloud_proportions: list[float] | None = None
    target: TargetConfig = TargetConfig()
    stream: StreamConfig = StreamConfig()
    perception: PerceptionConfig = PerceptionConfig()
    mix_estimator: Literal["bbse", "pooled", "em", "truth"] = Field(
        "bbse", description="how a robot estimates its class mix: BBSE on the simplex from this round, BBSE on every "
                            "round since its model last changed (pooled), EM (max likelihood), or the truth"
    )
    loss: Literal["l2", "kl"] = "l2"
    reward: Literal["shared", "marginal"] = Field(
        "shared", description="shared: every robot gets the fleet's potential gain; marginal: each robot gets the "
                              "gain its own uploads made given the others' (difference reward, same potential game)"
    )
    world_seed: int | None = Field(
        0, description="seeds initial cloud and first model; null = drawn from each reset seed (slower: a model per episode)"
    )
    final_accuracy: bool = Field(False, description="train the cloud model on the final cloud set, report test accuracy")
    faults: FaultsConfig = Field(FaultsConfig(), description="injected faults (dropout, message loss, liars); off "
                                                             "by default")

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("initial_cloud_proportions")
    @classmethod
    def _bounded(cls, value: list[float] | None) -> list[float] | None:
        return check_weights(value)

    @model_validator(mode="after")
    def _consistent(self) -> EnvConfig:
        if self.n_cache > self.obs_per_round:
            raise ValueError(f"n_cache ({self.n_cache}) cannot exceed obs_per_round ({self.obs_per_round})")
        check_stream_against_fleet(self.stream, self.n_robots)
        if self.initial_cloud_proportions is not None:
            p = self.initial_cloud_proportions
            if any(x < 0 for x in p) or sum(p) <= 0:
                raise ValueError("initial_cloud_proportions must be non-negative with a positive sum")
        return self

    @property
    def upload_budget(self) -> int:
        """Uploads of the whole fleet in one round: the reward's normaliser."""
        return self.n_robots * self.n_cache


def check_stream_against_fleet(stream: StreamConfig, n_robots: int) -> None:
    """The stream keys that depend on the fleet size (shared by every scenario with per-robot streams)."""
    if stream.kind == "rare_specialists" and stream.n_specialists > n_robots:
        raise ValueError(f"stream.n_specialists ({stream.n_specialists}) exceeds n_robots ({n_robots})")
    if stream.kind == "matrix":
        if stream.mixes is None:
            raise ValueError("stream.kind 'matrix' needs stream.mixes")
        if len(stream.mixes) != n_robots:
            raise ValueError(f"stream.mixes has {len(stream.mixes)} rows, expected n_robots = {n_robots}")


def _format_validation_error(err: ValidationError, model_cls: type[BaseModel] | None = None,
                             what: str = "configuration") -> str:
    model_cls = model_cls or EnvConfig
    errors = err.errors()
    scenario = [e for e in errors if tuple(e["loc"]) == ("scenario",)]
    if scenario:  # a config of another scenario: every other key would be reported as unknown
        expected = getattr(model_cls.model_fields.get("scenario"), "default", None)
        return (f"invalid {what}: the config is for scenario {short_repr(scenario[0].get('input'))}, not '{expected}'; "
                "build it with that scenario (datagames run|eval --config ..., or "
                "datagames_env.parallel_env)")
    lines = []
    unknown: dict[tuple, list[str]] = {}  # location -> unknown keys there: the known keys are listed once each
    for e in errors:
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            unknown.setdefault(tuple(e["loc"][:-1]), []).append(str(e["loc"][-1]))
        elif not key:  # a check across keys: its message names them
            lines.append(msg)
        else:
            shown = e.get("input")
            lines.append(f"config key '{key}': {msg}" + ("" if isinstance(shown, dict) else f" (got {short_repr(shown)})"))
    if len(lines) > MAX_ERRORS_SHOWN:
        lines[MAX_ERRORS_SHOWN:] = [f"... and {len(lines) - MAX_ERRORS_SHOWN} more errors"]
    for loc, names in unknown.items():
        if len(names) > MAX_ERRORS_SHOWN:
            names = [*names[:MAX_ERRORS_SHOWN], f"... ({len(names) - MAX_ERRORS_SHOWN} more)"]
        known = _known_keys(loc, model_cls)
        prefix = "".join(f"{p}." for p in loc)
        described = []
        for name in names:
            hint = difflib.get_close_matches(name, known, n=1)
            described.append(f"'{prefix}{name}'" + (f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""))
        where = f" under '{prefix[:-1]}'" if loc else ""
        lines.append(f"unknown config key{'s' if len(names) > 1 else ''} {', '.join(described)}; known keys{where}: "
                     f"{', '.join(sorted(known))}")
    return f"invalid {what}: " + "; ".join(lines)


def _known_keys(loc: tuple, model: type[BaseModel]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            break
    return list(model.model_fields)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        value = _plain(value)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _plain(value: Any) -> Any:
    """Typed sub-configs become plain dicts and nested dicts are copied, so merging never writes into the
    caller's objects."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _expand_dotted(overrides: dict) -> dict:
    """``{"stream.alpha": 0.1}`` -> ``{"stream": {"alpha": 0.1}}``."""
    out: dict = {}
    for key, value in overrides.items():
        value = _plain(value)
        node = out
        parts = str(key).split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):  # another override set it to a scalar or a list
                raise ConfigError(f"config key '{key}': '{'.'.join(parts[:depth + 1])}' is set to "
                                  f"{short_repr(child)}, which has no key '{parts[depth + 1]}'")
            node = child
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = _deep_merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def resolve_config_path(name: str | Path) -> Path:
    """A path to a YAML file, or the name of one in ``configs/`` (``"mnist_datagames"``)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    for candidate in (CONFIG_DIR / f"{name}.yaml", CONFIG_DIR / f"{name}.yml", CONFIG_DIR / str(name)):
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    raise ConfigError(f"config '{name}' not found: not a YAML file, and not one of {available} in {CONFIG_DIR}")


def load_config(config: str | Path | dict | EnvConfig | None = None, **overrides: Any) -> EnvConfig:
    """Build a validated :class:`EnvConfig` from a config name/path/dict plus keyword overrides.

    Overrides may be top-level keys (``n_robots=50``), nested dicts (``stream={"alpha": 0.1}``, merged)
    or dotted keys (``**{"stream.alpha": 0.1}``).
    """
    return load_typed_config(EnvConfig, config, overrides)


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' then overriding keys is allowed
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable key: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                            f"found duplicate key {short_repr(key)}",
                                                            key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def read_config_file(path: Path) -> Any:
    """The data of a YAML config file (None when empty): text decoded as UTF-8, duplicate keys refused, aliases
    bounded (:func:`check_expansion`); every problem is a :class:`ConfigError` naming the file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (a binary file?): {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    loader = _ConfigLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc)[:10 * MAX_ECHO_CHARS]}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    finally:
        loader.dispose()
    check_expansion(data, f"config file {path}")
    return data


def check_expansion(data: Any, where: str) -> None:
    """Refuse data whose shared parts (YAML aliases) expand to more than ``MAX_ALIAS_VALUES`` values beyond its
    own, or that contains itself. Counted over distinct containers (memoised by identity), so a document of
    10**12 values costs what its few hundred nodes do."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    own = 0

    def size(value: Any) -> int:
        nonlocal own
        if not isinstance(value, (list, tuple, dict)):
            return 1
        ident = id(value)
        if ident in sizes:
            return sizes[ident]
        if ident in active:
            raise ConfigError(f"{where}: an alias refers to a structure that contains it (a recursive value)")
        active.add(ident)
        children = list(value.values()) if isinstance(value, dict) else value
        own += len(children)
        total = 1 + sum(size(child) for child in children)
        active.discard(ident)
        sizes[ident] = total
        return total

    try:
        total = size(data)
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply") from None
    if total > own + 1 + MAX_ALIAS_VALUES:
        raise ConfigError(f"{where}: its aliases (*name) expand to {total:,} values, more than {MAX_ALIAS_VALUES:,} "
                          f"beyond its own {own + 1:,} (a 'billion laughs' document?); write the values out")


def load_typed_config(model_cls: type[BaseModel], config: Any, overrides: dict, what: str = "configuration"):
    """Any scenario's config: a name in ``configs/``, a YAML path, a dict or a ``model_cls`` instance, plus
    overrides (top-level, nested dicts, dotted keys), validated into ``model_cls``; errors name the key."""
    if config is None:
        data: dict = {}
    elif isinstance(config, model_cls):
        data = config.model_dump()
    elif isinstance(config, dict):
        check_expansion(config, "config")
        data = dict(config)
    else:
        path = resolve_config_path(config)
        data = read_config_file(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    check_expansion(overrides, "config overrides")
    data = _deep_merge(data, _expand_dotted(overrides))
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, model_cls, what)) from None
