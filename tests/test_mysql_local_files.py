"""LOAD DATA LOCAL: a MariaDB server gets a file from pmigrate only during pmigrate's own load.

PyMySQL allows LOCAL for a whole connection or not at all; metadata/dialects/
mysql.py narrows it through PyMySQL internals (see its docstring). These
tests fail when a PyMySQL release changes them, instead of the target
silently gaining the power to read this machine's files.
"""

from __future__ import annotations

import inspect

import pymysql
import pytest

from pmigrate.config import MetadataConfig
from pmigrate.metadata import db, dialects


def test_pymysql_internals_are_still_there():
    from pymysql import converters
    from pymysql.connections import Connection, MySQLResult

    assert "conn._local_infile" in inspect.getsource(MySQLResult._read_load_local_packet)
    assert "self._local_infile = bool(local_infile)" in inspect.getsource(Connection.__init__)
    assert callable(Connection._escape_string) and isinstance(converters._escape_table, (dict, list))


def test_server_request_for_a_file_is_refused_outside_the_load(tmp_path, mysql_db):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the server\n", encoding="utf-8")
    eng = db.engine(MetadataConfig("mysql", mysql_db.go_dsn), local_infile=True)
    try:
        with eng.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE leak (line text)")
        with eng.connect() as conn:
            assert conn.exec_driver_sql("SELECT @@local_infile").scalar() == 1  # the server would take it
            with pytest.raises(Exception, match="local_infile option is false"):
                conn.exec_driver_sql(f"LOAD DATA LOCAL INFILE '{secret}' INTO TABLE leak")
            conn.invalidate()
        with eng.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM leak").scalar() == 0

        # pmigrate's own load on the same kind of connection goes through
        writer = dialects.TargetWriter.from_engine(eng, "mysql")
        try:
            sink = writer.sink("leak", ["line"], [], upsert=False, text_only=True)
            assert type(sink).__name__ == "MysqlLoad"
            sink.write([("a",), ("b",)])
            sink.close()
            writer.commit()
            assert writer.count("leak") == 2
        finally:
            writer.close()
    finally:
        eng.dispose()


def test_a_pymysql_without_the_switch_stops_the_load_loudly():
    class Renamed:  # what a connection of a PyMySQL that renamed the attribute looks like
        pass

    with pytest.raises(RuntimeError, match=f"PyMySQL {pymysql.__version__} no longer has"):
        dialects.mysql.allow_local_files(Renamed(), False)
