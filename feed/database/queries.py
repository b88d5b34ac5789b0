"""Every SQL statement pg-feed runs, with bound parameters; no Flask here."""

import json
from datetime import UTC

from psycopg2 import sql
from sqlalchemy import text

HEALTH_CHECK = "SELECT 1"

_INSERT_EVENT = text("INSERT INTO events (event) VALUES (:event) RETURNING id")
_LATEST_EVENTS = text(
    "SELECT id, event, created_at FROM "
    "(SELECT id, event, created_at FROM events ORDER BY id DESC LIMIT :limit) AS page "
    "ORDER BY id"
)
_EVENTS_AFTER = text(
    "SELECT id, event, created_at FROM events WHERE id > :after "
    "ORDER BY id LIMIT :limit"
)
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
    }


def listen_statement(channel):
    """LISTEN on a channel, its name quoted as an identifier."""
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


SET_UTC = "SET TIME ZONE 'UTC'"


def check_database(session):
    """Run the health-check query through the app's pool."""
    session.execute(text(HEALTH_CHECK))
