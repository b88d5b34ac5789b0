"""`python app.py` on a fresh machine: embedded PostgreSQL, migrations, serving."""

import requests

from conftest import AppProcess, FeedClient, wait_for


def test_python_app_py_starts_an_embedded_database_migrates_and_serves(tmp_path):
    pgdata = tmp_path / "pgdata"
    app_process = AppProcess(FEED_EMBEDDED_PGDATA=str(pgdata), FEED_MIGRATE="1")
    try:
        health = requests.get(f"{app_process.url}/healthz", timeout=5)
        assert health.status_code == 200, health.text
        feed_client = FeedClient(app_process.url)
        ack = feed_client.call("event", "hello from a fresh machine")
        assert ack == {"ok": True, "id": 1}
        wait_for(lambda: feed_client.ids() == [1], message="the row")
        feed_client.close()
    finally:
        assert app_process.stop() == 0
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists()  # stopped with the app


def test_python_app_py_reuses_the_embedded_database(tmp_path):
    pgdata = tmp_path / "pgdata"
    for expected_id in (1, 2):
        app_process = AppProcess(FEED_EMBEDDED_PGDATA=str(pgdata), FEED_MIGRATE="1")
        try:
            feed_client = FeedClient(app_process.url)
            assert feed_client.call("event", "kept")["id"] == expected_id
            feed_client.close()
        finally:
            app_process.stop()


def test_python_app_py_says_it_serves_threaded_whatever_the_mode(app_process):
    served = app_process(FEED_SERVER_MODE="gevent")
    assert any("is for `make serve`" in line for line in served.output)
    assert requests.get(f"{served.url}/healthz", timeout=5).status_code == 200
