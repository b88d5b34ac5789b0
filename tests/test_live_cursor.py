"""The live stream's cursor, over real sockets: confirmed against the log,
never ahead of what went out, never holding live rows back (docs/RESUME.md).

The live stream's tests run in each wake-up mode. In notify mode rows go out
as notified and a confirm moves the cursor past them later, in a message of
its own; in poll mode each read's rows carry that read's watermark. The
trimming tests do not involve the listener and run in one.
"""

import psycopg2
import pytest

from support.clients import resume
from support.database import both_wake_modes, insert_row
from support.waiting import wait_for

QUICK = {"FEED_CONFIRM_INTERVAL": 0.1, "FEED_LISTENER_IDLE_CHECK": 0.5}


@pytest.fixture
def served(serve_app):
    return serve_app(**QUICK)


@pytest.fixture
def feed_client(served, sio_client):
    feed_client = sio_client(served.url)
    feed_client.call("sync", {"after": None})
    return feed_client


@pytest.fixture
def open_transaction(database_url):
    """A connection whose transaction stays open while others commit."""
    connection = psycopg2.connect(database_url)
    yield connection
    connection.rollback()
    connection.close()


def cursor_xid(cursor):
    return int(cursor.split(".")[1])


def insert_returning_xid(writer, text):
    """INSERT one row; the xid of its transaction."""
    with writer.cursor() as sql:
        sql.execute(
            "INSERT INTO events (event) VALUES (%s) RETURNING feed_xid::text", (text,)
        )
        return int(sql.fetchone()[0])


def xid_of(connection):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text")
        return int(cursor.fetchone()[0])


@both_wake_modes
def test_every_events_message_carries_a_cursor_that_covers_what_went_out(
    feed_client, writer, wake_mode
):
    xids = [insert_returning_xid(writer, f"row {n}") for n in range(3)]
    wait_for(lambda: len(feed_client.rows()) == 3, message="three live rows")
    ids = [row["id"] for row in feed_client.rows()]
    assert all(isinstance(c, str) and c.count(".") == 2 for c in feed_client.cursors)
    # The cursor moves past the rows (notify mode: once the log is checked),
    # and resuming from it returns nothing, since nothing else changed.
    wait_for(
        lambda: cursor_xid(feed_client.cursors[-1]) > max(xids),
        message="a cursor past the rows",
    )
    index = next(
        n for n, c in enumerate(feed_client.cursors) if cursor_xid(c) > max(xids)
    )
    cursor = feed_client.cursors[index]
    if wake_mode == "notify":
        assert feed_client.messages[index] == []  # the confirm's own message
    assert resume(feed_client, cursor)[0] == []
    with writer.cursor() as sql:
        sql.execute("UPDATE events SET event = 'edited' WHERE id = %s", (ids[0],))
        sql.execute("DELETE FROM events WHERE id = %s", (ids[1],))
    rows, _ = resume(feed_client, cursor)
    assert [(row["op"], row["id"]) for row in rows] == [
        ("UPDATE", ids[0]),
        ("DELETE", ids[1]),
    ]


# Notify mode only: a notification that never came (poll mode sends none).
def test_a_change_whose_notification_never_came_is_sent_from_the_log(
    feed_client, served, writer
):
    with writer.cursor() as sql:  # one transaction that sends no NOTIFY
        sql.execute(
            "BEGIN; ALTER TABLE events DISABLE TRIGGER events_notify; "
            "INSERT INTO events (event) VALUES ('unannounced'); "
            "ALTER TABLE events ENABLE TRIGGER events_notify; COMMIT"
        )
    wait_for(lambda: feed_client.rows(), message="the row, from the log")
    (row,) = feed_client.rows()
    assert (row["op"], row["event"]) == ("INSERT", "unannounced")
    assert isinstance(row["version"], int)
    metrics = served.app.extensions["feed"].metrics
    assert metrics.recovered._value.get() == 1
    insert_row(writer, "announced")  # goes out once: by NOTIFY, not the log too
    wait_for(lambda: len(feed_client.rows()) == 2, message="the second row")
    wait_for(lambda: [] in feed_client.messages, message="the log checked again")
    assert [r["event"] for r in feed_client.rows()] == ["unannounced", "announced"]
    assert metrics.recovered._value.get() == 1


@both_wake_modes
def test_a_long_open_transaction_holds_the_cursor_not_live_rows(
    feed_client, writer, open_transaction, wake_mode
):
    with open_transaction.cursor() as sql:
        sql.execute("INSERT INTO events (event) VALUES ('late') RETURNING id")
        (late_id,) = sql.fetchone()
    held_at = xid_of(open_transaction)
    for n in range(3):
        insert_row(writer, f"meanwhile {n}")
        wait_for(lambda n=n: len(feed_client.rows()) == n + 1, 3, "a live row")
    if wake_mode == "notify":  # in poll mode the rows' own cursors are confirmed
        wait_for(lambda: [] in feed_client.messages, message="a confirmed cursor")
    assert all(cursor_xid(c) <= held_at for c in feed_client.cursors)
    open_transaction.commit()
    wait_for(lambda: late_id in feed_client.ids(), 3, "the late row, live")
    wait_for(
        lambda: cursor_xid(feed_client.cursors[-1]) > held_at,
        message="the cursor past the late transaction",
    )


@both_wake_modes
def test_a_client_that_comes_after_a_row_went_out_live_still_gets_it(
    served, sio_client, writer, open_transaction
):
    first = sio_client(served.url)
    start = first.call("sync", {"after": None})["cursor"]
    with open_transaction.cursor() as sql:  # holds the watermark back
        sql.execute("INSERT INTO events (event) VALUES ('late')")
    new_id = insert_row(writer, "went out live")
    wait_for(lambda: new_id in first.ids(), message="the live row")
    second = sio_client(served.url)  # missed it live
    rows, cursor = resume(second, start)
    assert [row["id"] for row in rows] == [new_id]
    assert cursor_xid(cursor) <= xid_of(open_transaction)


def trim(writer, keep_seconds=0, keep_count=0):
    with writer.cursor() as sql:
        sql.execute(
            "SELECT feed_trim_removals(make_interval(secs => %s), %s, 1000)",
            (keep_seconds, keep_count),
        )
        return sql.fetchone()[0]


def test_a_cursor_from_before_what_was_trimmed_gets_reset(feed_client, writer):
    row_id = insert_row(writer, "to delete")
    old = feed_client.call("sync", {"after": None})["cursor"]
    with writer.cursor() as sql:
        sql.execute("DELETE FROM events WHERE id = %s", (row_id,))
    assert trim(writer) == 1
    answer = feed_client.call("sync", {"cursor": old})
    assert answer["reset"] is True and "no longer keeps" in answer["message"]
    fresh = feed_client.call("sync", {"after": None})["cursor"]
    assert resume(feed_client, fresh)[0] == []


def test_trimming_keeps_the_newest_by_count_and_by_age(writer):
    ids = [insert_row(writer, f"row {n}") for n in range(5)]
    with writer.cursor() as sql:
        for row_id in ids:
            sql.execute("DELETE FROM events WHERE id = %s", (row_id,))
    assert trim(writer, keep_seconds=3600, keep_count=2) == 3
    assert trim(writer, keep_seconds=3600, keep_count=2) == 0
    with writer.cursor() as sql:
        sql.execute("SELECT row_id FROM feed_removals ORDER BY feed_seq")
        assert [row_id for (row_id,) in sql.fetchall()] == ids[-2:]
    assert trim(writer, keep_seconds=0, keep_count=100) == 2  # by age


def test_one_caller_trims_at_a_time(writer, database_url):
    row_id = insert_row(writer, "to delete")
    with writer.cursor() as sql:
        sql.execute("DELETE FROM events WHERE id = %s", (row_id,))
    other = psycopg2.connect(database_url)
    try:
        with other.cursor() as sql:  # another instance, mid-trim
            sql.execute("SELECT pg_advisory_xact_lock(%s)", (0x6665656474726D,))
            assert trim(writer) == 0
    finally:
        other.rollback()
        other.close()
    assert trim(writer) == 1


def test_each_instance_trims_on_its_own_interval(serve_app, writer):
    served = serve_app(FEED_TRIM_INTERVAL=0.2, FEED_REMOVALS_KEEP_COUNT=1, **QUICK)
    with writer.cursor() as sql:
        sql.execute("INSERT INTO events (event) SELECT 'x' FROM generate_series(1, 4)")
        sql.execute("DELETE FROM events")

    def kept():
        with writer.cursor() as sql:
            sql.execute("SELECT count(*) FROM feed_removals")
            return sql.fetchone()[0]

    wait_for(lambda: kept() == 1, message="the log trimmed to one record")
    metrics = served.app.extensions["feed"].metrics
    assert metrics.trimmed._value.get() == 3
