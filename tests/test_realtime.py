"""End to end: the app under gunicorn in each server mode, python-socketio clients.

Delivery tests run in each wake-up mode too (both_wake_modes); the handlers'
answers (sync, refusals, origins) do not depend on it and run in one.
"""

import pytest
import requests
import socketio

from support.database import both_wake_modes, insert_rows
from support.processes import SERVER_MODES, AppProcess
from support.waiting import wait_for


@pytest.fixture(scope="module", params=SERVER_MODES)
def gunicorn_process(request, database_url):
    """`make serve` in one mode (threaded, then gevent), shared by this module.

    Each test starts on an empty table (the writer fixture empties it without
    a notification) with clients of its own.
    """
    served = AppProcess(database_url, mode=request.param)
    yield served
    assert served.stop() == 0, "".join(served.output)


@pytest.fixture(autouse=True)
def empty_table(writer):
    """Every test here starts on an empty table (the writer fixture empties it)."""


@pytest.fixture
def feed_process(gunicorn_process, wake_mode):
    """gunicorn_process once its listener follows the test's wake-up mode.

    It serves the whole module, so it sees each test's switch while serving:
    the database's switch to poll by NOTIFY, the writer fixture's quiet reset
    to notify by its next read.
    """
    wait_for(
        lambda: listener_mode(gunicorn_process) == wake_mode,
        message=f"the listener in {wake_mode} mode",
    )
    return gunicorn_process


def listener_mode(served):
    return requests.get(f"{served.url}/healthz", timeout=10).json()["listener"]["mode"]


def count_rows(writer):
    with writer.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events")
        return cursor.fetchone()[0]


@pytest.fixture
def three_clients(feed_process, sio_client):
    return [sio_client(feed_process.url) for _ in range(3)]


@both_wake_modes
def test_event_from_one_client_reaches_all_three_exactly_once(three_clients):
    sender = three_clients[0]
    ack = sender.call("event", "hello from a client")
    assert ack["ok"] is True and isinstance(ack["id"], int)
    for feed_client in three_clients:
        wait_for(lambda c=feed_client: c.rows(), message="the row")
    for feed_client in three_clients:
        (row,) = feed_client.rows()
        assert row["id"] == ack["id"]
        assert row["op"] == "INSERT"
        assert row["event"] == "hello from a client"
        assert row["created_at"].endswith("+00:00")


@both_wake_modes
def test_writes_from_another_connection_reach_every_client(
    three_clients, writer, wake_mode
):
    # A poll sends each row as it is at that read: changes of one row between
    # two reads arrive as one (its newest version), so each change here waits
    # for the one before it; and a DELETE comes from the removal log, which
    # keeps no text (the wire contract: a DELETE's event may be null).
    deleted_text = "edited" if wake_mode == "notify" else None

    def changed(count):
        if wake_mode == "poll":
            wait_for(
                lambda: all(len(c.rows()) == count for c in three_clients),
                message=f"change {count}",
            )

    with writer.cursor() as cursor:
        cursor.execute("INSERT INTO events (event) VALUES ('from psql') RETURNING id")
        (new_id,) = cursor.fetchone()
        changed(1)
        cursor.execute("UPDATE events SET event = 'edited' WHERE id = %s", (new_id,))
        changed(2)
        cursor.execute("DELETE FROM events WHERE id = %s", (new_id,))
        changed(3)
        cursor.execute("TRUNCATE events")
    for feed_client in three_clients:
        wait_for(lambda c=feed_client: len(c.rows()) == 4, message="four changes")
        ops = [(row["op"], row["id"], row["event"]) for row in feed_client.rows()]
        assert ops == [
            ("INSERT", new_id, "from psql"),
            ("UPDATE", new_id, "edited"),
            ("DELETE", new_id, deleted_text),
            ("TRUNCATE", None, None),
        ]
        versions = [row["version"] for row in feed_client.rows()]
        assert versions == sorted(set(versions))


@both_wake_modes
def test_rows_of_one_transaction_arrive_complete_in_order_and_batched(
    three_clients, writer
):
    insert_rows(writer, 2000)
    for feed_client in three_clients:
        wait_for(lambda c=feed_client: len(c.rows()) >= 2000, message="2000 rows")
        ids = feed_client.ids()
        assert ids == list(range(1, 2001))
        # Merged as they arrive, never waiting for more (DESIGN: no added wait):
        # 3 messages on a quiet machine in each mode, 38 once (gevent) with
        # other test runs starving PostgreSQL, whose notifications then came in
        # trickles. Batched means far fewer messages than rows.
        assert len(feed_client.messages) <= 100, len(feed_client.messages)


# Notify mode only: NOTIFY's payload limit; a poll reads every row from the table.
def test_a_row_too_large_for_notify_arrives_whole(feed_process, sio_client):
    feed_client = sio_client(feed_process.url)
    text = "🎉" * 4000  # 16,000 bytes: over NOTIFY's limit, under the event limit
    ack = feed_client.call("event", text)
    assert ack["ok"], ack
    wait_for(feed_client.rows, message="the large row")
    assert feed_client.rows()[0]["event"] == text


def test_one_clients_events_are_inserted_in_the_order_sent(
    feed_process, sio_client, writer
):
    feed_client = sio_client(feed_process.url)
    acks = {}
    for number in range(40):  # the default burst allowance
        feed_client.sio.emit(
            "event",
            f"n{number}",
            namespace="/events",
            callback=lambda ack, n=number: acks.__setitem__(n, ack["id"]),
        )
    wait_for(lambda: len(acks) == 40, message="40 acks")
    assert [acks[n] for n in range(40)] == sorted(acks.values())
    with writer.cursor() as cursor:
        cursor.execute("SELECT event FROM events ORDER BY id")
        assert [event for (event,) in cursor.fetchall()] == [f"n{n}" for n in range(40)]


def test_sync_returns_the_latest_page_then_pages_forward(
    feed_process, sio_client, writer
):
    insert_rows(writer, 250)
    feed_client = sio_client(feed_process.url)
    latest = feed_client.call("sync", {"after": None})
    assert latest["ok"] and latest["more"] is True
    assert [row["id"] for row in latest["events"]] == list(range(151, 251))
    assert latest["events"][0]["op"] == "INSERT"
    page = feed_client.call("sync", {"after": 10, "limit": 200})
    assert [row["id"] for row in page["events"]] == list(range(11, 211))
    assert page["more"] is True
    rest = feed_client.call("sync", {"after": 210, "limit": 200})
    assert [row["id"] for row in rest["events"]] == list(range(211, 251))
    assert rest["more"] is False


def test_sync_on_an_empty_table(feed_process, sio_client):
    answer = sio_client(feed_process.url).call("sync", {"after": None})
    assert isinstance(answer.pop("cursor"), str)
    assert answer == {"ok": True, "events": [], "more": False, "feed": "live"}


BAD_EVENTS = [
    pytest.param((123,), "must be a string", id="number"),
    pytest.param((None,), "must be a string", id="null"),
    pytest.param((True,), "must be a string", id="boolean"),
    pytest.param((["a"],), "must be a string", id="array"),
    pytest.param(({"event": "x"},), "must be a string", id="object"),
    pytest.param(("",), "empty", id="empty"),
    pytest.param((" \n\t ",), "empty", id="whitespace"),
    pytest.param(("x" * 4097,), "too long", id="too-long"),
    pytest.param(("a\x00b",), "NUL", id="nul"),
    pytest.param(("bad \ud800 surrogate",), "surrogate", id="lone-surrogate"),
    pytest.param(("a", "b"), "exactly one argument", id="two-arguments"),
    pytest.param((), "exactly one argument", id="no-argument"),
]


@pytest.mark.parametrize(("args", "reason"), BAD_EVENTS)
def test_bad_event_is_refused_and_nothing_else_breaks(
    feed_process, sio_client, writer, args, reason
):
    sender, bystander = (
        sio_client(feed_process.url),
        sio_client(feed_process.url),
    )
    ack = sender.call("event", *args)
    assert ack["ok"] is False
    assert reason in ack["error"]
    assert "Traceback" not in ack["error"]
    assert count_rows(writer) == 0
    refusal = f"refused event from {sender.sio.get_sid('/events')}: "
    wait_for(
        lambda: any(refusal in line for line in feed_process.output), message="log"
    )
    good = sender.call("event", "still works")
    assert good["ok"] is True
    wait_for(lambda: bystander.ids() == [good["id"]], message="bystander gets the row")


BAD_SYNCS = [
    pytest.param(({"after": "x"},), "'after'", id="after-string"),
    pytest.param(({"after": -1},), "'after'", id="after-negative"),
    pytest.param(({"after": 1.5},), "'after'", id="after-float"),
    pytest.param(({"after": True},), "'after'", id="after-boolean"),
    pytest.param(({"after": 2**70},), "'after'", id="after-huge"),
    pytest.param(({"after": None, "limit": 0},), "'limit'", id="limit-zero"),
    pytest.param(({"after": None, "limit": 10**6},), "'limit'", id="limit-huge"),
    pytest.param(({"after": None, "limit": "10"},), "'limit'", id="limit-string"),
    pytest.param(({"after": None, "bogus": 1},), "bogus", id="unknown-field"),
    pytest.param(("latest",), "object", id="not-an-object"),
    pytest.param(([1],), "object", id="array"),
    pytest.param(({}, {}), "exactly one argument", id="two-arguments"),
]


@pytest.mark.parametrize(("args", "reason"), BAD_SYNCS)
def test_bad_sync_is_refused_and_the_connection_stays_usable(
    feed_process, sio_client, args, reason
):
    feed_client = sio_client(feed_process.url)
    answer = feed_client.call("sync", *args)
    assert answer["ok"] is False
    assert reason in answer["error"]
    assert feed_client.call("sync", {"after": 0})["ok"] is True


def test_an_unknown_message_gets_an_error_ack(feed_process, sio_client):
    answer = sio_client(feed_process.url).call("drop_table", "events")
    assert answer == {"ok": False, "error": "unknown message 'drop_table'"}


def test_a_database_error_is_an_error_ack_not_a_traceback(
    feed_process, sio_client, writer
):
    feed_client = sio_client(feed_process.url)
    with writer.cursor() as cursor:
        cursor.execute("REVOKE INSERT ON events FROM PUBLIC")  # no-op for the owner
        cursor.execute("ALTER TABLE events ADD CONSTRAINT no_bang CHECK (event <> '!')")
    try:
        ack = feed_client.call("event", "!")
        assert ack["ok"] is False and "Traceback" not in ack["error"]
        assert feed_client.call("event", "fine")["ok"] is True
    finally:
        with writer.cursor() as cursor:
            cursor.execute("ALTER TABLE events DROP CONSTRAINT no_bang")


def test_another_origin_is_refused_by_default(feed_process):
    browser_elsewhere = socketio.Client(reconnection=False)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            browser_elsewhere.connect(
                feed_process.url,
                namespaces=["/events"],
                transports=["polling"],
                headers={"Origin": "http://elsewhere.example"},
                wait_timeout=5,
            )
    finally:  # connected after all: the test fails, and the client still stops
        browser_elsewhere.disconnect()


def test_the_same_origin_is_allowed(feed_process, sio_client):
    feed_client = sio_client(
        feed_process.url,
        transports=("polling",),
        headers={"Origin": feed_process.url},
    )
    assert feed_client.call("sync", {"after": None})["ok"] is True


def test_polling_transport_works_too(feed_process, sio_client):
    feed_client = sio_client(feed_process.url, transports=("polling",))
    ack = feed_client.call("event", "over long-polling")
    wait_for(lambda: feed_client.ids() == [ack["id"]], message="the row over polling")


@both_wake_modes
@pytest.mark.parametrize(
    "modes", [("threaded", "gevent"), (None, "gevent")], ids=["gunicorn", "app.py"]
)
def test_two_app_processes_share_one_database(app_process, sio_client, writer, modes):
    first, second = (app_process(mode) for mode in modes)
    on_first, on_second = sio_client(first.url), sio_client(second.url)
    ack = on_first.call("event", "sent to the first instance")
    assert ack["ok"]
    wait_for(lambda: on_second.ids() == [ack["id"]], message="row on the second")
    wait_for(lambda: on_first.ids() == [ack["id"]], message="row on the first")
    reply = on_second.call("event", "and back")
    both = [ack["id"], reply["id"]]
    wait_for(lambda: on_first.ids() == both, message="the reply on the first")
    wait_for(lambda: on_second.ids() == both, message="the reply on the second")
