"""The fork server the blob stage's workers and checks child come from: what it preloads, and its early start.

The fork server is a new interpreter, and for an object store it imports
boto3 and loads the S3 model before it can fork anything (a fifth of a
second, more on a loaded machine). Started by the first worker, the
parent would wait for it; started by warm() as soon as the configs are
read, it comes up while the parent imports the blob engine and checks the
source. This module imports nothing heavy, so that warm() runs first.
"""

from __future__ import annotations

import multiprocessing as mp

from pmigrate import interrupt
from pmigrate.config import PlikConfig
from pmigrate.options import RunOptions
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
    return [*stores(src, dst).preload(*HANDLERS), *CHILDREN]


def warm(src: PlikConfig, dst: PlikConfig, *, opts: RunOptions) -> None:
    """Start the fork server, with its preload, and the resource tracker now; nothing is checked or written."""
    if opts.cluster or not (src.has_data and dst.has_data):
        return
    from multiprocessing import forkserver, resource_tracker

    mp.get_context(START_METHOD).set_forkserver_preload(preload(src, dst))
    with interrupt.held():  # they must outlive a stop signal
        resource_tracker.ensure_running()
        forkserver.ensure_running()
