"""`make serve`: gunicorn's threaded worker, a listener per worker, clean stops."""

import os
import signal
import subprocess
import sys
import threading

import requests

from conftest import ROOT, insert_row, wait_for


class Gunicorn:
    """gunicorn -c deploy/gunicorn.conf.py app:app on a free port."""

    def __init__(self, database_url, **env):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "deploy/gunicorn.conf.py",
                "app:app",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "DATABASE_URL": database_url,
                "PORT": "0",
                "FEED_THREADS": "50",
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = []
        self.url = self._read_url()
        threading.Thread(target=self._read_rest, daemon=True).start()

    def _read_url(self):
        for line in self.process.stdout:
            self.output.append(line)
            if "Listening at: " in line:
                return line.split("Listening at: ")[1].split()[0]
        raise AssertionError(
            "gunicorn exited before listening:\n" + "".join(self.output)
        )

    def _read_rest(self):
        for line in self.process.stdout:
            self.output.append(line)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)


def test_gunicorn_threaded_serves_the_feed(database_url, writer, sio_client):
    server = Gunicorn(database_url)
    try:
        wait_for(
            lambda: requests.get(f"{server.url}/healthz", timeout=5).status_code == 200,
            message="the worker's listener",
        )
        feed_client = sio_client(server.url)
        ack = feed_client.call("event", "through gunicorn")
        assert ack["ok"] is True
        from_psql = insert_row(writer, "from psql")
        wait_for(lambda: feed_client.ids() == [ack["id"], from_psql], message="rows")
        reasons = []
        feed_client.sio.on("disconnect", reasons.append, namespace="/events")
    finally:
        code = server.stop()
    assert code == 0, "".join(server.output)
    wait_for(lambda: reasons, message="a clean disconnect on SIGTERM")
