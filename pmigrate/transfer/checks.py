"""The parent's requests to the data backends, run in a child when a backend's client is heavy.

The parent of a copy needs an object store's client for a few requests at
the start (does the bucket exist, may it be created); the workers do every
transfer. Loading boto3 and its S3 model for those would cost the parent
about 25 MiB for the whole run, a tenth of the memory budget of a 4-worker
copy. So a backend whose client needs heavy modules, preloaded in the fork server
(data/registry.heavy) is checked in a child started from that same fork server, which
has those modules loaded already; the others are checked in place.

The same goes for the few other requests the parent makes (the sweep of
open uploads, transfer/uploads.py): ``call`` runs any such function there.
A ConfigError in the child comes back as the same one-line ConfigError.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from pmigrate import interrupt, redact
from pmigrate.data.registry import heavy, open_backend
from pmigrate.errors import ConfigError, FatalError

TIMEOUT = 600.0  # seconds; a backend's own requests time out and retry well within this

# What a check asks of a backend:
READ = "read"  # it must exist and answer: check(create=False)
CREATE = "create"  # create it if missing, as plikd would: check(create=True)
PROBE = "probe"  # it must answer and take a write (tried and undone), or be missing and creatable (transfer/precheck.py)
OWN = "own"  # whose it is (pmigrate.ownership): refused unless this source filled it, or --merge
CLAIM = "claim"  # as OWN, then an empty store is recorded as this source's before the first blob
MARKER = "marker"  # the SHA-256 of the store's ownership record, '' without one (transfer/delta.py)

# (DataBackend name, DataBackendConfig, mode[, source identity, merge] for OWN and CLAIM)
Check = tuple[Any, ...]


def run_checks(checks: Sequence[Check], *, start_method: str = "forkserver") -> list[Any]:
    """Each check in order; ConfigError or FatalError on the first failure. Returns what each found."""
    return call([check[0] for check in checks], _check_all, list(checks), start_method=start_method, what="checking the data backends")


def call(backends: Sequence[str], fn: Callable[..., Any], *args: Any, start_method: str = "forkserver", what: str) -> Any:
    """fn(*args), in a child of the fork server when one of the named backends is heavy, else in place.

    fn must be a module-level function whose arguments and result pickle.
    A ConfigError from it comes back as the same ConfigError; any other
    error as a FatalError naming ``what``.
    """
    if any(heavy(name) for name in backends):
        return _in_child(fn, args, start_method, what)
    return fn(*args)


def _check_all(checks: list[Check]) -> list[str]:
    return [_check(*check) for check in checks]


def _check(name: str, options: dict[str, Any], mode: str, *args: Any) -> Any:
    with open_backend(name, options) as backend:
        if mode in (OWN, CLAIM):
            return _own(backend, mode, *args)
        if mode == MARKER:
            raw = backend.read_marker()
            return hashlib.sha256(raw).hexdigest() if raw is not None else ""
        if mode == PROBE:
            from pmigrate.transfer import precheck

            return precheck.probe(backend)
        backend.check(create=mode == CREATE)  # unreachable or refused credentials: bad input, before any write
        return ""


def _own(backend: Any, mode: str, source: str, merge: bool) -> str:
    from pmigrate import ownership

    found = ownership.data_state(backend, source=source)
    if found.state in (ownership.FOREIGN, ownership.OTHER) and not merge:
        raise ownership.refuse(what="data store", where=backend.describe(), source=source, found=found)
    if mode == CLAIM and found.state == ownership.EMPTY:
        backend.write_marker(ownership.marker(source))
        return ownership.OWNED
    return found.state


def _in_child(fn: Callable[..., Any], args: tuple, start_method: str, what: str) -> Any:
    ctx = mp.get_context(start_method)
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, args, child_end, redact.registered(), what), name="pmigrate-check", daemon=True)
    with interrupt.held():  # it may start the fork server and the resource tracker, which must outlive a stop signal
        proc.start()
    child_end.close()
    try:
        if not parent_end.poll(TIMEOUT):
            raise FatalError(f"{what} took more than {TIMEOUT:.0f}s: check the stores' Endpoint settings")
        kind, value = parent_end.recv()
    except (EOFError, OSError):
        proc.join(5)
        raise FatalError(f"the process {what} died (exit code {proc.exitcode})") from None
    finally:
        parent_end.close()
        if proc.is_alive():
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if kind == "config":
        raise ConfigError(value)
    if kind == "error":
        raise FatalError(value)
    return value


def _child(fn: Callable[..., Any], args: tuple, conn: Connection, secrets: tuple[str, ...], what: str) -> None:
    redact.init_child(secrets)
    try:
        conn.send(("ok", fn(*args)))
    except ConfigError as exc:
        conn.send(("config", redact.redact(str(exc))))
    except FatalError as exc:
        conn.send(("error", redact.redact(str(exc))))
    except Exception as exc:  # noqa: BLE001 - reported in the parent as one line
        conn.send(("error", redact.redact(f"{what} failed: {type(exc).__name__}: {exc}")))
    finally:
        conn.close()
