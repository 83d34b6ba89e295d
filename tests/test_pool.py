"""The worker pool on its own, with real processes: chunks, deaths, cancellation.

The handler here is a real module-level handler run in forkserver children, on
jobs of the test's own kind (the pool needs only seq, attempt and size): a job
whose action is "die" makes its worker SIGKILL itself, as the OOM killer would.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass

import pytest

from pmigrate.data.budget import PartBudget
from pmigrate.errors import FatalError
from pmigrate.transfer.jobs import COPIED, FAILED, BlobResult
from pmigrate.transfer.pool import Pool


@dataclass
class Job:
    seq: int
    action: str
    size: int
    attempt: int = 0

    @property
    def file_id(self) -> str:
        return f"F{self.seq:015d}"


class _Handler:
    def __init__(self, lifeline) -> None:
        self.lifeline = lifeline

    def __call__(self, job: Job) -> BlobResult:
        if job.action == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if job.action == "die-once" and job.attempt == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        if job.action.startswith("stream:"):  # streams job.size bytes, then waits for the file named after the colon
            self.lifeline.streamed.value += job.size
            deadline = time.monotonic() + 60
            while not os.path.exists(job.action[len("stream:") :]) and time.monotonic() < deadline:
                time.sleep(0.01)
        if job.action == "slow":
            deadline = time.monotonic() + 60
            while not self.lifeline.stopped() and time.monotonic() < deadline:
                time.sleep(0.01)
            return BlobResult(job.seq, job.file_id, "cancelled")
        return BlobResult(job.seq, job.file_id, COPIED, size=job.size, xxh3=str(os.getpid()))

    def close(self) -> None:
        pass


def factory(context, *, lifeline):
    if context == "broken":
        raise RuntimeError("cannot build a client")
    return _Handler(lifeline)


def lost(job, reason):
    return BlobResult(job.seq, job.file_id, FAILED, error_kind="worker-died", error=reason)


def _jobs(n: int, *, poison: dict[int, str] | None = None) -> list[Job]:
    poison = poison or {}
    return [Job(i, poison.get(i, "copy"), i) for i in range(n)]


def _pool(workers: int, context=None) -> Pool:
    return Pool(factory=factory, context=context, workers=workers, lost=lost, chunk_jobs=8, stop_timeout=20)


def test_every_job_once_across_workers():
    results: list[BlobResult] = []
    pool = _pool(3)
    pool.run(_jobs(500), on_results=results.extend)
    assert sorted(r.seq for r in results) == list(range(500))
    assert len({r.xxh3 for r in results}) > 1  # more than one worker did work
    assert pool.deaths == []


def test_a_worker_killed_mid_job_is_replaced_and_its_jobs_handed_out_again():
    results: list[BlobResult] = []
    pool = _pool(2)
    pool.run(_jobs(200, poison={37: "die-once", 150: "die"}), on_results=results.extend)
    by_seq = {r.seq: r for r in results}
    assert sorted(by_seq) == list(range(200)) and len(results) == 200  # nothing lost, nothing twice
    assert by_seq[37].outcome == COPIED  # retried once, then fine
    assert by_seq[150].outcome == FAILED and by_seq[150].error_kind == "worker-died"
    assert "killed by signal 9" in by_seq[150].error
    assert all(r.outcome == COPIED for s, r in by_seq.items() if s != 150)
    assert len(pool.deaths) == 3  # 37 once, 150 twice
    assert all("killed by signal 9" in d for d in pool.deaths)


def test_the_job_a_worker_died_on_is_handed_to_on_death_before_its_retry():
    results: list[BlobResult] = []
    events: list[tuple[str, int, int]] = []
    pool = _pool(2)
    pool.on_death = lambda job: events.append(("death", job.seq, job.attempt))

    def on_results(batch: list[BlobResult]) -> None:
        results.extend(batch)
        events.extend(("result", r.seq, 0) for r in batch if r.seq == 37)

    pool.run(_jobs(100, poison={37: "die-once"}), on_results=on_results)
    assert [e for e in events if e[1] == 37] == [("death", 37, 0), ("result", 37, 0)]  # only the job in progress
    assert sorted(r.seq for r in results) == list(range(100))


class _Holder:
    """Takes tokens from the pool's semaphore as an S3 upload does; a "hold-die" job dies holding three."""

    def __init__(self, tokens, lifeline) -> None:
        self.budget = PartBudget(tokens, ledger=lifeline.held)

    def __call__(self, job: Job) -> BlobResult:
        deadline = time.monotonic() + 10
        give_up = lambda: time.monotonic() > deadline  # noqa: E731 - a token never returned fails, not hangs
        wanted = 3 if job.action == "hold-die" and job.attempt == 0 else 1
        got = sum(self.budget.acquire(give_up) for _ in range(wanted))
        if wanted == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        self.budget.release_all()
        if got < wanted:
            return BlobResult(job.seq, job.file_id, FAILED, error_kind="no-token", error="no token came back")
        return BlobResult(job.seq, job.file_id, COPIED, size=job.size)

    def close(self) -> None:
        pass


def holding_factory(tokens, *, lifeline):
    return _Holder(tokens, lifeline)


def test_the_tokens_a_dead_worker_held_go_back_to_the_pool():
    tokens = PartBudget.shared_pool(mp.get_context("forkserver"), 2)  # 4: two deaths with 3 each would empty it
    pool = Pool(factory=holding_factory, context=tokens, workers=2, lost=lost, chunk_jobs=8, stop_timeout=20, tokens=tokens)
    results: list[BlobResult] = []
    pool.run(_jobs(40, poison={5: "hold-die", 20: "hold-die"}), on_results=results.extend)
    assert len(pool.deaths) == 2
    assert sorted(r.seq for r in results) == list(range(40))
    assert [r.seq for r in results if r.outcome != COPIED] == []
    assert tokens.get_value() == 4


def test_a_worker_that_cannot_start_stops_the_run():
    with pytest.raises(FatalError, match="cannot build a client"):
        _pool(2, context="broken").run(_jobs(10), on_results=lambda r: None)


def test_an_error_in_the_parent_cancels_workers_promptly():
    pool = _pool(2)
    started = time.monotonic()

    def on_tick():
        if time.monotonic() - started > 1:
            raise RuntimeError("stop here")

    jobs = _jobs(40, poison={i: "slow" for i in range(40)})
    with pytest.raises(RuntimeError, match="stop here"):
        pool.run(jobs, on_results=lambda r: None, on_tick=on_tick)
    assert time.monotonic() - started < 15  # the slow jobs saw the cancel flag
    assert pool._slots == []


def test_the_parent_sees_the_bytes_of_jobs_in_progress_until_their_results_come_in(tmp_path):
    """pool.streaming(): what a subscriber's live progress is made of (transfer/engine.py)."""
    go = tmp_path / "go"
    seen: list[int] = []
    results: list[BlobResult] = []
    pool = _pool(1)

    def on_tick() -> None:
        seen.append(pool.streaming())
        if seen[-1] == 1234:
            go.touch()

    pool.run([Job(0, f"stream:{go}", 1234)], on_results=results.extend, on_tick=on_tick, tick=0.05)
    assert 1234 in seen and [r.size for r in results] == [1234]
    assert pool.streaming() == 0
