"""Bounded per-client backlogs, and broadcasts that one failing client cannot stop.

python-engineio queues every outgoing packet per client without limit. This
client manager checks a client's queue before adding a broadcast to it; past
the limit (in messages or characters) it drops that client's queued broadcasts
(never its acks) and queues a `resync` instead, so the client recovers through
`sync` once it reads again. Other clients never wait: the check is a length
read, and characters are only summed for a client with more than one message
queued. A client whose session closes mid-broadcast (or fails in any other way)
is skipped and counted; the others still get the message.

Without the library reaches (feed/upstream) each client gets the broadcast
through python-socketio's own emit, one at a time, with the same containment
but no backlog bound.
"""

import logging

import orjson
import socketio
from engineio import packet as eio_packet
from socketio import packet

from ..upstream import sessions
from ..upstream.websocket import FramedText

log = logging.getLogger(__name__)

_SUM_FROM = 2  # a lone queued packet is being sent: its size is not counted


class BoundedManager(socketio.Manager):
    """socketio.Manager whose broadcasts respect a per-client backlog limit."""

    def __init__(self, max_messages=500, max_bytes=2**20, reaches=True, fast=True):
        super().__init__()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.reaches = reaches
        self.fast = fast  # frame once, write idle WebSockets directly
        self.on_overflow = lambda: None
        self.on_send_failure = lambda: None

    def emit(
        self,
        event,
        data,
        namespace,
        room=None,
        skip_sid=None,
        callback=None,
        to=None,
        **kwargs,
    ):
        special = callback or to or room or skip_sid
        if special or namespace not in self.rooms:
            return super().emit(
                event,
                data,
                namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                to=to,
                **kwargs,
            )
        if not self.reaches:
            return self._emit_one_by_one(event, data, namespace)
        message = self._encode(event, data, namespace)
        resync = []  # encoded once, on the first overflow
        for sid, eio_sid in list(self.get_participants(namespace, None)):
            try:
                self._send(eio_sid, message, resync, namespace)
            except Exception as exc:
                self._failed(sid, exc)

    def _emit_one_by_one(self, event, data, namespace):
        for sid, _eio_sid in list(self.get_participants(namespace, None)):
            try:
                super().emit(event, data, namespace, to=sid)
            except Exception as exc:
                self._failed(sid, exc)

    def _send(self, eio_sid, message, resync, namespace):
        session = sessions.open_session(self.server.eio, eio_sid)
        if session is None:
            return
        if self._over_limit(session):
            if not resync:
                resync.append(self._encode("resync", {}, namespace))
            self._drop_backlog(session, resync[0])
        if self.fast:
            _deliver(session, message)
        else:
            sessions.queue_packet(session, message)

    def _failed(self, sid, exc):
        self.on_send_failure()
        if isinstance(exc, sessions.SessionClosed | OSError):
            log.debug("broadcast skipped client %s: %r", sid, exc)
        else:
            log.warning("broadcast to client %s failed: %r", sid, exc)

    def _encode(self, event, data, namespace):
        # A tuple is several arguments, as python-socketio's emit takes them.
        arguments = list(data) if isinstance(data, tuple) else [data]
        # binary=False: the feed's messages are JSON from PostgreSQL, never
        # bytes, so python-socketio need not walk every row looking for some
        # (a tenth of the server's CPU for a 20,000-row transaction).
        message = self.server.packet_class(
            packet.EVENT, namespace=namespace, data=[event, *arguments], binary=False
        )
        message.json = FastJSON(message.json)
        encoded = message.encode()
        packet_class = BroadcastPacket if self.fast else QueuedBroadcast
        return packet_class(eio_packet.MESSAGE, encoded)

    def _over_limit(self, session):
        waiting = sessions.backlog_length(session)
        if waiting < _SUM_FROM:
            return False
        if waiting >= self.max_messages:
            return True
        return sessions.backlog_characters(session) >= self.max_bytes

    def _drop_backlog(self, session, resync):
        self.on_overflow()
        dropped = sessions.drop_queued(session, _is_broadcast)
        websocket = sessions.direct_websocket(session)
        if websocket is not None:
            websocket.count_queued(-dropped)
        log.warning(
            "client %s fell %d messages behind; dropped them and sent resync",
            session.sid,
            dropped,
        )
        _queue(session, resync)


class FastJSON:
    """The json a broadcast's packet encodes its data with: orjson, 6x faster
    than json on a message of 1000 rows, and encoded once per broadcast;
    the packet's own json (Flask's) for what orjson cannot encode (integers
    past 64 bits, types of a user's own). Both write compact JSON; orjson
    leaves non-ASCII characters unescaped, which a JSON reader cannot tell."""

    def __init__(self, fallback):
        self.fallback = fallback

    def dumps(self, data, separators=None):
        """JSON text of data."""
        try:
            return orjson.dumps(data).decode()
        except TypeError:  # orjson.JSONEncodeError is one
            return self.fallback.dumps(data, separators=separators)


def _is_broadcast(queued):
    return isinstance(queued, BroadcastPacket)


def _deliver(session, message):
    """Write a broadcast straight to an idle WebSocket, else queue it."""
    websocket = sessions.direct_websocket(session)
    if websocket is None:
        sessions.queue_packet(session, message)
        return
    outcome = websocket.send_now(message.encode())
    if outcome == "partly":
        _queue(session, WAKE_WRITER)
    elif outcome == "queue":
        _queue(session, message)


def _queue(session, message):
    websocket = sessions.direct_websocket(session)
    if websocket is not None:
        websocket.count_queued(1)
    sessions.queue_packet(session, message)


class BroadcastPacket(eio_packet.Packet):
    """A broadcast message: the only kind a backlog overflow may drop (never acks).

    Every client gets the same object, so its text and WebSocket frame are
    built once, by whichever client's writer needs them first.
    """

    text_class = FramedText  # text that carries its WebSocket frame, built once

    def encode(self, b64=False):
        try:
            return self._encoded
        except AttributeError:
            self._encoded = self.text_class(super().encode(b64))
            return self._encoded


class QueuedBroadcast(BroadcastPacket):
    """A broadcast each client's writer frames and sends itself (FEED_FAST_FANOUT
    off): python-engineio's own way, with the backlog bound kept."""

    text_class = str


# An empty broadcast: queued after a partial direct write so that the writer
# thread wakes up and sends the rest before anything else.
WAKE_WRITER = BroadcastPacket(eio_packet.MESSAGE, "")
WAKE_WRITER._encoded = FramedText("")
