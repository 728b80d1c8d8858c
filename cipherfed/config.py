"""The federation file (TOML): a typed, validated, immutable configuration.

Every error names the file and the field (``federation.toml: [federation].min_participants
must be ...``). Unknown keys are errors too, so a typo never silently falls back to a
default. ``dumps_config`` writes a file that ``parse_config`` reads back to an equal object.

Example::

    [federation]
    id = "actg-demo"
    min_participants = 3
    rounds = 20
    round_deadline_s = 60.0
    max_update_bytes = 268435456
    weighting = "iterations"
    min_contributors_per_chunk = 3   # optional; default: min_participants

    [network]
    coordinator = "127.0.0.1:50051"
    keyholder = "127.0.0.1:50052"

    [[sites]]
    id = "site-01"
    data = "actg175:0"

    [model]
    hidden = [64, 32]

    [training]
    local_epochs = 1
    batch_size = 32
    lr = 0.01
    momentum_restart = true

    [privacy]
    mechanism = "svt"           # "none" | "partial" | "svt"
    sharing_fraction = 0.4
    gamma = 0.01
    epsilon = 10.0
    budget_epsilon = 1000.0
    delta = 1e-5

    [crypto]
    preset = "n8192"

    # optional: the federation's own schema (absent: the embedded ACTG 175 schema)
    [schema]
    name = "my-trial"
    target = "event"
    task = "binary"
    [[schema.features]]
    name = "age"
    type = "int"
    min = 18
    max = 90
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:  # participant.schema loads pandas; imported at run time only when needed
    from participant.schema import FederationSchema

logger = logging.getLogger(__name__)

Weighting = Literal["iterations", "samples", "uniform"]
Mechanism = Literal["none", "partial", "svt"]
WEIGHTINGS: tuple[str, ...] = ("iterations", "samples", "uniform")
MECHANISMS: tuple[str, ...] = ("none", "partial", "svt")

SITE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FEDERATION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DEFAULT_MAX_UPDATE_BYTES = 256 * 1024 * 1024


class ConfigError(ValueError):
    """The federation file is unreadable or a field is missing or invalid."""


@dataclass(frozen=True)
class FederationSection:
    id: str
    min_participants: int
    rounds: int
    round_deadline_s: float = 120.0
    max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES
    weighting: Weighting = "iterations"
    # The key holder releases a chunk's sum only when at least this many sites sent that
    # chunk (a chunk from fewer sites would reveal one site's values). None: K.
    min_contributors_per_chunk: int | None = None
    # Held-out rows (CSV/Parquet, the federation's schema) for evaluation; None: the
    # embedded ACTG 175 validation split (only for a federation on the ACTG 175 schema).
    validation_data: str | None = None


@dataclass(frozen=True)
class NetworkConfig:
    coordinator: str = "127.0.0.1:50051"
    keyholder: str = "127.0.0.1:50052"
    metrics_port: int = 0  # 0: the coordinator picks a free port (or none) for Prometheus


@dataclass(frozen=True)
class SiteConfig:
    id: str
    data: str  # a CSV/Parquet path or "actg175:<index>" for the embedded partition

    @property
    def embedded_partition(self) -> int | None:
        """The partition index for ``actg175:<index>``, else ``None``."""
        if self.data.startswith("actg175:"):
            return int(self.data.split(":", 1)[1])
        return None


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.0


@dataclass(frozen=True)
class TrainingConfig:
    local_epochs: float = 1.0
    local_iters: int | None = None  # fixed N_k for every site; None: from epochs
    batch_size: int = 32
    lr: float = 0.01
    momentum_restart: bool = True
    weight_decay: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class DPSGDSection:
    target_epsilon: float
    target_delta: float
    max_grad_norm: float = 1.0


@dataclass(frozen=True)
class PrivacyConfig:
    mechanism: Mechanism = "none"
    sharing_fraction: float = 1.0
    gamma: float = 0.01
    epsilon: float = 1.0  # per round (svt)
    budget_epsilon: float = math.inf
    delta: float = 1e-5
    threshold: float = 0.0  # SVT threshold tau
    dp_sgd: DPSGDSection | None = None


@dataclass(frozen=True)
class CryptoConfig:
    preset: str = "default"


@dataclass(frozen=True)
class FederationConfig:
    federation: FederationSection
    network: NetworkConfig
    sites: tuple[SiteConfig, ...]
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    crypto: CryptoConfig = field(default_factory=CryptoConfig)
    # The federation's own [schema]; None: the embedded ACTG 175 schema.
    schema: FederationSchema | None = None

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.sites)

    def site(self, site_id: str) -> SiteConfig:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(f"site {site_id!r} is not in federation {self.federation.id!r}")


# ---------------------------------------------------------------------------- parsing


class _Table:
    """A TOML table being read: typed getters that name the field on error."""

    def __init__(self, data: Mapping[str, Any], where: str, source: str) -> None:
        self.data = data
        self.where = where
        self.source = source
        self.used: set[str] = set()

    def err(self, key: str, msg: str) -> ConfigError:
        name = f"{self.where}.{key}" if self.where else f"[{key}]"
        return ConfigError(f"{self.source}: {name} {msg}")

    def _get(self, key: str, default: Any, required: bool) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.err(key, "is required")
            return default
        return self.data[key]

    def string(
        self, key: str, default: str | None = None, pattern: re.Pattern[str] | None = None
    ) -> str:
        value = self._get(key, default, default is None)
        if not isinstance(value, str) or not value:
            raise self.err(key, f"must be a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.err(key, f"must match {pattern.pattern}, got {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.err(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def integer(self, key: str, default: int | None = None, *, minimum: int | None = None) -> int:
        value = self._get(key, default, default is None)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.err(key, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.err(key, f"must be >= {minimum}, got {value}")
        return value

    def optional_integer(self, key: str, *, minimum: int) -> int | None:
        if key not in self.data:
            self.used.add(key)
            return None
        return self.integer(key, 0, minimum=minimum)

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
    ) -> float:
        value = self._get(key, default, default is None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.err(key, f"must be a number, got {value!r}")
        value = float(value)
        if math.isnan(value):
            raise self.err(key, "must not be NaN")
        if low is not None and (value < low or (low_open and value == low)):
            raise self.err(key, f"must be {'>' if low_open else '>='} {low}, got {value}")
        if high is not None and (value > high or (high_open and value == high)):
            raise self.err(key, f"must be {'<' if high_open else '<='} {high}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default, False)
        if not isinstance(value, bool):
            raise self.err(key, f"must be true or false, got {value!r}")
        return value

    def table(self, key: str, *, required: bool = False) -> _Table | None:
        value = self._get(key, None, required)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.err(key, f"must be a table, got {type(value).__name__}")
        return _Table(value, f"{self.where}.{key}" if self.where else f"[{key}]", self.source)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(
                f"{self.source}: {self.where} has unknown key(s): {', '.join(unknown)}"
            )


def _section(root: _Table, key: str, required: bool = False) -> _Table:
    value = root._get(key, None, required)
    if value is None:
        return _Table({}, f"[{key}]", root.source)
    if not isinstance(value, dict):
        raise ConfigError(f"{root.source}: [{key}] must be a table, got {type(value).__name__}")
    return _Table(value, f"[{key}]", root.source)


def check_address(value: str) -> str:
    """``value`` if it is ``host:port`` with a port in 0..65535, else ValueError (the check of
    the federation file's addresses, shared with the commands' address flags)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be 'host:port' with a port in 0..65535, got {value!r}")
    return value


def _address(t: _Table, key: str, default: str) -> str:
    value = t.string(key, default)
    try:
        return check_address(value)
    except ValueError as exc:
        raise t.err(key, str(exc)) from None


def _parse_federation(root: _Table) -> FederationSection:
    t = _section(root, "federation", required=True)
    out = FederationSection(
        id=t.string("id", pattern=FEDERATION_ID_RE),
        min_participants=t.integer("min_participants", minimum=1),
        rounds=t.integer("rounds", minimum=1),
        round_deadline_s=t.number("round_deadline_s", 120.0, low=0.0, low_open=True),
        max_update_bytes=t.integer("max_update_bytes", DEFAULT_MAX_UPDATE_BYTES, minimum=1024),
        weighting=cast(Weighting, t.choice("weighting", WEIGHTINGS, "iterations")),
        min_contributors_per_chunk=t.optional_integer("min_contributors_per_chunk", minimum=1),
        validation_data=t.string("validation_data") if "validation_data" in t.data else None,
    )
    t.used.add("validation_data")
    t.done()
    return out


def _parse_network(root: _Table) -> NetworkConfig:
    t = _section(root, "network")
    out = NetworkConfig(
        coordinator=_address(t, "coordinator", NetworkConfig.coordinator),
        keyholder=_address(t, "keyholder", NetworkConfig.keyholder),
        metrics_port=t.integer("metrics_port", 0, minimum=0),
    )
    if out.metrics_port > 65535:
        raise t.err("metrics_port", f"must be <= 65535, got {out.metrics_port}")
    t.done()
    return out


def _parse_sites(root: _Table) -> tuple[SiteConfig, ...]:
    raw = root._get("sites", None, False)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{root.source}: [[sites]] must list at least one site")
    sites: list[SiteConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{root.source}: [[sites]] entry {i + 1} must be a table")
        t = _Table(item, f"[[sites]][{i + 1}]", root.source)
        site = SiteConfig(id=t.string("id", pattern=SITE_ID_RE), data=t.string("data"))
        t.done()
        if site.id in seen:
            raise t.err("id", f"duplicates site {site.id!r}")
        if site.data.startswith("actg175:"):
            index = site.data.split(":", 1)[1]
            if not index.isdigit():
                raise t.err(
                    "data", f"must be 'actg175:<index>' with an integer index, got {site.data!r}"
                )
        seen.add(site.id)
        sites.append(site)
    return tuple(sites)


def _parse_model(root: _Table) -> ModelConfig:
    t = _section(root, "model")
    hidden_raw = t._get("hidden", list(ModelConfig.hidden), False)
    if (
        not isinstance(hidden_raw, list)
        or not hidden_raw
        or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden_raw)
    ):
        raise t.err("hidden", f"must be a non-empty list of positive integers, got {hidden_raw!r}")
    out = ModelConfig(
        hidden=tuple(hidden_raw),
        dropout=t.number("dropout", 0.0, low=0.0, high=1.0, high_open=True),
    )
    t.done()
    return out


def _parse_training(root: _Table) -> TrainingConfig:
    t = _section(root, "training")
    out = TrainingConfig(
        local_epochs=t.number("local_epochs", 1.0, low=0.0, low_open=True),
        local_iters=t.optional_integer("local_iters", minimum=1),
        batch_size=t.integer("batch_size", 32, minimum=1),
        lr=t.number("lr", 0.01, low=0.0, low_open=True),
        momentum_restart=t.boolean("momentum_restart", True),
        weight_decay=t.number("weight_decay", 0.0, low=0.0),
        seed=t.integer("seed", 0, minimum=0),
    )
    t.done()
    return out


def _parse_privacy(root: _Table) -> PrivacyConfig:
    t = _section(root, "privacy")
    mechanism = cast(Mechanism, t.choice("mechanism", MECHANISMS, "none"))
    dp_sgd: DPSGDSection | None = None
    sub = t.table("dp_sgd")
    if sub is not None:
        dp_sgd = DPSGDSection(
            target_epsilon=sub.number("target_epsilon", low=0.0, low_open=True),
            target_delta=sub.number(
                "target_delta", low=0.0, high=1.0, low_open=True, high_open=True
            ),
            max_grad_norm=sub.number("max_grad_norm", 1.0, low=0.0, low_open=True),
        )
        sub.done()
    out = PrivacyConfig(
        mechanism=mechanism,
        sharing_fraction=t.number("sharing_fraction", 1.0, low=0.0, high=1.0, low_open=True),
        gamma=t.number("gamma", 0.01, low=0.0, low_open=True),
        epsilon=t.number("epsilon", 1.0, low=0.0, low_open=True),
        budget_epsilon=t.number("budget_epsilon", math.inf, low=0.0, low_open=True),
        delta=t.number("delta", 1e-5, low=0.0, high=1.0, low_open=True, high_open=True),
        threshold=t.number("threshold", 0.0, low=0.0),
        dp_sgd=dp_sgd,
    )
    t.done()
    return out


def _parse_crypto(root: _Table) -> CryptoConfig:
    t = _section(root, "crypto")
    out = CryptoConfig(preset=t.string("preset", CryptoConfig.preset))
    t.done()
    return out


_SCHEMA_FIELDS = ("features", "target", "task", "name")


def _parse_schema(root: _Table) -> FederationSchema | None:
    raw = root._get("schema", None, False)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{root.source}: [schema] must be a table, got {type(raw).__name__}")
    from participant.schema import FederationSchema, SchemaError

    try:
        return FederationSchema.from_dict(raw)
    except SchemaError as exc:
        msg = str(exc)
        if msg.startswith("schema: "):
            raise ConfigError(f"{root.source}: [schema] {msg.removeprefix('schema: ')}") from None
        sep = "." if msg.startswith(_SCHEMA_FIELDS) else " "
        raise ConfigError(f"{root.source}: [schema]{sep}{msg}") from None


def is_actg175_schema(schema: FederationSchema | None) -> bool:
    """Whether ``schema`` is absent or equal to ACTG 175's (its ``name`` aside)."""
    if schema is None:
        return True
    from participant.data import ACTG175_SCHEMA

    return (schema.features, schema.target, schema.task) == (
        ACTG175_SCHEMA.features,
        ACTG175_SCHEMA.target,
        ACTG175_SCHEMA.task,
    )


def parse_config(data: Mapping[str, Any], source: str = "<federation>") -> FederationConfig:
    """Validate a parsed TOML document; raise :class:`ConfigError` naming the bad field."""
    root = _Table(data, "", source)
    cfg = FederationConfig(
        federation=_parse_federation(root),
        network=_parse_network(root),
        sites=_parse_sites(root),
        model=_parse_model(root),
        training=_parse_training(root),
        privacy=_parse_privacy(root),
        crypto=_parse_crypto(root),
        schema=_parse_schema(root),
    )
    unknown = sorted(set(data) - root.used)
    if unknown:
        raise ConfigError(f"{source}: unknown table(s): {', '.join(unknown)}")
    if cfg.federation.min_participants > len(cfg.sites):
        raise ConfigError(
            f"{source}: [federation].min_participants ({cfg.federation.min_participants}) "
            f"exceeds the number of [[sites]] ({len(cfg.sites)})"
        )
    per_chunk = cfg.federation.min_contributors_per_chunk
    if per_chunk is not None and per_chunk > cfg.federation.min_participants:
        raise ConfigError(
            f"{source}: [federation].min_contributors_per_chunk ({per_chunk}) exceeds "
            f"min_participants ({cfg.federation.min_participants})"
        )
    embedded = [s.id for s in cfg.sites if s.embedded_partition is not None]
    if embedded and not is_actg175_schema(cfg.schema):
        raise ConfigError(
            f"{source}: [[sites]] {', '.join(embedded)} use embedded 'actg175:' data, but "
            "[schema] is not the ACTG 175 schema; give these sites CSV/Parquet files in the "
            "federation's schema (or drop [schema])"
        )
    _check_preset(cfg.crypto.preset, source)
    return cfg


def _check_preset(preset: str, source: str) -> None:
    """Validate the CKKS preset name against crypto.PRESETS when the crypto API provides it."""
    try:
        import crypto
    except ImportError:  # pragma: no cover - crypto is part of this distribution
        return
    presets = getattr(crypto, "PRESETS", None)
    if not isinstance(presets, Mapping):
        return
    if preset == "default":
        return
    if preset not in presets:
        raise ConfigError(
            f"{source}: [crypto].preset must be one of {', '.join(sorted(presets))} "
            f"or 'default', got {preset!r}"
        )


def resolve_preset(cfg: FederationConfig) -> str:
    """The concrete CKKS preset name (``"default"`` -> ``crypto.DEFAULT_PRESET``)."""
    if cfg.crypto.preset != "default":
        return cfg.crypto.preset
    import crypto

    default = getattr(crypto, "DEFAULT_PRESET", None)
    if not isinstance(default, str):
        raise ConfigError("[crypto].preset is 'default' but crypto.DEFAULT_PRESET is unavailable")
    return default


def loads_config(text: str, source: str = "<federation>") -> FederationConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return parse_config(data, source)


def load_config(path: str | Path) -> FederationConfig:
    """Read and validate a federation TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read federation file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: federation file is not UTF-8 text") from exc
    return loads_config(text, str(p))


# ---------------------------------------------------------------------------- writing


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_table(name: str, obj: object, skip: tuple[str, ...] = ()) -> list[str]:
    lines = [name]
    for key, value in vars(obj).items():
        if key in skip or value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return [*lines, ""]


def dumps_config(cfg: FederationConfig) -> str:
    """TOML text that :func:`loads_config` reads back to ``cfg``."""
    lines = ["# CipherFed federation file (written by cipherfed)", ""]
    lines += _toml_table("[federation]", cfg.federation)
    lines += _toml_table("[network]", cfg.network)
    for site in cfg.sites:
        lines += _toml_table("[[sites]]", site)
    lines += _toml_table("[model]", cfg.model)
    lines += _toml_table("[training]", cfg.training)
    lines += _toml_table("[privacy]", cfg.privacy, skip=("dp_sgd",))
    if cfg.privacy.dp_sgd is not None:
        lines += _toml_table("[privacy.dp_sgd]", cfg.privacy.dp_sgd)
    lines += _toml_table("[crypto]", cfg.crypto)
    if cfg.schema is not None:
        schema = cfg.schema.to_dict()
        features = schema.pop("features")
        lines += ["[schema]", *(f"{k} = {_toml_value(v)}" for k, v in schema.items()), ""]
        for feature in features:
            lines += ["[[schema.features]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in feature.items()]
            lines += [""]
    return "\n".join(lines)
