"""Behind Debian's PgBouncer: health that says when rows do not arrive, and recovery.

Through a transaction-mode pool LISTEN "works" and nothing ever arrives; the
feed's own probes must show it everywhere (/healthz, /metrics, sync, status),
and the feed must come back when the cause goes away.
"""

import re
from urllib.parse import urlsplit

import pytest
import requests

from feed.service.delivery_check import NOT_SENT
from support.database import insert_row
from support.waiting import wait_for

# Probes often and briefly, so that a stall and a recovery show within seconds.
# The listener's idle check is rare: its queries through a transaction pool are
# the only moments a notification could leak to it by chance.
FAST_CHECKS = {
    "FEED_DELIVERY_CHECK_INTERVAL": "0.5",
    "FEED_DELIVERY_CHECK_TIMEOUT": "1",
    "FEED_LISTENER_IDLE_CHECK": "30",
}


@pytest.fixture
def pooled_url(pgbouncer, database_url):
    """The test database's URL through PgBouncer."""
    return pgbouncer.url(urlsplit(database_url).path.lstrip("/"))


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
