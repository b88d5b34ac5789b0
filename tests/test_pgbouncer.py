"""Behind Debian's PgBouncer: health that says when rows do not arrive, and recovery.

Through a transaction-mode pool LISTEN "works" and nothing ever arrives; the
feed's own probes must show it everywhere (/healthz, /metrics, sync, status),
and the feed must come back when the cause goes away. Poll mode needs no
LISTEN: with the database in it, the app and its listener both work through
the pool, and switching to it while stalled there makes the feed live.
"""

import re
from datetime import datetime
from urllib.parse import urlsplit

import pytest
import requests
from psycopg2 import sql

from feed.service.delivery_check import NOT_SENT
from support.clients import resume
from support.database import insert_row, set_wake_mode
from support.waiting import wait_for

# Probes often and briefly, so that a stall and a recovery show within seconds.
# The listener's idle check is rare: its queries through a transaction pool are
# the only moments a notification could leak to it by chance.
FAST_CHECKS = {
    "FEED_DELIVERY_CHECK_INTERVAL": "0.5",
    "FEED_DELIVERY_CHECK_TIMEOUT": "1",
    "FEED_LISTENER_IDLE_CHECK": "30",
}


# Poll mode through the pool: a probe is answered by the listener's next read,
# so a failure is a real one; a longer timeout keeps a busy machine from
# faking one.
POLL_CHECKS = {**FAST_CHECKS, "FEED_DELIVERY_CHECK_TIMEOUT": "3"}


@pytest.fixture
def pooled_url(pgbouncer, database_url):
    """The test database's URL through PgBouncer."""
    return pgbouncer.url(urlsplit(database_url).path.lstrip("/"))


@pytest.fixture
def away_from_utc(writer, database_url):
    """New sessions on the test database start in a zone 5:45 from UTC, so that
    a time rendered in the session's zone shows (the listener sets UTC on its
    connection; through a transaction pool that must hold for every read)."""
    name = sql.Identifier(urlsplit(database_url).path.lstrip("/"))
    with writer.cursor() as cursor:
        cursor.execute(
            sql.SQL("ALTER DATABASE {} SET timezone TO 'Asia/Kathmandu'").format(name)
        )
    yield
    with writer.cursor() as cursor:
        cursor.execute(sql.SQL("ALTER DATABASE {} RESET timezone").format(name))


def healthz(app):
    return requests.get(f"{app.url}/healthz", timeout=10)


def metric(app, name):
    """The value of one unlabelled metric of the app."""
    text = requests.get(f"{app.url}/metrics", timeout=10).text
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


def watch_statuses(feed_client):
    """Every `status` message the client gets, in order."""
    statuses = []
    feed_client.sio.on("status", statuses.append, namespace="/events")
    return statuses


def assert_stalled(app, feed_client):
    """Health, metrics and sync all say that rows do not arrive, and why."""
    response = healthz(app)
    body = response.json()
    assert response.status_code == 503, body
    assert body["feed"] == "stalled" and body["ok"] is False
    assert "PgBouncer" in body["reason"] and "LISTENER_DATABASE_URL" in body["reason"]
    assert body["database"] == "reachable"
    assert body["listener"]["state"] == "listening"  # LISTEN itself "works"
    assert body["delivery"]["state"] == "stalled"
    assert metric(app, "feed_listener_up") == 1
    assert metric(app, "feed_delivering") == 0
    assert metric(app, "feed_delivery_probes_failed_total") >= 1
    answer = feed_client.call("sync", {"after": None})
    assert answer["ok"] is True and answer["feed"] == "stalled"
    assert "PgBouncer" in answer["reason"]


def assert_live(app, feed_client, writer):
    """Health says live, and rows from psql and from the client reach the client."""
    body = healthz(app).json()
    assert body["ok"] is True and body["feed"] == "live" and "reason" not in body
    assert body["delivery"]["state"] == "delivering"
    assert metric(app, "feed_delivering") == 1
    assert feed_client.call("sync", {"after": None})["feed"] == "live"
    from_psql = insert_row(writer, "from psql")
    ack = feed_client.call("event", "from the client")
    assert ack["ok"] is True, ack
    wait_for(
        lambda: {from_psql, ack["id"]} <= set(feed_client.ids()),
        message="both rows delivered",
    )


def test_behind_a_transaction_pool_the_feed_says_it_is_stalled_until_it_recovers(
    pgbouncer, pooled_url, app_process, sio_client, writer, mode
):
    app = app_process(mode, database_url=pooled_url, **FAST_CHECKS)
    feed_client = sio_client(app.url)
    statuses = watch_statuses(feed_client)
    assert_stalled(app, feed_client)
    failed = metric(app, "feed_delivery_probes_failed_total")
    unseen = insert_row(writer, "committed while stalled")
    wait_for(
        lambda: metric(app, "feed_delivery_probes_failed_total") > failed,
        message="a probe sent after the row, failed",
    )
    assert unseen not in feed_client.ids()

    # The cause goes away: the operator switches the pool to session mode.
    pgbouncer.restart("session")
    wait_for(lambda: healthz(app).status_code == 200, timeout=15, message="live")
    wait_for(lambda: statuses[-1:] == [{"feed": "live"}], message="status live")
    wait_for(lambda: feed_client.resyncs >= 1, message="a resync: rows were missed")
    assert statuses[0]["feed"] == "offline" and statuses[0]["reason"]
    assert_live(app, feed_client, writer)
    assert any("listener hears the app's NOTIFY again" in line for line in app.output)

    # And back to transaction mode: a client that is connected is told.
    pgbouncer.restart("transaction")
    wait_for(
        lambda: statuses[-1]["feed"] == "stalled", timeout=15, message="status stalled"
    )
    assert "PgBouncer" in statuses[-1]["reason"]
    assert_stalled(app, feed_client)


def test_the_stall_is_logged_once_with_its_cause_and_fix(
    pgbouncer, pooled_url, app_process
):
    app = app_process(database_url=pooled_url, **FAST_CHECKS)
    complaint = app.line_with("delivery self-test failing")
    assert "ERROR" in complaint
    assert "PgBouncer" in complaint and "LISTENER_DATABASE_URL" in complaint
    failed = metric(app, "feed_delivery_probes_failed_total")
    wait_for(
        lambda: metric(app, "feed_delivery_probes_failed_total") >= failed + 2,
        message="two more failed probes",
    )
    assert sum("delivery self-test" in line for line in app.output) == 1


def test_a_direct_listener_with_the_pool_through_pgbouncer_is_live(
    pgbouncer, pooled_url, database_url, app_process, sio_client, writer, mode
):
    # The documented setup: inserts and sync through the pooler, LISTEN direct.
    app = app_process(
        mode,
        database_url=pooled_url,
        LISTENER_DATABASE_URL=database_url,
        **FAST_CHECKS,
    )
    assert healthz(app).status_code == 200
    feed_client = sio_client(app.url)
    statuses = watch_statuses(feed_client)
    assert_live(app, feed_client, writer)

    # The pooler goes down: LISTEN stays in place, but the probe cannot be sent.
    pgbouncer.stop()
    wait_for(lambda: statuses[-1:] and statuses[-1]["feed"] == "stalled")
    assert statuses[-1]["reason"] == NOT_SENT
    body = healthz(app).json()
    assert body["feed"] == "stalled" and body["database"] == "unreachable"
    pgbouncer.start("transaction")
    wait_for(lambda: statuses[-1:] == [{"feed": "live"}], message="status live")
    wait_for(lambda: feed_client.resyncs == 1, message="a resync after the stall")
    assert_live(app, feed_client, writer)


def newest_xid(writer):
    """The transaction id of the newest change recorded (a row or a removal)."""
    with writer.cursor() as cursor:
        cursor.execute(
            "SELECT greatest((SELECT max(feed_xid) FROM events),"
            " (SELECT max(feed_xid) FROM feed_removals))::text"
        )
        return int(cursor.fetchone()[0])


def cursor_xid(cursor):
    return int(cursor.split(".")[1])


def changes(rows):
    return [(row["op"], row["id"]) for row in rows]


@pytest.mark.parametrize("wake_mode", ["poll"], indirect=True)
def test_in_poll_mode_the_app_and_its_listener_work_through_a_transaction_pool(
    pgbouncer, pooled_url, away_from_utc, app_process, sio_client, writer, mode
):
    app = app_process(
        mode, database_url=pooled_url, LISTENER_DATABASE_URL=pooled_url, **POLL_CHECKS
    )
    body = healthz(app).json()
    assert body["listener"]["mode"] == "poll" and body["listener"]["reconnects"] == 0
    feed_client, other = sio_client(app.url), sio_client(app.url)
    statuses = watch_statuses(feed_client)
    assert_live(app, feed_client, writer)
    kept, gone = feed_client.ids()
    wait_for(lambda: sorted(other.ids()) == sorted([kept, gone]), message="on both")

    # An UPDATE and a DELETE, each waited for (a read sends a row as it is).
    with writer.cursor() as cursor:
        cursor.execute("UPDATE events SET event = 'edited' WHERE id = %s", (kept,))
    wait_for(lambda: ("UPDATE", kept) in changes(feed_client.rows()), message="UPDATE")
    with writer.cursor() as cursor:
        cursor.execute("DELETE FROM events WHERE id = %s", (gone,))
    wait_for(lambda: ("DELETE", gone) in changes(feed_client.rows()), message="DELETE")
    assert changes(other.rows())[-2:] == [("UPDATE", kept), ("DELETE", gone)]

    # created_at in UTC, the same instant as the row's sync answer.
    (synced,) = feed_client.call("sync", {"after": kept - 1, "limit": 1})["events"]
    live = [row for row in feed_client.rows() if row["id"] == kept]
    assert [row["op"] for row in live] == ["INSERT", "UPDATE"]
    assert synced["created_at"].endswith("+00:00"), synced
    for row in live:
        assert row["created_at"].endswith("+00:00"), row
        assert datetime.fromisoformat(row["created_at"]) == datetime.fromisoformat(
            synced["created_at"]
        )

    # A client resuming from its last live cursor gets exactly what it missed.
    doomed = insert_row(writer, "deleted while away")
    wait_for(lambda: doomed in feed_client.ids(), message="the row to delete")
    seen = newest_xid(writer)
    wait_for(
        lambda: cursor_xid(feed_client.cursors[-1]) > seen,
        message="a live cursor past every change seen",
    )
    cursor = feed_client.cursors[-1]
    feed_client.drop()
    missed = insert_row(writer, "while away")
    with writer.cursor() as sql_cursor:
        sql_cursor.execute("UPDATE events SET event = 'away' WHERE id = %s", (kept,))
        sql_cursor.execute("DELETE FROM events WHERE id = %s", (doomed,))
    feed_client.reconnect()
    rows, _ = resume(feed_client, cursor)
    assert [(row["op"], row["id"], row["event"]) for row in rows] == [
        ("INSERT", missed, "while away"),
        ("UPDATE", kept, "away"),
        ("DELETE", doomed, None),
    ]
    assert healthz(app).status_code == 200
    assert metric(app, "feed_delivery_probes_failed_total") == 0
    assert statuses == []  # never anything but live
    assert healthz(app).json()["listener"]["reconnects"] == 0


def test_switching_to_poll_mode_while_stalled_behind_a_transaction_pool_goes_live(
    pgbouncer, pooled_url, app_process, sio_client, writer
):
    # The listener notices the switch on its idle check (its NOTIFY does not
    # come through the pool): a short one, to see it within seconds.
    checks = {**POLL_CHECKS, "FEED_LISTENER_IDLE_CHECK": "2"}
    app = app_process(
        database_url=pooled_url, LISTENER_DATABASE_URL=pooled_url, **checks
    )
    feed_client = sio_client(app.url)
    statuses = watch_statuses(feed_client)
    wait_for(lambda: healthz(app).json()["feed"] == "stalled", message="the stall")
    unseen = insert_row(writer, "committed while stalled")

    set_wake_mode(writer, "poll")  # as `flask feed mode poll`
    wait_for(
        lambda: healthz(app).json()["listener"]["mode"] == "poll",
        timeout=15,
        message="the listener in poll mode",
    )
    wait_for(lambda: healthz(app).status_code == 200, timeout=15, message="live")
    wait_for(lambda: statuses[-1:] == [{"feed": "live"}], message="status live")
    wait_for(lambda: feed_client.resyncs >= 1, message="a resync: rows were missed")
    wait_for(lambda: unseen in feed_client.ids(), message="the row from the stall")
    assert_live(app, feed_client, writer)
    # And it stays live: later probes are answered too, none fails.
    failed = metric(app, "feed_delivery_probes_failed_total")
    answered = healthz(app).json()["delivery"]["last_ok_at"]
    wait_for(
        lambda: healthz(app).json()["delivery"]["last_ok_at"] > answered + 1,
        message="probes answered for another second",
    )
    assert metric(app, "feed_delivery_probes_failed_total") == failed
    assert healthz(app).json()["feed"] == "live"
