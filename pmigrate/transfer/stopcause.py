"""Why a blob copy stopped, said once with its fix.

A store that refuses every write (pmigrate.errors.StoreError) stops the run
at once. Running the same command again would only meet the same wall, so
the line names the cause and what to change first; the resume itself stays
"the same command again".
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pmigrate.errors import DENIED, FULL, GONE, PERMISSION, QUOTA, READ_ONLY, STORE_KINDS, UNREACHABLE, store_kind
from pmigrate.words import size

AGAIN = "then run the same command again to resume"


@dataclass(frozen=True)
class Halt:
    kind: str  # the problem kind, e.g. target-full
    message: str  # the one line on stderr, also the summary's "stopped before the end: ..."
    figures: dict  # for the JSON report's data.stopped


def halt(kind: str, detail: str, *, where: str, config: str, free: int | None, remaining: int) -> Halt | None:
    """The line for a stop of this problem kind; None for a kind that is not a StoreError's."""
    figures: dict = {"kind": kind}
    left = f"{size(remaining)} still to copy to {where}"
    if kind == store_kind("target", FULL):
        figures.update(free_bytes=free, remaining_bytes=remaining)
        shown = "unknown" if free is None else size(free)
        cause = f"target full: {shown} free, {left}"
        fix = f"free space there or choose another target in {config}, {AGAIN}"
    elif kind == store_kind("target", QUOTA):
        figures.update(remaining_bytes=remaining)
        cause = f"target disk quota exceeded: {left}"
        fix = f"raise this user's quota there, free space or choose another target in {config}, {AGAIN}"
    elif kind == store_kind("target", READ_ONLY):
        cause = f"target on a read-only file system ({detail})"
        fix = f"remount it read-write or choose another target in {config}, {AGAIN}"
    elif kind == store_kind("target", PERMISSION):
        cause = f"target permission denied ({detail})"
        fix = f"give the user pmigrate runs as write access to {where} (chown, chmod), {AGAIN}"
    elif kind == store_kind("target", GONE):
        cause = f"target bucket gone ({detail})"
        fix = (
            f"create it again or choose another in {config}, {AGAIN} "
            "(blobs the journal lists are checked on the target and copied again if missing)"
        )
    elif kind == store_kind("target", DENIED):
        cause = f"target refuses writes ({detail})"
        fix = f"check the credentials in {config} and grant them write access to {where}, {AGAIN}"
    elif kind in (store_kind("target", UNREACHABLE), store_kind("source", UNREACHABLE)):
        cause = f"{kind.split('-')[0]} {detail}"  # "S3 endpoint ... unreachable for 60 s (...)"
        fix = f"check that it is up and reachable from here (--retry-for waits longer), {AGAIN}"
    elif kind in STORE_KINDS and kind.startswith("source-"):
        cause = f"{_SOURCE.get(kind, 'source unusable')} ({detail})"
        fix = f"make the source readable again, {AGAIN}"
    else:
        return None
    return Halt(kind=kind, message=f"{cause}: {fix}", figures=figures)


_SOURCE = {
    store_kind("source", GONE): "source bucket gone",
    store_kind("source", DENIED): "source refuses reads",
    store_kind("source", PERMISSION): "source permission denied",
}


def journal_full(path: object, *, free: int | None, rows: int) -> str:
    """The journal's own disk is full: the blobs of the commit it refused are on the target, unlisted."""
    shown = "unknown" if free is None else size(free)
    return (
        f"journal {path} full: {shown} free on its disk: free space there or pass --journal with a path on another disk, "
        f"{AGAIN} ({rows} blob(s) copied since its last commit are not listed and will be copied again)"
    )


def free_bytes(directory: object) -> int | None:
    """Bytes this user may still write on the file system holding directory."""
    try:
        st = os.statvfs(str(directory))
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
