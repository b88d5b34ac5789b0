"""`make serve`: gunicorn in each server mode, a listener per worker, clean stops."""

import json
import subprocess
import sys

import pytest
import requests

from support.database import insert_row
from support.processes import ROOT
from support.waiting import wait_for


def test_gunicorn_serves_the_feed_and_stops_cleanly(
    app_process, writer, sio_client, mode
):
    served = app_process(mode)
    served.line_with(f"pg-feed {mode} mode")
    wait_for(
        lambda: requests.get(f"{served.url}/healthz", timeout=5).status_code == 200,
        message="the worker's listener",
    )
    feed_client = sio_client(served.url)
    ack = feed_client.call("event", f"through gunicorn, {mode}")
    assert ack["ok"] is True
    from_psql = insert_row(writer, "from psql")
    wait_for(lambda: feed_client.ids() == [ack["id"], from_psql], message="rows")
    metrics = requests.get(f"{served.url}/metrics", timeout=5).text
    assert "feed_rows_emitted_total 2.0" in metrics
    assert "feed_connected_clients 1.0" in metrics
    reasons = []
    feed_client.sio.on("disconnect", reasons.append, namespace="/events")
    assert served.stop() == 0, "".join(served.output)
    wait_for(lambda: reasons, message="a clean disconnect on SIGTERM")


def test_the_async_mode_follows_the_server_mode(app_process, mode):
    served = app_process(mode)
    expected = {"threaded": "threading", "gevent": "gevent"}[mode]
    served.line_with(f"(Socket.IO async_mode {expected})")


@pytest.mark.parametrize(
    ("server_mode", "announced"),
    [(None, "development"), ("threaded", "threaded"), ("gevent", "gevent")],
    ids=["app.py", "threaded", "gevent"],
)
def test_the_ready_file_names_the_serving_process_and_the_port_it_bound(
    app_process, server_mode, announced
):
    served = app_process(server_mode)  # PORT=0: the real port is only known bound
    ready = json.loads(served.ready_file.read_text())
    assert ready["mode"] == announced
    assert ready["pid"] == serving_process(served.process.pid, server_mode)
    assert not ready["url"].endswith(":0")
    assert requests.get(f"{ready['url']}/healthz", timeout=5).status_code == 200


def serving_process(pid, server_mode):
    """`pid` itself (python app.py), or gunicorn's only worker, read from /proc."""
    if server_mode is None:
        return pid
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        (worker,) = children.read().split()
    return int(worker)


def test_app_records_reach_gunicorns_log_as_json_lines(app_process, mode):
    served = app_process(mode, FEED_LOG_FORMAT="json")
    wait_for(lambda: any("self-test" in line for line in served.output), timeout=15)
    line = next(line for line in served.output if "self-test" in line)
    record = json.loads(line)
    assert record["logger"] == "feed.service.process_feed" and record["level"] == "INFO"


def test_an_unknown_server_mode_is_refused_with_the_choices():
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "app:app"],
        cwd=ROOT,
        env={"FEED_SERVER_MODE": "eventlet", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "expected one of threaded, gevent" in result.stderr


def test_the_database_password_never_reaches_gunicorns_log_or_health(app_process, mode):
    served = app_process(
        mode,
        database_url="postgresql://app:hunter2-s3cret@127.0.0.1:1/feed",
        FEED_LISTENER_TIMEOUT="1",
        FEED_LOG_LEVEL="DEBUG",
    )
    response = requests.get(f"{served.url}/healthz", timeout=10)
    assert response.status_code == 503 and "hunter2" not in response.text
    wait_for(
        lambda: sum("listener" in line for line in served.output) >= 3,
        message="the listener's failed attempts logged",
    )
    served.stop()
    assert "hunter2" not in "".join(served.output)
