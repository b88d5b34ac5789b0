"""Fixtures: a real PostgreSQL, the app, the app served on a real port, real clients.

The helpers behind them live in tests/support/.
"""

import os

import psycopg2
import pytest

from feed import create_app
from feed.extensions import db
from feed.service.process_feed import stop_feed
from support.clients import FeedClient, RecordedFeed, client_factory
from support.database import (
    ControlledPostgres,
    EmbeddedPostgres,
    FreezableProxy,
    create_database,
    drop_database,
    empty_quietly,
    migrate_to_head,
    set_wake_mode,
)
from support.pgbouncer import start_or_skip
from support.processes import SERVER_MODES, AppProcess, ServedApp


@pytest.fixture(scope="session")
def postgres():
    """A server URL: TEST_DATABASE_URL, or an embedded PostgreSQL for this run."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    embedded = EmbeddedPostgres("pgfeed-test-")
    yield embedded.server_url
    embedded.close()


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
    empty_quietly(database_url)
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    yield connection
    connection.close()


@pytest.fixture
def wake_mode(request, writer):
    """The database's wake-up mode while the test's apps start: "notify", or
    each mode in turn with support.database.both_wake_modes."""
    mode = getattr(request, "param", "notify")
    if mode != "notify":
        set_wake_mode(writer, mode)
    return mode


@pytest.fixture
def app(database_url, writer, wake_mode):
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


@pytest.fixture
def server(app):
    """The app served on 127.0.0.1 on a free port, listener started first."""
    served = ServedApp(app).start()
    yield served
    served.stop()


@pytest.fixture
def serve_app(database_url, writer, wake_mode):
    """Factory: serve_app(**config) -> a ServedApp of an app with these settings."""
    served = []

    def start(**config):
        app = create_app({"DATABASE_URL": database_url, "TESTING": True, **config})
        served.append(ServedApp(app))
        return served[-1].start()

    yield start
    for one in served:
        one.stop()
        stop_feed(one.app)
        with one.app.app_context():
            db.engine.dispose()


@pytest.fixture
def sio_client():
    """Factory: sio_client(url, **options) -> a connected FeedClient."""
    yield from client_factory(FeedClient)


@pytest.fixture
def resuming_client():
    """Factory: resuming_client(url, **options) -> a connected feed.client Feed
    that records what it applies (support.clients.RecordedFeed)."""
    yield from client_factory(RecordedFeed)


@pytest.fixture(params=SERVER_MODES)
def mode(request):
    """Each server mode in turn: "threaded" (gthread) and "gevent"."""
    return request.param


@pytest.fixture
def app_process(database_url, writer, wake_mode):
    """Factory: app_process(mode=None, **env) -> a running AppProcess, stopped after.

    `database_url=` in env runs it on another database than the session's
    (None: no DATABASE_URL, so `python app.py` starts an embedded one).
    """
    processes = []

    def start(mode=None, **env):
        process = AppProcess(env.pop("database_url", database_url), mode, **env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


@pytest.fixture(scope="module")
def controlled_postgres():
    """A PostgreSQL of this test module's own, which its tests may stop and start."""
    controlled = ControlledPostgres()
    yield controlled
    controlled.close()


@pytest.fixture
def faulty_postgres(controlled_postgres, wake_mode):
    """controlled_postgres, running, with an empty events table, in the test's
    wake-up mode (set every time: the server outlives a test)."""
    controlled_postgres.start()
    controlled_postgres.admin("TRUNCATE events RESTART IDENTITY")
    connection = psycopg2.connect(controlled_postgres.url)
    connection.autocommit = True
    try:
        set_wake_mode(connection, wake_mode)
    finally:
        connection.close()
    yield controlled_postgres
    controlled_postgres.start()


@pytest.fixture
def freezable_proxy(faulty_postgres):
    """A FreezableProxy in front of faulty_postgres; its libpq URL is proxy.url."""
    proxy = FreezableProxy(faulty_postgres.socket_path)
    proxy.url = f"postgresql://postgres@127.0.0.1:{proxy.port}/faults"
    yield proxy
    proxy.close()


@pytest.fixture
def pgbouncer(postgres):
    """PgBouncer in transaction mode in front of the test server, stopped after."""
    bouncer = start_or_skip(postgres)
    yield bouncer
    bouncer.close()
