"""DataBackend name -> the module declaring that backend (its SPEC), imported only when first used.

Adding a backend is its module plus one line here: the module's SPEC
(pmigrate.data.spec) says everything config reading, messages and
redaction need to know of it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

from pmigrate import redact
from pmigrate.data.base import DataBackend
from pmigrate.data.spec import BackendSpec
from pmigrate.errors import ConfigError

_BACKENDS: dict[str, str] = {
    "file": "pmigrate.data.file",
    "s3": "pmigrate.data.s3",
    "stream": "pmigrate.data.stream",
    "gcs": "pmigrate.data.gcs",
    "swift": "pmigrate.data.swift",
}


def names() -> list[str]:
    return sorted(_BACKENDS)


def register(name: str, module: str) -> None:
    """Add a backend by the module holding its SPEC; a name is registered once."""
    if name in _BACKENDS:
        raise ValueError(f"DataBackend {name!r} is registered already ({_BACKENDS[name]})")
    _BACKENDS[name] = module


def unregister(name: str) -> None:
    _BACKENDS.pop(name, None)


def known(name: object) -> bool:
    return isinstance(name, str) and name in _BACKENDS


def spec(name: str) -> BackendSpec:
    """The declaration of a DataBackend name; ConfigError for a name no module declares."""
    try:
        module_name = _BACKENDS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown DataBackend {name!r}: use one of {', '.join(names())}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"DataBackend {name!r} needs a library that is not installed ({exc.name}): reinstall pmigrate"
        ) from None
    declared: BackendSpec = module.SPEC
    return declared


def _missing(module: str) -> bool:
    """Whether a module cannot be found, without importing it (the parent of a run never loads boto3)."""
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a parent package is missing, or a module without a spec
        return True


def backend_class(name: str) -> type[DataBackend]:
    """The class for a DataBackend name; ConfigError with a hint when its SDK is missing."""
    declared = spec(name)
    for module in declared.needs:
        if _missing(module):
            raise ConfigError(
                f"DataBackend {name!r} needs a library that is not installed ({module}): "
                f"{declared.install or 'reinstall pmigrate'}"
            )
    factory: type[DataBackend] = declared.factory  # type: ignore[assignment]
    return factory


def heavy(name: str) -> tuple[str, ...]:
    """The heavy modules the named backend's client needs (none for most): worth a fork server."""
    return spec(name).preload if name in _BACKENDS else ()


def preload(name: str) -> tuple[str, ...]:
    """Every module a worker of the named backend needs, for a fork server to import once."""
    return (_BACKENDS[name], *heavy(name)) if name in _BACKENDS else ()


def open_backend(name: str, options: Mapping[str, Any]) -> DataBackend:
    """Build a backend from its name and DataBackendConfig table, settled by its declaration."""
    declared = spec(name)
    settled = declared.settle(options, where=f"{name} DataBackendConfig")
    for secret in declared.secrets(settled):
        redact.register(secret)
    return backend_class(name)(settled)
