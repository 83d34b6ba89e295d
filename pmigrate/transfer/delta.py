"""Which blobs a re-run must touch: the journal trusted for blobs whose source row is unchanged.

A pass that follows another costs what changed, not what the deployment
holds. Each journal row carries a digest of the source ``files`` row that
produced its blob (every field that decides the bytes or where and how they
are stored). A blob the journal lists whose row still has that digest is
taken as done without asking the target: no stat, no HEAD, no job at all.
Everything else is a job: a listed blob whose row changed, or whose journal
row predates digests, is checked on the target first (and, found there, its
row gets the digest, so the next pass trusts it); a blob the journal does not
list is copied.

``--recheck`` turns the trust off: every listed blob is checked on the target,
which finds a blob removed from it by hand. ``pmigrate verify`` stays the full
proof, and a blob it finds wrong is dropped from the journal.

The trust holds only for the store the digests were recorded against. The
target's ownership record (pmigrate.ownership) carries a random claim, made
anew when a store is emptied or made again (a bucket deleted and created, a
directory wiped): when the record the run finds is not the one the journal
noted, every digest is forgotten and each listed blob is checked once more.
A target without a record (a merge into a foreign store) is never trusted.

Memory stays flat: the journal is asked per batch of source rows (an indexed
lookup of the batch's ids); only the digests of jobs in flight are held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import xxhash

from pmigrate.data.base import BlobRef
from pmigrate.journal import Journal
from pmigrate.transfer.jobs import BlobJob

MARKER_KEY = "target-marker"


def anchor(journal: Journal, seen: str) -> bool:
    """Tie the journal's digests to the target's ownership record (``seen``: its SHA-256, '' without one).

    False when they were forgotten now.
    """
    if seen and journal.meta(MARKER_KEY) == seen:
        return True
    journal.rebase(MARKER_KEY, seen)
    return False


def source_digest(ref: BlobRef) -> str:
    """Digest of what in a files row decides its blob: id, upload, size, md5, content type, backend details."""
    text = "\x00".join((ref.file_id, ref.upload_id, str(ref.size), ref.md5, ref.content_type, ref.backend_details))
    return xxhash.xxh3_64_hexdigest(text.encode("utf-8", "surrogatepass"))


@dataclass
class Delta:
    """Sorts a pass's blobs into trusted (no job), checked and copied; tracks digests of jobs in flight.

    ``trust``: False with --recheck or --restart (--restart also ignores the journal's rows).
    """

    journal: Journal
    trust: bool = True
    restart: bool = False
    trusted: int = 0
    trusted_bytes: int = 0
    checked: int = 0  # jobs that stat the target first
    seq: int = 0  # the next job's number
    _inflight: dict[int, str] = field(default_factory=dict)  # job seq -> source digest

    def jobs(self, refs: list[BlobRef], *, prepare: Callable[[BlobRef], BlobRef] | None = None) -> Iterator[BlobJob]:
        """Jobs for one batch of source rows; trusted blobs are only counted."""
        listed = {} if self.restart else self.journal.digests([r.file_id for r in refs])
        for ref in refs:
            digest = source_digest(ref)
            found = listed.get(ref.file_id)
            if found is not None and self.trust and found == (ref.size, digest):
                self.trusted += 1
                self.trusted_bytes += max(ref.size, 0)
                continue
            check = found is not None and found[0] == ref.size
            self.checked += check
            seq, self.seq = self.seq, self.seq + 1
            self._inflight[seq] = digest
            yield BlobJob(seq, prepare(ref) if prepare is not None else ref, check_target=check)

    def copied(self, seq: int) -> str:
        """The digest to record with a blob just copied."""
        return self._inflight.pop(seq, "")

    def present(self, seq: int, file_id: str) -> None:
        """The target holds a listed blob: its journal row gets the current digest."""
        digest = self._inflight.pop(seq, "")
        if digest:
            self.journal.vouch(file_id=file_id, src=digest)

    def ended(self, seqs: Iterable[int]) -> None:
        """Jobs that failed or were cancelled: nothing to record."""
        for s in seqs:
            self._inflight.pop(s, None)
