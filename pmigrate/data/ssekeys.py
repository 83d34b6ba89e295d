"""SSE-C keys for files that never had one: an SSE-C target fed from a source that encrypts nothing.

plikd with ``SSE = "SSE-C"`` keeps one key per file in files.backend_details,
JSON ``{"SSEKey": "..."}``: 32 characters of [a-zA-Z0-9], which it draws when
the file is uploaded and sends as the customer key of every request. A
migration from a source without such keys (file, or S3 without SSE-C) is
when operators turn encryption on, so each file with a blob gets a key of
that form: the metadata stage writes it into the file's row on the target,
the blob stage encrypts the upload with it, verify reads the blob back with
it and checks the row holds it.

The two stages run apart (one after the other, or in separate runs with
--metadata-only and --data-only, with a crash anywhere between), so a file's
key must come out the same whenever it is asked for. It is derived from the
file id and a 256-bit secret drawn once per target and kept in the copy
journal: HMAC-SHA256 output drawn into plikd's alphabet by rejection
sampling, so that each character is uniform, as plikd's are. The secret is
committed (and fsynced) to the journal before any key derived from it is
used, so no crash leaves a blob encrypted with a key that no row will hold.
A file whose source row already holds an SSEKey keeps it.

The journal then holds a secret: it is made readable by its owner only.
Losing it before the migration is complete means a new secret, hence new
keys: both stages must then run again (the blob stage copies every blob anew
when its journal is gone).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any

from pmigrate.data.base import BlobRef

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # plikd's GenerateRandomID
KEY_LENGTH = 32  # characters, sent as the 32 bytes of an AES-256 key
SECRET = "sse-c-keys"  # its name in the journal
_LIMIT = 256 - 256 % len(ALPHABET)  # bytes at or above it are skipped: 248 = 4 x 62
BLOB_STATUSES = ("uploaded", "removed")


def _sse(data: Any) -> str:
    return str((data.options or {}).get("SSE") or "") if data.backend == "s3" else ""


def needed(src: Any, dst: Any) -> bool:
    """Whether files need keys made: the target's data is SSE-C and the source's is not (PlikConfigs)."""
    return bool(dst.has_data and _sse(dst.data) == "SSE-C" and not (src.has_data and _sse(src.data) == "SSE-C"))


class Keyring:
    """Each file's SSE-C key, derived from the target's secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("an SSE-C key secret has 32 bytes or more")
        self._secret = secret
        self.made = 0  # keys put into backend_details so far

    def key(self, file_id: str) -> str:
        out: list[str] = []
        block = 0
        while len(out) < KEY_LENGTH:
            digest = hmac.new(self._secret, f"plik sse-c key\0{file_id}\0{block}".encode(), hashlib.sha256).digest()
            out.extend(ALPHABET[b % len(ALPHABET)] for b in digest if b < _LIMIT)
            block += 1
        return "".join(out[:KEY_LENGTH])

    def details(self, details: str | None, file_id: str) -> str | None:
        """backend_details holding the file's key: as it is when it has one, or cannot be read (the copy names it)."""
        try:
            obj = json.loads(details) if details else {}
        except ValueError:
            return details
        if not isinstance(obj, dict):
            return details
        if isinstance(obj.get("SSEKey"), str) and obj["SSEKey"]:
            return details
        self.made += 1
        obj["SSEKey"] = self.key(file_id)
        return json.dumps(obj, separators=(",", ":"))  # as Go's json.Marshal writes it

    def ref(self, ref: BlobRef) -> BlobRef:
        details = self.details(ref.backend_details, ref.file_id)
        return ref if details == ref.backend_details else dataclasses.replace(ref, backend_details=details or "")

    def row_fixer(self, columns: Sequence[str]) -> Callable[[Sequence[Any]], tuple] | None:
        """A function giving a files row (columns in this order) the key its blob is encrypted with."""
        try:
            i_id, i_status, i_details = (list(columns).index(c) for c in ("id", "status", "backend_details"))
        except ValueError:
            return None

        def fix(row: Sequence[Any]) -> tuple:
            if row[i_status] not in BLOB_STATUSES or not isinstance(row[i_id], str):
                return tuple(row)
            details = self.details(row[i_details], row[i_id])
            if details == row[i_details]:
                return tuple(row)
            out = list(row)
            out[i_details] = details
            return tuple(out)

        return fix


def keyring(journal: Any, *, create: bool) -> Keyring | None:
    """The target's keyring from its journal (pmigrate.journal); None when it holds no secret yet."""
    from pmigrate import redact

    secret = journal.secret(SECRET, create=create)
    if secret is None:
        return None
    redact.register(secret.hex())
    return Keyring(secret)
