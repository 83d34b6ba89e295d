"""--cluster: blob jobs on Dask workers, through the real CLI.

A LocalCluster of worker processes (local:2), and a real `dask scheduler`
with `dask worker` processes on loopback (tests/dask_cluster.py), against
the moto S3 server and file stores. Faults are real: a worker process
killed with SIGKILL while a blob it copies is held on a FUSE mount, the
scheduler killed mid-run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xxhash

from tests import blobdeploy as bd
from tests import dask_cluster
from tests.dask_cluster import KEY
from tests.servers import free_port
from tests.test_engine_file import _assert_target_complete, _gone, _Held, _wait_journal
from tests.test_engine_s3 import _journal

MiB = 1 << 20
PART = "PartSize = 5242880\n"


@pytest.fixture(autouse=True)
def _distributed():
    dask_cluster.need_distributed()


@pytest.fixture
def cluster(tmp_path):
    c = dask_cluster.start(tmp_path / "dask")
    yield c
    c.stop()


def _run(run_cli, src: Path, dst: Path, tmp_path: Path, *extra: str, env: dict | None = None) -> tuple[int, dict, str]:
    report = tmp_path / f"r{random.random()}.json"
    cp = run_cli("--config", str(src), "--to", str(dst), "--data-only", "-q", "--json", str(report), *extra,
                 env={"PMIGRATE_CLUSTER_KEY": KEY, **(env or {})})  # fmt: skip
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp.returncode, doc, cp.stderr


def _hashes(dep: bd.Deployment) -> dict[str, tuple]:
    return {b.file_id: (len(b.data), xxhash.xxh3_128(b.data).hexdigest()) for b in dep.with_blob()}


def _start(held: _Held, target: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "pmigrate", "--config", str(held.dep.config), "--to", str(target), "--data-only", "-q",
            "--json", str(tmp_path / "run.json"), *extra]  # fmt: skip
    return subprocess.Popen(args, env=dask_cluster.env(PMIGRATE_CLUSTER_KEY=KEY), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.slow
def test_a_local_cluster_writes_what_the_local_pool_writes(tmp_path, run_cli, s3_server):
    blobs = bd.make_blobs(150, seed=5)
    blobs[0].data = b""
    blobs[1].data = random.Random(5).randbytes(11 * MiB + 5)  # multipart: three parts of 5 MiB
    blobs[2].status = "deleted"
    dep = bd.file_source(tmp_path / "src", blobs)
    on_dask, on_pool = s3_server.new_bucket(), s3_server.new_bucket()
    t_dask = bd.s3_target(tmp_path / "a", server=s3_server, bucket=on_dask, extra=PART)
    t_pool = bd.s3_target(tmp_path / "b", server=s3_server, bucket=on_pool, extra=PART)
    code, doc, err = _run(run_cli, dep.config, t_dask, tmp_path, "--cluster", "local:2")
    assert code == 0, err
    assert doc["sections"]["data"]["copied"] == len(dep.with_blob())
    # Without --cluster nothing changes, and Dask is never imported (the workers' imports print here too).
    code, _, err = _run(run_cli, dep.config, t_pool, tmp_path, "--workers", "2", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert code == 0, err
    imported = [line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")]
    assert "pmigrate.transfer.worker" in imported and "distributed" not in imported
    expected = {b.file_id: b.data for b in dep.with_blob()}
    assert bd.s3_target_blobs(s3_server, on_dask) == bd.s3_target_blobs(s3_server, on_pool) == expected
    assert _journal(t_dask) == _journal(t_pool) == _hashes(dep)
    client = s3_server.client()
    assert client.head_object(Bucket=on_dask, Key=blobs[1].file_id)["ETag"].endswith('-3"')
    assert client.list_multipart_uploads(Bucket=on_dask).get("Uploads", []) == []


def _scheduler_state(address: str) -> bytes:
    """Everything the scheduler keeps of a run in flight: worker plugins, each task's spec, its log."""
    from distributed import Client

    def state(dask_scheduler) -> tuple:  # runs on the scheduler
        import pickle

        plugins = b"".join(dask_scheduler.worker_plugins.values())
        tasks = [(str(k), repr(ts.run_spec), pickle.dumps(ts.run_spec)) for k, ts in dask_scheduler.tasks.items()]
        logs = "\n".join(str(x) for x in dask_scheduler.get_logs())
        return list(dask_scheduler.worker_plugins), plugins, tasks, logs

    with Client(address, timeout=30, set_as_default=False) as client:
        names, plugins, tasks, logs = client.run_on_scheduler(state)
    assert any(n.startswith("pmigrate-") for n in names), names  # the run's plugin is there ...
    assert any(k.startswith("pmigrate-") for k, _, _ in tasks), tasks  # ... and tasks of it
    return plugins + b"".join(k.encode() + r.encode() + p for k, r, p in tasks) + logs.encode()


@pytest.mark.slow
def test_a_real_cluster_copies_file_to_s3_and_back_and_verifies_keeping_secrets_from_the_scheduler(
    tmp_path, run_cli, s3_server, cluster
):
    held = _Held(tmp_path)
    dep = held.dep
    bucket = s3_server.new_bucket()
    to_s3 = bd.s3_target(tmp_path / "s3", server=s3_server, bucket=bucket, extra=PART)
    proc = _start(held, to_s3, tmp_path, "--cluster", cluster.address)
    try:
        _wait_journal(to_s3.parent, proc, rows=50)  # one blob held: the run is in flight
        seen = _scheduler_state(cluster.address)
        held.feed()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        held.settle()
    assert proc.returncode == 0, err
    for secret in (s3_server.secret_key, KEY):
        assert secret.encode() not in seen
    expected = {b.file_id: b.data for b in dep.with_blob()}
    assert bd.s3_target_blobs(s3_server, bucket) == expected
    assert _journal(to_s3) == _hashes(dep)

    # S3 -> file on the same cluster, then verify there.
    s3_src = tmp_path / "s3src.cfg"
    s3_src.write_text(s3_server.toml(bucket) + bd.meta_toml(dep.db))
    to_file = bd.file_target(tmp_path / "back")
    code, doc, err = _run(run_cli, s3_src, to_file, tmp_path, "--cluster", cluster.address)
    assert code == 0, err
    _assert_target_complete(dep, tmp_path / "back" / "files")
    code, doc, err = _run(run_cli, s3_src, to_file, tmp_path, "verify", "--cluster", cluster.address)
    assert code == 0, err
    assert doc["sections"]["verify-blobs"]["ok"] == len(expected)
    logs = b"".join(p.read_bytes() for p in cluster.folder.glob("*.log"))
    assert b"pmigrate-" in logs  # the scheduler and workers logged the run's plugin ...
    for secret in (s3_server.secret_key, KEY):
        assert secret.encode() not in logs  # ... and no secret


def test_verify_on_a_cluster_finds_a_damaged_blob(tmp_path, run_cli, cluster):
    blobs = bd.make_blobs(60, seed=8)
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.file_target(tmp_path / "dst")
    code, _, err = _run(run_cli, dep.config, target, tmp_path, "--cluster", cluster.address)
    assert code == 0, err
    victim = next(b for b in dep.with_blob() if b.data)
    path = tmp_path / "dst" / "files" / victim.file_id[:2] / victim.file_id
    path.write_bytes(bytes([path.read_bytes()[0] ^ 1]) + path.read_bytes()[1:])
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "verify", "--cluster", cluster.address)
    assert code == 1
    sec = doc["sections"]["verify-blobs"]
    assert (sec["ok"], sec["hash-mismatch"]) == (len(dep.with_blob()) - 1, 1)
    assert [p["item"] for p in doc["problems"] if p["kind"] == "hash-mismatch"] == [victim.file_id]


def test_a_dask_worker_killed_mid_copy_hands_its_blobs_to_another(tmp_path, cluster):
    held = _Held(tmp_path, size=3 * MiB)
    dep = held.dep
    target = bd.file_target(tmp_path / "dst")
    folder = tmp_path / "dst" / "files" / held.blob.file_id[:2]
    proc = _start(held, target, tmp_path, "--cluster", cluster.address)
    try:
        _wait_journal(target.parent, proc, rows=50)
        held.feed_part(MiB)
        deadline = time.monotonic() + 60
        while not list(folder.glob(f".{held.blob.file_id}.partial-*")):  # the write has begun
            assert time.monotonic() < deadline, "the held blob's write never started"
            time.sleep(0.02)
        victim = held.reader(cluster.worker_pids())
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        assert _gone([victim])
        held.feed()  # the next attempt reads it all
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        held.settle()
    assert proc.returncode == 0, err
    data = json.loads((tmp_path / "run.json").read_text())["sections"]["data"]
    assert data["worker_deaths"] == 1 and data["copied"] == len(dep.with_blob())
    _assert_target_complete(dep, tmp_path / "dst" / "files")  # the dead write's temporary file cleared
    assert _journal(target) == _hashes(dep)


def test_the_scheduler_killed_stops_the_run_and_a_local_run_completes_it(tmp_path, run_cli, cluster):
    held = _Held(tmp_path)
    dep = held.dep
    target = bd.file_target(tmp_path / "dst")
    proc = _start(held, target, tmp_path, "--cluster", cluster.address)
    try:
        _wait_journal(target.parent, proc, rows=50)
        cluster.scheduler.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        held.feed()
        cluster.stop()
        held.settle()
    assert proc.returncode == 1, err
    assert f"pmigrate: error: lost the Dask scheduler at {cluster.address}" in err
    assert "Traceback" not in err
    done = _journal(target)
    assert 50 <= len(done) < len(dep.with_blob())
    code, _, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "2")
    assert code == 0, err
    _assert_target_complete(dep, tmp_path / "dst" / "files")
    assert _journal(target) == _hashes(dep)


@pytest.mark.slow
def test_workers_that_cannot_reach_the_source_or_open_the_options_say_so_once(tmp_path, run_cli, s3_server, s3_bucket):
    blobs = bd.make_blobs(400, seed=12, sizes=[3000])  # chunks enough for each worker to get one at once
    dep = bd.s3_source(tmp_path / "src", blobs, server=s3_server, bucket=s3_bucket)
    c = dask_cluster.Cluster(tmp_path / "dask")
    c.folder.mkdir()
    c.start_scheduler()
    try:
        c.add_worker()
        dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        c.add_worker(host="127.0.0.2", HTTP_PROXY=dead_proxy, http_proxy=dead_proxy, NO_PROXY="", no_proxy="")
        c.add_worker(host="127.0.0.3", key="another-passphrase-than-pmigrates")
        c.wait_workers(3)
        target = bd.file_target(tmp_path / "dst")
        code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--cluster", c.address)
    finally:
        c.stop()
    assert code == 0, err
    said = [line for line in err.splitlines() if "cannot reach the source" in line]
    assert len(said) == 1 and "Dask worker tcp://127.0.0.2:" in said[0], err
    said = [line for line in err.splitlines() if "PMIGRATE_CLUSTER_KEY is not the one pmigrate was given" in line]
    assert len(said) == 1 and "Dask worker tcp://127.0.0.3:" in said[0], err
    assert len(err.strip().splitlines()) == 2, err  # nothing else, and nothing per blob
    _assert_target_complete(dep, tmp_path / "dst" / "files")


@pytest.mark.parametrize(
    "args, env, says",
    [
        (["--cluster", "tcp://127.0.0.1:9"], {}, "PMIGRATE_CLUSTER_KEY is not set"),
        (["--cluster", "tcp://127.0.0.1:9"], {"PMIGRATE_CLUSTER_KEY": "short"}, "shorter than 16 characters"),
        (["--cluster", "10.0.0.5"], {}, "give the Dask scheduler's address"),
        (["--cluster", "local:0"], {}, "local:N with N worker processes"),
        (["--cluster", "local:2", "--max-memory", "1G"], {}, "give each dask worker --memory-limit"),
    ],
)
def test_bad_cluster_options_are_refused_before_anything_runs(tmp_path, run_cli, args, env, says):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(3, seed=2))
    target = bd.file_target(tmp_path / "dst")
    cp = run_cli("--config", str(dep.config), "--to", str(target), "--data-only", *args,
                 env={"PMIGRATE_CLUSTER_KEY": "", **env})  # fmt: skip
    assert cp.returncode == 2, cp.stderr
    assert says in cp.stderr and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert not (tmp_path / "dst" / "files").exists()
