"""A real Dask cluster for the tests: a `dask scheduler` and `dask worker` processes on loopback.

Each process is started here, logs into a file of its own, and is stopped by
its own PID (the workers' nannies take their worker processes with them).
Without the distributed package the tests skip, except under CI=true, where
they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO
from tests.servers import free_port, unavailable

KEY = "cluster-passphrase-for-tests-7f3a9c"  # PMIGRATE_CLUSTER_KEY of the tests' clusters


def need_distributed() -> None:
    try:
        import cryptography  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        unavailable(f"the Dask tests need pmigrate[dask]: {exc}")


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PLIKD_", "DASK_"))}
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    out.pop("AWS_CA_BUNDLE", None)
    out.update(extra)
    return out


@dataclass
class Cluster:
    folder: Path
    address: str = ""
    scheduler: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def start_scheduler(self) -> None:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.scheduler = self._spawn(
            "scheduler",
            ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env(),
        )

    def add_worker(self, *, host: str = "127.0.0.1", key: str | None = KEY, **extra_env: str) -> subprocess.Popen:
        """A nanny and its worker process, one thread; ``key`` None: no PMIGRATE_CLUSTER_KEY."""
        name = f"worker{len(self.workers)}"
        e = env(**extra_env)
        if key is not None:
            e["PMIGRATE_CLUSTER_KEY"] = key
        args = ["distributed.cli.dask_worker", self.address, "--host", host, "--nthreads", "1", "--name", name,
                "--no-dashboard", "--death-timeout", "20", "--memory-limit", "0"]  # fmt: skip
        proc = self._spawn(name, args, e)
        self.workers.append(proc)
        return proc

    def _spawn(self, name: str, args: list[str], environment: dict[str, str]) -> subprocess.Popen:
        out = open(self.log(name), "ab")
        try:
            return subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, env=environment,
                                    cwd=self.folder)  # fmt: skip
        finally:
            out.close()

    def wait_workers(self, n: int, timeout: float = 60) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=timeout)

    def worker_pids(self) -> list[int]:
        """The worker processes (children of the nannies), those that replaced killed ones included."""
        out = []
        for nanny in self.workers:
            for task in Path(f"/proc/{nanny.pid}/task").glob("*"):  # the thread that spawned it may be any
                try:
                    out += [int(c) for c in (task / "children").read_text().split()]
                except OSError:
                    continue
        return out

    def stop(self) -> None:
        """The workers first (they tell the scheduler they leave), then the scheduler; each by its PID."""
        children = self.worker_pids()
        for group in (self.workers, [self.scheduler]):
            live = [p for p in group if p is not None and p.poll() is None]
            for proc in live:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for proc in live:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for pid in children:  # a worker process its nanny did not take with it
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def start(folder: Path, *, workers: int = 2) -> Cluster:
    need_distributed()
    folder.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(folder)
    cluster.start_scheduler()
    try:
        for _ in range(workers):
            cluster.add_worker()
        cluster.wait_workers(workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster
