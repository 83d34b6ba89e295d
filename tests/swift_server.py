"""A real single-node OpenStack Swift (tempauth) for the tests, from Debian's packages.

memcached, then the account, container, object and proxy servers run as plain
processes (workers = 0: one PID each) under a temporary base directory, with
rings and configs made here. The servers run on the system Python that the
Debian packages installed into, not on the test venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import free_port, stop_process, wait_http

SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = "swift swift-proxy swift-object swift-container swift-account python3-swift memcached"
KINDS = ("account", "container", "object")

# Rings with one replica and one device per kind: what a single node needs.
_BUILD_RINGS = """
import sys
from swift.common.ring import RingBuilder
etc = sys.argv[1]
for kind, port in zip(("account", "container", "object"), sys.argv[2:5]):
    b = RingBuilder(6, 1, 1)
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
               "device": "d1", "weight": 100, "meta": ""})
    b.rebalance()
    b.get_ring().save(f"{etc}/{kind}.ring.gz")
    b.save(f"{etc}/{kind}.builder")
"""

# swift.conf's path is fixed at import time; point it at our base directory so
# that nothing under /etc/swift is read, then serve one WSGI app.
_LAUNCH = """
import sys
etc, kind, conf = sys.argv[1:4]
from swift.common import utils
utils.set_swift_dir(etc)
from swift.common import constraints, storage_policy
constraints.reload_constraints()
storage_policy.reload_storage_policies()
from swift.common.wsgi import run_wsgi
kw = {}
if kind == "object":
    from swift.obj import server
    kw["global_conf_callback"] = server.global_conf_callback
sys.exit(run_wsgi(conf, kind + "-server", verbose=True, **kw))
"""

_COMMON = """[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
swift_dir = {etc}
devices = {devices}
mount_check = false
disable_fallocate = true
log_udp_host = 127.0.0.1
log_udp_port = 1
"""

_STORAGE = """
[pipeline:main]
pipeline = healthcheck {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}

[filter:healthcheck]
use = egg:swift#healthcheck
"""

_PROXY_FILTERS = (
    "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats "
    "tempauth copy slo dlo versioned_writes proxy-logging proxy-server"
)

_SWIFT_CONF = """[swift-hash]
swift_hash_path_suffix = pmigrate-test-suffix
swift_hash_path_prefix = pmigrate-test-prefix

[storage-policy:0]
name = Policy-0
default = yes
"""


def missing_packages() -> str | None:
    """Why Swift cannot run here, or None when Debian's packages are installed."""
    if shutil.which("memcached") is None:
        return f"memcached not installed (apt-get install {PACKAGES})"
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import swift.proxy.server, swift.obj.server"], capture_output=True
    )
    if probe.returncode != 0:
        return f"the Swift servers are not installed (apt-get install {PACKAGES})"
    return None


@dataclass
class SwiftServer:
    """A running single-node Swift: tempauth users test:tester and test2:tester2."""

    base: Path
    proxy_port: int
    procs: list[subprocess.Popen] = field(default_factory=list)
    user: str = "test:tester"
    key: str = "testing"

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}/auth/v1.0"

    def options(self, container: str, *, user: str | None = None, key: str | None = None, **extra) -> dict:
        """A DataBackendConfig table for this server, as plikd would read it."""
        return {
            "Container": container,
            "AuthUrl": self.auth_url,
            "UserName": user or self.user,
            "ApiKey": key or self.key,
            **extra,
        }

    def toml(self, container: str, *, extra: str = "") -> str:
        return (
            'DataBackend = "swift"\n[DataBackendConfig]\n'
            f'  Container = "{container}"\n  AuthUrl = "{self.auth_url}"\n'
            f'  UserName = "{self.user}"\n  ApiKey = "{self.key}"\n{extra}'
        )

    def new_container_name(self, prefix: str = "pmt") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def connection(self, *, user: str | None = None, key: str | None = None):
        import swiftclient

        return swiftclient.Connection(
            authurl=self.auth_url, user=user or self.user, key=key or self.key, auth_version="1", retries=0
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        self.procs.clear()


def _write_configs(base: Path, ports: dict[str, int]) -> Path:
    etc, devices, log = base / "etc", base / "srv" / "node", base / "log"
    for d in (etc, devices / "d1", log):
        d.mkdir(parents=True, exist_ok=True)
    (etc / "swift.conf").write_text(_SWIFT_CONF)
    for kind in KINDS:
        conf = _COMMON.format(port=ports[kind], etc=etc, devices=devices) + _STORAGE.format(kind=kind)
        (etc / f"{kind}-server.conf").write_text(conf)
    proxy = _COMMON.format(port=ports["proxy"], etc=etc, devices=devices)
    proxy += f"\n[pipeline:main]\npipeline = {_PROXY_FILTERS}\n"
    proxy += "\n[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n"
    proxy += (
        "\n[filter:tempauth]\nuse = egg:swift#tempauth\n"
        "user_test_tester = testing .admin\nuser_test2_tester2 = testing2 .admin\n"
    )
    proxy += f"\n[filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{ports['memcached']}\n"
    for name in ("catch_errors", "gatekeeper", "healthcheck", "proxy-logging", "listing_formats", "copy", "slo", "dlo", "versioned_writes"):
        proxy += f"\n[filter:{name}]\nuse = egg:swift#{name.replace('-', '_')}\n"
    (etc / "proxy-server.conf").write_text(proxy)
    return etc


def _wait_auth(url: str, *, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a Swift process exited with {p.returncode} (command {p.args[:3]})")
        req = urllib.request.Request(url, headers={"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200 and resp.headers.get("X-Storage-Url"):
                    return
        except (OSError, urllib.error.HTTPError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"Swift tempauth at {url} not ready within {timeout}s ({last})")


def start_swift(base: Path, *, timeout: float = 120.0) -> SwiftServer:
    """Start memcached and the four Swift servers under base; stop them on any failure."""
    ports = {name: free_port() for name in ("memcached", *KINDS, "proxy")}
    etc = _write_configs(base, ports)
    subprocess.run(
        [SYSTEM_PYTHON, "-c", _BUILD_RINGS, str(etc), *(str(ports[k]) for k in KINDS)],
        check=True,
        capture_output=True,
    )
    server = SwiftServer(base=base, proxy_port=ports["proxy"])
    try:
        server.procs.append(
            subprocess.Popen(
                ["memcached", *(["-u", "root"] if os.geteuid() == 0 else []), "-l", "127.0.0.1", "-p", str(ports["memcached"]), "-U", "0", "-m", "64"],
                stdout=subprocess.DEVNULL,
                stderr=open(base / "log" / "memcached.log", "wb"),
            )
        )
        for kind in (*KINDS, "proxy"):
            log = open(base / "log" / f"{kind}.log", "wb")
            server.procs.append(
                subprocess.Popen(
                    [SYSTEM_PYTHON, "-c", _LAUNCH, str(etc), kind, str(etc / f"{kind}-server.conf")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=base,
                )
            )
        for kind in (*KINDS, "proxy"):
            wait_http(f"http://127.0.0.1:{ports[kind]}/healthcheck", timeout=timeout, proc=server.procs[-1])
        _wait_auth(server.auth_url, timeout=timeout, procs=server.procs)
    except BaseException:
        server.stop()
        raise
    return server
