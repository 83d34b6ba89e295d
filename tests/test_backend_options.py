"""A backend added by its module and one registry line: read, described, located and redacted by its declaration alone.

The backend below exists only here; config.py knows nothing of it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pmigrate import config, redact
from pmigrate.data import registry
from pmigrate.data.base import BlobRef, BlobStat, DataBackend, Features
from pmigrate.data.spec import BackendSpec, Option
from pmigrate.errors import ConfigError
from pmigrate.ids import check_id
from pmigrate.journal import target_identity

PASSPHRASE = "Vault-Passphrase-Nobody-Guesses-7"  # under a key name no generic rule masks


class VaultBackend(DataBackend):
    """Blobs in a dict: the least a backend implements."""

    name = "vault"
    features = Features(stores_data=True, listable=False)

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.blobs: dict[str, bytes] = {}

    def key(self, ref: BlobRef) -> str:
        return f"{self.options['Shelf']}/{check_id(ref.file_id, what='file id')}"

    def open_read(self, ref: BlobRef) -> BinaryIO:
        return io.BytesIO(self.blobs[self.key(ref)])

    def write(self, ref: BlobRef, src: BinaryIO) -> None:
        self.blobs[self.key(ref)] = src.read()

    def stat(self, ref: BlobRef) -> BlobStat | None:
        data = self.blobs.get(self.key(ref))
        return None if data is None else BlobStat(size=len(data))

    def delete(self, ref: BlobRef) -> None:
        self.blobs.pop(self.key(ref), None)


SPEC = BackendSpec(
    name="vault",
    factory=VaultBackend,
    options=(
        Option(name="Shelf", default="plik", check=lambda v: "" if v.isalnum() else f"{v!r} is not alphanumeric: rename it"),
        Option(name="Passphrase", required="set the vault's passphrase", secret=True),
        Option(name="Shelves", type=int, default=4),
    ),
    describe=lambda o: f"vault shelf {o['Shelf']}",
    location=lambda o: ("vault", o["Shelf"]),
)


@pytest.fixture
def vault():
    registry.register("vault", __name__)  # the one line a new backend adds to _BACKENDS
    yield
    registry.unregister("vault")


def _cfg(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "vault.cfg"
    path.write_text(f'DataBackend = "vault"\n[DataBackendConfig]\n{table}', encoding="utf-8")
    return path


def test_a_registered_backend_is_configured_by_its_declaration(vault, tmp_path):
    cfg = config.load(_cfg(tmp_path, f'Passphrase = "{PASSPHRASE}"\n'))
    assert cfg.data.options == {"Shelf": "plik", "Shelves": 4, "Passphrase": PASSPHRASE}
    assert cfg.data.describe() == "vault shelf plik"
    assert cfg.data.location() == ("vault", "plik")
    backend = registry.open_backend("vault", cfg.data.options)
    ref = BlobRef("Vault00000000001", "VaultUpload00001", size=3)
    backend.write(ref, io.BytesIO(b"abc"))
    assert backend.open_read(ref).read() == b"abc" and backend.key(ref) == "plik/Vault00000000001"


def test_its_secret_is_redacted_and_kept_out_of_the_journal_identity(vault, tmp_path):
    cfg = config.load(_cfg(tmp_path, f'Passphrase = "{PASSPHRASE}"\nShelf = "s2"\n'))
    assert PASSPHRASE not in redact.redact(f"failed with passphrase {PASSPHRASE}")
    assert PASSPHRASE not in target_identity("vault", cfg.data.options)
    assert PASSPHRASE not in str(redact.redact_mapping({"message": f"x {PASSPHRASE}"}))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("", "DataBackendConfig.Passphrase is missing: set the vault's passphrase"),
        ('Passphrase = "p-123"\nShelf = "a/b"', "DataBackendConfig.Shelf 'a/b' is not alphanumeric: rename it"),
        ('Passphrase = "p-123"\nShelves = "many"', "DataBackendConfig.Shelves must be an integer"),
        (
            'Passphrase = "p-123"\nPasphrase = "x"',
            "DataBackendConfig.Pasphrase is not a setting plikd reads for DataBackend 'vault' (did you mean Passphrase?)",
        ),
    ],
)
def test_its_checks_and_did_you_mean_come_from_the_declaration(vault, tmp_path, table, message):
    with pytest.raises(ConfigError) as info:
        config.load(_cfg(tmp_path, table + "\n"), strict=True)
    assert message in str(info.value)


def test_an_unknown_key_in_a_source_is_a_warning_with_a_suggestion(vault, tmp_path):
    cfg = config.load(_cfg(tmp_path, f'Passphrase = "{PASSPHRASE}"\nshelf = "x"\n'), env={})
    assert any("DataBackendConfig.shelf is not a setting plikd reads" in w and "did you mean Shelf? case matters" in w
               for w in cfg.warnings), cfg.warnings  # fmt: skip


def test_opening_by_name_applies_the_same_checks(vault):
    with pytest.raises(ConfigError, match="vault DataBackendConfig.Passphrase is missing"):
        registry.open_backend("vault", {})


def test_a_name_is_registered_once(vault):
    with pytest.raises(ValueError, match="registered already"):
        registry.register("vault", __name__)


def test_a_declaration_is_read_without_its_sdk_and_opening_names_what_to_install(tmp_path):
    """As where the gcs or swift extra is not installed: the config reads, the backend says what to install."""
    import subprocess
    import sys

    from tests.conftest import REPO

    cfg = tmp_path / "gcs.cfg"
    cfg.write_text('DataBackend = "gcs"\n[DataBackendConfig]\nBucket = "b"\n', encoding="utf-8")
    code = (
        "import sys\n"
        "sys.modules['google.cloud.storage'] = None\n"  # an import of it fails, as when it is absent
        "from pmigrate import config\n"
        "from pmigrate.data.registry import open_backend\n"
        "from pmigrate.errors import ConfigError\n"
        f"cfg = config.load({str(cfg)!r})\n"
        "print(cfg.data.describe())\n"
        "try:\n"
        "    open_backend('gcs', cfg.data.options)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == [
        "gcs gs://b",
        "DataBackend 'gcs' needs a library that is not installed (google.cloud.storage): pip install 'pmigrate[gcs]'",
    ], out.stderr
