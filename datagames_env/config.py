"""Typed configuration of a datagames environment.

A config is data: a YAML file in ``configs/`` (or any path), keyword overrides on top, validated into one
:class:`EnvConfig`. An unknown key or an invalid value raises :class:`ConfigError` naming the key
(``stream.alpha``, ``n_cache`` ...). Checks that need the dataset (number of classes) run when the
environment is built and raise the same error.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

# a wheel ships the YAMLs as package data (datagames_env/configs, see setup.py); a source tree has them at the root
_PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
CONFIG_DIR = _PACKAGED_CONFIGS if _PACKAGED_CONFIGS.is_dir() else Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending key."""


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
        if info.field_name.endswith("seed") and isinstance(value, int) and value < 0:
            raise ValueError("a seed must be a non-negative integer")
        return value


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
                raise ValueError(f"row {i} (robot_{i}) must be non-negative with a positive sum, got {row}")
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
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    hidden: int = Field(128, ge=1)
    embedding_dim: int = Field(32, ge=2)
    seed: int = 0


class TargetConfig(_Strict):
    """Target class counts of the cloud dataset."""

    kind: Literal["uniform", "proportions", "counts"] = "uniform"
    proportions: list[float] | None = None
    counts: list[float] | None = None
    total: float | None = Field(None, gt=0.0, description="default: initial cloud + rounds * n_robots * n_cache")

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
    lie_scale: float = Field(3.0, ge=0.0, description="Interactive: a liar sends lie_scale x its contribution")
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
    """Every knob of the environment. See README 'Configuration' for the table."""

    scenario: Literal["datagames"] = Field(
        "datagames", description="the cloud potential game; other scenarios (p2p, dual) have configs of their own"
    )
    dataset: DatasetConfig = DatasetConfig()
    n_robots: int = Field(10, ge=1)
    rounds: int = Field(10, ge=1)
    obs_per_round: int = Field(200, ge=1)
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
        return (f"invalid {what}: the config is for scenario '{scenario[0].get('input')}', not '{expected}'; "
                "build it with that scenario (datagames run|eval --config ..., or "
                "datagames_env.scenarios.make_parallel_env)")
    lines = []
    unknown: dict[tuple, list[str]] = {}  # location -> unknown keys there: the known keys are listed once each
    for e in errors:
        key = ".".join(str(p) for p in e["loc"]) or "<config>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            unknown.setdefault(tuple(e["loc"][:-1]), []).append(str(e["loc"][-1]))
        else:
            shown = e.get("input")
            lines.append(f"config key '{key}': {msg}" + ("" if isinstance(shown, dict) else f" (got {shown!r})"))
    for loc, names in unknown.items():
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
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else child
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


def load_typed_config(model_cls: type[BaseModel], config: Any, overrides: dict, what: str = "configuration"):
    """Any scenario's config: a name in ``configs/``, a YAML path, a dict or a ``model_cls`` instance, plus
    overrides (top-level, nested dicts, dotted keys), validated into ``model_cls``; errors name the key."""
    if config is None:
        data: dict = {}
    elif isinstance(config, model_cls):
        data = config.model_dump()
    elif isinstance(config, dict):
        data = dict(config)
    else:
        path = resolve_config_path(config)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    data = _deep_merge(data, _expand_dotted(overrides))
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, model_cls, what)) from None
