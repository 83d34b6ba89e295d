"""What crosses a Dask cluster, sealed with a key its scheduler never sees.

A Dask scheduler keeps what it is given: the worker plugin (for workers that
join later), each task's arguments until the task ends, and shows them on its
dashboard. The backends' options hold secrets (S3 secret keys, Swift API
keys) and jobs may too (plikd's SSE-C keys in files.backend_details), so the
parent seals them with AES-GCM under a key derived from a passphrase that
reaches the workers another way: the PMIGRATE_CLUSTER_KEY environment
variable of each `dask worker`. The scheduler and the wire then carry only
ciphertext, and a worker without the passphrase cannot open anything.

The key is derived with scrypt and a salt drawn per run, so a weak
passphrase still costs an attacker who copies the scheduler's state a
guess per scrypt, and no table computed for one run serves another.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from typing import Any

ENV = "PMIGRATE_CLUSTER_KEY"
MIN_LENGTH = 16  # characters of passphrase
SALT_BYTES = 16
_NONCE_BYTES = 12
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "maxmem": 64 << 20, "dklen": 32}


class SealError(Exception):
    """A sealed message that does not open: another passphrase, or altered on the way."""


def new_salt() -> bytes:
    return os.urandom(SALT_BYTES)


def new_passphrase() -> str:
    """For a cluster pmigrate starts itself (local:N), which hands it to its workers."""
    return os.urandom(24).hex()


class Seal:
    """Seals and opens picklable objects under one run's key; ``context`` binds them to that run."""

    def __init__(self, passphrase: str, *, salt: bytes, context: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = hashlib.scrypt(passphrase.encode(), salt=salt, **_SCRYPT)
        self._aead = AESGCM(key)
        self._context = context.encode()

    def seal(self, obj: Any) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), self._context)

    def open(self, data: bytes) -> Any:
        from cryptography.exceptions import InvalidTag

        try:
            plain = self._aead.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], self._context)
        except (InvalidTag, ValueError):
            raise SealError("does not open with this worker's PMIGRATE_CLUSTER_KEY") from None
        return pickle.loads(plain)  # authenticated first: only the parent holding the key wrote it
