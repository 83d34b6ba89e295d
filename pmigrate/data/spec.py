"""What a data backend declares about itself: its DataBackendConfig keys, how it names its location.

As rclone's backends declare their ``fs.Options``, each backend module holds
one ``SPEC``: every key's type, plikd's default, its check, whether it is a
secret, and how the settled table describes the store and names its location.
config.py and the registry read the declaration and know no backend's keys,
so a key's default and check are written once, and adding a backend is its
module plus one registry line.

A backend module must stay importable without its SDK (import the SDK under
``try``, or lazily): the declaration serves config reading and messages, which
must work where the SDK is missing; ``needs`` names what opening it requires.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pmigrate.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Option:
    """One DataBackendConfig key (case-sensitive, as plikd assigns them by field name)."""

    name: str
    type: type = str
    # plikd's default, written into the settled table; None: absent unless given
    # (a pmigrate tuning key's default is applied by the backend, so that the table plikd
    # would read, and the journal named after it, stay as they were)
    default: Any = None
    required: str = ""  # when set, an empty value is refused: what to set, e.g. "set the bucket name"
    # the value's check: "" when good, else what is wrong with it and the fix ("{name} " is put before)
    check: Callable[[Any], str] | None = None
    secret: bool = False  # registered for redaction, left out of the journal's target identity
    path: bool = False  # a folder: a relative one is read from the working directory, as plikd reads it


def defaults(options: tuple[Option, ...]) -> dict[str, Any]:
    """plikd's defaults of the declared keys that have one."""
    return {o.name: o.default for o in options if o.default is not None}


def _nowhere(options: Mapping[str, Any]) -> tuple | None:
    return None


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """A backend's declaration; ``factory`` builds it from a settled table."""

    name: str
    factory: Callable[[Mapping[str, Any]], Any]
    options: tuple[Option, ...] = ()
    # where blobs live, for messages: no secrets, and no SDK needed
    describe: Callable[[Mapping[str, Any]], str] | None = None
    # what names the place blobs are stored: equal locations are the same store; None: nothing stored
    location: Callable[[Mapping[str, Any]], tuple | None] = _nowhere
    # checks across keys: "" when good, else the message after "DataBackendConfig."
    check: Callable[[Mapping[str, Any]], str] | None = None
    needs: tuple[str, ...] = ()  # modules the SDK provides, found before the backend is built
    install: str = ""  # how to install them
    # heavy modules its client needs, which a fork server imports once so that every worker
    # shares those pages (S3: ~50 MiB and ~1 s of CPU per process); none for most backends
    preload: tuple[str, ...] = ()
    _by_name: dict[str, Option] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {o.name: o for o in self.options}
        if len(by_name) != len(self.options):
            raise ValueError(f"backend {self.name!r} declares an option twice")
        object.__setattr__(self, "_by_name", by_name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def secrets(self, table: Mapping[str, Any]) -> list[str]:
        """The values of the keys declared secret."""
        return [str(v) for k, v in table.items() if (o := self._by_name.get(k)) and o.secret and v]

    def describe_options(self, options: Mapping[str, Any]) -> str:
        return self.describe(options) if self.describe else self.name

    def settle(self, table: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        """The table with plikd's defaults, its declared keys type-checked and checked.

        Keys it does not declare pass as they are (run options such as
        ``pmigrate.*``; config.py has already refused or warned of the rest).
        where: what the messages name the table by, e.g. "plikd.cfg: DataBackendConfig".
        """
        settled = defaults(self.options)
        for key, value in table.items():
            opt = self._by_name.get(key)
            if opt is not None:
                value = _typed(opt, value, where)
            settled[key] = value
        for opt in self.options:
            value = settled.get(opt.name)
            if opt.required and (value is None or value == ""):
                raise ConfigError(f"{where}.{opt.name} is missing: {opt.required}")
            if opt.check is not None and opt.name in settled:
                problem = opt.check(value)
                if problem:
                    raise ConfigError(f"{where}.{opt.name} {problem}")
        problem = self.check(settled) if self.check else ""
        if problem:
            raise ConfigError(f"{where}.{problem}")
        return settled

    def resolve_paths(self, settled: dict[str, Any]) -> list[tuple[str, str, str]]:
        """Make the folder keys absolute; (key, as written, as resolved) of each relative one."""
        relative = []
        for opt in self.options:
            value = settled.get(opt.name)
            if opt.path and isinstance(value, str) and value:
                resolved = os.path.abspath(value)
                if not os.path.isabs(value):
                    relative.append((opt.name, value, resolved))
                settled[opt.name] = resolved
        return relative


_TYPE_WORDS = {int: "an integer", str: "a string", bool: "true or false", float: "a number"}


def typed(value: Any, want: type, *, name: str) -> Any:
    """The value as type ``want``, or ConfigError naming ``name``: a wrong type makes plikd panic at start."""
    if want is int and isinstance(value, float) and value.is_integer():
        return int(value)  # JSON numbers from PLIKD_* overrides
    if isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    what = _TYPE_WORDS.get(want, f"a {want.__name__}")
    raise ConfigError(f"{name} must be {what} (plikd would not start), not {type(value).__name__}: fix its value")


def _typed(opt: Option, value: Any, where: str) -> Any:
    return typed(value, opt.type, name=f"{where}.{opt.name}")
