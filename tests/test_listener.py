"""The listener alone: a real PostgreSQL, a plain callback, no Flask."""

import threading

import psycopg2
import pytest

from feed.database import queries
from feed.database.listener import Listener
from support.database import insert_row, insert_rows
from support.waiting import wait_for


class Recorder:
    """A plain on_batch callback that keeps every batch."""

    def __init__(self):
        self.batches = []
        self.lock = threading.Lock()

    def __call__(self, batch):
        with self.lock:
            self.batches.append(batch)

    def notifications(self):
        with self.lock:
            return [n for batch in self.batches for n in batch]


@pytest.fixture
def recorder():
    """A fresh Recorder."""
    return Recorder()


@pytest.fixture
def start_listener():
    """Factory: start_listener(url, on_batch, **options) -> a started Listener.

    Every listener it started is stopped after the test, passed or failed.
    """
    started = []

    def start(url, on_batch, timeout=10, **options):
        started.append(Listener(url, "events", on_batch=on_batch, **options))
        started[-1].start(timeout=timeout)
        return started[-1]

    yield start
    for listener in started:
        if listener.status()["state"] != "stopped":  # a test may have stopped it
            listener.stop()


@pytest.fixture
def listener(database_url, writer, recorder, start_listener):
    """A listening Listener on the test database that records into `recorder`."""
    listener = start_listener(database_url, recorder, idle_check=0.2)
    assert listener.status()["state"] == "listening"
    return listener


def test_listener_delivers_each_op_in_order(listener, recorder, writer):
    new_id = insert_row(writer, "hello")
    with writer.cursor() as cursor:
        cursor.execute("UPDATE events SET event = 'changed' WHERE id = %s", (new_id,))
        cursor.execute("DELETE FROM events WHERE id = %s", (new_id,))
        cursor.execute("TRUNCATE events")
    wait_for(lambda: len(recorder.notifications()) == 4, message="four notifications")
    got = recorder.notifications()
    assert [n["op"] for n in got] == ["INSERT", "UPDATE", "DELETE", "TRUNCATE"]
    assert got[0]["row"]["event"] == "hello"
    assert got[1]["row"]["event"] == "changed"
    assert got[2]["id"] == new_id


def test_listener_reads_back_a_row_too_large_for_the_payload(
    listener, recorder, writer
):
    text = "🎉" * 5000  # 20,000 bytes
    new_id = insert_row(writer, text)
    wait_for(lambda: recorder.notifications(), message="the large row")
    (got,) = recorder.notifications()
    assert got["id"] == new_id
    assert got["row"]["event"] == text


def test_listener_skips_a_large_row_deleted_before_read_back(
    database_url, writer, recorder, start_listener
):
    # Commit the large insert and its delete before the listener drains either.
    listener = start_listener(database_url, recorder)
    with writer.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute(
            "INSERT INTO events (event) VALUES (repeat('x', 9000)) RETURNING id"
        )
        (gone,) = cursor.fetchone()
        cursor.execute("DELETE FROM events WHERE id = %s", (gone,))
        cursor.execute("COMMIT")
    wait_for(lambda: recorder.notifications(), message="the delete")
    listener.stop()
    assert [(n["op"], n["id"]) for n in recorder.notifications()] == [("DELETE", gone)]


def test_listener_batches_a_burst_and_keeps_commit_order(listener, recorder, writer):
    insert_rows(writer, 2000)
    wait_for(lambda: len(recorder.notifications()) == 2000, message="2000 rows")
    ids = [n["id"] for n in recorder.notifications()]
    assert ids == sorted(ids) and len(set(ids)) == 2000
    assert len(recorder.batches) < 200


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[1, 2]",
        '{"op": "INSERT"}',
        '{"op": "DROP", "table": "events"}',
        '{"op": "INSERT", "table": "events", "id": "x"}',
        '{"op": "INSERT", "table": "no_such_table", "id": 1}',
    ],
)
def test_listener_survives_a_bad_notification(listener, recorder, writer, payload):
    with writer.cursor() as cursor:
        cursor.execute("SELECT pg_notify('events', %s)", (payload,))
    new_id = insert_row(writer, "after the bad one")
    wait_for(lambda: recorder.notifications(), message="the good row")
    assert [n["id"] for n in recorder.notifications()] == [new_id]
    assert listener.status()["state"] == "listening"


def test_listener_survives_a_failing_callback(database_url, writer, start_listener):
    seen = []

    def flaky(batch):
        seen.extend(batch)
        if len(seen) == 1:
            raise RuntimeError("callback bug")

    start_listener(database_url, flaky)
    insert_row(writer, "first")
    wait_for(lambda: len(seen) == 1, message="first row")
    insert_row(writer, "second")
    wait_for(lambda: len(seen) == 2, message="second row after the failure")


def test_listener_health_check_does_not_strand_notifications(
    database_url, writer, recorder, start_listener
):
    # A health check every 5 ms: notifications keep arriving while SELECT 1 runs,
    # which moves them into conn.notifies where select() would never see them.
    start_listener(database_url, recorder, idle_check=0.005)
    for number in range(300):
        insert_row(writer, f"row {number}")
    wait_for(lambda: len(recorder.notifications()) == 300, message="all 300 rows")


def test_listener_stops_cleanly(database_url, recorder, start_listener):
    listener = start_listener(database_url, recorder)
    assert listener.status()["state"] == "listening"
    listener.stop(timeout=5)
    assert not listener._thread.is_alive()
    assert listener.status()["state"] == "stopped"


def test_listener_reports_when_the_database_is_unreachable(recorder, start_listener):
    listener = start_listener(
        "postgresql://nobody@127.0.0.1:1/none", recorder, timeout=0.5
    )
    assert listener.status()["state"] in ("connecting", "reconnecting")


def test_listener_drops_other_tables_before_reading_any_row_back(
    database_url, writer, recorder, start_listener, caplog
):
    start_listener(database_url, recorder, tables=("events",))
    other = '{"op": "INSERT", "table": "other_table", "id": 1}'  # row left out
    with writer.cursor() as cursor, caplog.at_level("WARNING"):
        cursor.execute("SELECT pg_notify('events', %s)", (other,))
        new_id = insert_row(writer, "ours")
        wait_for(lambda: recorder.notifications(), message="our row")
    assert [n["table"] for n in recorder.notifications()] == ["events"]
    assert recorder.notifications()[0]["id"] == new_id
    assert "cannot read back" not in caplog.text  # other_table was never queried


@pytest.mark.parametrize("with_rows", [False, True], ids=["confirm", "poll"])
def test_the_log_read_uses_the_position_index_whatever_the_table_holds(
    writer, database_url, with_rows
):
    """The listener's read (confirm and poll) costs what changed, not the table:
    with 50,000 rows and transactions in progress, no sequential scan of the
    table, and a plan cheap enough that PostgreSQL never starts JIT for it."""
    with writer.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events (event) SELECT 'row ' || i "
            "FROM generate_series(1, 50000) AS i"
        )
        cursor.execute("ANALYZE events")
    opened = [psycopg2.connect(database_url) for _ in range(3)]
    try:
        for connection in opened:
            connection.cursor().execute("INSERT INTO events (event) VALUES ('open')")
        insert_row(writer, "committed after them")
        with writer.cursor() as cursor:
            cursor.execute(queries.CURRENT_SNAPSHOT)
            (snapshot,) = cursor.fetchone()
            parameters = queries.since_parameters(snapshot, ["events"])
            assert len(parameters["running"]) >= 2
            statement = queries.visible_since(("events",), with_rows=with_rows)
            cursor.execute(
                b"EXPLAIN (FORMAT JSON) " + cursor.mogrify(statement, parameters)
            )
            (plan,) = cursor.fetchone()[0]
            cursor.execute("SHOW jit_above_cost")
            (jit_above_cost,) = cursor.fetchone()
    finally:
        for connection in opened:
            connection.close()

    def nodes(node):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    scans = [(n["Node Type"], n.get("Relation Name")) for n in nodes(plan["Plan"])]
    assert ("Seq Scan", "events") not in scans, scans
    assert plan["Plan"]["Total Cost"] < float(jit_above_cost), plan["Plan"]
