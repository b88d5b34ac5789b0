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


def check_database(session):
    """Run the health-check query through the app's pool."""
    session.execute(text(HEALTH_CHECK))


# Positions (docs/RESUME.md). One statement, one snapshot: the watermark (the
# snapshot's xmin) and the changes below it are read together.
_CHANGES_SINCE = text(
    "WITH mark AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin), "
    "changes AS ("
    " SELECT * FROM ("
    "  SELECT e.feed_xid AS xid, e.feed_seq AS seq, 'CHANGE' AS op, e.id,"
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
    "SELECT mark.xmin::text AS watermark, changes.xid::text AS xid, changes.seq,"
    " changes.op, changes.id, changes.event, changes.created_at "
    "FROM mark LEFT JOIN changes ON true ORDER BY changes.xid, changes.seq"
)
_EPOCH = text(
    "SELECT e.epoch::text, s.system_identifier::text, d.oid::text "
    "FROM feed_epoch AS e, pg_control_system() AS s, pg_database AS d "
    "WHERE d.datname = current_database()"
)


def changes_since(session, xid, seq, limit):
    """(watermark, rows): changes after position (xid, seq), below the watermark.

    rows: (xid, seq, op, id, event, created_at) in position order, op "CHANGE"
    for a row as it is now, "DELETE" or "TRUNCATE" for a removal.
    """
    result = session.execute(
        _CHANGES_SINCE, {"xid": str(xid), "seq": seq, "limit": limit}
    ).all()
    watermark = int(result[0].watermark)
    rows = [r for r in result if r.xid is not None]
    return watermark, [
        (int(r.xid), r.seq, r.op, r.id, r.event, r.created_at) for r in rows
    ]


def epoch_parts(session):
    """(migration id, cluster system identifier, database oid) of this database."""
    return tuple(session.execute(_EPOCH).one())
