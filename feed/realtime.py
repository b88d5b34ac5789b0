"""The Socket.IO namespace /events and the relay from the listener to its clients.

Wire protocol (namespace /events). A row is {"id": int, "op": str,
"event": str, "created_at": ISO 8601 str}, op one of INSERT, UPDATE, DELETE, TRUNCATE
(TRUNCATE: id, event and created_at null; DELETE: event and created_at may be null).

Client to server, each answered with an ack:
  event  "text"  -> {"ok": true, "id": n} | {"ok": false, "error": why}
  sync   {"after": n|null, "limit": k}  -> {"ok": true, "events": [row...], "more": b}
         after n: rows with id > n, ascending; more: further rows follow.
         after null: the newest k rows, ascending; more: older rows exist.
Server to client:
  events [row, ...]   every change, in commit order, batched per listener drain
  resync {}           the server may have missed changes: sync from your last id
One client's events are inserted in the order it sent them (async_handlers off).
"""

import logging
import threading
from functools import partial

from flask import current_app
from flask_socketio import Namespace
from sqlalchemy.exc import DBAPIError

from . import protocol, queries
from .database_urls import libpq_url
from .extensions import db, socketio
from .listener import Listener

log = logging.getLogger(__name__)

NAMESPACE = "/events"
CHANNEL = "events"
TABLE = "events"
CLIENT_EVENTS = ("event", "sync")


class FeedState:
    """This process's feed: its listener and its connected clients."""

    def __init__(self):
        self.lock = threading.Lock()
        self.listener = None
        self.clients = 0


def init_app(app):
    """Register the /events namespace and the feed's state on the app."""
    app.extensions["feed"] = FeedState()
    socketio.on_namespace(EventsNamespace(NAMESPACE))


def start_feed(app, timeout=10.0):
    """Start this process's listener once; True when LISTEN is in place."""
    state = app.extensions["feed"]
    with state.lock:
        if state.listener is None:
            url = app.config["LISTENER_DATABASE_URL"] or app.config["DATABASE_URL"]
            state.listener = Listener(
                libpq_url(url),
                CHANNEL,
                on_batch=partial(relay, socketio),
                on_reconnect=partial(send_resync, socketio),
            )
            return state.listener.start(timeout)
    return state.listener.is_listening()


def stop_feed(app):
    """Stop this process's listener, if it runs."""
    state = app.extensions["feed"]
    with state.lock:
        if state.listener is not None:
            state.listener.stop()
            state.listener = None


def relay(server, notifications):
    """Send one listener batch to every client as one `events` message."""
    rows = [protocol.wire_row(n) for n in notifications if n["table"] == TABLE]
    if rows:
        server.emit("events", rows, namespace=NAMESPACE)


def send_resync(server):
    """Tell every client to catch up with `sync`: the listener may have missed rows."""
    server.emit("resync", {}, namespace=NAMESPACE)


class EventsNamespace(Namespace):
    """Handlers for /events; every client message gets an ack, never a traceback."""

    def trigger_event(self, event, *args):
        if event in ("connect", "disconnect"):
            return super().trigger_event(event, *args)
        sid = args[0]
        if event not in CLIENT_EVENTS:
            return _refuse(sid, event, f"unknown message {str(event)[:40]!r}")
        try:
            return super().trigger_event(event, *args)
        except protocol.InputError as exc:
            return _refuse(sid, event, str(exc))
        except DBAPIError as exc:
            log.warning("%s from %s failed: database error: %s", event, sid, exc.orig)
            return protocol.error("the database is unavailable, try again shortly")
        except Exception:
            log.exception("%s from %s failed", event, sid)
            return protocol.error("internal error")

    def on_connect(self, auth=None):
        app = current_app._get_current_object()
        start_feed(app)
        state = app.extensions["feed"]
        with state.lock:
            state.clients += 1

    def on_disconnect(self, reason=None):
        state = current_app.extensions["feed"]
        with state.lock:
            state.clients -= 1

    def on_event(self, *args):
        text = protocol.event_text(args, current_app.config["FEED_MAX_EVENT_CHARS"])
        return protocol.ok(id=queries.insert_event(db.session, text))

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
        return protocol.ok(events=rows, more=more)


def _refuse(sid, event, reason):
    log.info("refused %s from %s: %s", event, sid, reason)
    return protocol.error(reason)
