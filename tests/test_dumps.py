"""Every plikd dump loads into its own driver, with its rows."""

import pytest
import sqlalchemy as sa

from tests.dumps import all_dumps, dump_driver

DUMPS = all_dumps()


@pytest.mark.dumps
@pytest.mark.parametrize("dump", DUMPS, ids=[f"{p.parent.name}/{p.name}" for p in DUMPS])
def test_dump_loads(dump, load_dump):
    db = load_dump(dump)
    engine = sa.create_engine(db.url)
    try:
        with engine.connect() as c:
            tables = set(sa.inspect(c).get_table_names())
            assert {"uploads", "files", "users", "tokens"} <= tables
            n = c.execute(sa.text("SELECT COUNT(*) FROM uploads")).scalar_one()
            assert n >= 1
            if "migrations" in tables:
                ids = {r[0] for r in c.execute(sa.text("SELECT id FROM migrations"))}
                assert "SCHEMA_INIT" in ids
    finally:
        engine.dispose()
    assert dump_driver(dump) == db.driver


def test_there_are_dumps(dumps_dir):
    assert len(all_dumps()) >= 20
