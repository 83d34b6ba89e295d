"""DataBackend name -> backend class, imported only when first used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pmigrate.data.base import DataBackend
from pmigrate.errors import ConfigError

# name: (module:class, what to install when its SDK is missing)
_BACKENDS: dict[str, tuple[str, str]] = {
    "file": ("pmigrate.data.file:FileBackend", ""),
    "s3": ("pmigrate.data.s3:S3Backend", "pip install boto3"),
    "stream": ("pmigrate.data.stream:StreamBackend", ""),
    "gcs": ("pmigrate.data.gcs:GCSBackend", "pip install 'pmigrate[gcs]'"),
    "swift": ("pmigrate.data.swift:SwiftBackend", "pip install 'pmigrate[swift]'"),
}


def names() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[DataBackend]:
    """The class for a DataBackend name; ConfigError with a hint when unusable."""
    try:
        target, hint = _BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown DataBackend {name!r}: use one of {', '.join(names())}"
        ) from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"DataBackend {name!r} needs a library that is not installed ({exc.name}): {hint or 'reinstall pmigrate'}"
        ) from None
    return getattr(module, cls_name)


def open_backend(name: str, options: Mapping[str, Any]) -> DataBackend:
    """Build a backend from its name and DataBackendConfig table (plikd's defaults applied)."""
    return backend_class(name)(options)
