"""Trimming the removal log: what the feed keeps only to answer cursors.

feed_removals (0003) grows with every DELETE and TRUNCATE. feed_trim_removals()
deletes its oldest final records, by age and by count, a batch at a time, and
records in feed_trimmed the highest position it removed: a cursor below that
position may have missed a removal and is told to start over. One caller trims
at a time (a transaction-level advisory lock; the others return at once), so
every app instance may call it. It is SECURITY DEFINER, like the trigger that
writes the log, so the app's role needs no grant. Its cost follows the batch
and the records kept, never the table: the age cut uses the recorded_at index,
and the count cut (a scan of the records kept) runs only when the log may hold
more than it should.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The advisory lock key: "feedtrim" in ASCII, as a bigint.
TRIM_LOCK = 0x6665656474726D

FEED_TRIM_REMOVALS = f"""
CREATE FUNCTION feed_trim_removals(keep_for interval, keep_count bigint, batch integer)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $feed_trim_removals$
DECLARE
    final_below xid8 := pg_snapshot_xmin(pg_current_snapshot());
    count_cut bigint;
    estimate real;
    trimmed bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock({TRIM_LOCK}) THEN
        RETURN 0;
    END IF;
    -- Past the count: the feed_seq of the newest record to go, found by a scan
    -- of keep_count index entries; skipped when the log cannot hold more (its
    -- range of sequence values is smaller) or the planner's estimate, once
    -- the table was analyzed, is well below.
    SELECT reltuples INTO estimate FROM pg_class WHERE oid = 'feed_removals'::regclass;
    IF (SELECT max(feed_seq) - min(feed_seq) + 1 FROM feed_removals) > keep_count
            AND (estimate < 0 OR estimate >= keep_count * 0.9) THEN
        SELECT feed_seq INTO count_cut FROM feed_removals
        ORDER BY feed_seq DESC OFFSET keep_count LIMIT 1;
    END IF;
    WITH gone AS (
        DELETE FROM feed_removals
        WHERE feed_seq IN (
            SELECT feed_seq FROM feed_removals
            WHERE feed_xid < final_below
              AND (recorded_at < now() - keep_for OR feed_seq <= count_cut)
            ORDER BY feed_seq
            LIMIT batch
        )
        RETURNING feed_xid, feed_seq
    ), highest AS (
        SELECT feed_xid, feed_seq FROM gone ORDER BY feed_xid DESC, feed_seq DESC
        LIMIT 1
    ), moved AS (
        UPDATE feed_trimmed AS t SET feed_xid = h.feed_xid, feed_seq = h.feed_seq,
            trimmed_at = now()
        FROM highest AS h
        WHERE (h.feed_xid, h.feed_seq) > (t.feed_xid, t.feed_seq)
    )
    SELECT count(*) INTO trimmed FROM gone;
    RETURN trimmed;
END;
$feed_trim_removals$
"""

UPGRADE = (
    """
    CREATE TABLE feed_trimmed (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        feed_xid xid8 NOT NULL DEFAULT '0',
        feed_seq bigint NOT NULL DEFAULT 0,
        trimmed_at timestamptz
    )
    """,
    "INSERT INTO feed_trimmed DEFAULT VALUES",
    "GRANT SELECT ON feed_trimmed TO PUBLIC",
    FEED_TRIM_REMOVALS,
)

DOWNGRADE = (
    "DROP FUNCTION feed_trim_removals(interval, bigint, integer)",
    "DROP TABLE feed_trimmed",
)


def upgrade():
    for statement in UPGRADE:
        op.execute(statement)


def downgrade():
    for statement in DOWNGRADE:
        op.execute(statement)
