"""The s3transfer internal that the part budget replaces: a change in it must fail here, not go unnoticed.

s3transfer offers no public way to bound in-memory upload parts across
processes (TransferConfig.max_in_memory_upload_chunks counts per manager), so
S3Backend swaps the semaphore its request executor keeps for the in-memory
upload tag. pyproject pins s3transfer to the versions this was tested with;
this test names what to look at when a new version moves it.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

from s3transfer.futures import IN_MEMORY_UPLOAD_TAG, TaskSemaphore

from pmigrate.data.budget import PartBudget
from pmigrate.data.registry import open_backend
from pmigrate.data.s3 import _TokenReturn

CHANGED = f"s3transfer {version('s3transfer')} changed the internals S3Backend's part budget relies on (see _hook_budget in pmigrate/data/s3.py)"


def test_the_part_budget_replaces_s3transfers_in_memory_upload_semaphore():
    backend = open_backend("s3", {"Endpoint": "127.0.0.1:9", "AccessKeyID": "a", "SecretAccessKey": "never-sent"})
    try:
        backend.use_part_budget(PartBudget(own=2))
        manager = backend.manager  # builds the client and the manager; nothing is sent
        assert backend._budget_hooked, CHANGED
        semaphores = manager._request_executor._tag_semaphores
        assert isinstance(semaphores[IN_MEMORY_UPLOAD_TAG], _TokenReturn), CHANGED
    finally:
        backend.close()


def test_the_replacement_takes_the_calls_s3transfer_makes():
    for name in ("acquire", "release"):
        theirs = list(inspect.signature(getattr(TaskSemaphore, name)).parameters)
        ours = list(inspect.signature(getattr(_TokenReturn, name)).parameters)
        assert ours == theirs, f"{CHANGED}: TaskSemaphore.{name}{theirs} is not _TokenReturn.{name}{ours}"
