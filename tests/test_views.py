"""The page and the health check over HTTP."""

import requests

from feed import create_app
from support.waiting import wait_for

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


def test_page_carries_the_settings_and_only_its_own_scripts(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'data-history-limit="100"' in html
    assert 'data-max-event-chars="4096"' in html
    assert "/static/vendor/socket.io/socket.io.min.js" in html
    assert "<script>" not in html  # no inline script
    assert "//cdn" not in html and "https://" not in html


def test_vendored_socket_io_client_is_served(client):
    response = client.get("/static/vendor/socket.io/socket.io.min.js")
    assert response.status_code == 200
    assert len(response.data) > 10_000
    response.close()


def test_healthz_is_200_when_listening_and_delivering(server):
    response = requests.get(f"{server.url}/healthz", timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["feed"] == "live" and "reason" not in body
    assert body["database"] == "reachable"
    assert body["listener"]["state"] == "listening"
    assert body["listener"]["reconnects"] == 0
    assert body["delivery"]["state"] == "delivering"
    assert body["delivery"]["last_ok_at"] is not None


def test_healthz_is_503_with_the_cause_when_notifications_do_not_arrive(
    serve_app, postgres
):
    # The listener on another database: LISTEN is in place, the app's probe
    # never reaches it (as through a transaction-mode pooler).
    served = serve_app(LISTENER_DATABASE_URL=postgres, FEED_DELIVERY_CHECK_TIMEOUT=0.3)
    response = requests.get(f"{served.url}/healthz", timeout=5)
    assert response.status_code == 503
    body = response.json()
    assert body["feed"] == "stalled" and body["listener"]["state"] == "listening"
    assert "PgBouncer" in body["reason"] and "LISTENER_DATABASE_URL" in body["reason"]
    assert body["delivery"]["last_failure"]["reason"] == body["reason"]


def test_healthz_counts_connected_clients(server, sio_client):
    sio_client(server.url)
    sio_client(server.url)
    assert requests.get(f"{server.url}/healthz", timeout=5).json()["clients"] == 2


def test_healthz_is_503_before_the_listener_starts(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["listener"]["state"] == "stopped" and body["feed"] == "offline"
    assert "LISTEN" in body["reason"]


def test_healthz_is_503_when_the_database_is_unreachable():
    app = create_app({"DATABASE_URL": UNREACHABLE})
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"
    assert "database" in response.get_json()["reason"]


def test_metrics_count_what_happens(server, sio_client):
    feed_client = sio_client(server.url)
    ack = feed_client.call("event", "counted")
    feed_client.call("event", "")
    feed_client.call("no_such_message")
    wait_for(lambda: feed_client.ids() == [ack["id"]], message="the row")
    text = wait_for(
        lambda: (
            (body := requests.get(f"{server.url}/metrics", timeout=5).text)
            and "feed_rows_emitted_total 1.0" in body
            and body
        ),
        message="the emit to be counted",
    )
    for line in [
        "feed_notifications_received_total 1.0",
        "feed_inserts_total 1.0",
        'feed_refused_inputs_total{message="event"} 1.0',
        'feed_refused_inputs_total{message="unknown"} 1.0',
        "feed_connected_clients 1.0",
        "feed_listener_up 1.0",
        "feed_delivering 1.0",
        "feed_delivery_probes_failed_total 0.0",
        "feed_delivery_probe_seconds_count 1.0",
        "feed_listener_reconnects 0.0",
        "feed_notification_to_emit_seconds_count 1.0",
        'feed_rows_per_message_bucket{le="1.0"} 1.0',
    ]:
        assert line in text, line


def test_json_log_lines():
    import json
    import logging

    from feed.service.logs import JsonLines

    record = logging.LogRecord(
        "feed.x", logging.WARNING, "f.py", 1, "hi %s", ("é",), None
    )
    entry = json.loads(JsonLines().format(record))
    assert entry["level"] == "WARNING" and entry["message"] == "hi é"
    assert entry["logger"] == "feed.x" and entry["time"].endswith("Z")
