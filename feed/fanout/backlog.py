"""Bounded per-client backlogs: a slow or stalled client costs bounded memory.

python-engineio queues every outgoing packet per client without limit. This
client manager checks a client's queue before adding a broadcast to it; past
the limit (in messages or bytes) it drops that client's queued broadcasts (never
its acks) and queues a `resync` instead, so the client recovers through `sync`
once it reads again. Other clients never wait: the check is a length read, and
bytes are only summed for a client with more than one message queued.
"""

import contextlib
import logging

import socketio
from engineio import packet as eio_packet
from socketio import packet

from ..upstream.websocket import FramedText

log = logging.getLogger(__name__)

_SUM_BYTES_FROM = 2  # a lone queued packet is being sent: bytes are not counted


class BoundedManager(socketio.Manager):
    """socketio.Manager whose broadcasts respect a per-client backlog limit."""

    def __init__(self, max_messages=500, max_bytes=2**20):
        super().__init__()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.on_overflow = lambda: None

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
        special = callback or to or room or skip_sid or isinstance(data, tuple)
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
        message = self._encode(event, data, namespace)
        resync = None
        for _sid, eio_sid in list(self.get_participants(namespace, None)):
            client = self.server.eio.sockets.get(eio_sid)
            if client is None or client.closed:
                continue
            if self._over_limit(client.queue):
                resync = resync or self._encode("resync", {}, namespace)
                self._drop_backlog(client, resync)
            _deliver(client, message)

    def _encode(self, event, data, namespace):
        encoded = self.server.packet_class(
            packet.EVENT, namespace=namespace, data=[event, data]
        ).encode()
        return BroadcastPacket(eio_packet.MESSAGE, encoded)

    def _over_limit(self, backlog):
        waiting = backlog.qsize()
        if waiting < _SUM_BYTES_FROM:
            return False
        if waiting >= self.max_messages:
            return True
        with _locked(backlog):
            size = sum(len(p.data or "") for p in backlog.queue if p is not None)
        return size >= self.max_bytes

    def _drop_backlog(self, client, resync):
        self.on_overflow()
        dropped = _drop_messages(client.queue)
        websocket = getattr(client, "feed_websocket", None)
        if websocket is not None:
            websocket.count_queued(-dropped)
        log.warning(
            "client %s fell %d messages behind; dropped them and sent resync",
            client.sid,
            dropped,
        )
        _queue(client, resync)


def _deliver(client, message):
    """Write a broadcast straight to an idle WebSocket, else queue it."""
    websocket = getattr(client, "feed_websocket", None)
    if websocket is None or not client.upgraded:
        client.send(message)
        return
    outcome = websocket.send_now(message.encode())
    if outcome == "partly":
        _queue(client, WAKE_WRITER)
    elif outcome == "queue":
        _queue(client, message)


def _queue(client, message):
    websocket = getattr(client, "feed_websocket", None)
    if websocket is not None:
        websocket.count_queued(1)
    client.send(message)


class BroadcastPacket(eio_packet.Packet):
    """A broadcast message: the only kind a backlog overflow may drop (never acks).

    Every client gets the same object, so its text and WebSocket frame are
    built once, by whichever client's writer needs them first.
    """

    def encode(self, b64=False):
        try:
            return self._encoded
        except AttributeError:
            self._encoded = FramedText(super().encode(b64))
            return self._encoded


def _drop_messages(backlog):
    """Remove queued broadcasts, keeping acks and control packets; return how many.

    backlog: the client's queue, the standard library's queue.Queue (threaded)
    or gevent's JoinableQueue (gevent); both keep their items in a deque.
    """
    with _locked(backlog):
        kept = [p for p in backlog.queue if not isinstance(p, BroadcastPacket)]
        dropped = len(backlog.queue) - len(kept)
        backlog.queue.clear()
        backlog.queue.extend(kept)
    # Keep join() (used when a socket closes) balanced: one task_done() per item.
    for _ in range(dropped):
        backlog.task_done()
    return dropped


def _locked(backlog):
    """The queue's own lock (queue.Queue); gevent's queue needs none: no greenlet
    switch can happen while the deque is read or rewritten."""
    mutex = getattr(backlog, "mutex", None)
    return mutex if mutex is not None else contextlib.nullcontext()


# An empty broadcast: queued after a partial direct write so that the writer
# thread wakes up and sends the rest before anything else.
WAKE_WRITER = BroadcastPacket(eio_packet.MESSAGE, "")
WAKE_WRITER._encoded = FramedText("")
