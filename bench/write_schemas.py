"""(e)'s schemas: how each of its databases is made from pg-feed's migrations.

Feed off, previous version and notify mode are migrations alone; poll mode is
every migration, then feed_set_mode('poll'). The two experimental variants of
notify mode re-point the row trigger, in their own database only, at a
bench-local copy of feed_notify() that notifies with less; feed/ is untouched.
Each database is then sampled: the notifications one two-row transaction sends.
"""

import select
import time
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

from bench.database import migrate
from bench.workers import BenchError

FEED_OFF = "feed off"
NOTIFY_MODE = "notify mode (default)"

# The row trigger's NOTIFY without the row: what the listener needs to read it
# back (table, op, id) and to order it (version: feed_seq, or the removal's).
ID_ONLY = """
CREATE FUNCTION bench_notify_id_only() RETURNS trigger
LANGUAGE plpgsql
AS $bench_notify_id_only$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify(coalesce(TG_ARGV[0], TG_TABLE_NAME), json_build_object(
            'table', TG_TABLE_NAME, 'op', TG_OP, 'id', OLD.id,
            'version', feed_removal_version())::text);
    ELSE
        PERFORM pg_notify(coalesce(TG_ARGV[0], TG_TABLE_NAME), json_build_object(
            'table', TG_TABLE_NAME, 'op', TG_OP, 'id', NEW.id,
            'version', NEW.feed_seq)::text);
    END IF;
    RETURN NULL;
END;
$bench_notify_id_only$
"""
# A constant payload: PostgreSQL folds identical notifications of one
# transaction into one, so a transaction sends one whatever it changes.
ONCE = """
CREATE FUNCTION bench_notify_once() RETURNS trigger
LANGUAGE plpgsql
AS $bench_notify_once$
BEGIN
    PERFORM pg_notify(coalesce(TG_ARGV[0], TG_TABLE_NAME), '');
    RETURN NULL;
END;
$bench_notify_once$
"""
POLL_MODE = "SELECT feed_set_mode('poll')"
# Every trigger on events and the function it runs; row level is tgtype bit 0
TRIGGERS = (
    "SELECT t.tgname, p.proname, t.tgenabled <> 'D', (t.tgtype & 1) = 1, "
    "pg_get_triggerdef(t.oid) "
    "FROM pg_trigger AS t JOIN pg_proc AS p ON p.oid = t.tgfoid "
    "WHERE t.tgrelid = 'events'::regclass AND NOT t.tgisinternal ORDER BY t.tgname"
)
SAMPLE_INSERT = "INSERT INTO events (event) VALUES ('sample 1'), ('sample 2')"
SAMPLE_WAIT = 0.3  # seconds a sample listens for notifications after its COMMIT


@dataclass(frozen=True)
class Schema:
    """pg-feed's migrations up to `migrations`, then `then` (the report's words)
    by running `statements` and pointing the row trigger at `row_function`; a
    two-row transaction then sends `sample` notifications."""

    migrations: str
    sample: int
    then: str | None = None
    statements: tuple[str, ...] = ()
    row_function: str | None = None


SCHEMAS = {
    FEED_OFF: Schema("0001", 0),
    "poll mode": Schema("head", 0, POLL_MODE, (POLL_MODE,)),
    "previous version": Schema("0002", 2),
    NOTIFY_MODE: Schema("head", 2),
    "notify, id-only payload": Schema(
        "head",
        2,
        "row trigger: pg_notify of table, op, id, version",
        (ID_ONLY,),
        "bench_notify_id_only",
    ),
    "notify, one per transaction": Schema(
        "head", 1, "row trigger: pg_notify(channel, '')", (ONCE,), "bench_notify_once"
    ),
}


def prepare(url, schema):
    """Make the schema in the empty database at `url`; what it looks like then:
    its triggers and the notifications of one sample transaction."""
    migrate(url, schema.migrations)
    connection = psycopg2.connect(url, application_name="pg-feed-bench-schema")
    try:
        with connection, connection.cursor() as cursor:
            for statement in schema.statements:
                cursor.execute(statement)
            if schema.row_function:
                _repoint_row_triggers(cursor, schema.row_function)
        made = {"triggers": _triggers(connection), **_sample(connection, url)}
    finally:
        connection.close()
    if made["sample_notifications"] != schema.sample:
        raise BenchError(
            f"a two-row transaction sent {made['sample_notifications']} "
            f"notifications, not {schema.sample}: {made}"
        )
    return made


def _repoint_row_triggers(cursor, function):
    """Each row trigger that runs feed_notify() made again on `function`."""
    cursor.execute(TRIGGERS)
    rows = [row for row in cursor.fetchall() if row[1] == "feed_notify" and row[3]]
    if not rows:
        raise BenchError(f"{function}: no row trigger runs feed_notify() here")
    for name, _, _, _, definition in rows:
        made = definition.replace(
            "EXECUTE FUNCTION feed_notify(", f"EXECUTE FUNCTION {function}("
        )
        drop = sql.SQL("DROP TRIGGER {} ON events").format(sql.Identifier(name))
        cursor.execute(drop)
        cursor.execute(made)


def _triggers(connection):
    with connection, connection.cursor() as cursor:
        cursor.execute(TRIGGERS)
        return [
            {"name": name, "function": function, "enabled": enabled, "row": row}
            for name, function, enabled, row, _ in cursor.fetchall()
        ]


def _sample(writer, url):
    """Listen on events while `writer` commits one two-row INSERT: the
    notifications that arrive within SAMPLE_WAIT seconds."""
    listener = psycopg2.connect(url, application_name="pg-feed-bench-sample")
    try:
        listener.autocommit = True
        with listener.cursor() as cursor:
            cursor.execute("LISTEN events")
        with writer, writer.cursor() as cursor:
            cursor.execute(SAMPLE_INSERT)
        payloads = _received(listener)
    finally:
        listener.close()
    return {"sample_notifications": len(payloads), "sample_payload": payloads[:1]}


def _received(listener):
    deadline = time.monotonic() + SAMPLE_WAIT
    while (remaining := deadline - time.monotonic()) > 0:
        select.select([listener], [], [], remaining)
        listener.poll()
    return [notify.payload for notify in listener.notifies]
