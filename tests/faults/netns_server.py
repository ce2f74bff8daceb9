"""The partition test's server: run inside the server namespace (``ip netns exec``), it starts
an embedded PostgreSQL listening there, makes the ledger tables, prints one JSON line (port and
passwords) and runs until its stdin closes (the test's end, however it ends), then stops the
server and deletes its data."""

from __future__ import annotations

import json
import sys

from threadpool_db.embedded import EmbeddedPostgres

from .netns import CLIENT_NETS, DIRECT_ADDR, SERVER_ADDR

SLOW_COMMIT = 0.5  # seconds each COMMIT of slow_ledger sleeps (a deferred constraint trigger)

SCHEMA = f"""
CREATE TABLE ledger (writer int, seq int, PRIMARY KEY (writer, seq));
CREATE TABLE slow_ledger (writer int, seq int, PRIMARY KEY (writer, seq));
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN PERFORM pg_sleep({SLOW_COMMIT}); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow_ledger DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION slow_commit();
ALTER TABLE ledger OWNER TO app;
ALTER TABLE slow_ledger OWNER TO app;
"""


def main() -> None:
    pg = EmbeddedPostgres({"max_connections": 200}, listen=(SERVER_ADDR, DIRECT_ADDR), clients=CLIENT_NETS)
    try:
        pg.start()
        pg.sql(SCHEMA)
        print(json.dumps({"port": pg.port, "app_password": pg.app_password,
                          "superuser_password": pg.superuser_password}), flush=True)  # fmt: skip
        sys.stdin.read()  # until the test closes our stdin (or dies: the pipe closes then too)
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
