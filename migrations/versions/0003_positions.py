"""Positions: every change to events is recorded, by the database, with a position.

A position is (feed_xid, feed_seq): the writing transaction's id (xid8) and a
value of one sequence shared by every fed table. A row carries its latest
change's position in two columns: column defaults fill them on INSERT (no
trigger) and a BEFORE UPDATE trigger on UPDATE. What leaves no row behind goes
to feed_removals: a DELETE (the table and the id) and a TRUNCATE (the table).
feed_epoch holds an id made here, which cursors carry: a cursor from another
database, or from before the schema was made again, is told to start over.
docs/RESUME.md explains why a reader that trusts only positions below the
snapshot's xmin skips nothing. A writer needs no grant for any of it: the
sequence is usable by all, and feed_removals is written by a SECURITY DEFINER
function (the migration's role), so the feed never makes a write fail. Every
role may read feed_removals (table names, ids and times of removals) and
feed_epoch, so the app's role needs no new grant to answer cursors.

Rows already in the table get positions as the columns are added (the
migration's transaction id, then the sequence in table order).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FEED_POSITION = """
CREATE FUNCTION feed_position() RETURNS trigger
LANGUAGE plpgsql
AS $feed_position$
BEGIN
    NEW.feed_xid := pg_current_xact_id();
    NEW.feed_seq := nextval('feed_change_seq');
    RETURN NEW;
END;
$feed_position$
"""

FEED_RECORD_REMOVAL = """
CREATE FUNCTION feed_record_removal() RETURNS trigger
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

UPGRADE = (
    "CREATE SEQUENCE feed_change_seq",
    # Every writer takes positions from it (a column default runs with the
    # writer's rights): a role that may write events needs nothing more.
    "GRANT USAGE ON SEQUENCE feed_change_seq TO PUBLIC",
    "ALTER TABLE events "
    "ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
    "ADD COLUMN feed_seq bigint NOT NULL DEFAULT nextval('feed_change_seq')",
    "CREATE INDEX events_feed_position ON events (feed_xid, feed_seq)",
    FEED_POSITION,
    "CREATE TRIGGER events_position BEFORE UPDATE ON events "
    "FOR EACH ROW EXECUTE FUNCTION feed_position()",
    """
    CREATE TABLE feed_removals (
        feed_seq bigint PRIMARY KEY DEFAULT nextval('feed_change_seq'),
        feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        table_name text NOT NULL,
        op text NOT NULL CHECK (op IN ('DELETE', 'TRUNCATE')),
        row_id bigint,
        recorded_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX feed_removals_position ON feed_removals (feed_xid, feed_seq)",
    "CREATE INDEX feed_removals_recorded_at ON feed_removals (recorded_at)",
    FEED_RECORD_REMOVAL,
    "CREATE TRIGGER events_record_removal AFTER DELETE ON events "
    "FOR EACH ROW EXECUTE FUNCTION feed_record_removal()",
    "CREATE TRIGGER events_record_truncate AFTER TRUNCATE ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION feed_record_removal()",
    """
    CREATE TABLE feed_epoch (
        epoch uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "INSERT INTO feed_epoch DEFAULT VALUES",
    # A role that may read events may resume: no grant to add for the app.
    "GRANT SELECT ON feed_removals, feed_epoch TO PUBLIC",
)

DOWNGRADE = (
    "DROP TABLE feed_epoch",
    "DROP TRIGGER events_record_truncate ON events",
    "DROP TRIGGER events_record_removal ON events",
    "DROP FUNCTION feed_record_removal()",
    "DROP TABLE feed_removals",
    "DROP TRIGGER events_position ON events",
    "DROP FUNCTION feed_position()",
    "ALTER TABLE events DROP COLUMN feed_seq, DROP COLUMN feed_xid",
    "DROP SEQUENCE feed_change_seq",
)


def upgrade():
    for statement in UPGRADE:
        op.execute(statement)


def downgrade():
    for statement in DOWNGRADE:
        op.execute(statement)
