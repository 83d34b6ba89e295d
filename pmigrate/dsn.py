"""Go connection strings (what plikd's drivers take) -> SQLAlchemy URLs.

plikd hands ``MetadataBackendConfig.ConnectionString`` to mattn/go-sqlite3,
jackc/pgx or go-sql-driver/mysql; each has its own syntax. The parsers here
follow those drivers' rules (not libpq's or RFC 3986's where they differ), so
that pmigrate opens exactly the database plikd opens. URLs are built with
``URL.create`` so that no password is ever quoted by hand.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

if TYPE_CHECKING:  # imported where URLs are made: importing SQLAlchemy takes 0.13 s, which a run's start overlaps
    from sqlalchemy.engine import URL

from pmigrate.errors import ConfigError
from pmigrate.redact import redact

DRIVERS = ("sqlite3", "postgres", "mysql")


@dataclass(frozen=True)
class Translation:
    """What it takes to open the database a Go connection string names."""

    driver: str
    url: URL
    connect_args: dict[str, Any] = field(default_factory=dict)  # DB-API arguments a URL cannot carry
    secrets: tuple[str, ...] = ()  # to register with pmigrate.redact
    time_zone: str = "UTC"  # mysql: zone of naive DATETIME values (go-sql-driver 'loc'); "Local" = plikd's host zone
    ignored: tuple[str, ...] = ()  # Go-only parameters that mean nothing here


def translate(driver: str, connection_string: str, *, base_dir: Path | None = None) -> Translation:
    """Parse a plikd connection string for its driver; ConfigError when malformed.

    base_dir: where relative sqlite paths resolve (plikd: its working
    directory); None means the current directory.
    """
    if not isinstance(connection_string, str) or not connection_string.strip():
        raise ConfigError(f"MetadataBackendConfig.ConnectionString is empty for Driver {driver!r}: set it in the config")
    if driver == "sqlite3":
        return _sqlite(connection_string, base_dir or Path.cwd())
    if driver == "postgres":
        return _postgres(connection_string)
    if driver == "mysql":
        return _mysql(connection_string)
    raise ConfigError(f"unknown metadata Driver {driver!r}: use one of {', '.join(DRIVERS)}")


def to_url(driver: str, connection_string: str, *, base_dir: Path | None = None) -> URL:
    """The SQLAlchemy URL of the database a plikd connection string names."""
    return translate(driver, connection_string, base_dir=base_dir).url


def describe(driver: str, connection_string: str, *, base_dir: Path | None = None) -> str:
    """A human form of the database, password hidden, e.g. 'mysql plik@db:3306/plik'."""
    try:
        t = translate(driver, connection_string, base_dir=base_dir)
    except ConfigError as exc:
        return f"{driver} (invalid connection string: {exc})"
    return redact(_describe_url(t))


def _describe_url(t: Translation) -> str:
    u = t.url
    if t.driver == "sqlite3":
        ro = " (read-only)" if u.query.get("mode") == "ro" else ""
        return f"sqlite3 {sqlite_path(t)}{ro}"
    where = u.host or u.query.get("host") or u.query.get("unix_socket") or "(default host)"
    if isinstance(where, tuple):
        where = where[0]
    port = f":{u.port}" if u.port else ""
    user = f"{u.username}@" if u.username else ""
    return f"{t.driver} {user}{where}{port}/{u.database or ''}"


def identity(t: Translation) -> tuple:
    """What names one database: equal identities mean the very same database."""
    u = t.url
    if t.driver == "sqlite3":
        return ("sqlite3", os.path.realpath(sqlite_path(t)))
    host = u.host or u.query.get("host") or u.query.get("unix_socket") or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    host = host.lower()
    if host in ("localhost", "127.0.0.1", "::1"):
        host = "localhost"
    default_port = 5432 if t.driver == "postgres" else 3306
    return (t.driver, host, u.port or default_port, u.database or "")


def same_database(a: Translation, b: Translation) -> bool:
    """True when both translations open the same database (same file, or same server and name)."""
    return identity(a) == identity(b)


# -- sqlite3 (mattn/go-sqlite3) ----------------------------------------------

# Parameters go-sqlite3 reads itself; none changes which file is opened.
_SQLITE_GO_PARAMS = re.compile(r"^_")
_SQLITE_URI_PARAMS = ("mode", "cache", "vfs", "immutable", "nolock", "psow")


def _sqlite(cs: str, base_dir: Path) -> Translation:
    # go-sqlite3: anything after the first '?' is parameters; it strips them
    # from a plain path and leaves them to SQLite for a file: URI.
    path, _, qs = cs.partition("?")
    params = dict(parse_qsl(qs, keep_blank_values=True)) if qs else {}
    secrets = tuple(v for k, v in params.items() if k == "_auth_pass" and v)
    if path.startswith("file:"):
        rest = path[len("file:") :]
        if rest.startswith("//"):
            authority, _, rest = rest[2:].partition("/")
            if authority not in ("", "localhost"):
                raise ConfigError(f"sqlite3 URI {cs!r} names a remote host {authority!r}: use a local file path")
            rest = "/" + rest
        path = unquote(rest)
    if path in ("", ":memory:") or params.get("mode") == "memory":
        raise ConfigError(f"sqlite3 connection string {cs!r} is an in-memory database: point it at the database file")
    full = Path(path) if os.path.isabs(path) else base_dir / path
    full = Path(os.path.normpath(full))
    query: dict[str, str] = {}
    timeout_ms = params.get("_busy_timeout") or params.get("_timeout")
    try:
        seconds = int(timeout_ms) / 1000 if timeout_ms else 5.0  # go-sqlite3's default: 5000 ms
    except ValueError:
        raise ConfigError(f"sqlite3 _busy_timeout {timeout_ms!r} is not a number of milliseconds") from None
    connect_args: dict[str, Any] = {"timeout": seconds}
    uri_params = {k: v for k, v in params.items() if k in _SQLITE_URI_PARAMS}
    ignored = tuple(sorted(k for k in params if k not in _SQLITE_URI_PARAMS and k not in ("_busy_timeout", "_timeout")))
    uri_params.pop("cache", None)  # a shared cache across processes means nothing here
    database = str(full)
    if uri_params:
        # Only a URI keeps mode=ro (a read-only source) and friends; SQLAlchemy
        # appends the query to the file: URI it hands to sqlite3.
        database = "file:" + quote(database)
        query = {**uri_params, "uri": "true"}
    from sqlalchemy.engine import URL

    url = URL.create("sqlite+pysqlite", database=database, query=query)
    return Translation("sqlite3", url, connect_args, secrets, ignored=ignored)


def sqlite_path(t: Translation) -> Path:
    """The database file of a sqlite3 translation."""
    db = t.url.database or ""
    if db.startswith("file:"):
        return Path(unquote(db[len("file:") :]))
    return Path(db)


# -- postgres (jackc/pgx, libpq syntax) --------------------------------------

# libpq keywords psycopg understands, passed through unchanged.
_LIBPQ = {
    "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword", "sslsni", "sslcompression",
    "connect_timeout", "application_name", "fallback_application_name", "options", "target_session_attrs",
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
    "gssencmode", "krbsrvname", "channel_binding", "passfile", "service", "requirepeer", "hostaddr",
    "client_encoding",
}  # fmt: skip
# pgx's own settings: they tune the Go pool, not the connection.
_PGX_ONLY = {
    "pool_max_conns", "pool_min_conns", "pool_max_conn_lifetime", "pool_max_conn_idle_time",
    "pool_health_check_period", "pool_max_conn_lifetime_jitter", "statement_cache_capacity",
    "description_cache_capacity", "default_query_exec_mode", "min_read_buffer_size", "servicefile",
    "sslinline", "prefer_simple_protocol",
}  # fmt: skip


def _postgres(cs: str) -> Translation:
    s = cs.strip()
    if s.startswith(("postgres://", "postgresql://")):
        settings = _pg_url_settings(s)
    else:
        settings = _pg_keyword_settings(s)
    return _pg_translation(settings, cs)


def _pg_url_settings(s: str) -> dict[str, str]:
    try:
        parts = urlsplit(s)
        netloc = parts.netloc
    except ValueError as exc:
        raise ConfigError(f"postgres URL is malformed ({exc}): check the ConnectionString") from None
    settings: dict[str, str] = {}
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        settings["user"] = unquote(user)
        if colon:
            settings["password"] = unquote(password)
    if "," in hostport:
        raise ConfigError("postgres URL lists several hosts: name the primary only in the target and source configs")
    if hostport:
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d*))?|([^:]*)(?::(\d*))?", hostport)
        if not m:
            raise ConfigError(f"postgres URL host {hostport!r} is malformed: use host:port")
        host = m.group(1) or m.group(3) or ""
        port = m.group(2) or m.group(4) or ""
        if host:
            settings["host"] = unquote(host)
        if port:
            settings["port"] = port
    db = parts.path.lstrip("/")
    if db:
        settings["dbname"] = unquote(db)
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        settings[k] = v
    return settings


_PG_SPACE = " \t\n\r\v\f"


def _pg_unescape(raw: str) -> str:
    # pgx replaces exactly these two escapes; any other backslash stays.
    return raw.replace("\\\\", "\\").replace("\\'", "'")


def _pg_keyword_settings(s: str) -> dict[str, str]:
    """key=value pairs split the way pgx (plikd's driver) splits them.

    Values are bare (up to whitespace; a backslash protects the next
    character) or 'single quoted'; in both, \\\\ and \\' are unescaped.
    """
    settings: dict[str, str] = {}
    s = s.lstrip(_PG_SPACE)
    while s:
        eq = s.find("=")
        if eq < 0:
            raise ConfigError(
                f"postgres connection string is malformed near {redact(s[:20])!r}: "
                "use key=value pairs (host=... dbname=...) or a postgres:// URL"
            )
        key = s[:eq].strip(_PG_SPACE)
        s = s[eq + 1 :].lstrip(_PG_SPACE)
        if not s:
            val = ""
        elif s[0] != "'":
            end = 0
            while end < len(s) and s[end] not in _PG_SPACE:
                if s[end] == "\\":
                    end += 1
                    if end == len(s):
                        raise ConfigError("postgres connection string ends with a lone backslash: remove or double it")
                end += 1
            val, s = _pg_unescape(s[:end]), s[end + 1 :]
        else:
            s = s[1:]
            end = 0
            while end < len(s) and s[end] != "'":
                if s[end] == "\\":
                    end += 1
                end += 1
            if end >= len(s):
                raise ConfigError(f"postgres connection string: unterminated quoted value for {key}: close the quote")
            val, s = _pg_unescape(s[:end]), s[end + 1 :]
        if not key or any(c in _PG_SPACE for c in key):
            raise ConfigError(
                f"postgres connection string is malformed near {redact(key[:20])!r}: "
                "use key=value pairs (host=... dbname=...) or a postgres:// URL"
            )
        settings[key] = val
        s = s.lstrip(_PG_SPACE)
    return settings


def _pg_translation(settings: dict[str, str], cs: str) -> Translation:
    settings = dict(settings)
    user = settings.pop("user", None) or None
    password = settings.pop("password", None)
    host = settings.pop("host", None) or None
    port_text = settings.pop("port", None) or None
    dbname = settings.pop("dbname", None) or settings.pop("database", None) or None
    port = None
    if port_text:
        if "," in port_text or not port_text.isdigit():
            raise ConfigError(f"postgres port {port_text!r} is not a number: fix the ConnectionString")
        port = int(port_text)
    if host and "," in host:
        raise ConfigError("postgres connection string lists several hosts: name the primary only")
    query: dict[str, str] = {}
    runtime: list[str] = []
    ignored = []
    for k, v in settings.items():
        if k in _LIBPQ:
            query[k] = v
        elif k in _PGX_ONLY:
            ignored.append(k)
        else:
            # pgx sends any other key as a run-time parameter (e.g. search_path).
            runtime.append(f"-c {k}={v}")
    if runtime:
        opts = " ".join(runtime)
        query["options"] = f"{query['options']} {opts}" if "options" in query else opts
    if host and host.startswith("/"):
        query["host"] = host  # a unix socket directory
        host = None
    secrets = tuple(x for x in (password, query.get("sslpassword")) if x)
    from sqlalchemy.engine import URL

    url = URL.create("postgresql+psycopg", username=user, password=password, host=host, port=port, database=dbname, query=query)
    return Translation("postgres", url, {}, secrets, ignored=tuple(ignored))


# -- mysql (go-sql-driver/mysql) ---------------------------------------------

_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration(text: str, what: str) -> float:
    if text in ("0",):
        return 0.0
    pos, total = 0, 0.0
    for m in _GO_DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ConfigError(f"mysql {what} {text!r} is not a Go duration: write it like 30s or 500ms")
    return total


_BOOL_TRUE = ("1", "true", "TRUE", "True")
_BOOL_FALSE = ("0", "false", "FALSE", "False")
_MYSQL_IGNORED = {
    "allowAllFiles", "allowCleartextPasswords", "allowFallbackToPlaintext", "allowNativePasswords",
    "allowOldPasswords", "checkConnLiveness", "clientFoundRows", "collation", "columnsWithAlias",
    "interpolateParams", "multiStatements", "parseTime", "timeTruncate", "rejectReadOnly", "serverPubKey",
    "maxAllowedPacket", "connectionAttributes", "compress", "charset",
}  # fmt: skip


def _mysql(dsn: str) -> Translation:
    """go-sql-driver's ParseDSN: [user[:password]@][net[(addr)]]/dbname[?params].

    Its rules, kept exactly: the LAST '/' ends the address part, the LAST '@'
    before it ends the credentials, the FIRST ':' splits user from password.
    So a password may hold ':', '/', '?', '#', '@', spaces, anything; it is
    never percent-decoded.
    """
    if "://" in dsn.split("@")[0] and dsn.startswith(("mysql://", "mariadb://")):
        raise ConfigError(
            "mysql ConnectionString is a URL, but plikd's driver takes user:password@tcp(host:3306)/dbname: rewrite it"
        )
    i = dsn.rfind("/")
    if i < 0:
        raise ConfigError("mysql ConnectionString has no '/dbname' part: write user:password@tcp(host:3306)/dbname")
    user = password = None
    net = addr = ""
    if i > 0:
        left = dsn[:i]
        j = left.rfind("@")
        if j >= 0:
            creds = left[:j]
            user, colon, pw = creds.partition(":")
            if colon:
                password = pw
        rest = left[j + 1 :]
        k = rest.find("(")
        if k >= 0:
            if not rest.endswith(")"):
                raise ConfigError(
                    "mysql ConnectionString address is malformed (no closing ')' before '/dbname'): "
                    "write tcp(host:3306) or unix(/path/to.sock)"
                )
            net, addr = rest[:k], rest[k + 1 : -1]
        else:
            net = rest
    dbpart, _, qs = dsn[i + 1 :].partition("?")
    dbname = unquote(dbpart)
    net = net or "tcp"
    params: dict[str, str] = {}
    for item in qs.split("&") if qs else ():
        key, eq, value = item.partition("=")
        if eq:
            params[key] = value
    query: dict[str, str] = {"charset": "utf8mb4"}
    connect_args: dict[str, Any] = {}
    host = port = None
    if net == "tcp":
        addr = addr or "127.0.0.1:3306"
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]*)(?::(\d+))?", addr)
        if not m:
            raise ConfigError(f"mysql address {addr!r} is malformed: write tcp(host:3306)")
        host = m.group(1) or m.group(3) or "127.0.0.1"
        port = int(m.group(2) or m.group(4) or 3306)
    elif net == "unix":
        query["unix_socket"] = addr or "/tmp/mysql.sock"
        host = "localhost"
    else:
        raise ConfigError(f"mysql network {net!r} is not supported: use tcp(host:port) or unix(/path/to.sock)")
    time_zone = "UTC"
    session: list[str] = []
    ignored = []
    for key, value in params.items():
        if key == "loc":
            time_zone = unquote(value.replace("+", " "))
        elif key == "timeout":
            connect_args["connect_timeout"] = max(1, round(_go_duration(value, "timeout")))
        elif key == "readTimeout":
            connect_args["read_timeout"] = _go_duration(value, "readTimeout") or None
        elif key == "writeTimeout":
            connect_args["write_timeout"] = _go_duration(value, "writeTimeout") or None
        elif key == "tls":
            if value in _BOOL_TRUE:
                connect_args["ssl"] = {"verify_mode": "required", "check_hostname": True}
            elif value.lower() == "skip-verify":
                connect_args["ssl"] = {"verify_mode": "none", "check_hostname": False}
            elif value.lower() == "preferred":
                connect_args["ssl_preferred"] = True  # PyMySQL's own default: TLS if offered
            elif value in _BOOL_FALSE:
                connect_args["ssl_disabled"] = True
            else:
                raise ConfigError(
                    f"mysql tls={value!r} names a TLS config registered in Go code: use tls=true or tls=skip-verify"
                )
        elif key in _MYSQL_IGNORED:
            if key not in ("charset", "parseTime"):
                ignored.append(key)
        else:
            # go-sql-driver runs 'SET key=value' for any other parameter.
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key):
                raise ConfigError(f"mysql parameter {key!r} is not a system variable name: fix the ConnectionString")
            session.append(f"{key}={unquote(value.replace('+', ' '))}")
    if not connect_args.pop("ssl_preferred", False) and "ssl" not in connect_args:
        # go-sql-driver uses no TLS unless asked; PyMySQL would try it.
        connect_args["ssl_disabled"] = True
    if session:
        connect_args["init_command"] = "SET " + ", ".join(session)
    if password is not None:
        # PyMySQL encodes a str password as latin-1; Go sends the UTF-8 bytes.
        connect_args["password"] = password.encode("utf-8")
    from sqlalchemy.engine import URL

    url = URL.create(
        "mysql+pymysql", username=user or None, password=password, host=host, port=port, database=dbname or None, query=query
    )
    return Translation("mysql", url, connect_args, (password,) if password else (), time_zone, tuple(ignored))


def secrets_of(driver: str, connection_string: str) -> tuple[str, ...]:
    """Secrets a connection string holds, even when it does not parse."""
    try:
        return translate(driver, connection_string).secrets
    except ConfigError:
        # Unparsable: hide the whole string rather than risk a password.
        return (connection_string,) if connection_string else ()
