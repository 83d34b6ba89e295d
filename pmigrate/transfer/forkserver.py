"""The fork server the blob stage's workers and checks child come from: what it preloads, and its early start.

The fork server is a new interpreter, and for an object store it imports
boto3 and loads the S3 model before it can fork anything (a fifth of a
second, more on a loaded machine). Started by the first worker, the
parent would wait for it; started by warm() before the configs are even
checked (their DataBackend names are enough), it comes up while the parent
imports SQLAlchemy and the blob engine and checks the source. What it
preloads only saves each child those imports: a fork server started for
other stores than the checked configs name would serve them all the same.
This module imports nothing heavy, so that warm() runs first.
"""

from __future__ import annotations

import multiprocessing as mp

from pmigrate import interrupt
from pmigrate.config import PlikConfig
from pmigrate.data.registry import preload as backend_preload
from pmigrate.transfer.handler import Stores

START_METHOD = "forkserver"  # see transfer/engine.py
HANDLERS = ("pmigrate.transfer.worker", "pmigrate.transfer.precheck")  # the modules of the blob stage's handlers
# What a worker or the checks child would otherwise import after the fork (5 ms each quiet, 30 ms loaded).
CHILDREN = ("pmigrate.transfer.pool", "pmigrate.transfer.checks", "pmigrate.ownership",
            "multiprocessing.sharedctypes", "multiprocessing.synchronize")  # fmt: skip


def stores(src: PlikConfig, dst: PlikConfig) -> Stores:
    return Stores(src_backend=src.data.backend, src_options=dict(src.data.options),
                  dst_backend=dst.data.backend, dst_options=dict(dst.data.options))  # fmt: skip


def preload(src: PlikConfig, dst: PlikConfig) -> list[str]:
    """What the fork server imports once: the stores' modules, the handlers, the pool's and the checks' own."""
    return _preload(src.data.backend, dst.data.backend)


def _preload(src_backend: str, dst_backend: str) -> list[str]:
    return [*HANDLERS, *sorted(set(backend_preload(src_backend)) | set(backend_preload(dst_backend))), *CHILDREN]


def warm(src_backend: str, dst_backend: str) -> None:
    """Start the fork server, preloading for these DataBackends, and the resource tracker now.

    Nothing is checked or written; a name no backend has preloads nothing of its own.
    """
    from multiprocessing import forkserver, resource_tracker

    mp.get_context(START_METHOD).set_forkserver_preload(_preload(src_backend, dst_backend))
    with interrupt.held():  # they must outlive a stop signal
        resource_tracker.ensure_running()
        forkserver.ensure_running()
