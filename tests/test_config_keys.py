"""Keys plikd does not read: an error in the target (exit 2, nothing written), a warning in the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmigrate import config
from pmigrate.errors import ConfigError
from tests import blobdeploy as bd


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _source(tmp_path: Path, extra: str = "") -> Path:
    return _write(tmp_path / "src" / "plikd.cfg", extra + bd.file_toml(tmp_path / "src" / "files") + bd.meta_toml(tmp_path / "src" / "plik.db"))


def test_a_misspelt_target_directory_is_refused_and_nothing_is_written(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(5, seed=3))
    dst = tmp_path / "dst"
    target = _write(
        dst / "target.cfg",
        f'DataBackend = "file"\n[DataBackendConfig]\n  Directroy = "{dst / "files"}"\n' + bd.meta_toml(dst / "plik.db"),
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = run_cli("--config", str(dep.config), "--to", str(target), cwd=cwd)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "DataBackendConfig.Directroy is not a setting plikd reads for DataBackend 'file'" in lines[0]
    assert "did you mean Directory?" in lines[0]
    assert lines[0].startswith("pmigrate: error: ")
    assert list(cwd.iterdir()) == []  # no ./files of plikd's default
    assert [p.name for p in dst.iterdir()] == ["target.cfg"]


@pytest.mark.parametrize(
    ("target_text", "message"),
    [
        ('[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConectionString = "{dst}/plik.db"\n',
         "MetadataBackendConfig.ConectionString is not a setting plikd reads (did you mean ConnectionString?)"),
        ('DataBackend = "file"\n[DataBackendConfg]\n  Directory = "{dst}/files"\n',
         "DataBackendConfg is not a setting plikd reads (did you mean DataBackendConfig?)"),
        ('DataBackend = "file"\n[DataBackendConfig]\n  directory = "{dst}/files"\n',
         "DataBackendConfig.directory is not a setting plikd reads for DataBackend 'file' (did you mean Directory? case matters)"),
        ('DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{dst}/files"\n  Bucket = "plik"\n',
         "DataBackendConfig.Bucket is not a setting plikd reads for DataBackend 'file': correct the key or remove it"),
        ('DataBackend = "s3"\n[DataBackendConfig]\n  Endpiont = "h:9000"\n',
         "DataBackendConfig.Endpiont is not a setting plikd reads for DataBackend 's3' (did you mean Endpoint?)"),
        ('Datbackend = "file"\n[DataBackendConfig]\n  Directory = "{dst}/files"\n',
         "Datbackend is not a setting plikd reads (did you mean DataBackend?)"),
    ],
    ids=["metadata", "top-table", "case", "other-backend", "s3-before-its-checks", "top-value"],
)  # fmt: skip
def test_a_key_plikd_does_not_read_is_an_error_in_the_target(tmp_path, target_text, message):
    src = _source(tmp_path)
    dst = tmp_path / "dst"
    target = _write(dst / "target.cfg", target_text.format(dst=dst))
    with pytest.raises(ConfigError) as err:
        config.load_pair(str(src), str(target), env={})
    assert message in str(err.value)
    assert str(err.value).startswith(f"{target}: ")


def test_the_target_may_hold_any_other_plikd_setting(tmp_path):
    """A copy of a whole plikd.cfg: plikd's own settings, any case, and pmigrate's tuning keys are fine."""
    src = _source(tmp_path)
    target = _write(
        tmp_path / "dst" / "target.cfg",
        'ListenPort = 8080\nmaxfilesize = 10\nFeatureText = "enabled"\nGoogleValidDomains = ["a.org"]\n'
        'DataBackend = "gcs"\n[DataBackendConfig]\n  Bucket = "b"\n  ChunkSize = 8388608\n',
    )
    src_cfg, dst_cfg = config.load_pair(str(src), str(target), env={})
    assert dst_cfg.data.options["Bucket"] == "b" and dst_cfg.warnings == ()


def test_the_same_keys_in_the_source_are_warnings_with_the_hint(tmp_path):
    src = _write(
        tmp_path / "src" / "plikd.cfg",
        'Datbackend = "x"\n' + bd.file_toml(tmp_path / "src" / "files")
        + bd.meta_toml(tmp_path / "src" / "plik.db") + "  MaxOpenConn = 4\n",
    )  # fmt: skip
    target = _write(tmp_path / "dst" / "target.cfg", bd.file_toml(tmp_path / "dst" / "files"))
    src_cfg, _ = config.load_pair(str(src), str(target), env={})
    assert src_cfg.warnings == (
        f"{src}: Datbackend is not a setting plikd reads (did you mean DataBackend?); ignored",
        f"{src}: MetadataBackendConfig.MaxOpenConn is not a setting plikd reads (did you mean MaxOpenConns?); ignored",
    )


def test_a_source_override_with_a_misspelt_key_warns(tmp_path):
    src = _source(tmp_path)
    target = _write(tmp_path / "dst" / "target.cfg", bd.file_toml(tmp_path / "dst" / "files"))
    env = {"PLIKD_DATA_BACKEND_CONFIG": '{"Directroy": "/elsewhere"}'}
    src_cfg, _ = config.load_pair(str(src), str(target), env=env)
    assert any("DataBackendConfig.Directroy" in w and "did you mean Directory?" in w for w in src_cfg.warnings)


def test_a_misspelt_source_key_warns_and_the_run_goes_on(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(3, seed=4))
    dep.config.write_text(dep.config.read_text() + "  MaxOpenConn = 4\n")
    target = bd.file_target(tmp_path / "dst")
    proc = run_cli("--config", str(dep.config), "--to", str(target), "--data-only", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "MetadataBackendConfig.MaxOpenConn is not a setting plikd reads (did you mean MaxOpenConns?); ignored" in proc.stderr
    assert bd.file_target_blobs(tmp_path / "dst" / "files") == {b.file_id: b.data for b in dep.with_blob()}
