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


def test_a_huge_websocket_frame_is_refused_before_it_is_read(
    app_process, sio_client, writer
):
    app = app_process()
    bystander = sio_client(app.url)
    before = rss_bytes(app.process.pid)
    attacker = websocket.create_connection(
        app.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
        timeout=5,
    )
    assert attacker.recv().startswith("0")
    attacker.send("40/events,")
    assert attacker.recv().startswith("40/events,")
    try:
        attacker.send('42/events,["event","' + "x" * 30_000_000 + '"]')
    except (OSError, websocket.WebSocketTimeoutException):
        pass  # the server stopped reading (and closed): refused mid-frame
    wait_for(lambda: clients(app.url) == 1, timeout=30, message="the session to end")
    growth = rss_bytes(app.process.pid) - before
    assert growth < 10 * 2**20, f"{growth / 2**20:.1f} MiB read for a refused frame"
    assert count_rows(writer) == 0
    ack = bystander.call("event", "still fine")
    wait_for(lambda: bystander.ids() == [ack["id"]], message="bystander row")
    attacker.close()


def clients(url):
    return requests.get(f"{url}/healthz", timeout=5).json()["clients"]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_a_huge_polling_post_is_refused_before_its_body_is_read(server):
    handshake = requests.get(
        f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=5
    )
    sid = handshake.text.split('"sid":"')[1].split('"')[0]
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(
            f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nContent-Type: text/plain\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
        )
        status_line = raw.recv(4096).split(b"\r\n")[0]  # no body was sent at all
    assert status_line.startswith(b"HTTP/1.1 413")
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200


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
