"""plikd.cfg loading: lookup order, overrides on the source only, plikd's defaults, validation, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pmigrate import config, redact
from pmigrate.errors import ConfigError

FILE_SQLITE = """\
DataBackend = "file"
[DataBackendConfig]
  Directory = "{dir}"
[MetadataBackendConfig]
  Driver = "sqlite3"
  ConnectionString = "{db}"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def deployment(folder: Path, name: str = "plikd.cfg") -> Path:
    return write(folder / name, FILE_SQLITE.format(dir=folder / "files", db=folder / "plik.db"))


# -- lookup ------------------------------------------------------------------


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A working directory and a stand-in for /etc, each with its own plikd.cfg."""
    cwd, etc = tmp_path / "cwd", tmp_path / "etc"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(config, "DEFAULT_LOCATIONS", ("./plikd.cfg", str(etc / "plikd.cfg")))
    return cwd, etc


def test_lookup_order(places, tmp_path):
    cwd, etc = places
    flag, from_env = deployment(tmp_path / "flag"), deployment(tmp_path / "env")
    deployment(cwd)
    deployment(etc)
    env = {"PLIKD_CONFIG": str(from_env)}
    assert config.find_source(str(flag), env) == flag
    assert config.find_source(None, env) == from_env
    assert config.find_source(None, {}) == Path("./plikd.cfg")
    (cwd / "plikd.cfg").unlink()
    assert config.find_source(None, {}) == etc / "plikd.cfg"
    (etc / "plikd.cfg").unlink()
    with pytest.raises(ConfigError, match="no source config: pass --config"):
        config.find_source(None, {})


def test_lookup_skips_a_directory_named_plikd_cfg(places):
    cwd, etc = places
    (cwd / "plikd.cfg").mkdir()
    deployment(etc)
    assert config.find_source(None, {}) == etc / "plikd.cfg"


def test_explicit_paths_must_exist(places, tmp_path):
    deployment(places[0])  # a default that must not be used instead
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(config.find_source(str(tmp_path / "nope.cfg"), {}))
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(config.find_source(None, {"PLIKD_CONFIG": str(tmp_path / "nope.cfg")}))


# -- reading -----------------------------------------------------------------


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.cfg", 'DataBackend = "file"\n\n[DataBackendConfig\nDirectory = "x"\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = deployment(tmp_path)
    path.chmod(0)
    with pytest.raises(ConfigError, match="permission denied"):
        config.load(path)


def test_directory_and_binary(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        config.load(tmp_path)
    path = tmp_path / "bin.cfg"
    path.write_bytes(b'DataBackend = "file"\n\xff\xfe\n')
    with pytest.raises(ConfigError, match="line 2: not UTF-8"):
        config.load(path)


def test_plikd_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(write(tmp_path / "empty.cfg", ""))
    assert cfg.data.backend == "file"
    assert cfg.data.options == {"Directory": str(tmp_path / "files")}
    assert (cfg.metadata.driver, cfg.metadata.connection_string) == ("sqlite3", "plik.db")
    assert not cfg.has_data and not cfg.has_metadata
    s3 = config.load(
        write(
            tmp_path / "s3.cfg",
            'DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "h:9000"\nAccessKeyID = "a"\nSecretAccessKey = "sekr3t"\n',
        )
    )
    o = s3.data.options
    assert (o["Bucket"], o["Location"], o["Prefix"], o["UseSSL"], o["PartSize"], o["SSE"]) == (
        "plik", "us-east-1", "", False, 16 * 1024 * 1024, "",
    )  # fmt: skip
    swift = config.load(write(tmp_path / "sw.cfg", 'DataBackend = "swift"\n[DataBackendConfig]\nAuthUrl = "http://k/v3"\n'))
    assert swift.data.options["Container"] == "plik"


def test_top_level_keys_match_any_case_but_table_keys_do_not(tmp_path):
    path = write(tmp_path / "c.cfg", 'databackend = "file"\n[databackendconfig]\ndirectory = "/elsewhere"\n')
    cfg = config.load(path)
    assert cfg.data.options["Directory"] == str(Path.cwd() / "files")  # plikd ignores 'directory' too
    assert any("(did you mean Directory? case matters)" in w for w in cfg.warnings)


def test_relative_paths_resolve_from_the_working_directory(tmp_path, monkeypatch):
    folder, cwd = tmp_path / "etc", tmp_path / "run"
    cwd.mkdir()
    path = write(folder / "plikd.cfg", FILE_SQLITE.format(dir="files", db="plik.db"))
    monkeypatch.chdir(cwd)
    cfg = config.load(path)
    assert cfg.data.options["Directory"] == str(cwd / "files")
    assert config.dsn.sqlite_path(cfg.metadata.translation()) == cwd / "plik.db"
    assert len([w for w in cfg.warnings if "is relative" in w]) == 2


def test_defaults_of_a_missing_target_section_raise_no_warning(tmp_path, monkeypatch):
    """A data-only target needs no [MetadataBackendConfig]: its unused default plik.db is not worth a warning."""
    cwd = tmp_path / "run"
    cwd.mkdir()
    path = write(tmp_path / "etc" / "target.cfg", f'DataBackend = "file"\n[DataBackendConfig]\nDirectory = "{tmp_path / "blobs"}"\n')
    monkeypatch.chdir(cwd)
    assert not config.load(path).warnings
    # The same file as a source: plikd would use plik.db from its working directory, so say so.
    assert any("is relative" in w for w in config.load(path, env={}).warnings)


# -- validation --------------------------------------------------------------

S3 = 'DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "h:9000"\nAccessKeyID = "a"\nSecretAccessKey = "s3cret"\n'


@pytest.mark.parametrize(
    "text,message",
    [
        ('DataBackend = "ftp"', "unknown DataBackend 'ftp'"),
        ("DataBackend = 3", "unknown DataBackend 3"),
        ('[MetadataBackendConfig]\nDriver = "sqlserver"\nConnectionString = "x"', "unknown MetadataBackendConfig.Driver"),
        ('[MetadataBackendConfig]\nDriver = "mysql"\nConnectionString = "nonsense"', "no '/dbname'"),
        ('DataBackendConfig = "files"', "must be a table"),
        ('DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "h:9000"\nAccessKeyID = "a"', "SecretAccessKey is missing"),
        ('DataBackend = "s3"\n[DataBackendConfig]\nAccessKeyID = "a"\nSecretAccessKey = "b"', "Endpoint is missing"),
        ('DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "h"\nSecretAccessKey = "b"', "AccessKeyID is missing"),
        ('DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "https://h"\nAccessKeyID = "a"\nSecretAccessKey = "b"', "without scheme"),
        (S3 + "PartSize = 1048576", "under 5 MiB"),
        (S3 + 'PartSize = "16MB"', "PartSize must be an integer"),
        (S3 + 'UseSSL = "yes"', "UseSSL must be true or false"),
        (S3 + 'SSE = "KMS"', "not implemented by plikd"),
        (S3 + 'SSE = "AES256"', "SSE 'AES256' is not valid"),
        ('DataBackend = "gcs"', "Bucket is missing"),
        ('DataBackend = "swift"', "AuthUrl is missing"),
        ('DataBackend = "file"\n[DataBackendConfig]\nDirectory = ""', "Directory is empty"),
    ],
)
def test_invalid_configs(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        config.load(write(tmp_path / "c.cfg", text + "\n"))


def test_valid_s3_with_sse(tmp_path):
    for sse in ("", "S3", "SSE-C"):
        cfg = config.load(write(tmp_path / "c.cfg", S3 + f'SSE = "{sse}"\nPartSize = 5242880\n'))
        assert cfg.data.options["SSE"] == sse


# -- environment overrides ---------------------------------------------------


def test_env_overrides_apply_to_the_source_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = deployment(tmp_path / "src")
    dst = deployment(tmp_path / "dst")
    env = {
        "PLIKD_DATA_BACKEND": "s3",
        "PLIKD_DATA_BACKEND_CONFIG": json.dumps(
            {"Endpoint": "h:9000", "AccessKeyID": "a", "SecretAccessKey": "envsecret", "PartSize": 8388608}
        ),
        "PLIKD_METADATA_BACKEND_CONFIG": json.dumps({"ConnectionString": str(tmp_path / "env.db")}),
    }
    s, d = config.load_pair(str(src), str(dst), env=env)
    assert s.data.backend == "s3" and s.data.options["PartSize"] == 8388608
    # The JSON object is merged into the file's table (plikd's AssignMapValues): Directory stays.
    assert s.data.options["Directory"] == str(tmp_path / "src" / "files")
    assert (s.metadata.driver, s.metadata.connection_string) == ("sqlite3", str(tmp_path / "env.db"))
    assert d.data.backend == "file" and d.data.options["Directory"] == str(tmp_path / "dst" / "files")
    assert d.metadata.connection_string == str(tmp_path / "dst" / "plik.db")
    assert redact.redact("envsecret") == redact.MASK


def test_env_override_names():
    assert config.env_name("DataBackend") == "PLIKD_DATA_BACKEND"
    assert config.env_name("DataBackendConfig") == "PLIKD_DATA_BACKEND_CONFIG"
    assert config.env_name("MetadataBackendConfig") == "PLIKD_METADATA_BACKEND_CONFIG"


def test_env_override_without_a_table_in_the_file(tmp_path):
    path = write(tmp_path / "c.cfg", 'DataBackend = "file"\n')
    env = {"PLIKD_METADATA_BACKEND_CONFIG": '{"Driver":"sqlite3","ConnectionString":"/tmp/plik.db"}'}
    cfg = config.load(path, env=env)
    assert cfg.metadata.connection_string == "/tmp/plik.db" and cfg.has_metadata


@pytest.mark.parametrize(
    "value,message",
    [("{not json", "not valid JSON"), ('["Driver"]', "must be a JSON object"), ('{"Driver":"oracle"}', "unknown")],
)
def test_bad_env_override(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message):
        config.load(deployment(tmp_path), env={"PLIKD_METADATA_BACKEND_CONFIG": value})


# -- refusals ----------------------------------------------------------------


def test_same_sqlite_database_refused(tmp_path):
    src = deployment(tmp_path / "a")
    dst = write(
        tmp_path / "b" / "plikd.cfg",
        FILE_SQLITE.format(dir=tmp_path / "b" / "files", db=f"file:{tmp_path / 'a' / 'plik.db'}?mode=rwc"),
    )
    (tmp_path / "a" / "plik.db").touch()
    with pytest.raises(ConfigError, match="same database"):
        config.load_pair(str(src), str(dst), env={})


def test_same_directory_refused_through_a_symlink(tmp_path):
    src = deployment(tmp_path / "a")
    (tmp_path / "a" / "files").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a" / "files")
    dst = write(tmp_path / "b" / "plikd.cfg", FILE_SQLITE.format(dir=tmp_path / "link", db=tmp_path / "b" / "plik.db"))
    with pytest.raises(ConfigError, match="same data location"):
        config.load_pair(str(src), str(dst), env={})


@pytest.mark.parametrize(
    "a,b,same",
    [
        ('DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "H:9000"\nAccessKeyID = "a"\nSecretAccessKey = "bbb"\nPrefix = "/p/"',
         'DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "h:9000"\nAccessKeyID = "x"\nSecretAccessKey = "yyy"\nPrefix = "p"', True),
        ('DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "h:9000"\nAccessKeyID = "a"\nSecretAccessKey = "bbb"',
         'DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "h:9000"\nAccessKeyID = "a"\nSecretAccessKey = "bbb"\nPrefix = "new"', False),
        ('DataBackend = "gcs"\n[DataBackendConfig]\nBucket = "b"\nFolder = "f"',
         'DataBackend = "gcs"\n[DataBackendConfig]\nBucket = "b"\nFolder = "f/"', True),
        ('DataBackend = "swift"\n[DataBackendConfig]\nAuthUrl = "http://k/v3"',
         'DataBackend = "swift"\n[DataBackendConfig]\nAuthUrl = "http://k/v3/"\nContainer = "plik"', True),
        ('DataBackend = "swift"\n[DataBackendConfig]\nAuthUrl = "http://k/v3"',
         'DataBackend = "swift"\n[DataBackendConfig]\nAuthUrl = "http://k/v3"\nContainer = "other"', False),
        ('DataBackend = "stream"', 'DataBackend = "stream"', False),
    ],
)  # fmt: skip
def test_same_object_store_refused(tmp_path, a, b, same):
    meta_a = f'\n[MetadataBackendConfig]\nDriver = "sqlite3"\nConnectionString = "{tmp_path / "a.db"}"\n'
    meta_b = f'\n[MetadataBackendConfig]\nDriver = "sqlite3"\nConnectionString = "{tmp_path / "b.db"}"\n'
    src, dst = write(tmp_path / "a.cfg", a + meta_a), write(tmp_path / "b.cfg", b + meta_b)
    if same:
        with pytest.raises(ConfigError, match="same data location"):
            config.load_pair(str(src), str(dst), env={})
    else:
        config.load_pair(str(src), str(dst), env={})


def test_same_server_database_refused(tmp_path):
    meta = '[MetadataBackendConfig]\nDriver = "{d}"\nConnectionString = "{cs}"\n'
    src = write(tmp_path / "a.cfg", meta.format(d="postgres", cs="host=localhost user=a password=pw1 dbname=plik"))
    dst = write(tmp_path / "b.cfg", meta.format(d="postgres", cs="postgres://b:pw2@127.0.0.1:5432/plik"))
    with pytest.raises(ConfigError, match="same database"):
        config.load_pair(str(src), str(dst), env={})
    dst2 = write(tmp_path / "c.cfg", meta.format(d="postgres", cs="postgres://b:pw2@127.0.0.1:5432/plik_new"))
    config.load_pair(str(src), str(dst2), env={})


def test_target_sections_left_to_defaults_are_not_compared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = write(tmp_path / "a.cfg", 'DataBackend = "file"\n')  # metadata: plikd's default ./plik.db
    dst = write(tmp_path / "b.cfg", 'DataBackend = "file"\n[DataBackendConfig]\nDirectory = "new"\n')
    s, d = config.load_pair(str(src), str(dst), env={})
    assert not d.has_metadata and d.has_data


# -- secrets -----------------------------------------------------------------


def test_every_secret_is_registered_at_load(tmp_path):
    text = (
        'DataBackend = "swift"\n[DataBackendConfig]\nAuthUrl = "http://k/v3"\nApiKey = "swift-api-key-1"\n'
        'ApplicationCredentialSecret = "app-cred-secret-2"\n[MetadataBackendConfig]\nDriver = "mysql"\n'
        'ConnectionString = "u:my-db-pass-3@tcp(h)/d"\n'
    )
    config.load(write(tmp_path / "c.cfg", text))
    s3 = S3.replace("s3cret", "s3-secret-key-4")
    pg = '[MetadataBackendConfig]\nDriver = "postgres"\nConnectionString = "host=h password=\'pg pass 5\' dbname=d"\n'
    config.load(write(tmp_path / "d.cfg", s3 + pg))
    for secret in ("swift-api-key-1", "app-cred-secret-2", "my-db-pass-3", "s3-secret-key-4", "pg pass 5"):
        assert redact.redact(f"x {secret} y") == f"x {redact.MASK} y"


def test_mysql_local_time_warning_only_off_utc(tmp_path, monkeypatch):
    import time

    path = write(
        tmp_path / "c.cfg",
        '[MetadataBackendConfig]\nDriver = "mysql"\nConnectionString = "u:p@tcp(h)/d?parseTime=True&loc=Local"\n',
    )
    for tz, warned in (("UTC", False), ("Europe/Paris", True)):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        try:
            cfg = config.load(path)
        finally:
            monkeypatch.delenv("TZ")
            time.tzset()
        assert any("loc=Local" in w for w in cfg.warnings) == warned
