"""Resuming by cursor over a real Socket.IO connection (docs/RESUME.md).

The server side of `sync {"cursor": c}`: what a client that held c has not
seen, as current rows with versions, and `reset` for a cursor it cannot use.
What a cursor resumes is recorded by writers in each wake-up mode (poll mode
disables only the NOTIFY triggers): those tests run in both; the answers to
cursors it cannot use and to history do not depend on it.
"""

import psycopg2
import pytest

from support.clients import resume as paged_resume
from support.database import both_wake_modes, insert_row


@pytest.fixture
def feed_client(server, sio_client):
    """A client of the in-process server."""
    return sio_client(server.url)


def resume(feed_client, cursor, limit=1000):
    return paged_resume(feed_client, cursor, limit)


def ops(rows):
    return [(row["op"], row["id"], row["event"]) for row in rows]


@both_wake_modes
def test_history_then_resume_returns_exactly_what_changed(feed_client, writer):
    kept = insert_row(writer, "kept")
    history = feed_client.call("sync", {"after": None})
    assert [row["id"] for row in history["events"]] == [kept]
    assert isinstance(history["events"][0]["version"], int)
    added = insert_row(writer, "added")
    with writer.cursor() as cursor:
        cursor.execute("UPDATE events SET event = 'kept!' WHERE id = %s", (kept,))
    rows, cursor = resume(feed_client, history["cursor"])
    assert ops(rows) == [("INSERT", added, "added"), ("UPDATE", kept, "kept!")]
    assert resume(feed_client, cursor)[0] == []


@both_wake_modes
def test_a_late_commit_reaches_a_client_resuming_by_cursor(
    feed_client, writer, database_url
):
    late = psycopg2.connect(database_url)
    try:
        with late.cursor() as cursor:
            cursor.execute("INSERT INTO events (event) VALUES ('late') RETURNING id")
            (late_id,) = cursor.fetchone()
        early_ids = [insert_row(writer, "early") for _ in range(2)]
        cursor_text = feed_client.call("sync", {"after": None})["cursor"]
        # Pages of one row: a cursor taken from a row, not from the watermark.
        first, cursor_text = resume(feed_client, cursor_text, limit=1)
        late.commit()
    finally:
        late.close()
    second, _ = resume(feed_client, cursor_text, limit=1)
    got = [row["id"] for row in first + second]
    assert sorted(set(got)) == sorted([late_id, *early_ids])


@both_wake_modes
def test_deletes_and_a_truncate_come_back_as_such(feed_client, writer):
    gone = insert_row(writer, "gone")
    start = feed_client.call("sync", {"after": None})["cursor"]
    with writer.cursor() as cursor:
        cursor.execute("DELETE FROM events WHERE id = %s", (gone,))
        cursor.execute("TRUNCATE events")
    rows, _ = resume(feed_client, start)
    assert ops(rows) == [("DELETE", gone, None), ("TRUNCATE", None, None)]


@both_wake_modes
def test_pages_of_a_resume_carry_on_from_each_other(feed_client, writer):
    start = feed_client.call("sync", {"after": None})["cursor"]
    with writer.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events (event) SELECT 'r' || i FROM generate_series(1, 30) i"
        )
    rows, _ = resume(feed_client, start, limit=7)
    assert [row["event"] for row in rows] == [f"r{i}" for i in range(1, 31)]


@pytest.mark.parametrize("cursor", ["garbage", "", 42, ["a"], "0" * 16 + ".1.1"])
def test_a_cursor_the_feed_cannot_use_gets_reset_with_a_sentence(feed_client, cursor):
    answer = feed_client.call("sync", {"cursor": cursor})
    assert answer["ok"] is True and answer["reset"] is True
    assert "start over" in answer["message"] or "not one" in answer["message"]
    assert "after null" in answer["message"]
    assert feed_client.call("sync", {"after": None})["ok"] is True


def test_a_cursor_from_before_the_schema_was_made_again_gets_reset(feed_client, writer):
    cursor_text = feed_client.call("sync", {"after": None})["cursor"]
    with writer.cursor() as cursor:
        cursor.execute("UPDATE feed_epoch SET epoch = gen_random_uuid()")
    answer = feed_client.call("sync", {"cursor": cursor_text})
    assert answer["reset"] is True and "another database" in answer["message"]


def test_before_pages_back_through_history(feed_client, writer):
    with writer.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events (event) SELECT 'h' || i FROM generate_series(1, 12) i"
        )
    newest = feed_client.call("sync", {"after": None, "limit": 5})
    assert newest["more"] is True
    older = feed_client.call("sync", {"before": newest["events"][0]["id"], "limit": 5})
    oldest = feed_client.call("sync", {"before": older["events"][0]["id"], "limit": 5})
    texts = [row["event"] for a in (oldest, older, newest) for row in a["events"]]
    assert texts == [f"h{i}" for i in range(1, 13)]
    assert older["more"] is True and oldest["more"] is False
