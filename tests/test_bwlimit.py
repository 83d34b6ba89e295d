"""--bwlimit and --tpslimit: rclone's notation, a timetable that switches rate, one budget for the whole pool.

The parser and the bucket are tested with an injected clock; the real runs
copy with several worker processes and check that the whole copy took at
least what the limit allows (a lower bound only: a loaded machine only makes
a run slower).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from pmigrate.data import bwlimit
from pmigrate.data.bwlimit import LimitSyntaxError, parse_rate, parse_timetable, parse_tps
from tests import blobdeploy as bd

KiB, MiB = 1 << 10, 1 << 20


def _at(wday: int, hh: int, mm: int) -> time.struct_time:
    """A local time on a day of the week (0: Monday)."""
    return time.struct_time((2026, 11, 30 + wday, hh, mm, 0, wday, 334 + wday, 0))


@pytest.mark.parametrize(
    "text, rate",
    [("10M", 10 * MiB), ("512k", 512 * KiB), ("512", 512 * KiB), ("1.5M", 1.5 * MiB), ("100B", 100), ("2G", 2 << 30),
     ("off", 0), ("0", 0), ("10Mi", 10 * MiB), ("10MiB", 10 * MiB)],
)  # fmt: skip
def test_rates_in_rclone_notation(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "10X", "-1M", "10M:1M", "08:00,10M 25:00,off", "08:00", "Mox-08:00,1M",
                                  "08:00,10M,off", "8:61,1M"])  # fmt: skip
def test_bad_syntax_is_refused(text):
    with pytest.raises(LimitSyntaxError):
        parse_timetable(text)


def test_daily_timetable_takes_the_last_entry_before_now_wrapping_round_midnight():
    tt = parse_timetable("08:00,512k 12:00,10M 19:00,off")
    assert tt.rate_at(_at(2, 7, 59)) == 0  # before the first entry: the previous day's last one, off
    assert tt.rate_at(_at(2, 8, 0)) == 512 * KiB
    assert tt.rate_at(_at(2, 11, 59)) == 512 * KiB
    assert tt.rate_at(_at(2, 12, 0)) == 10 * MiB
    assert tt.rate_at(_at(6, 23, 59)) == 0


def test_weekly_timetable_with_days_and_semicolons():
    tt = parse_timetable("Mon-00:00,512;Fri-23:59,10M;Sat-10:00,1M;Sun-20:00,off")
    assert tt.rate_at(_at(0, 0, 0)) == 512 * KiB
    assert tt.rate_at(_at(4, 23, 58)) == 512 * KiB
    assert tt.rate_at(_at(4, 23, 59)) == 10 * MiB
    assert tt.rate_at(_at(5, 9, 0)) == 10 * MiB
    assert tt.rate_at(_at(5, 10, 0)) == 1 * MiB
    assert tt.rate_at(_at(6, 21, 0)) == 0
    # A day-less entry applies every day, beside those that name one.
    mixed = parse_timetable("08:00,1M Sat-09:00,off")
    assert mixed.rate_at(_at(5, 8, 30)) == 1 * MiB and mixed.rate_at(_at(5, 9, 30)) == 0
    assert mixed.rate_at(_at(6, 8, 30)) == 1 * MiB


def test_tps_syntax():
    assert parse_tps("10") == 10 and parse_tps("0.5") == 0.5 and parse_tps("off") == 0
    for bad in ("-1", "ten", "nan", "inf"):
        with pytest.raises(LimitSyntaxError):
            parse_tps(bad)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s
        self.slept += s


def test_bucket_paces_takers_to_the_rate_and_follows_a_switch():
    clock = FakeClock()
    schedule = {"rate": 1 * MiB}
    bucket = bwlimit.Bucket(lambda: schedule["rate"], [0.0, 0.0], _NoLock(), sleep=clock.sleep, clock=clock)
    start = clock.now
    for _ in range(40):  # 10 MiB in 256 KiB reads at 1 MiB/s: 10 s, less the first burst
        bucket.take(256 * KiB)
    assert 9.5 <= clock.now - start <= 10.0
    schedule["rate"] = 4 * MiB  # the timetable switched
    start = clock.now
    for _ in range(40):
        bucket.take(256 * KiB)
    assert 2.3 <= clock.now - start <= 2.6
    schedule["rate"] = 0  # off
    start = clock.now
    for _ in range(40):
        bucket.take(256 * KiB)
    assert clock.now == start


def test_a_switch_of_the_timetable_is_seen_by_a_running_bucket():
    """The rate is looked up on the clock at every take (install() gives the bucket time.localtime)."""
    tt = parse_timetable("Mon-10:00,1M Mon-10:01,off")
    clock = FakeClock()
    minute = {"now": _at(0, 10, 0)}
    bucket = bwlimit.Bucket(lambda: tt.rate_at(minute["now"]), [0.0, 0.0], _NoLock(), sleep=clock.sleep, clock=clock)
    for _ in range(8):
        bucket.take(256 * KiB)
    assert clock.slept > 1.5
    minute["now"] = _at(0, 10, 1)
    before = clock.slept
    for _ in range(80):
        bucket.take(256 * KiB)
    assert clock.slept == before


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- real runs --------------------------------------------------------------------------


def _run(run_cli, src: Path, dst: Path, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    report = tmp_path / f"r{random.random()}.json"
    cp = run_cli("--config", str(src), "--to", str(dst), "--data-only", "-q", "--json", str(report), *extra)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp.returncode, doc, cp.stderr


def _deployment(tmp_path: Path, *, n: int, size: int, seed: int) -> bd.Deployment:
    return bd.file_source(tmp_path / "src", bd.make_blobs(n, seed=seed, sizes=[size]))


def test_one_limit_for_the_whole_pool(tmp_path, run_cli):
    """4 workers, --bwlimit 2M, 10 MiB: the pool together reads at 2 MiB/s, not 4 x 2."""
    dep = _deployment(tmp_path, n=20, size=512 * KiB, seed=71)
    target = bd.file_target(tmp_path / "dst")
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "4", "--bwlimit", "2M")
    assert code == 0, err
    data = doc["sections"]["data"]
    assert data["bytes"] == 20 * 512 * KiB
    assert data["seconds"] >= 0.8 * data["bytes"] / (2 * MiB)
    assert bd.file_target_blobs(tmp_path / "dst" / "files") == {b.file_id: b.data for b in dep.blobs}


def test_the_timetable_entry_in_force_now_is_the_one_applied(tmp_path, run_cli):
    """Entries before and after now are off; the one in force (from the clock of the run) is 1M."""
    dep = _deployment(tmp_path, n=8, size=512 * KiB, seed=72)
    target = bd.file_target(tmp_path / "dst")
    now = time.time()
    slot = [time.strftime("%H:%M", time.localtime(now + d)) for d in (-120, 0, 180)]
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "3",
                          "--bwlimit", f"{slot[0]},off {slot[1]},1M {slot[2]},off")  # fmt: skip
    assert code == 0, err
    data = doc["sections"]["data"]
    assert data["seconds"] >= 0.8 * data["bytes"] / MiB


def test_tpslimit_for_the_whole_pool(tmp_path, run_cli, s3_server):
    """30 blobs to S3 by 3 workers under --tpslimit 10: at least 30 PUTs, so at least 3 s."""
    dep = _deployment(tmp_path, n=30, size=1000, seed=73)
    bucket = f"pmt-tps-{random.randrange(1 << 30)}"
    target = bd.s3_target(tmp_path / "s3", server=s3_server, bucket=bucket)
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "3", "--tpslimit", "10")
    assert code == 0, err
    data = doc["sections"]["data"]
    assert data["copied"] == 30
    assert data["seconds"] >= 0.8 * 30 / 10
    assert bd.s3_target_blobs(s3_server, bucket) == {b.file_id: b.data for b in dep.blobs}


@pytest.mark.parametrize("opt, value", [("--bwlimit", "10X"), ("--bwlimit", "08:00,1M 99:00,off"), ("--tpslimit", "-3")])
def test_bad_limits_are_one_line_errors(tmp_path, run_cli, opt, value):
    cp = run_cli("--to", str(tmp_path / "target.cfg"), opt, value)
    assert cp.returncode == 2
    assert len(cp.stderr.strip().splitlines()) == 1 and opt in cp.stderr and "Traceback" not in cp.stderr


def test_a_dask_cluster_shares_the_limit_among_its_workers(tmp_path, run_cli):
    """local:2 under --bwlimit 2M: each of the 2 worker processes reads at 1 MiB/s, the run at 2 MiB/s."""
    from tests import dask_cluster
    from tests.dask_cluster import KEY

    dask_cluster.need_distributed()
    dep = _deployment(tmp_path, n=12, size=512 * KiB, seed=74)
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "cluster.json"
    cp = run_cli("--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--json", str(report),
                 "--cluster", "local:2", "--bwlimit", "2M", env={"PMIGRATE_CLUSTER_KEY": KEY})  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    data = json.loads(report.read_text())["sections"]["data"]
    assert data["bytes"] == 12 * 512 * KiB
    assert data["seconds"] >= 0.8 * data["bytes"] / (2 * MiB)
    assert bd.file_target_blobs(tmp_path / "dst" / "files") == {b.file_id: b.data for b in dep.blobs}


def test_tpslimit_on_gcs(tmp_path, run_cli, gcs_server, gcs_bucket):
    """The GCS client's requests pay the same bucket: 20 blobs by 2 workers under --tpslimit 8 take at least 2 s."""
    dep = _deployment(tmp_path, n=20, size=1000, seed=75)
    root = tmp_path / "gcs"
    root.mkdir()
    target = root / "target.cfg"
    target.write_text(gcs_server.toml(gcs_bucket))
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "2", "--tpslimit", "8")
    assert code == 0, err
    data = doc["sections"]["data"]
    assert data["copied"] == 20
    assert data["seconds"] >= 0.8 * 20 / 8
