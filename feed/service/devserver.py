"""`python app.py`: embedded PostgreSQL when no DATABASE_URL, migrations, then serve."""

import gc
import logging
import os
import signal
import threading

from flask_migrate import upgrade
from werkzeug.serving import (
    WSGIRequestHandler,
    is_running_from_reloader,
    make_server,
    run_simple,
)

from config import embedded_database_dir

from .. import create_app
from ..database.urls import mask_url
from . import embedded_postgres, logs, readiness
from .process_feed import close_clients, start_feed, stop_feed

log = logging.getLogger(__name__)


class EndsWithItsWebSocket(WSGIRequestHandler):
    """Werkzeug's handler, closing the connection once a WebSocket on it ends.

    A WebSocket ends its request with ConnectionError (simple-websocket's way
    out of Werkzeug). Werkzeug then keeps the connection for another request
    and parses what the client still sends (its close frame) as HTTP: a
    "Bad request syntax" error in the log after every WebSocket.
    """

    def connection_dropped(self, error, environ=None):
        self.close_connection = True


def main():
    """Run the development server as configured by the environment."""
    logs.configure_from_environment()
    overrides = {}
    if not os.environ.get("DATABASE_URL"):
        overrides["DATABASE_URL"] = start_embedded_database(embedded_database_dir())
    app = create_app(overrides)
    log.info("database: %s", mask_url(app.config["DATABASE_URL"]))
    if os.environ.get("FEED_MIGRATE", "1") != "0":
        upgrade_schema(app)
    if os.environ.get("FEED_DEBUG") == "1":
        serve_with_reloader(app)
    else:
        serve(app)
        # The process exits next. Most of the time from "stopped" to exit was
        # the interpreter's teardown collecting every object (0.15 s idle, over
        # 0.5 s on a busy machine); frozen objects are skipped. atexit handlers,
        # such as the embedded server's stop, still run.
        gc.freeze()


def start_embedded_database(pgdata):
    """Start (or reuse) the embedded PostgreSQL in `pgdata`; return its URL."""
    return embedded_postgres.start(pgdata, cleanup_mode="stop").get_uri()


def upgrade_schema(app):
    """Apply the migrations, as `flask db upgrade` does."""
    with app.app_context():
        try:
            upgrade()
        except SystemExit as exc:
            # flask_migrate.upgrade() exits the process on errors.
            raise RuntimeError("database migration failed; see the log above") from exc


def serve(app):
    """Serve until SIGINT or SIGTERM, with LISTEN in place before the first client."""
    host, port = app.config["HOST"], app.config["PORT"]
    if app.config["FEED_SERVER_MODE"] != "threaded":
        log.warning(
            "FEED_SERVER_MODE=%s is for `make serve` (gunicorn); python app.py is "
            "the development server and serves threaded",
            app.config["FEED_SERVER_MODE"],
        )
    server = make_server(
        host, port, app, threaded=True, request_handler=EndsWithItsWebSocket
    )
    if not start_feed(app, timeout=app.config["FEED_LISTENER_TIMEOUT"]):
        log.error("serving without LISTEN: the database is unreachable; retrying")
    _stop_on_signals(server)
    print(f" * pg-feed serving on http://{host}:{server.port}", flush=True)
    readiness.announce(readiness.socket_url(server.socket), mode="development")
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        close_clients()
        stop_feed(app)
        server.server_close()
        log.info("stopped")


def serve_with_reloader(app):
    """Serve with the reloader and debugger; the listener runs in the child only."""
    if is_running_from_reloader():
        start_feed(app)
    run_simple(
        app.config["HOST"],
        app.config["PORT"],
        app,
        threaded=True,
        use_reloader=True,
        use_debugger=True,
    )


def _stop_on_signals(server):
    def stop(signum, frame):
        log.info("received %s, shutting down", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
