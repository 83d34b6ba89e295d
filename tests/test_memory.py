"""The memory limit: how many upload parts fit, the governor holding tokens back, and real runs under it."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import subprocess
import sys

import pytest

from pmigrate.data.budget import PartBudget
from pmigrate.transfer import memory
from tests import blobdeploy as bd

MiB = 1 << 20
PART = 16 * MiB


def test_without_a_limit_two_parts_a_worker_within_half_of_what_the_host_can_spare():
    assert memory.default_parts(capacity=8, part_bytes=PART, host_available=20 << 30) == 8
    assert memory.default_parts(capacity=8, part_bytes=PART, host_available=100 * MiB) == 3  # 50 MiB: 3 parts
    assert memory.default_parts(capacity=8, part_bytes=PART, host_available=10 * MiB) == 1  # never none
    assert memory.default_parts(capacity=8, part_bytes=PART, host_available=None) == 8
    assert memory.available() > 0  # /proc/meminfo's MemAvailable


def test_parts_allowed_fill_what_the_processes_leave():
    assert memory.allowed_parts(limit=223 * MiB, base=150 * MiB, part_bytes=PART, capacity=8) == 4
    assert memory.allowed_parts(limit=223 * MiB, base=100 * MiB, part_bytes=PART, capacity=8) == 7
    assert memory.allowed_parts(limit=10_000 * MiB, base=100 * MiB, part_bytes=PART, capacity=8) == 8
    assert memory.allowed_parts(limit=223 * MiB, base=400 * MiB, part_bytes=PART, capacity=8) == 1  # never none


class _Tree:
    """Fake measurements: the processes' own memory plus the parts the workers hold."""

    def __init__(self, base: int, workers: PartBudget) -> None:
        self.base = base
        self.workers = workers

    def measure(self, pid: int) -> int:
        return self.base + self.workers.held * PART


def _governor(limit: int | None, base: int, cap: int | None = None):
    pool = PartBudget.shared_pool(mp.get_context("forkserver"), 4)  # 8 tokens
    workers = PartBudget(pool)
    tree = _Tree(base, workers)
    gov = memory.MemoryGovernor(pool, capacity=8, part_bytes=PART, limit=limit, cap=cap, pids=lambda: [1], measure=tree.measure)
    return gov, workers, tree


def _take_all(budget: PartBudget) -> int:
    n = 0
    while budget.acquire(lambda: True):
        n += 1
    return n


def test_the_governor_holds_back_what_does_not_fit_and_gives_it_back():
    gov, workers, tree = _governor(223 * MiB, 150 * MiB)
    assert gov.step() == 4
    assert gov.withheld == 4
    assert _take_all(workers) == 4  # the workers get only what fits
    assert gov.step() == 4  # the parts they hold are not counted twice
    workers.release_all()

    tree.base = 190 * MiB  # the processes grew
    assert _take_all(workers) == 4
    assert gov.step() == 1
    assert gov.withheld == 4  # the tokens in use are taken back only as they come home
    workers.release()
    gov.step()
    assert gov.withheld == 5
    workers.release_all()
    gov.step()
    assert gov.withheld == 7
    assert _take_all(workers) == 1

    workers.release_all()
    tree.base = 100 * MiB
    for _ in range(memory.WINDOW - 1):
        assert gov.step() == 1  # the largest recent sample still counts
    assert gov.step() == 7
    assert gov.withheld == 1
    fig = gov.figures
    assert (fig.fewest, fig.most, fig.over) == (1, 7, 0)
    assert fig.peak == 190 * MiB + 4 * PART
    gov.stop()
    assert gov.withheld == 0
    assert _take_all(workers) == 8


def test_a_limit_below_the_processes_still_lets_one_part_through_and_says_so():
    gov, workers, _ = _governor(100 * MiB, 150 * MiB)
    gov.start()
    try:
        assert _take_all(workers) == 1
        assert gov.figures.over == 150 * MiB
    finally:
        workers.release_all()
        gov.stop()
    fig = gov.figures
    assert fig.exceeded and fig.peak >= 150 * MiB
    assert fig.summary().endswith(", above the 100.0 MiB allowed: the processes 150.0 MiB; upload parts of 16.0 MiB, 1 at once")
    assert "leaving no room under --max-memory 100.0 MiB" in fig.warning() and "; the run peaked at " in fig.warning()


def test_without_a_limit_the_parts_come_on_top_of_the_processes_whatever_they_use():
    gov, workers, tree = _governor(None, 400 * MiB, cap=6)
    assert gov.step() == 6  # the host's share: 2 of the 8 tokens held back
    assert _take_all(workers) == 6
    tree.base = 900 * MiB  # the processes grew: the parts stay
    assert gov.step() == 6
    workers.release_all()
    gov.stop()
    fig = gov.figures
    assert (fig.fewest, fig.most, fig.over, fig.exceeded, fig.warning()) == (6, 6, 0, False, "")
    assert fig.base == 900 * MiB and fig.peak == 900 * MiB + 6 * PART
    assert fig.summary() == "memory: peak 996.0 MiB: the processes 900.0 MiB; upload parts of 16.0 MiB, 6 at once (2 a worker; no --max-memory)"
    gov.figures.host_available = 200 * MiB  # had the cap come from the host
    assert fig.summary().endswith("6 at once (as many as half the 200.0 MiB available allowed; no --max-memory)")
    assert _take_all(workers) == 8


def test_the_tree_is_this_process_its_children_and_the_workers():
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        current = [worker.pid]
        pids = memory.tree(lambda: current)
        assert pids()[0] == os.getpid()
        assert worker.pid in pids()
        assert memory.pss(os.getpid()) > 1 * MiB
        assert memory.pss(worker.pid) > 1 * MiB
    finally:
        worker.kill()
        worker.wait()
    assert memory.pss(worker.pid) == 0  # gone


# -- real runs ------------------------------------------------------------------------------------


def _deployment(tmp_path, server, bucket):
    blobs = bd.make_blobs(6, seed=41)
    for i, b in enumerate(blobs[:4]):
        b.data = random.Random(i).randbytes(11 * MiB + i)  # three 5 MiB parts each
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.s3_target(tmp_path / "s3", server=server, bucket=bucket, extra="PartSize = 5242880\n")
    return dep, target


def _copy(run_cli, dep, target, tmp_path, *extra: str):
    report = tmp_path / "report.json"
    cp = run_cli("--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--workers", "2",
                 "--json", str(report), *extra)  # fmt: skip
    return cp, json.loads(report.read_text())


@pytest.mark.slow
def test_a_default_run_holds_two_parts_a_worker_beside_the_processes_and_never_warns(tmp_path, run_cli, s3_server, s3_bucket):
    dep, target = _deployment(tmp_path, s3_server, s3_bucket)
    cp, doc = _copy(run_cli, dep, target, tmp_path)
    assert cp.returncode == 0, cp.stderr
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in dep.with_blob()}
    mem = doc["sections"]["data"]["memory"]
    assert mem["limit_bytes"] is None and mem["exceeded"] is False
    assert mem["parts_at_once"] == [4, 4]  # 2 workers, 2 parts each: this host spares far more than 20 MiB
    assert 20 * MiB < mem["processes_bytes"] <= mem["peak_bytes"]  # equal when the peak sample held no part
    assert "warning" not in cp.stdout + cp.stderr and doc["warnings"] == []
    assert "(2 a worker; no --max-memory)" in cp.stdout


@pytest.mark.slow
def test_a_limit_too_small_copies_everything_one_part_at_a_time(tmp_path, run_cli, s3_server, s3_bucket):
    dep, target = _deployment(tmp_path, s3_server, s3_bucket)
    cp, doc = _copy(run_cli, dep, target, tmp_path, "--max-memory", "64M")
    assert cp.returncode == 0, cp.stderr
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in dep.with_blob()}
    mem = doc["sections"]["data"]["memory"]
    assert mem["parts_at_once"] == [1, 1]
    assert "raise --max-memory or lower --workers" in cp.stdout + cp.stderr
    # The processes alone are above 64 MiB: the summary and the report say the limit did not hold.
    assert mem["limit_bytes"] == 64 * MiB and mem["peak_bytes"] > 64 * MiB and mem["exceeded"] is True
    assert "above the 64.0 MiB allowed" in cp.stdout
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


@pytest.mark.slow
def test_no_limit_holds_nothing_back(tmp_path, run_cli, s3_server, s3_bucket):
    dep, target = _deployment(tmp_path, s3_server, s3_bucket)
    cp, doc = _copy(run_cli, dep, target, tmp_path, "--max-memory", "0")
    assert cp.returncode == 0, cp.stderr
    assert "memory" not in doc["sections"]["data"]
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in dep.with_blob()}


def test_a_bad_size_is_one_line_and_exit_2(run_cli, tmp_path):
    cp = run_cli("--to", str(tmp_path / "t.cfg"), "--max-memory", "lots")
    assert cp.returncode == 2
    assert cp.stderr.count("\n") == 1 and "'lots' is not a size" in cp.stderr
