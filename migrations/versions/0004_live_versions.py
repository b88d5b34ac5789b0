"""Versions on live changes: every notification says which version it is.

An INSERT's or UPDATE's payload already carries the row, and with it the row's
feed_seq (0003): its version. A DELETE or TRUNCATE leaves no row; its version
is the sequence value of its feed_removals record. So the triggers that log
removals are renamed to sort before the notify triggers (PostgreSQL fires a
table's triggers for one event in name order), and feed_notify(), given a
second argument 'versioned', adds "version" to a DELETE's or TRUNCATE's
payload: the sequence value that record just took, which feed_record_removal()
now leaves in the transaction-local setting feed.removal_version. Read with
current_setting(..., true), a missing value (the log trigger disabled) gives
a null version, never an error: the writer never fails because of the feed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

REMOVAL_VERSION = """
CREATE FUNCTION feed_removal_version() RETURNS bigint
LANGUAGE sql STABLE
AS $feed_removal_version$
    SELECT nullif(current_setting('feed.removal_version', true), '')::bigint
$feed_removal_version$
"""

FEED_RECORD_REMOVAL = """
CREATE OR REPLACE FUNCTION feed_record_removal() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $feed_record_removal$
DECLARE
    version bigint;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        INSERT INTO feed_removals (table_name, op) VALUES (TG_TABLE_NAME, TG_OP)
        RETURNING feed_seq INTO version;
    ELSE
        INSERT INTO feed_removals (table_name, op, row_id)
        VALUES (TG_TABLE_NAME, TG_OP, OLD.id)
        RETURNING feed_seq INTO version;
    END IF;
    PERFORM set_config('feed.removal_version', version::text, true);
    RETURN NULL;
END;
$feed_record_removal$
"""

# 0003's, put back on downgrade.
FEED_RECORD_REMOVAL_0003 = """
CREATE OR REPLACE FUNCTION feed_record_removal() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $feed_record_removal$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        INSERT INTO feed_removals (table_name, op) VALUES (TG_TABLE_NAME, TG_OP);
    ELSE
        INSERT INTO feed_removals (table_name, op, row_id)
        VALUES (TG_TABLE_NAME, TG_OP, OLD.id);
    END IF;
    RETURN NULL;
END;
$feed_record_removal$
"""

FEED_NOTIFY = """
CREATE OR REPLACE FUNCTION feed_notify() RETURNS trigger
LANGUAGE plpgsql
SET timezone TO 'UTC'
AS $feed_notify$
DECLARE
    channel text := coalesce(TG_ARGV[0], TG_TABLE_NAME);
    versioned boolean := coalesce(TG_ARGV[1], '') = 'versioned';
    changed json;
    payload text;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        IF versioned THEN
            payload := json_build_object('table', TG_TABLE_NAME, 'op', TG_OP,
                'version', feed_removal_version())::text;
        ELSE
            payload := json_build_object('table', TG_TABLE_NAME, 'op', TG_OP)::text;
        END IF;
        PERFORM pg_notify(channel, payload);
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        changed := to_json(OLD);
    ELSE
        changed := to_json(NEW);
    END IF;
    IF TG_OP = 'DELETE' AND versioned THEN
        payload := json_build_object('table', TG_TABLE_NAME, 'op', TG_OP,
            'id', changed->'id', 'version', feed_removal_version(),
            'row', changed)::text;
        IF octet_length(payload) >= 8000 THEN
            payload := json_build_object('table', TG_TABLE_NAME, 'op', TG_OP,
                'id', changed->'id', 'version', feed_removal_version())::text;
        END IF;
    ELSE
        payload := json_build_object(
            'table', TG_TABLE_NAME, 'op', TG_OP, 'id', changed->'id',
            'row', changed)::text;
        IF octet_length(payload) >= 8000 THEN
            payload := json_build_object(
                'table', TG_TABLE_NAME, 'op', TG_OP, 'id', changed->'id')::text;
        END IF;
    END IF;
    PERFORM pg_notify(channel, payload);
    RETURN NULL;
END;
$feed_notify$
"""

# 0002's function, put back on downgrade.
FEED_NOTIFY_0002 = """
CREATE OR REPLACE FUNCTION feed_notify() RETURNS trigger
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

UPGRADE = (
    "ALTER TRIGGER events_record_removal ON events RENAME TO events_log_removal",
    "ALTER TRIGGER events_record_truncate ON events RENAME TO events_log_truncate",
    REMOVAL_VERSION,
    FEED_RECORD_REMOVAL,
    FEED_NOTIFY,
    "DROP TRIGGER events_notify ON events",
    "CREATE TRIGGER events_notify AFTER INSERT OR UPDATE OR DELETE ON events "
    "FOR EACH ROW EXECUTE FUNCTION feed_notify('events', 'versioned')",
    "DROP TRIGGER events_notify_truncate ON events",
    "CREATE TRIGGER events_notify_truncate AFTER TRUNCATE ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION feed_notify('events', 'versioned')",
)

DOWNGRADE = (
    "DROP TRIGGER events_notify_truncate ON events",
    "CREATE TRIGGER events_notify_truncate AFTER TRUNCATE ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION feed_notify('events')",
    "DROP TRIGGER events_notify ON events",
    "CREATE TRIGGER events_notify AFTER INSERT OR UPDATE OR DELETE ON events "
    "FOR EACH ROW EXECUTE FUNCTION feed_notify('events')",
    FEED_NOTIFY_0002,
    FEED_RECORD_REMOVAL_0003,
    "DROP FUNCTION feed_removal_version()",
    "ALTER TRIGGER events_log_truncate ON events RENAME TO events_record_truncate",
    "ALTER TRIGGER events_log_removal ON events RENAME TO events_record_removal",
)


def upgrade():
    for statement in UPGRADE:
        op.execute(statement)


def downgrade():
    for statement in DOWNGRADE:
        op.execute(statement)
