"""Canonical values: what the copier may change between drivers compares equal, nothing else does."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from pmigrate.metadata import values as canon

UTC = dt.UTC


def test_timestamps_are_instants_truncated_to_the_coarser_precision():
    ns = canon.time_canon(precision=9, zone=UTC)
    us = canon.time_canon(precision=6, zone=UTC)
    ms = canon.time_canon(precision=3, zone=UTC)
    sqlite_text = "2026-07-08 12:00:28.111626847+02:00"
    pg = dt.datetime(2026, 7, 8, 10, 0, 28, 111626, tzinfo=UTC)
    mysql = dt.datetime(2026, 7, 8, 10, 0, 28, 111000)  # naive, UTC
    assert ns(sqlite_text) == ns("2026-07-08T10:00:28.111626847Z") != ns(pg)
    assert us(sqlite_text) == us(pg) != us(mysql)
    assert ms(sqlite_text) == ms(pg) == ms(mysql)
    assert ns("2000-01-01 00:00:00+00:00") == 946684800 * canon.NS
    assert ns("0001-01-01 00:00:00+00:00") < 0
    assert ns(None) is None and ns("not a time") == "not a time"
    assert ns(946684800) == ns("2000-01-01 00:00:00+00:00")  # Unix seconds, as the copy reads them


def test_naive_values_read_in_their_zone():
    paris = dt.timezone(dt.timedelta(hours=2))
    c = canon.time_canon(precision=3, zone=paris)
    assert c(dt.datetime(2026, 7, 8, 12, 0, 0)) == canon.time_canon(precision=3, zone=UTC)(dt.datetime(2026, 7, 8, 10, 0, 0))


def test_booleans_ints_text_and_null():
    assert canon.canon_bool(True) == canon.canon_bool(1) == canon.canon_bool("true") == canon.canon_bool("1") == 1
    assert canon.canon_bool(False) == canon.canon_bool(0) == canon.canon_bool("f") == canon.canon_bool("") == 0
    assert canon.canon_bool("") == canon.canon_bool(canon.to_bool(""))  # as the copy writes it
    assert canon.canon_int(Decimal("42")) == canon.canon_int(42) == canon.canon_int("42") == 42
    assert canon.canon_text(b"\xce\xb1") == "α"
    assert canon.canon_text("") == "" and canon.canon_text(None) is None
    assert canon.canon_text("") != canon.canon_text(None)
