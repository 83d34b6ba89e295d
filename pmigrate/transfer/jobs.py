"""What travels between the parent and the workers: plain, picklable dataclasses.

A job names one blob and what to do with it (``mode``); a result says what
happened. Both stay small because tens of thousands cross the process
boundary every second, in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

from pmigrate.data.base import BlobRef

# Outcomes a worker reports.
COPIED = "copied"  # bytes (or a server-side copy) landed on the target
PRESENT = "present"  # the journal said done and the target still holds it with the right size
FAILED = "failed"  # see error_kind / error
CANCELLED = "cancelled"  # the run was stopping; the blob is not on the target
# Outcomes of a "stat" job (the dry run: pmigrate.transfer.precheck).
READABLE = "readable"  # the source holds it at files.size: the run would copy it
REPLACES = "replaces"  # as READABLE, over a blob the target already holds under that key


@dataclass(slots=True)
class BlobJob:
    """One blob to handle. ``seq`` is unique within a run; ``attempt`` counts worker deaths."""

    seq: int
    mode: str  # "copy", "verify" or "stat" (the dry run): the worker dispatches on it
    ref: BlobRef
    check_target: bool = False  # journal says done: stat the target first, copy only if it is not right
    attempt: int = 0

    @property
    def size(self) -> int:
        return max(self.ref.size, 0)

    def __reduce__(self) -> tuple:
        # Flat tuples pickle several times faster than slotted dataclasses
        # (whose default state walks fields() per object): this runs for
        # every blob, in the parent.
        r = self.ref
        return (_job, (self.seq, self.mode, r.file_id, r.upload_id, r.size, r.content_type, r.md5, r.backend_details, self.check_target, self.attempt))


def _job(seq, mode, file_id, upload_id, size, content_type, md5, details, check_target, attempt) -> BlobJob:
    return BlobJob(seq, mode, BlobRef(file_id, upload_id, size, content_type, md5, details), check_target, attempt)


@dataclass(slots=True)
class BlobResult:
    """What one job came to. ``xxh3`` is empty when no byte passed through us (server-side copy)."""

    seq: int
    file_id: str
    outcome: str
    size: int = 0  # bytes seen (or the stated size for a server-side copy)
    xxh3: str = ""  # hex xxh3-128 of the bytes copied
    md5: str = ""  # hex MD5, when asked for
    seconds: float = 0.0
    server_side: bool = False
    error_kind: str = ""  # missing, read-error, write-error, size-mismatch, invalid-id, fatal, ...
    error: str = ""
    warning_kind: str = ""  # a problem that does not undo the copy, e.g. md5-mismatch
    warning: str = ""
    note: str = ""  # something the worker learnt about the stores, reported once for the run

    def __reduce__(self) -> tuple:
        return (BlobResult, (self.seq, self.file_id, self.outcome, self.size, self.xxh3, self.md5, self.seconds,
                             self.server_side, self.error_kind, self.error, self.warning_kind, self.warning,
                             self.note))  # fmt: skip
