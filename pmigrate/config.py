"""plikd.cfg: lookup, TOML, PLIKD_* overrides (source only), plikd's defaults, validation."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pmigrate.errors import ConfigError

DEFAULT_LOCATIONS = ("./plikd.cfg", "/etc/plikd.cfg")


@dataclass(frozen=True)
class MetadataConfig:
    driver: str  # sqlite3 | postgres | mysql
    connection_string: str
    base_dir: Path = Path(".")  # relative sqlite paths resolve against the config's folder? see config helper

    def describe(self) -> str:
        from pmigrate.dsn import describe

        return describe(self.driver, self.connection_string)


@dataclass(frozen=True)
class DataConfig:
    backend: str  # file | s3 | swift | gcs | stream
    options: dict[str, Any] = field(default_factory=dict)  # DataBackendConfig with plikd's defaults

    def describe(self) -> str:
        from pmigrate.data.registry import backend_class

        return backend_class(self.backend)(self.options).describe()


@dataclass(frozen=True)
class PlikConfig:
    path: Path
    data: DataConfig
    metadata: MetadataConfig

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


def load(path: Path, *, env: Mapping[str, str] | None = None) -> PlikConfig:
    """Read one plikd.cfg; env (source only) applies PLIKD_* overrides."""
    raise NotImplementedError


def load_pair(config_path: str | None, target_path: str, *, env: Mapping[str, str]) -> tuple[PlikConfig, PlikConfig]:
    """Source (with overrides) and target (without), refusing the same database or data location."""
    src = load(find_source(config_path, env), env=env)
    dst = load(Path(target_path), env=None)
    return src, dst
