"""The upload part budget shared by the workers, alone and under a real S3 multipart upload."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pmigrate.data.base import BlobRef
from pmigrate.data.budget import PartBudget
from pmigrate.data.s3 import S3Backend
from pmigrate.errors import Cancelled, ItemError

MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent
NEVER = lambda: True  # noqa: E731 - acquire() gives up at once instead of waiting


def test_the_shared_pool_holds_two_tokens_per_worker():
    ctx = mp.get_context("forkserver")
    for workers in (1, 2, 4):
        pool = PartBudget.shared_pool(ctx, workers)
        assert sum(pool.acquire(False) for _ in range(2 * workers + 2)) == 2 * workers


def test_a_backend_used_alone_has_tokens_of_its_own():
    budget = PartBudget(own=2)
    assert [budget.acquire(NEVER) for _ in range(3)] == [True, True, False]
    assert (budget.held, budget.peak) == (2, 2)
    budget.release_all()
    assert budget.held == 0
    assert [budget.acquire(NEVER) for _ in range(3)] == [True, True, False]


def test_a_worker_counts_the_shared_tokens_it_holds_for_the_parent():
    ledger = mp.get_context("forkserver").RawValue("i", 0)
    budget = PartBudget(PartBudget.shared_pool(mp.get_context("forkserver"), 2), ledger=ledger)
    assert budget.acquire(NEVER) and budget.acquire(NEVER) and budget.acquire(NEVER)
    assert ledger.value == 3
    budget.release()
    assert ledger.value == 2
    budget.release_all()
    assert ledger.value == 0


def test_a_release_hands_the_token_back_to_the_others():
    shared = PartBudget.shared_pool(mp.get_context("forkserver"), 1)  # 2 tokens
    a, b = PartBudget(shared), PartBudget(shared)
    assert a.acquire(NEVER) and a.acquire(NEVER)
    assert b.acquire(NEVER) is False  # a holds both
    a.release()
    assert b.acquire(NEVER) is True
    assert (a.held, b.held) == (1, 1)


def test_a_wait_for_a_token_ends_when_the_worker_is_told_to_stop():
    shared = PartBudget.shared_pool(mp.get_context("forkserver"), 1)
    assert shared.acquire(False) and shared.acquire(False)  # the parent holds every token back
    asked = []
    budget = PartBudget(shared, stopped=lambda: asked.append(1) or len(asked) > 3)
    assert budget.acquire() is False
    assert len(asked) == 4 and budget.held == 0


def _hold_then_give_back(shared, holding, give_back) -> None:
    budget = PartBudget(shared)
    budget.acquire()
    budget.acquire()  # both tokens of a one-worker pool
    holding.set()
    give_back.wait(60)
    budget.release_all()


def test_tokens_are_shared_across_processes():
    ctx = mp.get_context("forkserver")
    shared = PartBudget.shared_pool(ctx, 1)
    holding, give_back = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_then_give_back, args=(shared, holding, give_back))
    proc.start()
    try:
        assert holding.wait(60)
        mine = PartBudget(shared)
        assert mine.acquire(NEVER) is False  # the other process holds both
        give_back.set()
        proc.join(60)
        assert proc.exitcode == 0
        assert mine.acquire(NEVER) is True
    finally:
        give_back.set()
        proc.join(5)


# -- under s3transfer ------------------------------------------------------------------------------


def _backend(server, bucket: str) -> S3Backend:
    return S3Backend(
        {
            "Endpoint": server.endpoint,
            "AccessKeyID": server.access_key,
            "SecretAccessKey": server.secret_key,
            "Bucket": bucket,
            "Location": server.region,
            "PartSize": 5 * MiB,
        }
    )


def test_one_multipart_upload_keeps_several_parts_in_flight_within_the_budget(s3_server, s3_bucket):
    data = random.Random(5).randbytes(4 * 5 * MiB + 7)  # five parts
    ref = BlobRef("Budget0000000001", "BudgetUpload0001", size=len(data))
    budget = PartBudget(PartBudget.shared_pool(mp.get_context("forkserver"), 2))  # 4 tokens
    backend = _backend(s3_server, s3_bucket)
    backend.use_part_budget(budget)
    try:
        backend.write(ref, io.BufferedReader(io.BytesIO(data)))
    finally:
        backend.close()
    got = s3_server.client().get_object(Bucket=s3_bucket, Key=ref.file_id)["Body"].read()
    assert got == data
    assert 2 <= budget.peak <= 4  # parts in parallel, never more than the tokens
    assert budget.held == 0


def _write_fails(server, bucket: str, budget: PartBudget, ref: BlobRef, data: bytes, error: type) -> None:
    """The upload raises `error`, gives every token back and leaves no multipart upload open."""
    backend = _backend(server, bucket)
    backend.use_part_budget(budget)
    try:
        with pytest.raises(error):
            backend.write(ref, io.BufferedReader(io.BytesIO(data)))
    finally:
        backend.close()
    assert budget.held == 0
    assert server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_failed_multipart_upload_gives_every_token_back(s3_server, s3_bucket):
    data = random.Random(6).randbytes(12 * MiB)
    ref = BlobRef("Budget0000000002", "BudgetUpload0002", size=len(data) + 5 * MiB)  # the source ends early
    budget = PartBudget(PartBudget.shared_pool(mp.get_context("forkserver"), 2))
    _write_fails(s3_server, s3_bucket, budget, ref, data, ItemError)


def test_an_upload_waiting_for_a_token_ends_when_the_worker_is_told_to_stop(s3_server, s3_bucket):
    data = random.Random(7).randbytes(11 * MiB)  # three parts
    ref = BlobRef("Budget0000000003", "BudgetUpload0003", size=len(data))
    shared = PartBudget.shared_pool(mp.get_context("forkserver"), 1)
    assert shared.acquire(False) and shared.acquire(False)  # the parent holds every token back
    polls = []
    budget = PartBudget(shared, stopped=lambda: polls.append(1) or len(polls) > 5)
    _write_fails(s3_server, s3_bucket, budget, ref, data, Cancelled)
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_a_worker_does_not_import_sqlalchemy():
    """A worker copying file -> s3 needs neither SQLAlchemy's 0.15 s nor its ~14 MiB."""
    code = (
        "import sys\n"
        "from pmigrate.transfer.handler import Stores\n"
        "from pmigrate.transfer.worker import CopyContext, make_handler\n"
        "ctx = CopyContext(stores=Stores(src_backend='file', src_options={'Directory': '/nonexistent'}, dst_backend='s3',"
        " dst_options={'Endpoint': '127.0.0.1:9', 'AccessKeyID': 'AK', 'SecretAccessKey': 'secret-key-value', 'Bucket': 'b'}))\n"
        "h = make_handler(ctx, lifeline=None)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy')[:3])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
