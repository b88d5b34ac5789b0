"""The Socket.IO namespace /events, and this process's feed: listener to clients.

Wire protocol (namespace /events). A row is {"id": int, "op": str,
"event": str, "created_at": ISO 8601 str}, op one of INSERT, UPDATE, DELETE, TRUNCATE
(TRUNCATE: id, event and created_at null; DELETE: event and created_at may be null).

Client to server, each answered with an ack:
  event  "text"  -> {"ok": true, "id": n} | {"ok": false, "error": why}
  sync   {"after": n|null, "limit": k}
         -> {"ok": true, "events": [row...], "more": b, "feed": "live"|"offline"}
         after n: rows with id > n, ascending; more: further rows follow.
         after null: the newest k rows, ascending; more: older rows exist.
Server to client:
  events [row, ...]   every change, in commit order, batched per listener drain
  resync {}           the server may have missed changes: catch up with sync
  status {"feed": "live"|"offline"}   the LISTEN connection went down or came back
One client's events are inserted in the order it sent them (async_handlers off).
"""

import logging
import threading
import time
import uuid

from flask import current_app, request
from flask_socketio import ConnectionRefusedError, Namespace
from sqlalchemy.exc import DBAPIError

from . import protocol, queries
from .database_urls import libpq_url
from .extensions import db, socketio
from .listener import Listener
from .metrics import FeedMetrics
from .relay import Relay
from .security import AddressLimit, TokenBucket, Tokens

log = logging.getLogger(__name__)

NAMESPACE = "/events"
CHANNEL = "events"
TABLE = "events"
CLIENT_EVENTS = ("event", "sync")
SELF_TEST_SECONDS = 5.0


class FeedState:
    """This process's feed: its listener, its relay and its connected clients."""

    def __init__(self, config):
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


class Client:
    """One connection: what it may do, its event budget, where it comes from."""

    def __init__(self, can_write, config, address):
        self.can_write = can_write
        self.bucket = TokenBucket(config["FEED_EVENT_RATE"], config["FEED_EVENT_BURST"])
        self.address = address


def init_app(app):
    """Register the /events namespace and the feed's state on the app."""
    state = app.extensions["feed"] = FeedState(app.config)
    socketio.on_namespace(EventsNamespace(NAMESPACE, state))
    socketio.server.manager.on_overflow = state.metrics.resyncs.labels("client").inc


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
    """Close every client's connection with a proper CLOSE; wait briefly for it."""
    clients = list(socketio.server.eio.sockets.values())
    for client in clients:
        client.close(wait=False, abort=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(map(_sending, clients)):
        time.sleep(0.01)


def _sending(client):
    # The writer leaves a None (its stop mark) in the queue; anything else is
    # still to be sent.
    return any(item is not None for item in list(client.queue.queue))


def _new_listener(config, state):
    url = config["LISTENER_DATABASE_URL"] or config["DATABASE_URL"]

    def on_batch(batch):
        state.metrics.notifications.inc(len(batch))
        state.relay.rows(wire_rows(batch), time.monotonic())

    def on_state(listening):
        announce_state(state.relay, listening)
        if listening:
            state.metrics.resyncs.labels("all").inc()

    return Listener(
        libpq_url(url),
        CHANNEL,
        on_batch=on_batch,
        on_state=on_state,
        idle_check=config["FEED_LISTENER_IDLE_CHECK"],
        timeout=config["FEED_LISTENER_TIMEOUT"],
    )


def wire_rows(notifications):
    """The rows for clients from one listener batch (other tables are ignored)."""
    return [protocol.wire_row(n) for n in notifications if n["table"] == TABLE]


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


class EventsNamespace(Namespace):
    """Handlers for /events; every client message gets an ack, never a traceback."""

    def __init__(self, namespace, state):
        super().__init__(namespace)
        self.state = state

    def trigger_event(self, event, *args):
        if event in ("connect", "disconnect"):
            return super().trigger_event(event, *args)
        sid = args[0]
        if event not in CLIENT_EVENTS:
            return self._refuse(sid, "unknown", f"unknown message {str(event)[:40]!r}")
        try:
            return super().trigger_event(event, *args)
        except protocol.InputError as exc:
            return self._refuse(sid, event, str(exc))
        except DBAPIError as exc:
            log.warning("%s from %s failed: database error: %s", event, sid, exc.orig)
            return protocol.error("the database is unavailable, try again shortly")
        except Exception:
            log.exception("%s from %s failed", event, sid)
            return protocol.error("internal error")

    def on_connect(self, auth=None):
        app = current_app._get_current_object()
        state = app.extensions["feed"]
        can_read, can_write = state.tokens.rights(auth)
        if not can_read:
            log.info("refused a connection from %s: no valid token", _address())
            raise ConnectionRefusedError("a valid token is required to connect")
        if not state.addresses.acquire(_address()):
            log.info("refused a connection from %s: too many from there", _address())
            raise ConnectionRefusedError("too many connections from your address")
        start_feed(app)
        with state.lock:
            state.clients[request.sid] = Client(can_write, app.config, _address())

    def on_disconnect(self, reason=None):
        state = current_app.extensions["feed"]
        with state.lock:
            client = state.clients.pop(request.sid, None)
        if client is not None:
            state.addresses.release(client.address)

    def on_event(self, *args):
        client = current_app.extensions["feed"].clients.get(request.sid)
        if client is None or not client.can_write:
            raise protocol.InputError("not allowed")
        if not client.bucket.take():
            raise protocol.InputError(
                f"too many events: at most {client.bucket.rate:g} per second"
            )
        text = protocol.event_text(args, current_app.config["FEED_MAX_EVENT_CHARS"])
        new_id = queries.insert_event(db.session, text)
        self.state.metrics.inserts.inc()
        return protocol.ok(id=new_id)

    def on_sync(self, *args):
        after, limit = protocol.sync_request(
            args,
            current_app.config["FEED_HISTORY_LIMIT"],
            current_app.config["FEED_SYNC_MAX_LIMIT"],
        )
        if after is None:
            rows, more = queries.latest_events(db.session, limit)
        else:
            rows, more = queries.events_after(db.session, after, limit)
        live = current_app.extensions["feed"].live()
        return protocol.ok(events=rows, more=more, feed="live" if live else "offline")

    def _refuse(self, sid, event, reason):
        log.info("refused %s from %s: %s", event, sid, reason)
        self.state.metrics.refused.labels(event).inc()
        return protocol.error(reason)


def _address():
    return request.environ.get("REMOTE_ADDR", "unknown")
