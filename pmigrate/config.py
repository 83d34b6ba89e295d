"""plikd.cfg: lookup, TOML, PLIKD_* overrides (source only), plikd's defaults, validation.

The rules mirror plikd (server/common/config.go and each backend's NewConfig):
- top-level keys match case-insensitively (BurntSushi/toml), keys inside the
  backend tables are case-sensitive (plikd assigns them with FieldByName and
  silently ignores the rest); a key plikd does not read is a warning in the
  source (plikd ignores it there too) and an error in the target, where a
  misspelt Directory would send every blob to plikd's default instead;
- ``PLIKD_<FIELD>`` overrides a top-level field; a table-valued field takes a
  JSON object whose keys are MERGED into the table (plikd's AssignMapValues),
  not substituted for it;
- relative paths (file ``Directory``, sqlite3 path) resolve against the
  working directory, as plikd resolves them against its own.
pmigrate applies the overrides to the source only; plikd's own migrate applies
them to both sides.
"""

from __future__ import annotations

import datetime
import difflib
import json
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmigrate import dsn, redact
from pmigrate.data import registry
from pmigrate.data.spec import typed
from pmigrate.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_LOCATIONS = ("./plikd.cfg", "/etc/plikd.cfg")
ENV_PREFIX = "PLIKD_"

# A data backend's keys, defaults and checks are its module's declaration (pmigrate.data.spec).
_STR, _INT, _BOOL = str, int, bool
METADATA_DEFAULTS: dict[str, Any] = {"Driver": "sqlite3", "ConnectionString": "plik.db"}
METADATA_TYPES: dict[str, type] = {
    "Driver": _STR, "ConnectionString": _STR, "EraseFirst": _BOOL, "MaxOpenConns": _INT, "MaxIdleConns": _INT,
    "Debug": _BOOL, "SlowQueryThreshold": _STR,
}  # fmt: skip
TOP_FIELDS = ("DataBackend", "DataBackendConfig", "MetadataBackendConfig")
# Every top-level setting of plikd 1.3 and later (server/common/config.go): a
# target may be a whole plikd.cfg, of which only TOP_FIELDS are read.
PLIKD_FIELDS = (
    "Debug", "DebugRequests", "LogLevel", "ListenAddress", "ListenPort", "MetricsAddress", "MetricsPort", "Path",
    "MaxFileSizeStr", "MaxFileSize", "MaxUserSizeStr", "MaxUserSize", "MaxFilePerUpload", "DefaultTTLStr",
    "DefaultTTL", "MaxTTLStr", "MaxTTL", "SslEnabled", "SslCert", "SslKey", "TlsVersion", "NoWebInterface",
    "DownloadDomain", "DownloadDomainAlias", "EnhancedWebSecurity", "SessionTimeout", "AbuseContact",
    "WebappDirectory", "ClientsDirectory", "ChangelogDirectory", "SourceIPHeader", "UploadWhitelist",
    "FeatureAuthentication", "FeatureOneShot", "FeatureRemovable", "FeatureStream", "FeaturePassword",
    "FeatureComments", "FeatureSetTTL", "FeatureExtendTTL", "FeatureClients", "FeatureGithub", "FeatureText",
    "Authentication", "NoAnonymousUploads", "OneShot", "Removable", "Stream", "ProtectedByPassword",
    "GoogleAuthentication", "GoogleAPISecret", "GoogleAPIClientID", "GoogleValidDomains", "OvhAuthentication",
    "OvhAPIEndpoint", "OvhAPIKey", "OvhAPISecret", *TOP_FIELDS,
)  # fmt: skip


@dataclass(frozen=True)
class MetadataConfig:
    driver: str  # sqlite3 | postgres | mysql
    connection_string: str
    # Where a relative sqlite3 path resolves: the working directory, as plikd does.
    base_dir: Path = field(default_factory=Path.cwd)
    options: dict[str, Any] = field(default_factory=dict)  # the whole MetadataBackendConfig table
    # Set on a sqlite3 source: the private copy pmigrate reads instead of the live file (metadata/snapshot.py).
    snapshot: Path | None = field(default=None, compare=False)

    def translation(self) -> dsn.Translation:
        return dsn.translate(self.driver, self.connection_string, base_dir=self.base_dir)

    def describe(self) -> str:
        return dsn.describe(self.driver, self.connection_string, base_dir=self.base_dir)


@dataclass(frozen=True)
class DataConfig:
    backend: str  # file | s3 | swift | gcs | stream
    options: dict[str, Any] = field(default_factory=dict)  # DataBackendConfig with plikd's defaults

    def describe(self) -> str:
        """Where blobs live, without secrets and without a client, as the backend declares it."""
        return registry.spec(self.backend).describe_options(self.options)

    def location(self) -> tuple | None:
        """What names the place blobs are stored: equal locations are the same store."""
        return registry.spec(self.backend).location(self.options)


@dataclass(frozen=True)
class PlikConfig:
    path: Path
    data: DataConfig
    metadata: MetadataConfig
    # Whether the file (or an override) named these sections; else plikd's defaults apply.
    has_data: bool = True
    has_metadata: bool = True
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.path}: metadata {self.metadata.describe()}, data {self.data.describe()}"


def find_source(cli_path: str | None, env: Mapping[str, str]) -> Path:
    """plikd's lookup: --config, else $PLIKD_CONFIG, else ./plikd.cfg, else /etc/plikd.cfg."""
    if cli_path:
        return Path(cli_path)
    if env.get("PLIKD_CONFIG"):
        return Path(env["PLIKD_CONFIG"])
    for candidate in DEFAULT_LOCATIONS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise ConfigError(
        "no source config: pass --config SRC.cfg, set PLIKD_CONFIG, or run where ./plikd.cfg or /etc/plikd.cfg exists"
    )


def _read(path: Path, origin: str = "") -> dict[str, Any]:
    """The TOML document; origin ('--config', '--to', ...) says where the path came from."""
    named = f" ({origin})" if origin else ""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path}{named} does not exist: check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"config path {path}{named} is a directory: give the plikd.cfg file inside it") from None
    except PermissionError:
        raise ConfigError(
            f"config file {path}{named} is not readable (permission denied): run as a user who can read it"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path}{named} cannot be read ({exc.strerror}): check the path") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text: save the config as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line L, column C)"; it never quotes the text.
        raise ConfigError(f"{path}: TOML syntax error: {exc}: fix that line") from None


def _top(doc: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """A top-level field the way BurntSushi/toml finds it: exact name, else any case."""
    if name in doc:
        return True, doc[name]
    for k, v in doc.items():
        if k.lower() == name.lower():
            return True, v
    return False, None


def _screaming_snake(name: str) -> str:
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(c.upper())
    return "".join(out)


def env_name(field_name: str) -> str:
    """PLIKD_ + the field in SCREAMING_SNAKE_CASE, e.g. DataBackendConfig -> PLIKD_DATA_BACKEND_CONFIG."""
    return ENV_PREFIX + _screaming_snake(field_name)


def _apply_env(fields: dict[str, Any], given: dict[str, bool], env: Mapping[str, str]) -> list[str]:
    applied = []
    for name in TOP_FIELDS:
        var = env_name(name)
        if var not in env:
            continue
        value = env[var]
        applied.append(var)
        if name == "DataBackend":
            fields[name] = value
        else:
            redact.register(value)  # until parsed, the whole value may hold secrets
            try:
                obj = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{var} is not valid JSON ({exc.msg}): give a JSON object such as '{{\"Key\":\"value\"}}'") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{var} must be a JSON object: give '{{\"Key\":\"value\"}}'")
            # plikd merges the object's keys into the table read from the file.
            merged = dict(fields.get(name) or {})
            merged.update(obj)
            fields[name] = merged
        given[name] = True
    return applied


def _register_secrets(value: Any, data_backend: Any = None) -> None:
    """Register every secret of the top-level fields before anything is checked or shown.

    The data backend's secret keys are those it declares; any other key named
    like a secret (redact.SECRET_KEYS) is registered too, whatever the table.
    """
    declared: tuple[str, ...] = ()
    if registry.known(data_backend):
        spec = registry.spec(data_backend)
        declared = tuple(o.name for o in spec.options if o.secret)
    _register_named(value, {k.lower() for k in declared} | redact.SECRET_KEYS)


def _register_named(value: Any, names: set[str] | frozenset[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and k.lower() in names and isinstance(v, str):
                redact.register(v)
            else:
                _register_named(v, names)
    elif isinstance(value, list):
        for v in value:
            _register_named(v, names)


def did_you_mean(key: str, known: Any) -> str:
    """' (did you mean X?)' for the nearest known name, or ''."""
    by_lower = {k.lower(): k for k in known}
    if key.lower() in by_lower:
        return f" (did you mean {by_lower[key.lower()]}? case matters)"
    near = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.7)
    return f" (did you mean {by_lower[near[0]]}?)" if near else ""


def _unknown(where: str, key: str, known: Any, path: Path, warnings: list[str], *, strict: bool, scope: str = "") -> None:
    """A key plikd does not read: an error in a strict (target) config, else a warning."""
    text = f"{path}: {where}{key} is not a setting plikd reads{scope}{did_you_mean(key, known)}"
    if strict:
        raise ConfigError(f"{text}: correct the key or remove it")
    warnings.append(f"{text}; ignored")


def _check_top(doc: Mapping[str, Any], path: Path, warnings: list[str], *, strict: bool) -> None:
    known = {k.lower() for k in PLIKD_FIELDS}
    for key in doc:
        if key.lower() not in known:
            _unknown("", key, PLIKD_FIELDS, path, warnings, strict=strict)


def _check_types(
    table: Mapping[str, Any], types: Mapping[str, type], where: str, path: Path, warnings: list[str], *, strict: bool,
) -> None:
    for key, value in table.items():
        want = types.get(key)
        if want is None:
            _unknown(f"{where}.", key, types, path, warnings, strict=strict)
            continue
        typed(value, want, name=f"{path}: {where}.{key}")


def _relative_note(path: Path, what: str, value: str, resolved: Path, warnings: list[str]) -> None:
    if os.path.isabs(value):
        return
    if path.parent.resolve() != Path.cwd().resolve():
        warnings.append(
            f"{path}: {what} {value!r} is relative: read as {resolved} (from the current directory, as plikd "
            "resolves it from its own); run pmigrate from plikd's working directory or write an absolute path"
        )


def _data(backend: Any, table: dict[str, Any], path: Path, warnings: list[str], *, strict: bool) -> DataConfig:
    """The DataBackendConfig table read by the backend's declaration: keys it does not declare, then its checks."""
    try:
        spec = registry.spec(backend)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    known = spec.names()
    for key in table:
        if key not in known:
            _unknown("DataBackendConfig.", key, known, path, warnings, strict=strict, scope=f" for DataBackend {backend!r}")
    o = spec.settle(table, where=f"{path}: DataBackendConfig")
    for key, value, resolved in spec.resolve_paths(o):
        _relative_note(path, f"DataBackendConfig.{key}", value, Path(resolved), warnings)
    return DataConfig(backend, o)


def _metadata(table: dict[str, Any], path: Path, warnings: list[str], *, strict: bool) -> MetadataConfig:
    _check_types(table, METADATA_TYPES, "MetadataBackendConfig", path, warnings, strict=strict)
    o = {**METADATA_DEFAULTS, **table}
    driver, cs = o["Driver"], o["ConnectionString"]
    if driver not in dsn.DRIVERS:
        raise ConfigError(f"{path}: unknown MetadataBackendConfig.Driver {driver!r}: use one of {', '.join(dsn.DRIVERS)}")
    for secret in dsn.secrets_of(driver, cs):
        redact.register(secret)
    if o.get("EraseFirst"):
        warnings.append(f"{path}: MetadataBackendConfig.EraseFirst is true: plikd drops every table when it starts with this config")
    meta = MetadataConfig(driver, cs, Path.cwd(), o)
    t = meta.translation()  # ConfigError when malformed
    if t.ignored:
        log.debug("%s: connection string parameters with no meaning here: %s", path, ", ".join(t.ignored))
    if driver == "mysql" and t.time_zone == "Local":
        local = datetime.datetime.now().astimezone()
        if local.utcoffset():
            warnings.append(
                f"{path}: the mysql ConnectionString says loc=Local: DATETIME values are read in this machine's "
                f"zone ({local.tzname()}); if plikd runs in another zone, run pmigrate with TZ set to plikd's"
            )
    if driver == "sqlite3":
        path_part = cs.partition("?")[0]
        if not path_part.startswith("file:"):
            _relative_note(path, "sqlite3 ConnectionString", path_part, dsn.sqlite_path(t), warnings)
    return meta


def load(path: Path, *, env: Mapping[str, str] | None = None, strict: bool = False, origin: str = "") -> PlikConfig:
    """Read one plikd.cfg; env (source only) applies PLIKD_* overrides.

    strict (the target): a key plikd does not read is an error, not a warning.
    origin: the option or variable that named the file, for the messages.
    """
    path = Path(path)
    doc = _read(path, origin)
    top_warnings: list[str] = []
    _check_top(doc, path, top_warnings, strict=strict)
    fields: dict[str, Any] = {}
    given: dict[str, bool] = {}
    for name in TOP_FIELDS:
        found, value = _top(doc, name)
        given[name] = found
        if found:
            fields[name] = value
    _register_secrets(fields, fields.get("DataBackend", "file"))
    if env is not None:
        applied = _apply_env(fields, given, env)
        if applied:
            log.info("%s: overridden by %s", path, ", ".join(applied))
    _register_secrets(fields, fields.get("DataBackend", "file"))
    for name in ("DataBackendConfig", "MetadataBackendConfig"):
        if name in fields and not isinstance(fields[name], dict):
            raise ConfigError(f"{path}: {name} must be a table ([{name}]), not {type(fields[name]).__name__}: fix the config")
    has_data = given["DataBackend"] or given["DataBackendConfig"]
    has_metadata = given["MetadataBackendConfig"]
    data_warnings: list[str] = []
    meta_warnings: list[str] = []
    data_table = dict(fields.get("DataBackendConfig") or {})
    data = _data(fields.get("DataBackend", "file"), data_table, path, data_warnings, strict=strict)
    meta = _metadata(dict(fields.get("MetadataBackendConfig") or {}), path, meta_warnings, strict=strict)
    # plikd's defaults stand in for a missing section of a source (plikd would
    # use them); a target's missing section is never used, so nothing to warn of.
    source = env is not None
    warnings = [
        *top_warnings,
        *(data_warnings if has_data or source else ()),
        *(meta_warnings if has_metadata or source else ()),
    ]
    for w in warnings:
        log.warning("%s", w)
    return PlikConfig(
        path=path,
        data=data,
        metadata=meta,
        has_data=has_data,
        has_metadata=has_metadata,
        warnings=tuple(warnings),
    )


def load_pair(config_path: str | None, target_path: str, *, env: Mapping[str, str]) -> tuple[PlikConfig, PlikConfig]:
    """Source (with overrides) and target (without), refusing the same database or data location.

    A target section left to plikd's defaults is not compared: a data-only
    target need not name a database, and the stage that would write there
    refuses a missing section itself.
    """
    src_path = find_source(config_path, env)
    if not config_path and env.get("PLIKD_CONFIG") is None:
        log.info("source config: %s (found in the default locations)", src_path)
    origin = "--config" if config_path else "PLIKD_CONFIG" if env.get("PLIKD_CONFIG") else "source"
    src = load(src_path, env=env, origin=origin)
    dst = load(Path(target_path), env=None, strict=True, origin="--to")
    if dst.has_metadata and dsn.same_database(src.metadata.translation(), dst.metadata.translation()):
        raise ConfigError(
            f"source and target name the same database ({dst.metadata.describe()}): point --to at another database"
        )
    if dst.has_data:
        a, b = src.data.location(), dst.data.location()
        if a is not None and a == b:
            raise ConfigError(
                f"source and target name the same data location ({dst.data.describe()}): point --to at another one"
            )
    return src, dst
