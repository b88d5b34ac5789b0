"""feed.client: the Python client, against the real server over real sockets.

It holds exactly the table, through restarts (changes made while the server was
down), resets, resyncs and syncs that get no answer; it never applies a change
twice. Versions and cursors are the wire contract's client algorithm. Resuming
through restarts and outages, and live cursors, run in each wake-up mode (in
poll mode every live cursor is at once past what the client has seen).
"""

import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time

import psycopg2
import pytest
from socketio import Client as PlainSocketIOClient

from feed.client import (
    CHECKED_VERSIONS,
    ConnectError,
    Feed,
    FeedError,
    HeldRows,
    PromptlyClosingWebSocket,
)
from feed.extensions import socketio
from feed.service.process_feed import NAMESPACE
from support.clients import RecordedFeed
from support.database import (
    both_wake_modes,
    create_database,
    drop_database,
    insert_row,
    insert_rows,
    migrate_to_head,
)
from support.processes import ROOT
from support.waiting import wait_for


def table_of(writer):
    """{id: event} of the whole events table."""
    with writer.cursor() as cursor:
        cursor.execute("SELECT id, event FROM events ORDER BY id")
        return dict(cursor.fetchall())


def execute(writer, *statements):
    with writer.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def free_port():
    with socket.create_server(("127.0.0.1", 0)) as listening:
        return listening.getsockname()[1]


def converges(feed_client, writer, timeout=20, message="the client holds the table"):
    """Wait until the client holds exactly the table and is caught up."""
    holds_exactly(feed_client, table_of(writer), timeout, message)


def holds_exactly(feed_client, table, timeout=20, message="the client holds the table"):
    """Wait until the client holds exactly `table`; it applied no change twice."""
    wait_for(lambda: feed_client.synced and feed_client.holds(table), timeout, message)
    assert feed_client.applied_twice() == []


@pytest.fixture
def restartable(app_process):
    """Factory: restartable() -> python app.py on a port that its restarts keep."""
    port = str(free_port())
    return lambda **env: app_process(PORT=port, **env)


def test_a_client_holds_the_whole_table_in_pages_and_follows_it(
    server, writer, resuming_client
):
    insert_rows(writer, 25, "before")
    feed_client = resuming_client(server.url, page_limit=7)
    assert feed_client.wait_synced(10)
    assert feed_client.holds(table_of(writer))
    assert feed_client.status == {"feed": "live"}
    first = min(feed_client.rows())
    execute(
        writer,
        "INSERT INTO events (event) VALUES ('live')",
        f"UPDATE events SET event = 'edited' WHERE id = {first}",
        f"DELETE FROM events WHERE id = {first + 1}",
    )
    converges(feed_client, writer)
    assert feed_client.cursor is not None and feed_client.resets == []


CHANGES_WHILE_DOWN = {
    "insert": ["INSERT INTO events (event) VALUES ('while down')"],
    "update": ["UPDATE events SET event = 'edited while down' WHERE id = {newest}"],
    "delete": ["DELETE FROM events WHERE id = {newest}"],
    "update of an old row": [
        "UPDATE events SET event = 'old row edited' WHERE id = {oldest}"
    ],
    "truncate then inserts": [
        "TRUNCATE events",
        "INSERT INTO events (event) VALUES ('after the truncate 1')",
        "INSERT INTO events (event) VALUES ('after the truncate 2')",
    ],
}


@both_wake_modes
@pytest.mark.parametrize("changes", CHANGES_WHILE_DOWN.values(), ids=CHANGES_WHILE_DOWN)
def test_a_client_resumes_through_a_restart_with_changes_made_while_it_was_down(
    restartable, writer, resuming_client, changes
):
    insert_rows(writer, 1500, "old")  # more than one page, past any id lookback
    app = restartable()
    feed_client = resuming_client(app.url)
    assert feed_client.wait_synced(20)
    oldest, newest = min(feed_client.rows()), max(feed_client.rows())
    app.stop()
    wait_for(lambda: not feed_client.synced, message="the client sees the stop")
    execute(writer, *(c.format(oldest=oldest, newest=newest) for c in changes))
    restartable()
    converges(feed_client, writer, message="the changes made while it was down")
    assert feed_client.resets == []
    assert len(feed_client.applied) == 1500 + len(changes)


@both_wake_modes
def test_a_client_resumes_after_the_server_is_killed(
    restartable, writer, resuming_client
):
    app = restartable()
    feed_client = resuming_client(app.url)
    insert_rows(writer, 30)
    converges(feed_client, writer)
    app.kill()
    first = min(feed_client.rows())
    execute(
        writer,
        f"UPDATE events SET event = 'edited' WHERE id = {first}",
        f"DELETE FROM events WHERE id = {first + 1}",
        "INSERT INTO events (event) VALUES ('while killed')",
    )
    restartable()
    converges(feed_client, writer)
    assert feed_client.resets == []


@pytest.mark.parametrize("cursor", ["garbage", "0123456789abcdef.1.1"])
def test_a_cursor_the_feed_cannot_use_makes_the_client_start_over(
    server, writer, resuming_client, cursor
):
    insert_rows(writer, 5)
    feed_client = resuming_client(server.url, cursor=cursor)
    converges(feed_client, writer)
    assert feed_client.last_reset and "after null" in feed_client.last_reset
    assert feed_client.resets == [feed_client.last_reset]


def test_a_server_on_another_database_makes_the_client_start_over(
    postgres, restartable, writer, resuming_client
):
    insert_rows(writer, 5, "first database")
    app = restartable()
    feed_client = resuming_client(app.url)
    converges(feed_client, writer)
    app.stop()
    name = "pgfeed_test_client_other"
    other_url = create_database(postgres, name)
    try:
        migrate_to_head(other_url)
        other = psycopg2.connect(other_url)
        other.autocommit = True
        insert_row(other, "second database")
        restartable(database_url=other_url)
        converges(feed_client, other, message="the other database's table")
        other.close()
    finally:
        drop_database(postgres, name)
    assert "another database" in feed_client.last_reset
    assert len(feed_client.resets) == 1


class DroppingFeed(RecordedFeed):
    """A Feed that loses live messages while `dropping` is set, as a client does
    whose backlog the server cut (the server then sends `resync`)."""

    def __init__(self, url, **options):
        self.dropping = False
        self.dropped_rows = 0
        self.live_rows = 0  # in every live message, dropped or not
        super().__init__(url, **options)

    def _on_events(self, rows, cursor=None):
        self.live_rows += len(rows)
        if self.dropping:
            self.dropped_rows += len(rows)
        else:
            super()._on_events(rows, cursor)


def test_a_resync_resumes_from_the_cursor_with_what_was_lost(server, writer):
    feed_client = DroppingFeed(server.url)
    try:
        insert_rows(writer, 10)
        converges(feed_client, writer)
        # The first sync may have brought them before their live message came:
        # that message must not count as lost.
        wait_for(lambda: feed_client.live_rows == 10, message="the rows, live")
        feed_client.dropping = True
        insert_rows(writer, 10, "lost")
        wait_for(lambda: feed_client.dropped_rows == 10, message="the rows lost")
        feed_client.dropping = False
        assert len(feed_client.rows()) == 10
        socketio.emit("resync", {}, namespace=NAMESPACE)
        converges(feed_client, writer, message="the rows lost, by the resync")
        assert feed_client.resyncs == 1 and feed_client.resets == []
    finally:
        feed_client.close()


def test_upstream_python_socketio_handles_messages_out_of_order(server, writer):
    # python-engineio runs each message's handler in a new thread: while the
    # first message's handler is held up, the second one's runs and ends first.
    handled, first_arrived, later_handled = [], threading.Event(), threading.Event()
    plain = PlainSocketIOClient(
        websocket_extra_options={"class_": PromptlyClosingWebSocket}
    )

    @plain.on("events", namespace=NAMESPACE)
    def on_events(rows, cursor=None):
        if rows and not first_arrived.is_set():
            first_arrived.set()
            later_handled.wait(2)  # in order, nothing later can be handled first
        handled.extend(row["id"] for row in rows)
        if rows:
            later_handled.set()

    plain.connect(
        server.url, namespaces=[NAMESPACE], transports=["websocket"], wait_timeout=10
    )
    try:
        first = insert_row(writer, "first")
        assert first_arrived.wait(10)
        second = insert_row(writer, "second")
        wait_for(lambda: len(handled) == 2, message="both messages handled")
    finally:
        plain.disconnect()
    assert handled == [second, first]


class HoldingFeed(RecordedFeed):
    """A Feed whose first live message with rows is held up until a later one is
    handled (at most 2 s), as test_upstream_..._out_of_order holds its handler."""

    def __init__(self, url, **options):
        self.first_arrived, self.later_handled = threading.Event(), threading.Event()
        super().__init__(url, **options)

    def _on_events(self, rows, cursor=None):
        if rows and not self.first_arrived.is_set():
            self.first_arrived.set()
            self.later_handled.wait(2)
        super()._on_events(rows, cursor)
        if rows:
            self.later_handled.set()


def test_the_client_handles_messages_in_arrival_order(server, writer):
    feed_client = HoldingFeed(server.url)
    try:
        assert feed_client.in_order and feed_client.wait_synced(10)
        first = insert_row(writer, "first")
        assert feed_client.first_arrived.wait(10)
        second = insert_row(writer, "second")
        wait_for(lambda: len(feed_client.applied) == 2, message="both rows applied")
    finally:
        feed_client.close()
    assert feed_client.applied_ids() == [first, second]


class LateResyncFeed(DroppingFeed):
    """A DroppingFeed that handles a resync only once the `events` sent after it
    (the row "after") is applied: out of order, as python-engineio's threads may."""

    def __init__(self, url, **options):
        self.dropped_cursors = []
        self.resync_late = False
        super().__init__(url, **options)

    def _on_events(self, rows, cursor=None):
        if self.dropping:
            self.dropped_cursors.append(cursor)
        super()._on_events(rows, cursor)

    def _on_resync(self, data=None):
        self.resync_late = self.wait_until(
            lambda feed: "after" in feed.texts().values(), timeout=10
        )
        super()._on_resync(data)


def test_without_the_reach_a_late_resync_still_resumes_from_an_older_cursor(
    server, writer, monkeypatch, caplog
):
    monkeypatch.setitem(CHECKED_VERSIONS, "python-engineio", "0.0.0")
    feed_client = LateResyncFeed(server.url)
    try:
        assert not feed_client.in_order
        assert "checked on python-engineio 0.0.0" in caplog.text
        insert_rows(writer, 5)
        converges(feed_client, writer)
        wait_for(lambda: feed_client.live_rows == 5, message="the rows, live")
        feed_client.dropping = True
        lost = insert_returning_xid(writer, "lost")
        wait_for(
            lambda: (
                feed_client.dropped_rows == 1
                and any(c and cursor_xid(c) > lost for c in feed_client.dropped_cursors)
            ),
            message="the live cursor to pass the row lost",
        )
        feed_client.dropping = False
        socketio.emit("resync", {}, namespace=NAMESPACE)
        insert_row(writer, "after")
        converges(feed_client, writer, message="the row lost, by the resync")
        assert feed_client.resync_late and feed_client.resets == []
    finally:
        feed_client.close()


@pytest.mark.parametrize(
    ("cursor", "kept"),
    [("garbage", True), ("0123456789abcdef.1.1", False)],
    ids=["same database", "another database"],
)
def test_a_reset_keeps_tombstones_unless_the_database_changed(
    server, writer, resuming_client, cursor, kept
):
    insert_rows(writer, 2)
    feed_client = resuming_client(server.url)
    converges(feed_client, writer)
    gone = min(feed_client.rows())
    execute(writer, f"DELETE FROM events WHERE id = {gone}")
    converges(feed_client, writer)
    deleted_at = feed_client._held.tombstones[gone]
    with feed_client._lock:
        feed_client._cursor = cursor
    socketio.emit("resync", {}, namespace=NAMESPACE)
    wait_for(lambda: feed_client.synced and feed_client.resets, message="the reset")
    stale = {"op": "INSERT", "id": gone, "event": "stale", "version": deleted_at - 1}
    feed_client._on_events([stale], None)  # a live row handled after the start-over
    assert (gone not in feed_client.rows()) is kept


@both_wake_modes
def test_the_client_reports_the_feed_offline_and_live_and_catches_up(
    faulty_postgres, app_process, resuming_client
):
    app = app_process(
        database_url=faulty_postgres.url,
        FEED_LISTENER_IDLE_CHECK="1",
        FEED_LISTENER_TIMEOUT="2",
    )
    feed_client = resuming_client(app.url)
    assert feed_client.wait_synced(10)
    assert faulty_postgres.terminate_listeners() == 1
    for number in range(20):
        faulty_postgres.admin(f"INSERT INTO events (event) VALUES ('gap {number}')")
    wait_for(lambda: feed_client.resyncs >= 1, timeout=15, message="the resync")
    feeds = [status["feed"] for status in feed_client.statuses]
    assert feeds[:3] == ["live", "offline", "live"]
    holds_exactly(feed_client, faulty_postgres.table())
    assert feed_client.resets == []


def test_a_sync_that_gets_no_answer_is_asked_again(
    server, writer, resuming_client, database_url, caplog
):
    caplog.set_level(logging.INFO, logger="feed.client")
    feed_client = resuming_client(server.url, sync_timeout=1)
    assert feed_client.wait_synced(10)
    locker = psycopg2.connect(database_url)  # holds every sync up until it commits
    try:
        execute(locker, "LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        execute(locker, "INSERT INTO events (event) VALUES ('behind the lock')")
        socketio.emit("resync", {}, namespace=NAMESPACE)
        wait_for(lambda: "no answer to sync within 1 s" in caplog.text, timeout=10)
        locker.commit()
    finally:
        locker.close()
    converges(feed_client, writer)


def test_a_sync_cut_off_by_a_disconnect_is_asked_again_on_the_next_connect(
    server, writer, resuming_client, database_url, caplog
):
    caplog.set_level(logging.INFO, logger="feed.client")
    feed_client = resuming_client(server.url, sync_timeout=60)
    assert feed_client.wait_synced(10)
    locker = psycopg2.connect(database_url)
    try:
        execute(locker, "LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        execute(locker, "INSERT INTO events (event) VALUES ('behind the lock')")
        socketio.emit("resync", {}, namespace=NAMESPACE)
        wait_for(lambda: waiting_on_a_lock(writer), message="the sync to wait")
        feed_client.disconnect()
        wait_for(lambda: "dropped before sync was answered" in caplog.text)
        feed_client.connect()
        locker.commit()
    finally:
        locker.close()
    converges(feed_client, writer, timeout=10)  # far less than sync_timeout


@both_wake_modes
def test_a_live_cursor_is_not_kept_before_the_catch_up_is_done(
    serve_app, writer, database_url, resuming_client, sio_client
):
    served = serve_app()
    watcher = sio_client(served.url)
    feed_client = resuming_client(served.url)
    assert feed_client.wait_synced(10)
    feed_client.disconnect()
    away_xid = insert_returning_xid(writer, "while away")
    wait_for(
        lambda: any(cursor_xid(c) > away_xid for c in watcher.cursors if c),
        message="the live cursor to pass the rows made while away",
    )
    # Holds resuming up, not live rows: only resume answers read feed_trimmed
    # (the listener's reads, a poll's too, read events and feed_removals).
    locker = psycopg2.connect(database_url)
    try:
        execute(locker, "LOCK TABLE feed_trimmed IN ACCESS EXCLUSIVE MODE")
        feed_client.connect()
        wait_for(lambda: waiting_on_a_lock(writer), message="the catch-up to wait")
        live = insert_row(writer, "live, during the catch-up")
        wait_for(lambda: live in feed_client.rows(), message="the live row")
        feed_client.disconnect()  # the catch-up never finished
        locker.commit()
    finally:
        locker.close()
    feed_client.connect()
    converges(feed_client, writer, message="the rows made while away")


def insert_returning_xid(writer, text):
    """INSERT one row; the xid of its transaction."""
    with writer.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events (event) VALUES (%s) RETURNING feed_xid::text", (text,)
        )
        return int(cursor.fetchone()[0])


def cursor_xid(cursor_text):
    """The transaction id in a cursor (epoch.xid.seq, feed/database/positions.py)."""
    return int(cursor_text.split(".")[1])


def waiting_on_a_lock(writer):
    with writer.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def test_window_mode_starts_from_the_newest_rows_and_loads_older(
    server, writer, resuming_client
):
    insert_rows(writer, 12)
    feed_client = resuming_client(server.url, window=5)
    assert feed_client.wait_synced(10)
    table = table_of(writer)
    ids = sorted(table)
    assert sorted(feed_client.rows()) == ids[-5:]
    assert feed_client.load_older() is True
    assert sorted(feed_client.rows()) == ids[-10:]
    assert feed_client.load_older() is False
    assert feed_client.holds(table)
    insert_row(writer, "live")
    converges(feed_client, writer)


def test_window_mode_resumes_changes_of_rows_outside_the_window(
    server, writer, resuming_client
):
    insert_rows(writer, 12)
    feed_client = resuming_client(server.url, window=5)
    assert feed_client.wait_synced(10)
    newest_five = sorted(feed_client.rows())
    feed_client.disconnect()
    oldest = min(table_of(writer))
    execute(writer, f"UPDATE events SET event = 'edited' WHERE id = {oldest}")
    feed_client.connect()
    wait_for(lambda: feed_client.synced and oldest in feed_client.rows())
    assert sorted(feed_client.rows()) == [oldest, *newest_five]
    assert feed_client.rows()[oldest]["event"] == "edited"


def test_send_returns_the_servers_answer(server, writer, resuming_client):
    feed_client = resuming_client(server.url)
    answer = feed_client.send("from python")
    assert answer["ok"] is True
    wait_for(lambda: answer["id"] in feed_client.rows(), message="the row sent")
    assert feed_client.send("  ") == {"ok": False, "error": "event text is empty"}


def test_a_refused_connect_says_why(serve_app):
    served = serve_app(FEED_READ_TOKEN="secret")
    refused = Feed(served.url)
    try:
        with pytest.raises(ConnectError, match="a valid token is required"):
            refused.connect()
    finally:
        refused.close()
    allowed = Feed(served.url, token="secret").connect()
    try:
        assert allowed.wait_synced(10)
    finally:
        allowed.close()


def test_close_is_prompt(server):
    feed_client = Feed(server.url).connect()
    assert feed_client.wait_synced(10)
    started = time.monotonic()
    feed_client.close()
    assert time.monotonic() - started < 1  # websocket-client alone waits 3 s
    assert not feed_client._worker.is_alive()


def test_a_callback_may_close_the_client_but_not_call_the_server(
    server, writer, caplog
):
    refusals = []

    def on_change(row):
        try:
            feed_client.send("from a callback")
        except FeedError as exc:
            refusals.append(str(exc))
        feed_client.close()

    feed_client = Feed(server.url, on_change=on_change).connect()
    try:
        assert feed_client.wait_synced(10)
        insert_row(writer, "live")
        wait_for(
            lambda: (
                not feed_client._worker.is_alive() and not feed_client._sio.connected
            ),
            message="the client closed by its callback",
        )
    finally:
        feed_client.close()
    assert refusals == [
        "event cannot be sent from a callback: its answer would wait behind the "
        "callback"
    ]
    # The client's own loggers only: the in-process werkzeug server may log a
    # 400 for a websocket frame that crossed its close (a dev-server artifact).
    client_loggers = ("feed.client", "socketio.client", "engineio.client", "websocket")
    assert [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(client_loggers)
    ] == []


def test_an_unreachable_server_is_a_connect_error():
    feed_client = Feed(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ConnectError):
            feed_client.connect()
        assert feed_client.connect_error
    finally:
        feed_client.close()


VERSION_CASES = [
    # (changes applied in order, applied flags, rows held after: {id: event})
    ([("INSERT", 1, "a", 5), ("UPDATE", 1, "b", 4)], [True, False], {1: "a"}),
    ([("INSERT", 1, "a", 5), ("INSERT", 1, "a", 5)], [True, False], {1: "a"}),
    ([("DELETE", 1, None, 6), ("INSERT", 1, "a", 5)], [True, False], {}),
    ([("INSERT", 1, "a", 5), ("DELETE", 1, None, 4)], [True, False], {1: "a"}),
    ([("INSERT", 1, "a", 5), ("TRUNCATE", None, None, 7)], [True, True], {}),
    ([("TRUNCATE", None, None, 7), ("INSERT", 1, "a", 5)], [True, False], {}),
    ([("TRUNCATE", None, None, 7), ("INSERT", 2, "b", 8)], [True, True], {2: "b"}),
    ([("TRUNCATE", None, None, 7), ("TRUNCATE", None, None, 7)], [True, False], {}),
]


@pytest.mark.parametrize(("changes", "applied", "held"), VERSION_CASES)
def test_held_rows_keep_the_newest_version(changes, applied, held):
    rows = HeldRows()
    rows_in = [
        {"op": op, "id": row_id, "event": event, "version": version}
        for op, row_id, event, version in changes
    ]
    assert [rows.apply(row) for row in rows_in] == applied
    assert {i: row["event"] for i, row in rows.rows.items()} == held


def test_held_rows_keep_a_bounded_number_of_tombstones():
    rows = HeldRows(tombstone_limit=3)
    for row_id in range(1, 6):
        rows.apply({"op": "DELETE", "id": row_id, "event": None, "version": row_id})
    assert list(rows.tombstones) == [3, 4, 5]


def test_the_client_file_works_on_its_own_without_flask(tmp_path):
    (tmp_path / "feed_client.py").write_text((ROOT / "feed" / "client.py").read_text())
    check = textwrap.dedent(
        """
        import sys
        sys.modules["flask"] = None  # importing Flask now fails
        import feed_client
        assert "flask" not in [m.split(".")[0] for m in sys.modules if sys.modules[m]]
        print(feed_client.Feed.__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Feed"
