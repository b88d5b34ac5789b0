"""Every SQL statement pg-feed runs, with bound parameters; no Flask here."""

import json
from datetime import UTC

from psycopg2 import sql
from sqlalchemy import text

HEALTH_CHECK = "SELECT 1"

_INSERT_EVENT = text("INSERT INTO events (event) VALUES (:event) RETURNING id")
_LATEST_EVENTS = text(
    "SELECT id, event, created_at, feed_seq FROM "
    "(SELECT id, event, created_at, feed_seq FROM events ORDER BY id DESC "
    "LIMIT :limit) AS page ORDER BY id"
)
_EVENTS_AFTER = text(
    "SELECT id, event, created_at, feed_seq FROM events WHERE id > :after "
    "ORDER BY id LIMIT :limit"
)
_EVENTS_BEFORE = text(
    "SELECT id, event, created_at, feed_seq FROM "
    "(SELECT id, event, created_at, feed_seq FROM events WHERE id < :before "
    "ORDER BY id DESC LIMIT :limit) AS page ORDER BY id"
)
_WATERMARK = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
_ROWS_BY_ID = "SELECT to_json(t) FROM {table} AS t WHERE t.id = ANY(%s)"


def insert_event(session, event_text):
    """Insert one event, commit, and return its id."""
    new_id = session.execute(_INSERT_EVENT, {"event": event_text}).scalar_one()
    session.commit()
    return new_id


def latest_events(session, limit):
    """The newest `limit` rows in ascending id order, plus whether older ones exist."""
    rows = session.execute(_LATEST_EVENTS, {"limit": limit + 1}).all()
    return [_wire_row(row) for row in rows[-limit:]], len(rows) > limit


def events_after(session, after, limit):
    """Up to `limit` rows with id > after, ascending, plus whether more follow."""
    rows = session.execute(_EVENTS_AFTER, {"after": after, "limit": limit + 1}).all()
    return [_wire_row(row) for row in rows[:limit]], len(rows) > limit


def events_before(session, before, limit):
    """Up to `limit` rows with id < before, ascending, plus whether older ones exist."""
    rows = session.execute(_EVENTS_BEFORE, {"before": before, "limit": limit + 1}).all()
    return [_wire_row(row) for row in rows[-limit:]], len(rows) > limit


def watermark(session):
    """The snapshot's xmin: every change with a lower xid is final (docs/RESUME.md)."""
    return int(session.execute(_WATERMARK).scalar_one())


def rows_by_id(table):
    """Rows of `table` as JSON objects, for a list of ids bound as the parameter."""
    return sql.SQL(_ROWS_BY_ID).format(table=sql.Identifier(table))


def notify_probe(channel, token):
    """A NOTIFY the listener recognises as its start-up self-test."""
    return text("SELECT pg_notify(:channel, :payload)").bindparams(
        channel=channel, payload=json.dumps({"probe": token})
    )


def _wire_row(row):
    return {
        "id": row.id,
        "op": "INSERT",
        "event": row.event,
        "created_at": row.created_at.astimezone(UTC).isoformat(),
        "version": row.feed_seq,
    }


def listen_statement(channel):
    """LISTEN on a channel, its name quoted as an identifier."""
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


SET_UTC = "SET TIME ZONE 'UTC'"
UNLISTEN_ALL = "UNLISTEN *"


def check_database(session):
    """Run the health-check query through the app's pool."""
    session.execute(text(HEALTH_CHECK))


# Positions (docs/RESUME.md). One statement, one snapshot: the watermark (the
# snapshot's xmin), the trim mark and the changes below the watermark are read
# together.
_CHANGES_SINCE = text(
    "WITH mark AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin), "
    "trim AS (SELECT feed_xid, feed_seq FROM feed_trimmed), "
    "changes AS ("
    " SELECT * FROM ("
    "  SELECT e.feed_xid AS xid, e.feed_seq AS seq,"
    "   CASE WHEN e.feed_updated THEN 'UPDATE' ELSE 'INSERT' END AS op, e.id,"
    "   e.event, e.created_at"
    "  FROM events AS e, mark"
    "  WHERE (e.feed_xid, e.feed_seq) > (CAST(:xid AS xid8), :seq)"
    "   AND e.feed_xid < mark.xmin"
    "  UNION ALL"
    "  SELECT r.feed_xid, r.feed_seq, r.op, r.row_id, NULL, NULL"
    "  FROM feed_removals AS r, mark"
    "  WHERE r.table_name = 'events'"
    "   AND (r.feed_xid, r.feed_seq) > (CAST(:xid AS xid8), :seq)"
    "   AND r.feed_xid < mark.xmin"
    " ) AS both_kinds ORDER BY xid, seq LIMIT :limit) "
    "SELECT mark.xmin::text AS watermark,"
    " (CAST(:xid AS xid8), :seq) < (trim.feed_xid, trim.feed_seq) AS trimmed,"
    " changes.xid::text AS xid, changes.seq,"
    " changes.op, changes.id, changes.event, changes.created_at "
    "FROM mark CROSS JOIN trim LEFT JOIN changes ON true "
    "ORDER BY changes.xid, changes.seq"
)
# Changes committed but not final yet (an older transaction is still open),
# after a position: what a resume answer adds on its last page.
_SETTLING_SINCE = text(
    "SELECT * FROM ("
    " SELECT e.feed_xid::text AS xid, e.feed_seq AS seq,"
    "  CASE WHEN e.feed_updated THEN 'UPDATE' ELSE 'INSERT' END AS op, e.id,"
    "  e.event, e.created_at"
    " FROM events AS e"
    " WHERE e.feed_xid >= CAST(:watermark AS xid8)"
    "  AND (e.feed_xid, e.feed_seq) > (CAST(:xid AS xid8), :seq)"
    " UNION ALL"
    " SELECT r.feed_xid::text, r.feed_seq, r.op, r.row_id, NULL, NULL"
    " FROM feed_removals AS r"
    " WHERE r.table_name = 'events' AND r.feed_xid >= CAST(:watermark AS xid8)"
    "  AND (r.feed_xid, r.feed_seq) > (CAST(:xid AS xid8), :seq)"
    ") AS both_kinds ORDER BY seq LIMIT :limit"
)
# What became visible since a snapshot (the listener's last read), in one
# statement and so one snapshot: rows whose last writer is not visible in that
# snapshot (at or above its xmax, or among its in-progress xids), and removals
# likewise. The snapshot's xmax and xids come as constants, so that the
# planner sees how few rows match: index scans on (feed_xid, feed_seq) from
# xmax up and for those xids, nothing older looked at, and a plan cheap
# enough that JIT never starts. The database's wake-up mode (migration 0006)
# comes with it, so a listener follows a switch within one read.
_VISIBLE_SINCE = """
SELECT pg_current_snapshot()::text AS snapshot,
    (SELECT mode FROM feed_mode) AS mode,
    c.table_name, c.seq, c.op, c.id, c.xid::text, c.row
FROM (SELECT 1) AS one LEFT JOIN (
    {parts}
    SELECT r.table_name, r.feed_seq, r.op, r.row_id, r.feed_xid, NULL::json
    FROM feed_removals AS r
    WHERE r.feed_xid >= CAST(%(xmax)s AS xid8) AND r.table_name = ANY(%(tables)s)
    UNION ALL
    SELECT r.table_name, r.feed_seq, r.op, r.row_id, r.feed_xid, NULL::json
    FROM feed_removals AS r
    WHERE r.feed_xid = ANY(CAST(%(running)s AS xid8[]))
      AND r.table_name = ANY(%(tables)s)
) AS c (table_name, seq, op, id, xid, row) ON true
ORDER BY c.seq
"""
_VISIBLE_IN_TABLE = """
    SELECT {name}, t.feed_seq, {op}, t.id, t.feed_xid, {row}
    FROM {table} AS t WHERE t.feed_xid >= CAST(%(xmax)s AS xid8)
    UNION ALL
    SELECT {name}, t.feed_seq, {op}, t.id, t.feed_xid, {row}
    FROM {table} AS t WHERE t.feed_xid = ANY(CAST(%(running)s AS xid8[]))
    UNION ALL
"""
_OP = "CASE WHEN t.feed_updated THEN 'UPDATE' ELSE 'INSERT' END"
CURRENT_SNAPSHOT = "SELECT pg_current_snapshot()::text"
# A resume's statements are index scans whose row counts the planner cannot
# know (positions from a cursor, the current watermark); on a large table its
# guesses can pass jit_above_cost, and compiling then costs more than the scan
# (17 ms of 106 ms measured on PostgreSQL 15 with 100,000 rows). Off for the
# resume's own transaction only.
_NO_JIT = text("SELECT set_config('jit', 'off', true)")
_TRIM = text("SELECT feed_trim_removals(make_interval(secs => :age), :count, :batch)")


def visible_since(tables, with_rows=False):
    """The statement reading what became visible in `tables` since a snapshot.

    Parameters: since_parameters(snapshot) and tables (their names). Rows: (snapshot
    now, mode, table, seq, op, id, xid, row): op INSERT or UPDATE (the row's
    latest change, row its JSON when with_rows, else null), DELETE or TRUNCATE
    (id null); one row of NULLs but the snapshot and mode when nothing changed.
    """
    row = sql.SQL("to_json(t)" if with_rows else "NULL::json")
    parts = sql.SQL("").join(
        sql.SQL(_VISIBLE_IN_TABLE).format(
            name=sql.Literal(table),
            table=sql.Identifier(table),
            op=sql.SQL(_OP),
            row=row,
        )
        for table in tables
    )
    return sql.SQL(_VISIBLE_SINCE).format(parts=parts)


def since_parameters(snapshot, tables):
    """visible_since's parameters: a snapshot's xmax and in-progress xids."""
    _xmin, xmax, running = snapshot.split(":")
    return {
        "xmax": xmax,
        "running": [x for x in running.split(",") if x],
        "tables": list(tables),
    }


FEED_MODE = "SELECT mode FROM feed_mode"
SET_MODE = "SELECT feed_set_mode(%s)"
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, true)"


def trim_removals(session, max_age_seconds, max_count, batch):
    """Trim the removal log (migration 0005); the number of records removed."""
    removed = session.execute(
        _TRIM, {"age": max_age_seconds, "count": max_count, "batch": batch}
    ).scalar_one()
    session.commit()
    return removed


EPOCH_PARTS = (
    "SELECT e.epoch::text, s.system_identifier::text, d.oid::text "
    "FROM feed_epoch AS e, pg_control_system() AS s, pg_database AS d "
    "WHERE d.datname = current_database()"
)
_EPOCH = text(EPOCH_PARTS)


def changes_since(session, xid, seq, limit):
    """(watermark, trimmed, rows): changes after (xid, seq) below the watermark.

    trimmed: the removal log no longer holds everything after (xid, seq).
    rows: (xid, seq, op, id, event, created_at) in position order, op "INSERT"
    or "UPDATE" for a row as it is now (its latest change), "DELETE" or
    "TRUNCATE" for a removal.
    """
    session.execute(_NO_JIT)
    result = session.execute(
        _CHANGES_SINCE, {"xid": str(xid), "seq": seq, "limit": limit}
    ).all()
    watermark = int(result[0].watermark)
    return watermark, bool(result[0].trimmed), _changes(result)


def settling_since(session, watermark, xid, seq, limit):
    """Committed changes after (xid, seq) at or above the watermark, by seq."""
    result = session.execute(
        _SETTLING_SINCE,
        {"watermark": str(watermark), "xid": str(xid), "seq": seq, "limit": limit},
    ).all()
    return _changes(result)


def _changes(result):
    return [
        (int(r.xid), r.seq, r.op, r.id, r.event, r.created_at)
        for r in result
        if r.xid is not None
    ]


def epoch_parts(session):
    """(migration id, cluster system identifier, database oid) of this database."""
    return tuple(session.execute(_EPOCH).one())
