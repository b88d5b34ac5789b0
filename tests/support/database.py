"""Real PostgreSQL for the tests: embedded servers, test databases, rows, faults."""

import shutil
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from flask_migrate import upgrade
from psycopg2 import sql

from feed import create_app
from feed.extensions import db
from feed.service import embedded_postgres


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
    drop_database(server_url, name)
    _run_as_admin(server_url, sql.SQL("CREATE DATABASE {}"), name)
    return with_database(server_url, name)


def drop_database(server_url, name):
    """Drop database `name`, disconnecting whoever still uses it."""
    _run_as_admin(server_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)"), name)


def _run_as_admin(server_url, statement, name):
    admin = psycopg2.connect(server_url)
    admin.autocommit = True  # CREATE and DROP DATABASE refuse to run in a transaction
    try:
        with admin.cursor() as cursor:
            cursor.execute(statement.format(sql.Identifier(name)))
    finally:
        admin.close()


def migrate_to_head(url):
    """Apply the real migrations to the database at `url`."""
    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        upgrade()
        db.engine.dispose()


def empty_quietly(url):
    """Empty the events table without a TRUNCATE notification to running apps,
    and the removal log and its trim mark with it; back in notify mode."""
    connection = psycopg2.connect(url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("ALTER TABLE events DISABLE TRIGGER USER")
            cursor.execute("TRUNCATE events RESTART IDENTITY")
            cursor.execute("ALTER TABLE events ENABLE TRIGGER USER")
            cursor.execute("UPDATE feed_mode SET mode = 'notify'")  # as the triggers
            cursor.execute("TRUNCATE feed_removals")
            cursor.execute("UPDATE feed_trimmed SET feed_xid = '0', feed_seq = 0")
    finally:
        connection.close()


class EmbeddedPostgres:
    """An embedded PostgreSQL in a temporary folder, deleted by close()."""

    def __init__(self, prefix):
        self.folder = Path(tempfile.mkdtemp(prefix=prefix))
        self.server = embedded_postgres.start(
            self.folder / "data", cleanup_mode="delete"
        )
        self.server_url = self.server.get_uri()

    @property
    def socket_path(self):
        """The server's Unix socket."""
        return Path(self.server.pgdata) / ".s.PGSQL.5432"

    def close(self):
        """Stop the server and delete its data."""
        self.server.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)


class ControlledPostgres(EmbeddedPostgres):
    """An embedded PostgreSQL that a test may stop, start, and cut listeners from."""

    def __init__(self):
        super().__init__("pgfeed-faults-")
        try:
            self.url = create_database(self.server_url, "faults")
            migrate_to_head(self.url)
        except BaseException:
            self.close()
            raise
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


class FreezableProxy:
    """A TCP proxy to PostgreSQL's Unix socket whose open connections can go silent.

    freeze() stops forwarding on every connection open at that moment while
    keeping their sockets open, as a dead network link does; new connections
    still pass. close() ends every connection and joins every thread.
    """

    def __init__(self, unix_socket_path):
        self.target = str(unix_socket_path)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = []
        self.threads = []
        self.closing = False
        self._start(self._accept)

    def _start(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

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
                self._start(self._pump, source, sink, frozen)

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
        """Close the proxy and every connection through it; join its threads."""
        self.closing = True
        # shutdown() wakes a thread blocked in accept() or recv(); close() alone
        # does not on Linux.
        for sock in [self.listener] + [s for c in self.connections for s in c[:2]]:
            _shut(sock)
        for thread in list(self.threads):
            thread.join(5)


def _shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (a listening socket, or the peer already left)
    sock.close()


WAKE_MODES = ("notify", "poll")
# Runs a test once per wake-up mode: its apps start with the database in it.
both_wake_modes = pytest.mark.parametrize("wake_mode", WAKE_MODES, indirect=True)


def set_wake_mode(writer, mode):
    """Switch the database's wake-up mode as `flask feed mode` does."""
    with writer.cursor() as cursor:
        cursor.execute("SELECT feed_set_mode(%s)", (mode,))
