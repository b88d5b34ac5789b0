"""This process's feed: its listener, relay, connected clients, start, stop, shutdown.

One per serving process, kept in app.extensions["feed"]. start_feed() runs once
the server is about to accept clients (python app.py, gunicorn's post_worker_init),
never from a request or in a CLI command.
"""

import logging
import threading
import time
import uuid

from sqlalchemy.exc import DBAPIError

from ..clients import protocol
from ..clients.security import AddressLimit, Tokens
from ..database import queries
from ..database.listener import Listener
from ..database.urls import libpq_url
from ..extensions import db, socketio
from ..fanout.relay import Relay
from ..upstream import sessions
from .metrics import FeedMetrics

log = logging.getLogger(__name__)

NAMESPACE = "/events"
CHANNEL = "events"
TABLES = ("events",)
SELF_TEST_SECONDS = 5.0


class ProcessFeed:
    """This process's feed: its listener, its relay and its connected clients."""

    def __init__(self, config):
        self.config = config
        self.lock = threading.Lock()
        self.listener = None
        self.relay = None
        self.clients = {}
        self.tokens = Tokens(config["FEED_READ_TOKEN"], config["FEED_WRITE_TOKEN"])
        self.addresses = AddressLimit(config["FEED_MAX_CONNECTIONS_PER_ADDRESS"])
        self.metrics = FeedMetrics(self)

    def live(self):
        """True while the listener has LISTEN in place."""
        return self.listener is not None and self.listener.is_listening()


def init_app(app):
    """Keep this process's feed on the app; nothing starts here."""
    app.extensions["feed"] = ProcessFeed(app.config)


def start_feed(app, timeout=10.0):
    """Start this process's relay and listener once; True when LISTEN is in place."""
    state = app.extensions["feed"]
    with state.lock:
        if state.listener is not None:
            return state.listener.is_listening()
        state.relay = Relay(socketio, NAMESPACE, state.metrics)
        state.relay.start()
        state.listener = _new_listener(app.config, state)
        listening = state.listener.start(timeout)
    if listening:
        threading.Thread(
            target=self_test, args=(app,), name="self-test", daemon=True
        ).start()
    return listening


def stop_feed(app):
    """Stop this process's listener and relay, if they run."""
    state = app.extensions["feed"]
    with state.lock:
        if state.listener is not None:
            state.listener.stop()
            state.relay.stop()
            state.listener = state.relay = None


def close_clients(timeout=2.0):
    """Close every client's connection with a proper CLOSE; wait briefly for it.

    Without the library reaches there is no way to see the CLOSE go out: the
    connections are closed without waiting.
    """
    all_sessions = sessions.all_sessions(socketio.server.eio)
    for session in all_sessions:
        session.close(wait=False, abort=False)
    if not socketio.server.manager.reaches:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        map(sessions.still_sending, all_sessions)
    ):
        time.sleep(0.01)


def _new_listener(config, state):
    url = config["LISTENER_DATABASE_URL"] or config["DATABASE_URL"]

    def on_batch(batch):
        state.metrics.notifications.inc(len(batch))
        state.relay.rows([protocol.wire_row(n) for n in batch], time.monotonic())

    def on_state(listening):
        announce_state(state.relay, listening)
        if listening:
            state.metrics.resyncs.labels("all").inc()

    return Listener(
        libpq_url(url),
        CHANNEL,
        on_batch=on_batch,
        on_state=on_state,
        tables=TABLES,
        idle_check=config["FEED_LISTENER_IDLE_CHECK"],
        timeout=config["FEED_LISTENER_TIMEOUT"],
    )


def announce_state(relay, listening):
    """Tell every client the feed's state; after an outage, have them catch up."""
    relay.message("status", {"feed": "live" if listening else "offline"})
    if listening:
        relay.message("resync", {})


def self_test(app):
    """NOTIFY through the app's own pool and check the listener hears it."""
    listener = app.extensions["feed"].listener
    token = uuid.uuid4().hex
    arrived = listener.expect_probe(token)
    with app.app_context():
        try:
            db.session.execute(queries.notify_probe(CHANNEL, token))
            db.session.commit()
        except DBAPIError as exc:
            log.warning("start-up self-test could not send NOTIFY: %s", exc.orig)
            return False
    if arrived.wait(SELF_TEST_SECONDS):
        log.info("start-up self-test: the listener hears the app's NOTIFY")
        return True
    log.error(
        "start-up self-test: a NOTIFY sent through DATABASE_URL did not reach the "
        "listener within %g s. The likely cause is a transaction-mode pooler such "
        "as PgBouncer between the listener and PostgreSQL (LISTEN does not work "
        "through one), or the two URLs pointing at different databases. Fix: set "
        "LISTENER_DATABASE_URL to a direct (or session-mode) connection to the "
        "same database.",
        SELF_TEST_SECONDS,
    )
    return False
