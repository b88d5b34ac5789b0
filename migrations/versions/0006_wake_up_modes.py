"""Wake-up modes: NOTIFY (the default) or poll, switched per database.

feed_mode holds the database's mode, one row. feed_set_mode('poll') disables
every trigger that runs feed_notify(), so writers only record positions
(0003) and take no NOTIFY lock at commit; feed_set_mode('notify') enables
them again. In the same transaction it updates feed_mode and sends
{"mode": ...} on each of those triggers' channels: a listener in NOTIFY mode
hears the switch right after the last notification of a transaction that
committed before it, and a listener in poll mode reads feed_mode with every
poll. So every change is announced by exactly one of the two, and the
listener's version check drops the overlap. `flask feed mode` calls it.

ALTER TABLE ... DISABLE TRIGGER takes a SHARE ROW EXCLUSIVE lock on the table
until commit: the switch waits for writing transactions in flight, and new
writers wait behind it for that moment. The command sets a lock_timeout and
retries, so a long-open writer cannot queue every other writer behind it.
The function is SECURITY DEFINER (the migration's role owns the tables) and
only the migration's role may call it, unless granted.

events also gains feed_updated, set by the BEFORE UPDATE trigger that sets a
row's position: a row read back from the table (a poll, a confirm, a resume)
then says UPDATE or INSERT as its notification would. Adding the column with
a constant default rewrites nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FEED_SET_MODE = r"""
CREATE FUNCTION feed_set_mode(new_mode text) RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $feed_set_mode$
DECLARE
    previous text;
    notifier record;
BEGIN
    IF new_mode IS NULL OR new_mode NOT IN ('notify', 'poll') THEN
        RAISE EXCEPTION 'feed mode must be notify or poll, not %', new_mode
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One switch at a time: the next waits here for this one's commit.
    SELECT mode INTO previous FROM feed_mode FOR UPDATE;
    FOR notifier IN
        SELECT t.tgrelid::regclass AS tbl, t.tgname,
            coalesce(nullif(split_part(encode(t.tgargs, 'escape'), '\000', 1), ''),
                     c.relname) AS channel
        FROM pg_trigger AS t
        JOIN pg_proc AS p ON p.oid = t.tgfoid
        JOIN pg_class AS c ON c.oid = t.tgrelid
        WHERE p.proname = 'feed_notify' AND NOT t.tgisinternal
    LOOP
        EXECUTE format('ALTER TABLE %s %s TRIGGER %I', notifier.tbl,
            CASE new_mode WHEN 'poll' THEN 'DISABLE' ELSE 'ENABLE' END,
            notifier.tgname);
        PERFORM pg_notify(notifier.channel,
            json_build_object('mode', new_mode)::text);
    END LOOP;
    UPDATE feed_mode SET mode = new_mode, changed_at = now();
    RETURN previous;
END;
$feed_set_mode$
"""

FEED_POSITION = """
CREATE OR REPLACE FUNCTION feed_position() RETURNS trigger
LANGUAGE plpgsql
AS $feed_position$
BEGIN
    NEW.feed_xid := pg_current_xact_id();
    NEW.feed_seq := nextval('feed_change_seq');
    NEW.feed_updated := true;
    RETURN NEW;
END;
$feed_position$
"""

# 0003's, put back on downgrade.
FEED_POSITION_0003 = """
CREATE OR REPLACE FUNCTION feed_position() RETURNS trigger
LANGUAGE plpgsql
AS $feed_position$
BEGIN
    NEW.feed_xid := pg_current_xact_id();
    NEW.feed_seq := nextval('feed_change_seq');
    RETURN NEW;
END;
$feed_position$
"""

UPGRADE = (
    """
    CREATE TABLE feed_mode (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        mode text NOT NULL DEFAULT 'notify' CHECK (mode IN ('notify', 'poll')),
        changed_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "INSERT INTO feed_mode DEFAULT VALUES",
    "GRANT SELECT ON feed_mode TO PUBLIC",
    FEED_SET_MODE,
    "REVOKE ALL ON FUNCTION feed_set_mode(text) FROM PUBLIC",
    "ALTER TABLE events ADD COLUMN feed_updated boolean NOT NULL DEFAULT false",
    FEED_POSITION,
)

DOWNGRADE = (
    FEED_POSITION_0003,
    "ALTER TABLE events DROP COLUMN feed_updated",
    # Back to NOTIFY: earlier revisions know no other mode.
    "SELECT feed_set_mode('notify')",
    "DROP FUNCTION feed_set_mode(text)",
    "DROP TABLE feed_mode",
)


def upgrade():
    for statement in UPGRADE:
        op.execute(statement)


def downgrade():
    for statement in DOWNGRADE:
        op.execute(statement)
