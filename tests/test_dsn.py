"""Go connection strings -> SQLAlchemy URLs, checked field by field and against the real servers."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from pmigrate import dsn
from pmigrate.config import MetadataConfig
from pmigrate.errors import ConfigError
from pmigrate.metadata import db
from pmigrate.metadata.values import zone_of
from tests import servers

NASTY = "p:a/s?s#w ö"  # every character go-sql-driver lets through that a URL parser would trip on

# -- sqlite3 -----------------------------------------------------------------

SQLITE_CASES = [
    # connection string, expected database (relative to BASE), URL query, busy timeout
    ("plik.db", "{base}/plik.db", {}, 5.0),
    ("sub/../plik.db", "{base}/plik.db", {}, 5.0),
    ("/var/lib/plik/plik.db", "/var/lib/plik/plik.db", {}, 5.0),
    ("/srv/plik.db?_busy_timeout=10000&_journal_mode=WAL&_loc=auto", "/srv/plik.db", {}, 10.0),
    ("/srv/plik.db?_timeout=250", "/srv/plik.db", {}, 0.25),
    ("file:///srv/plik.db", "/srv/plik.db", {}, 5.0),
    ("file://localhost/srv/plik.db?cache=shared", "/srv/plik.db", {}, 5.0),
    ("file:/srv/a%20b.db?mode=ro&cache=shared", "file:/srv/a%20b.db", {"mode": "ro", "uri": "true"}, 5.0),
    ("file:rel.db?mode=rwc", "file:{base}/rel.db", {"mode": "rwc", "uri": "true"}, 5.0),
]


@pytest.mark.parametrize("cs,database,query,timeout", SQLITE_CASES)
def test_sqlite_translation(tmp_path, cs, database, query, timeout):
    t = dsn.translate("sqlite3", cs, base_dir=tmp_path)
    assert isinstance(t.url, sa.engine.URL)
    assert t.url.drivername == "sqlite+pysqlite"
    assert t.url.database == database.format(base=tmp_path)
    assert dict(t.url.query) == query
    assert t.connect_args["timeout"] == timeout


def test_sqlite_uri_path_is_decoded(tmp_path):
    t = dsn.translate("sqlite3", "file:/srv/a%20b.db?mode=ro")
    assert dsn.sqlite_path(t) == Path("/srv/a b.db")


@pytest.mark.parametrize(
    "cs,message",
    [
        (":memory:", "in-memory"),
        ("file::memory:?cache=shared", "in-memory"),
        ("file:plik.db?mode=memory", "in-memory"),
        ("file://otherhost/srv/plik.db", "remote host"),
        ("plik.db?_busy_timeout=soon", "_busy_timeout"),
        ("   ", "empty"),
    ],
)
def test_sqlite_refused(cs, message):
    with pytest.raises(ConfigError, match=message):
        dsn.translate("sqlite3", cs)


def test_sqlite_read_only_uri_opens_read_only(tmp_path):
    path = tmp_path / "a b#c.db"
    eng = sa.create_engine(f"sqlite:///{path}")
    with eng.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (x)")
        c.exec_driver_sql("INSERT INTO t VALUES (42)")
    eng.dispose()
    meta = MetadataConfig("sqlite3", "file:" + str(path).replace(" ", "%20").replace("#", "%23") + "?mode=ro")
    ro = db.engine(meta)
    with ro.connect() as c:
        assert c.exec_driver_sql("SELECT x FROM t").scalar() == 42
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            c.exec_driver_sql("INSERT INTO t VALUES (1)")
    ro.dispose()


# -- postgres ----------------------------------------------------------------

PG_CASES = [
    # connection string, user, password, host, port, database, query
    (
        "host=db port=5433 user=plik password=secret dbname=plik sslmode=disable",
        "plik", "secret", "db", 5433, "plik", {"sslmode": "disable"},
    ),
    (
        r"host = db user=plik password='with space \'quote\' and \\ slash' dbname='my db'",
        "plik", "with space 'quote' and \\ slash", "db", None, "my db", {},
    ),
    (
        # pgx unescapes only \\ and \' (a bare backslash protects a space but stays)
        r"user=plik password=back\ sl\\ash\'s dbname=plik",
        "plik", "back\\ sl\\ash's", None, None, "plik", {},
    ),
    (
        "database=plik  user =  plik\tpassword=''",
        "plik", "", None, None, "plik", {},
    ),
    (
        "host=/var/run/postgresql dbname=plik",
        None, None, None, None, "plik", {"host": "/var/run/postgresql"},
    ),
    (
        "dbname=plik search_path=plik,public pool_max_conns=10 application_name=plikd",
        None, None, None, None, "plik", {"application_name": "plikd", "options": "-c search_path=plik,public"},
    ),
    (
        "postgres://plik:p%40ss%3Aw%2Fd@db.example:6432/plik?sslmode=require&pool_max_conns=4",
        "plik", "p@ss:w/d", "db.example", 6432, "plik", {"sslmode": "require"},
    ),
    (
        "postgresql://plik@[::1]:5432/plik",
        "plik", None, "::1", 5432, "plik", {},
    ),
    (
        "postgresql:///plik?host=/tmp",
        None, None, None, None, "plik", {"host": "/tmp"},
    ),
]  # fmt: skip


@pytest.mark.parametrize("cs,user,password,host,port,database,query", PG_CASES)
def test_postgres_translation(cs, user, password, host, port, database, query):
    url = dsn.to_url("postgres", cs)
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (user, password, host, port, database)
    assert dict(url.query) == query


@pytest.mark.parametrize(
    "cs,message",
    [
        ("host=db port=fivefour", "not a number"),
        ("host=db password='unterminated", "unterminated"),
        ("just some words", "malformed"),
        ("host=db two words=x", "malformed"),
        ("host=db password=x\\", "lone backslash"),
        ("host=a,b dbname=plik", "several hosts"),
        ("postgres://u@a:5432,b:5432/plik", "several hosts"),
    ],
)
def test_postgres_refused(cs, message):
    with pytest.raises(ConfigError, match=message):
        dsn.translate("postgres", cs)


# -- mysql -------------------------------------------------------------------

MYSQL_CASES = [
    # connection string, user, password, host, port, database, time zone
    (
        f"plik:{NASTY}@tcp(db:3307)/plik?charset=utf8&parseTime=True&loc=Local",
        "plik", NASTY, "db", 3307, "plik", "Local",
    ),
    ("plik:p@ss@tcp(db)/plik", "plik", "p@ss", "db", 3306, "plik", "UTC"),
    ("plik:pw@tcp([::1]:3310)/plik?loc=Europe%2FParis", "plik", "pw", "::1", 3310, "plik", "Europe/Paris"),
    ("plik:@tcp(127.0.0.1:3306)/plik", "plik", "", "127.0.0.1", 3306, "plik", "UTC"),
    ("plik@/plik", "plik", None, "127.0.0.1", 3306, "plik", "UTC"),
    ("/plik", None, None, "127.0.0.1", 3306, "plik", "UTC"),
    ("u:pw@tcp(h:1)/my%20db", "u", "pw", "h", 1, "my db", "UTC"),
]  # fmt: skip


@pytest.mark.parametrize("cs,user,password,host,port,database,tz", MYSQL_CASES)
def test_mysql_translation(cs, user, password, host, port, database, tz):
    t = dsn.translate("mysql", cs)
    url = t.url
    assert url.drivername == "mysql+pymysql"
    assert (url.username, url.password, url.host, url.port, url.database) == (user, password, host, port, database)
    assert url.query["charset"] == "utf8mb4"  # whatever the DSN says: plikd's tables are utf8mb4
    assert t.time_zone == tz
    if password:
        # PyMySQL would encode a str password as latin-1; Go sends UTF-8.
        assert t.connect_args["password"] == password.encode("utf-8")
        assert password in t.secrets


def test_mysql_unix_socket_and_params():
    t = dsn.translate(
        "mysql",
        "plik:pw@unix(/run/mysqld/mysqld.sock)/plik?timeout=1m30s&readTimeout=500ms&tls=skip-verify"
        "&time_zone=%27%2B00:00%27&sql_mode=TRADITIONAL&interpolateParams=true",
    )
    assert t.url.query["unix_socket"] == "/run/mysqld/mysqld.sock"
    assert t.connect_args["connect_timeout"] == 90
    assert t.connect_args["read_timeout"] == 0.5
    assert t.connect_args["ssl"]["verify_mode"] == "none"
    assert t.connect_args["init_command"] == "SET time_zone='+00:00', sql_mode=TRADITIONAL"
    assert "interpolateParams" in t.ignored


def test_mysql_no_tls_unless_asked():
    assert dsn.translate("mysql", "u:p@tcp(h)/d").connect_args["ssl_disabled"] is True
    assert "ssl_disabled" not in dsn.translate("mysql", "u:p@tcp(h)/d?tls=true").connect_args


@pytest.mark.parametrize(
    "cs,message",
    [
        ("plik:pw@tcp(db:3306)", "no '/dbname'"),
        ("plik:pw@tcp(db:3306/plik", "closing"),
        ("mysql://plik:pw@db/plik", "URL"),
        ("plik:pw@udp(db)/plik", "not supported"),
        ("plik:pw@tcp(db)/plik?timeout=5", "Go duration"),
        ("plik:pw@tcp(db)/plik?tls=custom", "TLS config"),
        ("plik:pw@tcp(db)/plik?bad;key=1", "system variable"),
    ],
)
def test_mysql_refused(cs, message):
    with pytest.raises(ConfigError, match=message):
        dsn.translate("mysql", cs)


def test_unknown_driver():
    with pytest.raises(ConfigError, match="unknown metadata Driver 'sqlserver'"):
        dsn.translate("sqlserver", "x")


# -- describe and same_database ----------------------------------------------


def test_describe_hides_passwords():
    assert dsn.describe("mysql", f"plik:{NASTY}@tcp(db:3307)/plik") == "mysql plik@db:3307/plik"
    text = dsn.describe("postgres", "host=db user=u password=hunter2secret dbname=d")
    assert text == "postgres u@db/d" and "hunter2" not in text
    url = dsn.to_url("postgres", "host=db user=u password=hunter2secret dbname=d")
    assert "hunter2" not in repr(url) and "hunter2" not in str(url)


def test_same_database(tmp_path, monkeypatch):
    real = tmp_path / "plik.db"
    real.touch()
    (tmp_path / "link.db").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    same = dsn.same_database
    t = dsn.translate
    assert same(t("sqlite3", "plik.db"), t("sqlite3", str(tmp_path / "link.db")))
    assert same(t("sqlite3", "plik.db?_busy_timeout=1"), t("sqlite3", f"file:{real}?mode=ro"))
    assert not same(t("sqlite3", "plik.db"), t("sqlite3", "other.db"))
    assert same(t("postgres", "host=localhost dbname=plik"), t("postgres", "postgres://u:p@127.0.0.1:5432/plik"))
    assert not same(t("postgres", "host=db dbname=plik"), t("postgres", "host=db dbname=plik2"))
    assert not same(t("postgres", "host=db port=5433 dbname=plik"), t("postgres", "host=db dbname=plik"))
    assert same(t("mysql", "a:b@tcp(DB:3306)/plik"), t("mysql", "c:d@tcp(db)/plik"))
    assert not same(t("mysql", "a:b@tcp(db)/plik"), t("postgres", "host=db port=3306 dbname=plik"))


# -- the real servers --------------------------------------------------------


@pytest.fixture
def mysql_user(mysql_server, mysql_db):
    """A MariaDB user whose password holds every awkward character, allowed on mysql_db only."""
    name = f"pmt_{uuid.uuid4().hex[:8]}"
    c = mysql_server.admin()
    try:
        with c.cursor() as cur:
            cur.execute("SET NAMES utf8mb4")
            cur.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (NASTY,))
            cur.execute(f"GRANT ALL ON `{mysql_db.name}`.* TO '{name}'@'%'")
        yield name
    finally:
        with c.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")
        c.close()


def test_mysql_connects_with_nasty_password(mysql_db, mysql_user):
    cs = f"{mysql_user}:{NASTY}@tcp({servers.MY_HOST}:{servers.MY_PORT})/{mysql_db.name}?charset=utf8&parseTime=True&loc=Local"
    meta = MetadataConfig("mysql", cs)
    assert meta.translation().url.password == NASTY
    db.check_connect(meta)
    eng = db.engine(meta)
    try:
        with eng.begin() as c:
            user = c.exec_driver_sql("SELECT CURRENT_USER()").scalar()
            assert user.split("@")[0] == mysql_user
            assert c.exec_driver_sql("SELECT @@session.time_zone").scalar() == "+00:00"
            c.exec_driver_sql("CREATE TABLE t (s VARCHAR(16)) CHARACTER SET utf8mb4")
            c.exec_driver_sql("INSERT INTO t VALUES ('emoji 😀 ö')")
            assert c.exec_driver_sql("SELECT s FROM t").scalar() == "emoji 😀 ö"
    finally:
        eng.dispose()


def test_mysql_wrong_password_is_one_redacted_line(mysql_db, mysql_user):
    wrong = "Wr0ng:pass/word"
    from pmigrate import redact

    redact.register(wrong)
    cs = f"{mysql_user}:{wrong}@tcp({servers.MY_HOST}:{servers.MY_PORT})/{mysql_db.name}"
    with pytest.raises(ConfigError) as info:
        db.check_connect(MetadataConfig("mysql", cs))
    text = str(info.value)
    assert "wrong user or password" in text and "\n" not in text and wrong not in text


def test_mysql_unix_socket(mysql_server, mysql_db):
    c = mysql_server.admin()
    with c.cursor() as cur:
        cur.execute("SELECT @@socket")
        sock = cur.fetchone()[0]
    c.close()
    if not sock or not os.path.exists(sock) or servers.MY_HOST not in ("127.0.0.1", "localhost"):
        servers.unavailable(f"MariaDB socket {sock!r} not reachable from here")
    meta = MetadataConfig("mysql", f"{servers.MY_USER}:{servers.MY_PASSWORD}@unix({sock})/{mysql_db.name}")
    eng = db.engine(meta)
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("SELECT DATABASE()").scalar() == mysql_db.name
    except sa.exc.OperationalError as exc:  # e.g. unix_socket auth for another OS user
        if "Access denied" in str(exc):
            servers.unavailable(f"socket login refused for {servers.MY_USER}: {exc.orig}")
        raise
    finally:
        eng.dispose()


@pytest.fixture
def pg_role(pg_server, pg_db):
    name = f"pmt_{uuid.uuid4().hex[:8]}"
    password = "pa ss'w@rd:/?#ö"
    with pg_server.admin() as c:
        from psycopg import sql

        c.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        c.execute(f'GRANT ALL ON DATABASE "{pg_db.name}" TO {name}')
    yield name, password
    with pg_server.admin() as c:
        c.execute(f'REVOKE ALL ON DATABASE "{pg_db.name}" FROM {name}')
        c.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.mark.parametrize("form", ["keyword", "url"])
def test_postgres_connects_as_role_with_password(pg_db, pg_role, form):
    from urllib.parse import quote

    role, password = pg_role
    if form == "keyword":
        quoted = password.replace("\\", "\\\\").replace("'", "\\'")
        cs = f"host={servers.PG_HOST} port={servers.PG_PORT} user={role} password='{quoted}' dbname={pg_db.name} sslmode=disable"
    else:
        cs = f"postgres://{role}:{quote(password, safe='')}@{servers.PG_HOST}:{servers.PG_PORT}/{pg_db.name}?sslmode=disable"
    meta = MetadataConfig("postgres", cs)
    url = meta.translation().url
    # This server trusts local connections, so the fields prove the password reaches libpq intact.
    assert (url.username, url.password, url.host, url.port, url.database) == (
        role, password, servers.PG_HOST, servers.PG_PORT, pg_db.name,
    )  # fmt: skip
    db.check_connect(meta)
    eng = db.engine(meta)
    try:
        with eng.connect() as c:
            assert c.exec_driver_sql("SELECT current_user").scalar() == role
    finally:
        eng.dispose()


def test_postgres_search_path_reaches_the_session(pg_db):
    cs = pg_db.go_dsn + " search_path=plik_schema,public"
    eng = db.engine(MetadataConfig("postgres", cs))
    try:
        with eng.connect() as c:
            assert c.exec_driver_sql("SHOW search_path").scalar() == "plik_schema,public"
    finally:
        eng.dispose()


def test_unreachable_servers_are_one_line(tmp_path):
    port = servers.free_port()
    for meta in (
        MetadataConfig("postgres", f"host=127.0.0.1 port={port} user=u password=hunter2pw dbname=d connect_timeout=3"),
        MetadataConfig("mysql", f"u:hunter2pw@tcp(127.0.0.1:{port})/d?timeout=3s"),
    ):
        from pmigrate import redact

        redact.register("hunter2pw")
        with pytest.raises(ConfigError) as info:
            db.check_connect(meta)
        text = str(info.value)
        assert "server unreachable" in text and "hunter2pw" not in text and "\n" not in text


def test_missing_sqlite_source_is_refused_and_not_created(tmp_path):
    meta = MetadataConfig("sqlite3", "missing.db", tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        db.check_connect(meta, must_exist=True)
    db.check_connect(meta, must_exist=False)  # a target may be created later, but not by a check
    assert not (tmp_path / "missing.db").exists()


def test_mysql_time_zone(monkeypatch):
    assert zone_of(MetadataConfig("mysql", "u:p@tcp(h)/d")).utcoffset(None).total_seconds() == 0
    assert str(zone_of(MetadataConfig("mysql", "u:p@tcp(h)/d?loc=Europe%2FParis"))) == "Europe/Paris"
    assert zone_of(MetadataConfig("postgres", "dbname=d")).utcoffset(None).total_seconds() == 0
    with pytest.raises(ConfigError, match="time zone"):
        zone_of(MetadataConfig("mysql", "u:p@tcp(h)/d?loc=Mars%2FOlympus"))
    # loc=Local: this machine's zone with its daylight saving, not today's offset
    monkeypatch.setenv("TZ", "Europe/Paris")
    local = zone_of(MetadataConfig("mysql", "u:p@tcp(h)/d?loc=Local"))
    assert local.utcoffset(datetime(2025, 1, 15)) == timedelta(hours=1)
    assert local.utcoffset(datetime(2025, 7, 15)) == timedelta(hours=2)


def test_describe_sqlite():
    assert dsn.describe("sqlite3", "file:/srv/a%20b.db?mode=ro") == "sqlite3 /srv/a b.db (read-only)"
    assert dsn.describe("sqlite3", "/srv/plik.db?_busy_timeout=5") == "sqlite3 /srv/plik.db"
    assert dsn.describe("sqlite3", ":memory:").startswith("sqlite3 (invalid connection string")
