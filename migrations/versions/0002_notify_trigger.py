"""Notify on every change to events: a generic pg_notify trigger.

feed_notify() works for any table with an `id` column. Its optional argument
names the channel (default: the table's name). The payload is JSON text:
{"table", "op", "id", "row"}; "row" is left out when the payload would reach
NOTIFY's 8000-byte limit, and the listener reads the row back instead. TRUNCATE
sends {"table", "op"} once per statement. The function runs with TimeZone UTC
so timestamps in the payload do not depend on the writer's session.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CREATE_FUNCTION = """
CREATE FUNCTION feed_notify() RETURNS trigger
LANGUAGE plpgsql
SET timezone TO 'UTC'
AS $feed_notify$
DECLARE
    channel text := coalesce(TG_ARGV[0], TG_TABLE_NAME);
    changed json;
    payload text;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify(
            channel, json_build_object('table', TG_TABLE_NAME, 'op', TG_OP)::text);
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        changed := to_json(OLD);
    ELSE
        changed := to_json(NEW);
    END IF;
    payload := json_build_object(
        'table', TG_TABLE_NAME, 'op', TG_OP, 'id', changed->'id', 'row', changed)::text;
    IF octet_length(payload) >= 8000 THEN
        payload := json_build_object(
            'table', TG_TABLE_NAME, 'op', TG_OP, 'id', changed->'id')::text;
    END IF;
    PERFORM pg_notify(channel, payload);
    RETURN NULL;
END;
$feed_notify$
"""


def upgrade():
    op.execute(CREATE_FUNCTION)
    op.execute(
        "CREATE TRIGGER events_notify AFTER INSERT OR UPDATE OR DELETE ON events "
        "FOR EACH ROW EXECUTE FUNCTION feed_notify('events')"
    )
    op.execute(
        "CREATE TRIGGER events_notify_truncate AFTER TRUNCATE ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION feed_notify('events')"
    )


def downgrade():
    op.execute("DROP TRIGGER IF EXISTS events_notify_truncate ON events")
    op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
    op.execute("DROP FUNCTION IF EXISTS feed_notify()")
