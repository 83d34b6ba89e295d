"""The parent's checks of the data backends, run in a child when a backend's client is heavy.

The parent of a copy needs an object store's client for a few requests at
the start (does the bucket exist, may it be created); the workers do every
transfer. Loading boto3 and its S3 model for those would cost the parent
about 25 MiB for the whole run, a tenth of the memory budget of a 4-worker
copy. So a backend that preloads heavy modules in the fork server (its
``preload``) is checked in a child started from that same fork server, which
has those modules loaded already; the others are checked in place.

A ConfigError in the child comes back as the same one-line ConfigError.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import Connection
from typing import Any, Sequence

from pmigrate import interrupt, redact
from pmigrate.data.registry import backend_class, open_backend
from pmigrate.errors import ConfigError, FatalError

TIMEOUT = 600.0  # seconds; a backend's own requests time out and retry well within this

# What a check asks of a backend:
READ = "read"  # it must exist and answer: check(create=False)
CREATE = "create"  # create it if missing, as plikd would: check(create=True)
REACH = "reach"  # it must answer; not being there yet is fine (created when the copy starts)

Check = tuple[str, dict[str, Any], str]  # (DataBackend name, DataBackendConfig, READ | CREATE | REACH)


def run_checks(checks: Sequence[Check], *, start_method: str = "forkserver") -> None:
    """Each check in order; ConfigError or FatalError on the first failure."""
    if any(backend_class(name).preload for name, _, _ in checks):
        _in_child(checks, start_method)
    else:
        for check in checks:
            _check(*check)


def _check(name: str, options: dict[str, Any], mode: str) -> None:
    with open_backend(name, options) as backend:
        try:
            backend.check(create=mode == CREATE)
        except ConfigError as exc:
            # Unreachable or refused credentials is bad input, found before any write.
            if mode != REACH or "does not exist" not in str(exc):
                raise


def _in_child(checks: Sequence[Check], start_method: str) -> None:
    ctx = mp.get_context(start_method)
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(list(checks), child_end, redact.registered()), name="pmigrate-check", daemon=True)
    with interrupt.held():  # it may start the fork server and the resource tracker, which must outlive a stop signal
        proc.start()
    child_end.close()
    try:
        if not parent_end.poll(TIMEOUT):
            raise FatalError(f"checking the data backends took more than {TIMEOUT:.0f}s: check the stores' Endpoint settings")
        kind, message = parent_end.recv()
    except (EOFError, OSError):
        proc.join(5)
        raise FatalError(f"the process checking the data backends died (exit code {proc.exitcode})") from None
    finally:
        parent_end.close()
        if proc.is_alive():
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if kind == "config":
        raise ConfigError(message)
    if kind == "error":
        raise FatalError(message)


def _child(checks: list[Check], conn: Connection, secrets: tuple[str, ...]) -> None:
    redact.init_child(secrets)
    try:
        for check in checks:
            _check(*check)
        conn.send(("ok", ""))
    except ConfigError as exc:
        conn.send(("config", redact.redact(str(exc))))
    except Exception as exc:  # noqa: BLE001 - reported in the parent as one line
        conn.send(("error", redact.redact(f"checking the data backends failed: {type(exc).__name__}: {exc}")))
    finally:
        conn.close()
