"""Attacks on the feed: other origins, missing tokens, floods, huge frames, leaks."""

import json
import logging
import socket

import psycopg2
import pytest
import requests
import socketio
import websocket

from support.waiting import wait_for

NAMESPACE = "/events"


def refused_connect(url, **options):
    """Try to connect; return the refusal message the server sent (or None)."""
    reasons = []
    client = socketio.Client(reconnection=False)
    client.on("connect_error", reasons.append, namespace=NAMESPACE)
    try:
        client.connect(url, namespaces=[NAMESPACE], wait_timeout=5, **options)
    except socketio.exceptions.ConnectionError:
        return reasons[0]["message"] if reasons else "refused"
    client.disconnect()
    return None


def count_rows(writer):
    with writer.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events")
        return cursor.fetchone()[0]


# Origins


def polling_handshake(url, origin):
    return requests.get(
        f"{url}/socket.io/?EIO=4&transport=polling",
        headers={"Origin": origin},
        timeout=5,
    )


def test_another_origin_gets_400_with_a_reason_and_a_log_line(server, caplog):
    with caplog.at_level(logging.WARNING, logger="feed.security"):
        response = polling_handshake(server.url, "http://evil.example")
    assert response.status_code == 400
    assert "origin" in response.text.lower()
    assert any("http://evil.example" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("setting", "origin", "allowed"),
    [
        ("", "SAME", True),
        ("", "http://localhost:1", False),
        ("https://a.example", "https://a.example", True),
        ("https://a.example", "https://a.example.evil.com", False),
        ("https://a.example", "http://a.example", False),
        ("https://a.example, http://localhost:3000", "http://localhost:3000", True),
        ("http://localhost:3000", "http://127.0.0.1:3000", False),  # the trap
        ("*", "https://anywhere.example", True),
    ],
)
def test_origin_policy(serve_app, setting, origin, allowed):
    served = serve_app(FEED_CORS_ORIGINS=setting)
    origin = served.url if origin == "SAME" else origin
    status = polling_handshake(served.url, origin).status_code
    assert (status == 200) is allowed


def test_a_wildcard_origin_is_warned_about_at_start(serve_app, caplog):
    with caplog.at_level(logging.WARNING, logger="feed.security"):
        serve_app(FEED_CORS_ORIGINS="*")
    assert any("ANY site" in r.getMessage() for r in caplog.records)


def test_a_websocket_from_another_origin_is_refused(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
            origin="http://evil.example",
            timeout=5,
        )
    assert refused.value.status_code == 400


# Tokens

READ, WRITE = "read-s3cret-token", "write-s3cret-token"


@pytest.mark.parametrize(
    ("settings", "token", "connects", "writes"),
    [
        ({}, None, True, True),
        ({"FEED_READ_TOKEN": READ}, None, False, False),
        ({"FEED_READ_TOKEN": READ}, "wrong", False, False),
        ({"FEED_READ_TOKEN": READ}, READ, True, True),
        ({"FEED_WRITE_TOKEN": WRITE}, None, True, False),
        ({"FEED_WRITE_TOKEN": WRITE}, WRITE, True, True),
        ({"FEED_READ_TOKEN": READ, "FEED_WRITE_TOKEN": WRITE}, READ, True, False),
        ({"FEED_READ_TOKEN": READ, "FEED_WRITE_TOKEN": WRITE}, WRITE, True, True),
        ({"FEED_READ_TOKEN": READ, "FEED_WRITE_TOKEN": WRITE}, "x", False, False),
        ({"FEED_READ_TOKEN": READ}, 12345, False, False),
        ({"FEED_READ_TOKEN": READ}, READ + "\ud800", False, False),
    ],
)
def test_tokens_decide_who_reads_and_who_writes(
    serve_app, sio_client, writer, caplog, settings, token, connects, writes
):
    served = serve_app(**settings)
    auth = {"token": token} if token is not None else None
    with caplog.at_level(logging.DEBUG):
        if not connects:
            assert refused_connect(served.url, auth=auth) == (
                "a valid token is required to connect"
            )
            return
        feed_client = sio_client(served.url, auth=auth)
        ack = feed_client.call("event", "hello")
    if writes:
        assert ack["ok"] is True
        wait_for(lambda: feed_client.ids() == [ack["id"]], message="the row")
    else:
        assert ack == {"ok": False, "error": "not allowed"}
        assert count_rows(writer) == 0
    assert READ not in caplog.text and WRITE not in caplog.text


# Rate limits and sizes


def test_event_flood_is_refused_beyond_the_burst_and_the_connection_stays(
    serve_app, sio_client, writer
):
    served = serve_app(FEED_EVENT_RATE=5, FEED_EVENT_BURST=10)
    feed_client = sio_client(served.url)
    acks = [feed_client.call("event", f"flood {n}") for n in range(30)]
    accepted = [ack for ack in acks if ack["ok"]]
    refused = [ack for ack in acks if not ack["ok"]]
    assert 10 <= len(accepted) <= 13  # the burst, plus what refilled meanwhile
    assert refused[0]["error"] == "too many events: at most 5 per second"
    assert count_rows(writer) == len(accepted)
    wait_for(lambda: feed_client.call("event", "later")["ok"], message="refill")


def test_connections_per_address_are_capped_when_configured(serve_app, sio_client):
    served = serve_app(FEED_MAX_CONNECTIONS_PER_ADDRESS=2)
    first = sio_client(served.url)
    sio_client(served.url)
    assert refused_connect(served.url) == "too many connections from your address"
    first.close()
    wait_for(lambda: refused_connect(served.url) is None, message="a free slot")


TRANSPORTS = ("websocket", "polling")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_over_long_event_gets_a_refusal_ack_and_the_connection_stays(
    app_process, sio_client, writer, mode, transport
):
    served = app_process(mode)
    sender = sio_client(served.url, transports=(transport,))
    bystander = sio_client(served.url)
    ack = sender.call("event", "x" * 100_000)
    assert ack["ok"] is False
    assert ack["error"].startswith("event text is too long: the message was ")
    assert ack["error"].endswith("bytes, the limit is 4096 characters")
    after = sender.call("event", "still connected")
    assert after["ok"] is True and sender.sio.connected
    wait_for(lambda: bystander.ids() == [after["id"]], message="the next row")
    assert count_rows(writer) == 1
    assert any("refused event from" in line for line in served.output)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_twenty_megabyte_event_is_refused_in_bounded_memory(
    app_process, sio_client, writer, transport
):
    # Read whole, the message alone would take 20 MiB (and its decoded text as
    # much again); read as it arrives, the peak grew by about 5 MiB, whatever
    # the size (measured from 1 to 40 MB), from buffers and the allocator.
    served = app_process("threaded", FEED_HARD_MAX_MESSAGE_BYTES=str(64 * 2**20))
    sender = sio_client(served.url, transports=(transport,))
    pid = served.serving_pid()
    assert sender.call("event", "warm up")["ok"]  # both code paths loaded
    before = peak_rss_bytes(pid)
    ack = sender.call("event", "x" * 20 * 2**20, timeout=30)
    assert ack["ok"] is False and "too long" in ack["error"]
    growth = peak_rss_bytes(pid) - before  # read after the whole message arrived
    assert growth < 10 * 2**20, f"{growth / 2**20:.1f} MiB held for a refused message"
    assert sender.call("event", "next")["ok"] is True
    assert count_rows(writer) == 2


def test_a_websocket_message_past_the_hard_limit_closes_it_with_one_log_line(
    app_process, sio_client, writer
):
    served = app_process(FEED_HARD_MAX_MESSAGE_BYTES=str(2**20))
    bystander = sio_client(served.url)
    attacker = websocket.create_connection(
        served.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
        timeout=5,
    )
    assert attacker.recv().startswith("0")
    attacker.send("40/events,")
    assert attacker.recv().startswith("40/events,")
    try:
        attacker.send('42/events,1["event","' + "x" * 3 * 2**20 + '"]')
    except (OSError, websocket.WebSocketTimeoutException):
        pass  # the server stopped reading (and closed): refused mid-frame
    wait_for(lambda: clients(served.url) == 1, timeout=30, message="the session to end")
    attacker.close()
    closing = [line for line in served.output if "hard limit" in line]
    assert len(closing) == 1 and "closed a WebSocket" in closing[0]
    assert count_rows(writer) == 0
    ack = bystander.call("event", "still fine")
    wait_for(lambda: bystander.ids() == [ack["id"]], message="bystander row")


def clients(url):
    return requests.get(f"{url}/healthz", timeout=5).json()["clients"]


def peak_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_a_polling_post_past_the_hard_limit_gets_413_unread(serve_app):
    served = serve_app(FEED_HARD_MAX_MESSAGE_BYTES=2**20)
    handshake = requests.get(
        f"{served.url}/socket.io/?EIO=4&transport=polling", timeout=5
    )
    sid = handshake.text.split('"sid":"')[1].split('"')[0]
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(
            f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {2**20 + 1}\r\n\r\n".encode()
        )
        status_line = raw.recv(4096).split(b"\r\n")[0]  # no body was sent at all
    assert status_line.startswith(b"HTTP/1.1 413")
    assert requests.get(f"{served.url}/healthz", timeout=5).status_code == 200


def test_packets_around_an_oversized_one_in_a_polling_post_keep_their_order(
    server, writer
):
    base = f"{server.url}/socket.io/?EIO=4&transport=polling"
    sid = json.loads(requests.get(base, timeout=5).text[1:])["sid"]
    session = f"{base}&sid={sid}"
    assert requests.post(session, data="40/events,", timeout=5).status_code == 200
    requests.get(session, timeout=5)  # the CONNECT answer
    packets = [
        '42/events,1["event","first"]',
        '42/events,2["event","' + "y" * 200_000 + '"]',
        '42/events,3["event","third"]',
    ]
    body = "\x1e".join(packets).encode()
    assert requests.post(session, data=body, timeout=10).status_code == 200
    answers = []
    wait_for(
        lambda: (
            answers.extend(requests.get(session, timeout=5).text.split("\x1e"))
            or len([a for a in answers if a.startswith("43")]) == 3
        ),
        message="three acks",
    )
    acks = [a for a in answers if a.startswith("43")]
    assert [a.split("[")[0] for a in acks] == [
        "43/events,1",
        "43/events,2",
        "43/events,3",
    ]
    assert '"ok":false' in acks[1].replace(" ", "") and "too long" in acks[1]
    with writer.cursor() as cursor:
        cursor.execute("SELECT event FROM events ORDER BY id")
        assert [row[0] for row in cursor.fetchall()] == ["first", "third"]


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_request_for_a_session_that_just_ended_gets_400(server, caplog, method):
    base = f"{server.url}/socket.io/?EIO=4&transport=polling"
    handshake = requests.get(base, timeout=5)
    sid = json.loads(handshake.text[1:])["sid"]  # "0{...}": the open packet
    session = f"{base}&sid={sid}"
    assert requests.post(session, data="40/events,", timeout=5).status_code == 200
    assert requests.post(session, data="1", timeout=5).status_code == 200  # CLOSE
    with caplog.at_level(logging.INFO):
        late = requests.request(method, session, data="2", timeout=5)
    assert late.status_code == 400
    assert "Session is disconnected" in late.text
    assert "Traceback" not in caplog.text
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200


# Headers


@pytest.mark.parametrize("path", ["/", "/static/feed.js", "/healthz"])
def test_responses_carry_csp_nosniff_and_referrer_policy(client, path):
    response = client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    response.close()


# Secrets


def test_the_database_password_never_reaches_logs_or_health(caplog):
    from feed import create_app

    url = "postgresql://app:hunter2-s3cret@127.0.0.1:1/feed?connect_timeout=1"
    app = create_app({"DATABASE_URL": url, "FEED_LISTENER_TIMEOUT": 1})
    with caplog.at_level(logging.DEBUG):
        from feed.service.process_feed import start_feed, stop_feed

        assert start_feed(app, timeout=1) is False
        body = app.test_client().get("/healthz").get_data(as_text=True)
        stop_feed(app)
    assert "hunter2" not in caplog.text
    assert "hunter2" not in body


REJECTING_RULES = {
    "check constraint": (
        "ALTER TABLE events ADD CONSTRAINT no_x CHECK (event <> 'x')",
        "ALTER TABLE events DROP CONSTRAINT no_x",
    ),
    "trigger": (
        "CREATE FUNCTION no_x() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'no_x: x is not allowed'; END$$; "
        "CREATE TRIGGER no_x BEFORE INSERT ON events FOR EACH ROW "
        "WHEN (NEW.event = 'x') EXECUTE FUNCTION no_x()",
        "DROP TRIGGER no_x ON events; DROP FUNCTION no_x()",
    ),
}


@pytest.mark.parametrize("rule", REJECTING_RULES)
def test_a_row_the_database_refuses_is_answered_as_refused_without_internals(
    app_process, sio_client, writer, mode, rule
):
    served = app_process(mode)
    feed_client = sio_client(served.url)
    add, drop = REJECTING_RULES[rule]
    with writer.cursor() as cursor:
        cursor.execute(add)
    try:
        ack = feed_client.call("event", "x")
        allowed = feed_client.call("event", "y")
    finally:
        with writer.cursor() as cursor:
            cursor.execute(drop)
    assert ack == {"ok": False, "error": "the database refused to store this event"}
    assert allowed["ok"] is True
    assert count_rows(writer) == 1
    wait_for(
        lambda: any("refused by the database" in line for line in served.output),
        message="the refusal in the log",
    )
    (line,) = [line for line in served.output if "refused by the database" in line]
    assert "no_x" in line  # the operator sees which rule; the client does not


# Least privilege


@pytest.fixture
def app_role(database_url, writer):
    """A login role with only what the app needs: SELECT, INSERT, the sequence."""
    with writer.cursor() as cursor:
        cursor.execute("DROP ROLE IF EXISTS feed_app_test")
        cursor.execute("CREATE ROLE feed_app_test LOGIN")
        cursor.execute("GRANT SELECT, INSERT ON events TO feed_app_test")
        cursor.execute("GRANT USAGE ON SEQUENCE events_id_seq TO feed_app_test")
    url = database_url.replace("postgresql://postgres", "postgresql://feed_app_test", 1)
    yield url
    with writer.cursor() as cursor:
        cursor.execute("REVOKE ALL ON events FROM feed_app_test")
        cursor.execute("REVOKE ALL ON SEQUENCE events_id_seq FROM feed_app_test")
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = 'feed_app_test'"
        )
        cursor.execute("DROP ROLE feed_app_test")


def test_the_app_runs_under_a_least_privilege_role(
    app_role, app_process, sio_client, writer, mode
):
    check = psycopg2.connect(app_role)
    with pytest.raises(psycopg2.errors.InsufficientPrivilege), check.cursor() as cursor:
        cursor.execute("DELETE FROM events")
    check.close()
    served = app_process(mode, database_url=app_role)
    feed_client = sio_client(served.url)
    ack = feed_client.call("event", "as the app role")
    assert ack["ok"] is True
    big = "é" * 4000  # 8000 bytes: read back by the listener, which needs SELECT
    big_ack = feed_client.call("event", big)
    wait_for(lambda: feed_client.ids() == [ack["id"], big_ack["id"]], message="rows")
    assert feed_client.rows()[1]["event"] == big
    assert (
        feed_client.call("sync", {"after": 0})["events"][0]["event"]
        == "as the app role"
    )
    assert requests.get(f"{served.url}/healthz", timeout=5).status_code == 200
