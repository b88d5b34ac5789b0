"""The Socket.IO namespace /events: the handlers, and the wire protocol they speak.

Wire protocol (namespace /events). A row is {"id": int, "op": str,
"event": str, "created_at": ISO 8601 str}, op one of INSERT, UPDATE, DELETE, TRUNCATE
(TRUNCATE: id, event and created_at null; DELETE: event and created_at may be null).

Client to server, each answered with an ack:
  event  "text"  -> {"ok": true, "id": n} | {"ok": false, "error": why}
  sync   {"after": n|null | "before": n | "cursor": c, "limit": k}
         -> {"ok": true, "events": [row...], "more": b, "cursor": c,
             "feed": "live"|"offline"|"stalled", "reason": why (when not live)}
         after n: rows with id > n, ascending; more: further rows follow.
         after null: the newest k rows, ascending; more: older rows exist.
         before n: the k rows with id < n, ascending; more: older rows exist.
         cursor c: changes since c as rows with a version (docs/RESUME.md);
         a cursor it cannot use -> {"ok": true, "reset": true, "message": why}
Server to client:
  events [row, ...]   every change, in commit order, batched per listener drain
  resync {}           the server may have missed changes: catch up with sync
  status {"feed": "live"|"offline"|"stalled", "reason": why (when not live)}
         the feed's state changed: LISTEN lost or back, delivery probes failing
One client's events are inserted in the order it sent them (async_handlers off).
"""

import logging

from engineio.exceptions import SocketIsClosedError
from flask import current_app, request
from flask_socketio import ConnectionRefusedError, Namespace
from socketio import packet
from sqlalchemy.exc import DBAPIError

from ..database import errors, positions, queries
from ..extensions import db, socketio
from ..service.process_feed import NAMESPACE
from . import protocol
from .security import TokenBucket

log = logging.getLogger(__name__)

CLIENT_EVENTS = ("event", "sync")
REFUSED_BY_DATABASE = {
    "event": "the database refused to store this event",
    "sync": "the database refused this request",
}


class Client:
    """One connection: what it may do, its event budget, where it comes from."""

    def __init__(self, can_write, config, address):
        self.can_write = can_write
        self.bucket = TokenBucket(config["FEED_EVENT_RATE"], config["FEED_EVENT_BURST"])
        self.address = address


class OversizeAnswer:
    """Refuses a message past the size limit with an ack, as any other refusal.

    Called by the transport with the message's first characters and its size;
    the rest was never kept.
    """

    def __init__(self, app, max_bytes):
        self.max_chars = app.config["FEED_MAX_EVENT_CHARS"]
        self.max_bytes = max_bytes
        self.metrics = app.extensions["feed"].metrics

    def __call__(self, eio_sid, head, size):
        refusal = protocol.oversize_refusal(head, size, self.max_chars, self.max_bytes)
        if refusal is None:
            log.info("refused a %d-byte message from %s: too large", size, eio_sid)
            self.metrics.refused.labels("unknown").inc()
            return
        namespace, ack, name, answer = refusal
        log.info("refused %s from %s: %s", name[:40], eio_sid, answer["error"])
        self.metrics.refused.labels(name if name in CLIENT_EVENTS else "unknown").inc()
        if ack is not None:
            _send_ack(eio_sid, namespace, ack, answer)


def _send_ack(eio_sid, namespace, ack, answer):
    encoded = socketio.server.packet_class(
        packet.ACK, namespace=namespace, data=[answer], id=ack
    ).encode()
    try:
        socketio.server.eio.send(eio_sid, encoded)
    except SocketIsClosedError:
        pass  # the sender is gone: nobody to answer


def init_app(app):
    """Register the /events namespace for this app's feed."""
    state = app.extensions["feed"]
    socketio.on_namespace(EventsNamespace(NAMESPACE, state))
    socketio.server.manager.on_overflow = state.metrics.resyncs.labels("client").inc
    socketio.server.manager.on_send_failure = state.metrics.send_failures.inc


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
            return self._database_error(sid, event, exc)
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
        request = protocol.sync_request(
            args,
            current_app.config["FEED_HISTORY_LIMIT"],
            current_app.config["FEED_SYNC_MAX_LIMIT"],
        )
        feed = current_app.extensions["feed"].feed_fields()
        epoch = positions.epoch(db.session)
        if request.cursor is not None:
            return protocol.ok(**_resume(request, epoch), **feed)
        # Read before the rows: every change below it is in what follows.
        cursor = positions.Position(queries.watermark(db.session), 0).cursor(epoch)
        rows, more = _history(request)
        return protocol.ok(events=rows, more=more, cursor=cursor, **feed)

    def _database_error(self, sid, event, exc):
        if errors.is_unavailable(exc):
            log.warning(
                "%s from %s failed: database unavailable: %s",
                event,
                sid,
                errors.describe(exc),
            )
            return protocol.error("the database is unavailable, try again shortly")
        log.warning(
            "%s from %s refused by the database: %s", event, sid, errors.describe(exc)
        )
        self.state.metrics.refused.labels(event).inc()
        return protocol.error(REFUSED_BY_DATABASE[event])

    def _refuse(self, sid, event, reason):
        log.info("refused %s from %s: %s", event, sid, reason)
        self.state.metrics.refused.labels(event).inc()
        return protocol.error(reason)


def _history(request):
    """(rows, more) of a `sync` by id: the newest rows, or after or before an id."""
    if request.before is not None:
        return queries.events_before(db.session, request.before, request.limit)
    if request.after is None:
        return queries.latest_events(db.session, request.limit)
    return queries.events_after(db.session, request.after, request.limit)


def _resume(request, epoch):
    """The answer to `sync {"cursor": c}`: what follows c, or a reset."""
    try:
        position = positions.parse(request.cursor, epoch)
        page = positions.changes_after(db.session, position, request.limit)
    except positions.CursorReset as exc:
        return {"reset": True, "message": f"{exc}: sync with after null"}
    cursor = page.next_position.cursor(epoch)
    return {"events": page.rows, "more": page.more, "cursor": cursor}


def _address():
    return request.environ.get("REMOTE_ADDR", "unknown")
