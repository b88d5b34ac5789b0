"""`python app.py` on a fresh machine: embedded PostgreSQL, migrations, serving."""

import pytest
import requests

from support.waiting import wait_for

# No DATABASE_URL: `python app.py` starts the embedded server in pgdata itself.
EMBEDDED = {"database_url": None, "FEED_MIGRATE": "1"}


def test_python_app_py_starts_an_embedded_database_migrates_and_serves(
    tmp_path, app_process, sio_client
):
    pgdata = tmp_path / "pgdata"
    served = app_process(FEED_EMBEDDED_PGDATA=str(pgdata), **EMBEDDED)
    health = requests.get(f"{served.url}/healthz", timeout=5)
    assert health.status_code == 200, health.text
    feed_client = sio_client(served.url)
    ack = feed_client.call("event", "hello from a fresh machine")
    assert ack == {"ok": True, "id": 1}
    wait_for(lambda: feed_client.ids() == [1], message="the row")
    feed_client.close()
    assert served.stop() == 0
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists()  # stopped with the app


def test_python_app_py_reuses_the_embedded_database(tmp_path, app_process, sio_client):
    pgdata = tmp_path / "pgdata"
    for expected_id in (1, 2):
        served = app_process(FEED_EMBEDDED_PGDATA=str(pgdata), **EMBEDDED)
        feed_client = sio_client(served.url)
        assert feed_client.call("event", "kept")["id"] == expected_id
        feed_client.close()
        served.stop()


def test_python_app_py_says_it_serves_threaded_whatever_the_mode(app_process):
    served = app_process(FEED_SERVER_MODE="gevent")
    served.line_with("is for `make serve`")
    assert requests.get(f"{served.url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_a_websocket_ending_leaves_no_error_in_the_log(
    app_process, sio_client, transport
):
    served = app_process()
    for _ in range(3):
        feed_client = sio_client(served.url, transports=(transport, "websocket"))
        assert feed_client.call("event", "x" * 100_000)["ok"] is False
        feed_client.close()
    served.stop()
    errors = [line for line in served.output if " ERROR " in line]
    assert errors == [], errors
