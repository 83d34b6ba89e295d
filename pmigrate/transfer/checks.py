"""The parent's requests to the data backends, run in a child when a backend's client is heavy.

The parent of a copy needs an object store's client for a few requests at
the start (does the bucket exist, may it be created); the workers do every
transfer. Loading boto3 and its S3 model for those would cost the parent
about 25 MiB for the whole run, a tenth of the memory budget of a 4-worker
copy, and some 0.18 s of CPU that the fork server spends anyway for the
workers. So a backend whose client needs heavy modules, preloaded in the
fork server (data/registry.heavy) is checked in a child of that same fork
server, which has those modules loaded already; the others are checked in
place.

One such child serves every request of the run (the checks of preflight
and of the copy, the sweeps of open uploads of transfer/uploads.py), each
one a call of ``call``: a fork and a client per request would double a
small run's fixed cost. The copy ends it (close()) once its checks and
its first sweep are done, so that it holds no memory beside the workers;
the sweep at the end starts another.
A ConfigError in the child comes back as the same one-line ConfigError.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing import util
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


_kept: dict[tuple[str, str], Any] | None = None  # in the child serving calls: each store's backend, for every call


@contextmanager
def backend(name: str, options: dict[str, Any]) -> Iterator[Any]:
    """The named store's backend for one call: in the serving child the one kept for the run
    (its client built once, its connections reused), elsewhere a new one, closed after."""
    if _kept is None:
        with open_backend(name, options) as b:
            yield b
        return
    key = (name, repr(sorted(options.items())))
    if key not in _kept:
        _kept[key] = open_backend(name, options)
    yield _kept[key]


def _check(name: str, options: dict[str, Any], mode: str, *args: Any) -> Any:
    with backend(name, options) as backend_:
        if mode in (OWN, CLAIM):
            return _own(backend_, mode, *args)
        if mode == MARKER:
            raw = backend_.read_marker()
            return hashlib.sha256(raw).hexdigest() if raw is not None else ""
        if mode == PROBE:
            from pmigrate.transfer import precheck

            return precheck.probe(backend_)
        backend_.check(create=mode == CREATE)  # unreachable or refused credentials: bad input, before any write
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


class _Server:
    """The child that runs the parent's calls, one at a time, for the whole run."""

    def __init__(self, start_method: str) -> None:
        ctx = mp.get_context(start_method)
        self.conn, child_end = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_serve, args=(child_end,), name="pmigrate-check", daemon=True)
        with interrupt.held():  # it may start the fork server and the resource tracker, which must outlive a stop signal
            self.proc.start()
        child_end.close()
        # At exit, before multiprocessing joins its children: the child's EOF.
        self._closer = util.Finalize(self, _hang_up, (self.conn,), exitpriority=10)

    def call(self, fn: Callable[..., Any], args: tuple, what: str) -> tuple[str, Any]:
        self.conn.send((fn, args, redact.registered(), what))
        if not self.conn.poll(TIMEOUT):
            raise TimeoutError
        return self.conn.recv()

    def close(self, *, kill: bool = False) -> None:
        self._closer()  # the child sees EOF and ends
        if kill and self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


_servers: dict[str, _Server] = {}


def close() -> None:
    """End the child serving the calls, if one was started (idempotent): the run needs no more."""
    for server in list(_servers.values()):
        server.close()
    _servers.clear()


def _hang_up(conn: Connection) -> None:
    try:
        conn.close()
    except OSError:
        pass


def _in_child(fn: Callable[..., Any], args: tuple, start_method: str, what: str) -> Any:
    server = _servers.get(start_method)
    if server is None or not server.proc.is_alive():
        server = _servers[start_method] = _Server(start_method)
    try:
        kind, value = server.call(fn, args, what)
    except TimeoutError:
        _servers.pop(start_method, None)
        server.close(kill=True)
        raise FatalError(f"{what} took more than {TIMEOUT:.0f}s: check the stores' Endpoint settings") from None
    except (EOFError, OSError):
        _servers.pop(start_method, None)
        server.close(kill=True)
        raise FatalError(f"the process {what} died (exit code {server.proc.exitcode})") from None
    except BaseException:  # Ctrl-C mid-call: the child may still be busy with it
        _servers.pop(start_method, None)
        server.close(kill=True)
        raise
    if kind == "config":
        raise ConfigError(value)
    if kind == "error":
        raise FatalError(value)
    return value


def _serve(conn: Connection) -> None:
    """The child: each call in turn until the parent hangs up. Ctrl-C is the parent's: it ends this child."""
    global _kept
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _kept = {}
    try:
        while True:
            try:
                fn, args, secrets, what = conn.recv()
            except EOFError:
                return
            redact.init_child(secrets)
            conn.send(_run(fn, args, what))
    except (BrokenPipeError, ConnectionResetError):
        return  # the parent is gone
    finally:
        conn.close()
        for b in _kept.values():
            try:
                b.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def _run(fn: Callable[..., Any], args: tuple, what: str) -> tuple[str, Any]:
    try:
        return ("ok", fn(*args))
    except ConfigError as exc:
        return ("config", redact.redact(str(exc)))
    except FatalError as exc:
        return ("error", redact.redact(str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported in the parent as one line
        return ("error", redact.redact(f"{what} failed: {type(exc).__name__}: {exc}"))
