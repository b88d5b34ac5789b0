"""The app served for tests: in a thread of this process, or as users run it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from werkzeug.serving import make_server

from feed.service import readiness
from feed.service.process_feed import start_feed
from support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
SERVER_MODES = ("threaded", "gevent")
READY_TIMEOUT = 60.0  # the first start of an embedded PostgreSQL plus migrations


class ServedApp:
    """An app served by Werkzeug on a real port in a thread of this process."""

    def __init__(self, app):
        self.app = app
        self.http = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.http.port}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def start(self):
        """Start the feed, then serve; on failure nothing is left listening."""
        if not start_feed(self.app):
            self.http.server_close()
            raise AssertionError("listener did not start")
        self.thread.start()
        return self

    def stop(self):
        """Stop serving and close the port (the caller stops the feed)."""
        if self.thread.is_alive():
            self.http.shutdown()
            self.thread.join(5)
        self.http.server_close()


class AppProcess:
    """The app in its own process on a free port, as users run it.

    mode None: `python app.py` (the development server). mode "threaded" or
    "gevent": `gunicorn -c deploy/gunicorn.conf.py app:app` with that
    FEED_SERVER_MODE, as `make serve` runs it. Ready when the serving process
    has written its FEED_READY_FILE; a process that fails to get there is stopped.
    """

    def __init__(self, database_url=None, mode=None, **env):
        self.mode = mode
        self.folder = Path(tempfile.mkdtemp(prefix="pgfeed-app-"))
        self.ready_file = self.folder / "ready.json"
        self.output = []
        self.process = subprocess.Popen(
            [sys.executable, *_command(mode)],
            cwd=ROOT,
            env=_environment(database_url, mode, self.ready_file, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._drain = threading.Thread(target=self._read_output, daemon=True)
        self._drain.start()
        try:
            self.url = self._wait_until_ready()["url"]
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self):
        try:
            return readiness.wait_until_ready(
                self.ready_file, self.process, READY_TIMEOUT
            )
        except readiness.NotReady as exc:
            if self.process.poll() is not None:
                self._drain.join(5)  # everything it printed before it exited
            raise AssertionError(f"app {exc}:\n" + "".join(self.output)) from None

    def _read_output(self):
        for line in self.process.stdout:
            self.output.append(line)

    def line_with(self, text, timeout=10.0):
        """The first output line containing `text`, waiting up to `timeout` s.

        The ready file can appear before the drain thread has read the lines
        printed just before it.
        """
        return wait_for(
            lambda: next((line for line in list(self.output) if text in line), None),
            timeout,
            message=f"{text!r} in the app's output",
        )

    def serving_pid(self):
        """The pid of the process that holds the clients (gunicorn's worker)."""
        return json.loads(self.ready_file.read_text())["pid"]

    def kill(self):
        """SIGKILL the process holding the clients and gunicorn's master: a crash."""
        serving = self.serving_pid()
        self.process.kill()
        if serving != self.process.pid:
            os.kill(serving, signal.SIGKILL)
        self.process.wait(10)

    def stop(self):
        """SIGTERM (SIGKILL after 15 s); the exit code. Safe to call again."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._drain.join(5)
        self.process.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        return code


def _command(mode):
    if mode:
        return ["-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "app:app"]
    return ["app.py"]


def _environment(database_url, mode, ready_file, env):
    return {
        **os.environ,
        "DATABASE_URL": database_url or "",
        "PORT": "0",
        "FEED_MIGRATE": "0",
        "PYTHONUNBUFFERED": "1",
        "FEED_READY_FILE": str(ready_file),
        **({"FEED_SERVER_MODE": mode, "FEED_THREADS": "100"} if mode else {}),
        **env,
    }


def run_flask(database_url, *args):
    """Run `flask --app app <args>` as a user would, on database_url; the result."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
