"""No secret from a config ever leaves pmigrate: not on stdout, stderr, in logs or in the JSON report."""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa

from pmigrate import redact
from tests import servers

MY_SECRET = "my:sql/p?ss#w ö-Secret"
PG_SECRET = "pg pass'word Secret"
S3_SECRET = "S3cret/Key+With=Chars"
SWIFT_SECRET = "swift-ApiKey-Secret-123"
SQLITE_SECRET = "sqliteAuthSecret"
ENV_SECRET = "EnvOverrideSecret99"
SSE_KEY = "SSEcKeyOf32BytesSSEcKeyOf32Byte"
ALL = (MY_SECRET, PG_SECRET, S3_SECRET, SWIFT_SECRET, SQLITE_SECRET, ENV_SECRET)


def forms(secret: str) -> set[str]:
    """The ways a secret could be printed."""
    return {
        secret,
        quote(secret, safe=""),
        quote(secret, safe=" "),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
    }


def assert_clean(*texts: str) -> None:
    blob = "\n".join(texts)
    for secret in ALL:
        for form in forms(secret):
            assert form not in blob, f"{form!r} leaked in:\n{blob}"


# -- the redact module itself ------------------------------------------------


def test_registered_secret_is_hidden_in_every_form():
    secret = "Reg:is/tered?pw#ö x"
    redact.register(secret)
    url = sa.engine.URL.create("mysql+pymysql", username="u", password=secret, host="h", database="d")
    for text in (*forms(secret), url.render_as_string(hide_password=False)):
        assert secret not in redact.redact(text)
        assert redact.MASK in redact.redact(text)


@pytest.mark.parametrize(
    "text,leak",
    [
        ('{"SSEKey":"' + SSE_KEY + '"}', SSE_KEY),
        ("backend_details={\"SSEKey\": \"" + SSE_KEY + "\"}", SSE_KEY),
        ("{'x-amz-server-side-encryption-customer-key': 'U1NFY0tleQ=='}", "U1NFY0tleQ=="),
        ("SSECustomerKey='" + SSE_KEY + "'", SSE_KEY),
        ("postgresql+psycopg://plik:unregistered@db:5432/plik", "unregistered"),
        ("host=db password=unregistered dbname=plik", "unregistered"),
        ("plik:unregistered@tcp(db:3306)/plik", "unregistered"),
        ('SecretAccessKey = "unregistered"', "unregistered"),
    ],
)
def test_secrets_hidden_by_shape(text, leak):
    assert leak not in redact.redact(text)


def test_ordinary_words_survive():
    text = "cannot connect: wrong user or password: fix the credentials (using password: YES)"
    assert redact.redact(text) == text


def test_redact_mapping_masks_secret_keys():
    data = {"DataBackendConfig": {"SecretAccessKey": "not-registered-1", "Bucket": "b"}, "list": [{"ApiKey": "k2k"}]}
    out = redact.redact_mapping(data)
    assert out == {"DataBackendConfig": {"SecretAccessKey": "***", "Bucket": "b"}, "list": [{"ApiKey": "***"}]}


def test_sqlalchemy_error_with_an_sse_key_in_its_parameters():
    eng = sa.create_engine("sqlite://")
    with eng.connect() as c:
        c.exec_driver_sql("CREATE TABLE files (id TEXT PRIMARY KEY, backend_details TEXT)")
        c.execute(sa.text("INSERT INTO files VALUES ('a', :d)"), {"d": json.dumps({"SSEKey": SSE_KEY})})
        with pytest.raises(sa.exc.IntegrityError) as info:
            c.execute(sa.text("INSERT INTO files VALUES ('a', :d)"), {"d": json.dumps({"SSEKey": SSE_KEY})})
    assert SSE_KEY in str(info.value)  # SQLAlchemy shows the parameters...
    assert SSE_KEY not in redact.redact(str(info.value))  # ...pmigrate does not


def test_logged_tracebacks_are_redacted(capsys):
    from pmigrate import cli

    redact.register("LoggedSecret42")
    cli._setup_logging(True)
    try:
        try:
            raise RuntimeError("connect failed for password LoggedSecret42")
        except RuntimeError:
            logging.getLogger("pmigrate.test").exception("with %s", "LoggedSecret42")
    finally:
        logging.getLogger().handlers[:] = []
    err = capsys.readouterr().err
    assert "Traceback" in err and "LoggedSecret42" not in err


# -- every command, through the real CLI -------------------------------------


@pytest.fixture
def secret_mysql(mysql_server, mysql_db):
    """A MariaDB user whose password is MY_SECRET, and a Go DSN naming it."""
    name = f"pmt_{uuid.uuid4().hex[:8]}"
    c = mysql_server.admin()
    with c.cursor() as cur:
        cur.execute("SET NAMES utf8mb4")
        cur.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (MY_SECRET,))
        cur.execute(f"GRANT ALL ON `{mysql_db.name}`.* TO '{name}'@'%'")
    yield f"{name}:{MY_SECRET}@tcp({servers.MY_HOST}:{servers.MY_PORT})/{mysql_db.name}?charset=utf8mb4&parseTime=True&loc=Local"
    with c.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")
    c.close()


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


@pytest.fixture
def secret_configs(tmp_path, secret_mysql):
    """A sqlite3 source holding an auth password, a mysql + S3 target, a postgres + swift config."""
    src_dir = tmp_path / "src"
    (src_dir / "files").mkdir(parents=True)
    sqlite3.connect(src_dir / "plik.db").close()
    src = tmp_path / "src.cfg"
    sqlite_cs = f"{src_dir / 'plik.db'}?_auth_user=admin&_auth_pass={SQLITE_SECRET}"
    src.write_text(
        f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{src_dir / "files"}"\n'
        f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n'
        f"  ConnectionString = {toml_str(sqlite_cs)}\n",
        encoding="utf-8",
    )
    dst = tmp_path / "dst.cfg"
    dst.write_text(
        f'DataBackend = "s3"\n[DataBackendConfig]\n  Endpoint = "127.0.0.1:{servers.free_port()}"\n'
        f'  AccessKeyID = "AKIDEXAMPLE"\n  SecretAccessKey = {toml_str(S3_SECRET)}\n  Bucket = "pmt-redaction"\n'
        f'[MetadataBackendConfig]\n  Driver = "mysql"\n  ConnectionString = {toml_str(secret_mysql)}\n',
        encoding="utf-8",
    )
    other = tmp_path / "pg-swift.cfg"
    pg_cs = f"host=127.0.0.1 port={servers.free_port()} user=plik password='{PG_SECRET.replace(chr(39), chr(92) + chr(39))}' dbname=plik connect_timeout=3"
    other.write_text(
        f'DataBackend = "swift"\n[DataBackendConfig]\n  AuthUrl = "http://127.0.0.1:1/v3"\n  UserName = "u"\n'
        f"  ApiKey = {toml_str(SWIFT_SECRET)}\n"
        f'[MetadataBackendConfig]\n  Driver = "postgres"\n  ConnectionString = {toml_str(pg_cs)}\n',
        encoding="utf-8",
    )
    return src, dst, other


def run_all(run_cli, tmp_path, *args: str, env: dict | None = None):
    report = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
    proc = run_cli(*args, "--json", str(report), env=env)
    texts = [proc.stdout, proc.stderr]
    if report.exists():
        texts.append(report.read_text(encoding="utf-8"))
    assert_clean(*texts)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_migrate_dry_run_and_verify_show_no_secret(run_cli, tmp_path, secret_configs, verbose):
    src, dst, other = secret_configs
    for args in (
        ["--config", str(src), "--to", str(dst), "--dry-run"],
        ["--config", str(src), "--to", str(dst), "--metadata-only", "--dry-run"],
        ["--config", str(src), "--to", str(dst)],
        ["verify", "--config", str(src), "--to", str(dst)],
        ["--config", str(src), "--to", str(other), "--dry-run"],  # postgres unreachable
        ["--config", str(other), "--to", str(dst), "--dry-run"],
        ["verify", "--config", str(other), "--to", str(dst)],
    ):
        proc = run_all(run_cli, tmp_path, *verbose, *args)
        assert "Traceback" not in proc.stderr or verbose


def test_error_paths_show_no_secret(run_cli, tmp_path, secret_configs, secret_mysql):
    src, dst, other = secret_configs
    wrong = tmp_path / "wrong.cfg"
    wrong.write_text(dst.read_text(encoding="utf-8").replace(MY_SECRET, ENV_SECRET), encoding="utf-8")
    proc = run_all(run_cli, tmp_path, "--config", str(src), "--to", str(wrong), "--metadata-only")
    assert proc.returncode == 2 and "wrong user or password" in proc.stderr
    broken = tmp_path / "broken.cfg"
    broken.write_text(dst.read_text(encoding="utf-8") + "\n[oops\n", encoding="utf-8")
    proc = run_all(run_cli, tmp_path, "--config", str(src), "--to", str(broken))
    assert proc.returncode == 2 and "TOML" in proc.stderr
    unknown = tmp_path / "unknown.cfg"
    unknown.write_text(dst.read_text(encoding="utf-8").replace('DataBackend = "s3"', 'DataBackend = "s4"'), encoding="utf-8")
    proc = run_all(run_cli, tmp_path, "-v", "--config", str(src), "--to", str(unknown))
    assert proc.returncode == 2
    # An unparsable connection string is hidden whole.
    garbled = tmp_path / "garbled.cfg"
    garbled.write_text(
        '[MetadataBackendConfig]\nDriver = "postgres"\n'
        f"ConnectionString = {toml_str('host=db password=' + chr(39) + ENV_SECRET)}\n",
        encoding="utf-8",
    )
    proc = run_all(run_cli, tmp_path, "--config", str(garbled), "--to", str(dst))
    assert proc.returncode == 2 and "unterminated" in proc.stderr


def test_env_override_secret_not_shown(run_cli, tmp_path, secret_configs):
    src, dst, _ = secret_configs
    env = {
        "PLIKD_DATA_BACKEND": "s3",
        "PLIKD_DATA_BACKEND_CONFIG": json.dumps(
            {"Endpoint": f"127.0.0.1:{servers.free_port()}", "AccessKeyID": "a", "SecretAccessKey": ENV_SECRET}
        ),
    }
    for args in (["--dry-run"], ["--data-only"], ["-v", "--dry-run"]):
        run_all(run_cli, tmp_path, "--config", str(src), "--to", str(dst), *args, env=env)
    # A broken override is refused without echoing it.
    env["PLIKD_DATA_BACKEND_CONFIG"] = '{"SecretAccessKey": "' + ENV_SECRET + '", broken'
    proc = run_all(run_cli, tmp_path, "--config", str(src), "--to", str(dst), env=env)
    assert proc.returncode == 2


def test_fakedb_help_and_version_hold_no_secret(run_cli, tmp_path):
    for args in (["--help"], ["verify", "--help"], ["--version"]):
        proc = run_cli(*args)
        assert proc.returncode == 0
        assert_clean(proc.stdout, proc.stderr)


def _child(secrets, leak):
    import logging
    import warnings

    redact.init_child(secrets)
    logging.getLogger("pmigrate.child").warning("connecting with %s", leak)
    warnings.warn(f"library warning holding {leak}", stacklevel=1)
    raise RuntimeError(f"uncaught, holding {leak}")


def test_worker_processes_redact_their_stderr(tmp_path):
    import subprocess
    import sys

    leak = "ChildSecret-77/x"
    script = tmp_path / "child.py"
    script.write_text(
        "import multiprocessing as mp, sys\n"
        "from pmigrate import redact\n"
        "from tests.test_redaction import _child\n"
        "if __name__ == '__main__':\n"
        f"    redact.register({leak!r})\n"
        "    p = mp.get_context('spawn').Process(target=_child, args=(redact.registered(), "
        f"{leak!r}))\n"
        "    p.start(); p.join(); sys.exit(p.exitcode)\n"
    )
    env = dict(__import__("os").environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "pmigrate: warning: worker " in proc.stderr and "library warning" in proc.stderr
    assert leak not in proc.stderr and quote(leak, safe="") not in proc.stderr


def _tiny_deployment(folder: Path, *, sqlite_cs_suffix: str = "") -> tuple[Path, list[str]]:
    """A Plik 0011 sqlite3 + file deployment: one upload, two files (one blob missing), SSE-C details."""
    from pmigrate.metadata import schema

    (folder / "files").mkdir(parents=True)
    eng = sa.create_engine(f"sqlite:///{folder / 'plik.db'}")
    with eng.begin() as c:
        schema.create_schema(c, driver="sqlite3", level="0011-stats")
        for mid in ("SCHEMA_INIT", *schema.MIGRATION_IDS):
            c.execute(sa.text("INSERT INTO migrations (id) VALUES (:id)"), {"id": mid})
        cols = set(schema.expected_columns("0011-stats", "uploads"))
        now = "2024-01-02 03:04:05.123456789+00:00"
        up = {k: v for k, v in {"id": "UpLoAd0123456789", "created_at": now, "ttl": 0}.items() if k in cols}
        c.execute(sa.text(f"INSERT INTO uploads ({', '.join(up)}) VALUES ({', '.join(':' + k for k in up)})"), up)
        fcols = set(schema.expected_columns("0011-stats", "files"))
        details = json.dumps({"SSEKey": SSE_KEY})
        ids = ["FiLe000000000001", "FiLe000000000002"]
        for fid in ids:
            row = {"id": fid, "upload_id": "UpLoAd0123456789", "name": "a.txt", "status": "uploaded", "size": 5,
                   "md5": "", "type": "text/plain", "backend_details": details, "created_at": now}  # fmt: skip
            row = {k: v for k, v in row.items() if k in fcols}
            c.execute(sa.text(f"INSERT INTO files ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})"), row)
    eng.dispose()
    (folder / "files" / ids[0][:2]).mkdir()
    (folder / "files" / ids[0][:2] / ids[0]).write_bytes(b"hello")  # the second blob is missing
    cfg = folder / "plikd.cfg"
    cs = f"{folder / 'plik.db'}{sqlite_cs_suffix}"
    cfg.write_text(
        f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{folder / "files"}"\n'
        f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = {toml_str(cs)}\n',
        encoding="utf-8",
    )
    return cfg, ids


@pytest.mark.slow
def test_real_runs_with_problems_show_no_secret(run_cli, tmp_path, secret_configs):
    """Blob copy and verify that really run (and meet a missing blob) on a source holding secrets."""
    _, dst_secret, _ = secret_configs
    src, _ = _tiny_deployment(tmp_path / "plik", sqlite_cs_suffix=f"?_auth_user=admin&_auth_pass={SQLITE_SECRET}")
    dst = tmp_path / "files-target.cfg"
    mysql_table = dst_secret.read_text(encoding="utf-8").split("[MetadataBackendConfig]")[1]
    dst.write_text(
        f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{tmp_path / "new-files"}"\n'
        f"[MetadataBackendConfig]{mysql_table}",
        encoding="utf-8",
    )
    for args in (
        ["--data-only", "--dry-run"],
        ["--data-only", "--ignore-errors", "-v"],
        ["verify", "--data-only", "-v"],
        ["--data-only", "--restart"],
        ["--ignore-errors", "-v"],  # metadata into MariaDB as the user whose password is MY_SECRET
        ["verify", "-v"],
    ):
        verb, rest = (["verify"], args[1:]) if args[0] == "verify" else ([], args)
        proc = run_all(run_cli, tmp_path, *verb, "--config", str(src), "--to", str(dst), *rest)
        assert SSE_KEY not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr or "-v" in args


def test_fakedb_with_secret_databases_shows_no_secret(run_cli, tmp_path, secret_configs, secret_mysql):
    _, dst, _ = secret_configs
    ok = run_cli("fakedb", str(tmp_path / "fake1"), "--files", "5", "--metadata-only", "--metadata-config", str(dst))
    assert ok.returncode == 0, ok.stderr
    assert_clean(ok.stdout, ok.stderr)
    user = secret_mysql.split(":")[0]
    url = f"mysql+pymysql://{user}:{quote(ENV_SECRET, safe='')}@{servers.MY_HOST}:{servers.MY_PORT}/nope"
    bad = run_cli("fakedb", str(tmp_path / "fake2"), "--files", "5", "--metadata-only", "--metadata-url", url)
    assert bad.returncode != 0
    assert_clean(bad.stdout, bad.stderr)


# -- worker processes -----------------------------------------------------------------------------

WORKER_SECRET = "worker-side-s3cret-Zq81"


def _leaky_factory(context, *, lifeline):
    """A worker that builds the real handler, then logs and prints the secret it was given."""
    from pmigrate.transfer import worker

    handler = worker.make_handler(context, lifeline=lifeline)
    logging.getLogger("pmigrate.data.s3").warning("request failed for key %s", WORKER_SECRET)
    import sys

    print(f"uncaught: {WORKER_SECRET}", file=sys.stderr, flush=True)
    return handler


def _run_leaky_pool(src: str) -> None:
    from pmigrate.data.base import BlobRef
    from pmigrate.transfer import worker
    from pmigrate.transfer.jobs import BlobJob
    from pmigrate.transfer.pool import Pool

    redact.register(WORKER_SECRET)
    from pmigrate.transfer.handler import Stores

    stores = Stores(src_backend="file", src_options={"Directory": src}, dst_backend="file", dst_options={"Directory": src + "-copy"})
    context = worker.CopyContext(stores=stores)
    assert WORKER_SECRET in context.stores.secrets
    pool = Pool(factory=_leaky_factory, context=context, workers=1, lost=worker.lost_result, stop_timeout=20)
    results: list = []
    pool.run([BlobJob(0, BlobRef("NotThere00000001", "Up00000000000001", 3))], on_results=results.extend)
    assert results[0].error_kind == "missing"


def test_worker_processes_redact_their_logs_and_stderr(tmp_path):
    """In a process of its own: the fork server's children write to the stderr it started with."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    (tmp_path / "src").mkdir()
    code = f"from tests.test_redaction import _run_leaky_pool\n_run_leaky_pool({str(tmp_path / 'src')!r})\n"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "request failed for key ***" in out.stderr and "uncaught: ***" in out.stderr
    assert WORKER_SECRET not in out.stderr + out.stdout
