"""The WebSocket transport under python-engineio: bounded reading, frames built once.

python-engineio's threading mode wraps each WebSocket in SimpleWebSocketWSGI
over simple_websocket.Server. Checked on python-engineio 4.15.1 and
simple-websocket 1.1.0, this replaces both (see the table in __init__.py):
a message past the size limit is counted and discarded as it arrives and handed
on as an Oversize, to be refused with an ack while the connection stays; only
past the hard limit is the connection closed. A broadcast's frame is built once
and may be written straight to an idle client's socket.
"""

import functools
import logging
import socket
import threading

import simple_websocket
from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from ..service import concurrency

log = logging.getLogger(__name__)

HEAD_CHARACTERS = 512  # of an oversized message: enough to read its ack id and name


class Oversize:
    """A message past the size limit: its first characters and its size in bytes."""

    __slots__ = ("head", "size")

    def __init__(self, head, size):
        self.head = head
        self.size = size


class FramedText(str):
    """Engine.IO packet text that also carries its WebSocket frame, built once."""

    __slots__ = ("_frame",)

    def frame(self):
        """The unmasked, final, text-opcode frame of this text (servers never mask)."""
        try:
            return self._frame
        except AttributeError:
            self._frame = text_frame(self.encode("utf-8"))
            return self._frame


def text_frame(payload):
    """RFC 6455 frame: FIN + text opcode, the payload length, the payload."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


class FeedServer(simple_websocket.Server):
    """simple_websocket.Server with its three defects answered (docs/UPSTREAM.md).

    - Its socket thread sets the wake-up event and only then marks the
      connection closed: a receive() that woke in between waits for ever. The
      event is set once more when the thread ends.
    - A message past max_message_size closes the connection (and without a
      limit is read whole). Here it is discarded as it arrives and queued as
      an Oversize; only past hard_limit is the connection closed (1009).
    - close() checks `connected` and then writes, while the socket thread may
      close the socket in between: OSError (EBADF) in the caller's thread.
      A failed close means the peer is gone: it is treated as closed.
    """

    def __init__(self, environ, hard_limit=None, **kwargs):
        self.hard_limit = hard_limit
        self.parts = []
        self.head = None  # set while an oversized message is being discarded
        self.address = environ.get("REMOTE_ADDR", "unknown")
        super().__init__(environ, **kwargs)

    def _thread(self):
        try:
            super()._thread()
        finally:
            self.event.set()

    def close(self, reason=None, message=None):
        try:
            super().close(reason, message)
        except OSError:
            self.connected = False

    def _handle_events(self):
        keep_going, out_data = True, b""
        for event in self.ws.events():
            try:
                if isinstance(event, TextMessage | BytesMessage):
                    keep_going = self._message_part(event)
                    if not keep_going:
                        out_data += self.ws.send(
                            CloseConnection(
                                CloseReason.MESSAGE_TOO_BIG, "Message is too big"
                            )
                        )
                else:
                    data, keep_going = self._control(event)
                    out_data += data
                if not keep_going:
                    break
            except LocalProtocolError:
                out_data, keep_going = b"", False
                self.event.set()
                break
        if out_data:
            self.sock.send(out_data)
        return keep_going

    def _control(self, event):
        """What to send back for a handshake, close, ping or pong; keep going?"""
        if isinstance(event, Request):
            self.subprotocol = self.choose_subprotocol(event)
            accept = AcceptConnection(
                subprotocol=self.subprotocol, extensions=[PerMessageDeflate()]
            )
            return self.ws.send(accept), True
        if isinstance(event, CloseConnection):
            self.close_reason, self.close_message = event.code, event.reason
            self.connected = False
            self.event.set()
            return (self.ws.send(event.response()) if self.is_server else b""), False
        if isinstance(event, Ping):
            return self.ws.send(event.response()), True
        if isinstance(event, Pong):
            self.pong_received = True
        return b"", True

    def _message_part(self, event):
        """Take one part of a message; False when it goes past the hard limit."""
        data = event.data
        self.incoming_message_len += (
            len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
        )
        if self.hard_limit and self.incoming_message_len > self.hard_limit:
            log.warning(
                "closed a WebSocket from %s: a message went past the hard limit of "
                "%d bytes (FEED_HARD_MAX_MESSAGE_BYTES)",
                self.address,
                self.hard_limit,
            )
            self.event.set()
            return False
        over = (
            self.max_message_size and self.incoming_message_len > self.max_message_size
        )
        if self.head is None and over:
            kept = "".join(p if isinstance(p, str) else "" for p in self.parts)
            self.head, self.parts = (kept + str(data))[:HEAD_CHARACTERS], []
        elif self.head is None:
            self.parts.append(data)
        if event.message_finished:
            self._message_done(isinstance(data, str))
        return True

    def _message_done(self, text):
        if self.head is not None:
            self.input_buffer.append(Oversize(self.head, self.incoming_message_len))
        else:
            self.input_buffer.append(("" if text else b"").join(self.parts))
        self.parts, self.head, self.incoming_message_len = [], None, 0
        self.event.set()


class FeedWebSocket(SimpleWebSocketWSGI):
    """SimpleWebSocketWSGI on a FeedServer: writes prebuilt frames, refuses big ones.

    wait() hands each Oversize to on_oversize(session id, head, size) and
    waits for the next message: python-engineio never sees it.

    The fan-out thread may write a broadcast frame straight to the socket when
    nothing else is waiting for this client (no queued broadcast, no unsent
    remainder): one non-blocking send() instead of waking the client's writer
    thread. Whatever does not fit is left for the writer thread, which sends it
    before anything else. One lock orders the two writers. Under gevent the
    same holds with greenlets: the locks are gevent's (the standard library is
    patched), and the direct write is told not to wait.
    """

    def __init__(self, handler, server, nowait=None, on_oversize=None, **kwargs):
        super().__init__(handler, server, **kwargs)
        self.nowait = nowait or {}  # send() options that make it never wait
        self.on_oversize = on_oversize or (lambda sid, head, size: None)
        self.send_lock = threading.Lock()  # held while writing to the socket
        self.state_lock = threading.Lock()  # never held across I/O
        self.queued_broadcasts = 0
        self.remainder = b""

    def __call__(self, environ, start_response):
        # The handler is the engineio Socket's bound method: let that socket
        # (what the fan-out sees) know its WebSocket.
        self.session = self.app.__self__
        self.session.feed_websocket = self
        # As SimpleWebSocketWSGI.__call__, with a FeedServer.
        self.ws = FeedServer(environ, **self.server_args)
        result = self.app(self)
        if self.ws.mode == "gunicorn":
            raise StopIteration()
        if self.ws.mode == "werkzeug":
            raise ConnectionError()
        return result

    def wait(self):
        """The next message that is within the size limit; None once closed."""
        while True:
            message = super().wait()
            if not isinstance(message, Oversize):
                return message
            try:
                self.on_oversize(self.session.sid, message.head, message.size)
            except Exception:
                log.exception("answering an oversized message failed")

    def send(self, message):
        """The writer thread's send: the rest of a direct write first."""
        with self.send_lock:
            with self.state_lock:
                remainder, self.remainder = self.remainder, b""
                if isinstance(message, FramedText):
                    # Broadcasts queued before an upgrade were never counted.
                    self.queued_broadcasts = max(0, self.queued_broadcasts - 1)
            if remainder:
                self._sendall(remainder)
            if not isinstance(message, FramedText):
                return super().send(message)
            if message:
                self._sendall(message.frame())
        return None

    def _sendall(self, data):
        try:
            self.ws.sock.sendall(data)
        except OSError:
            self.ws.connected = False
            raise

    def send_now(self, text):
        """Try to write a broadcast at once: "sent", "partly" or "queue" it instead.

        Never blocks. "partly": the rest waits in self.remainder and the caller
        must wake the writer thread (queue an empty FramedText) to flush it.
        """
        if not self.send_lock.acquire(blocking=False):
            return "queue"
        try:
            with self.state_lock:
                if self.queued_broadcasts or self.remainder or not self.ws.connected:
                    return "queue"
            frame = text.frame()
            try:
                sent = self.ws.sock.send(frame, socket.MSG_DONTWAIT, **self.nowait)
            except OSError:  # EAGAIN, or a dead socket the writer will close
                return "queue"
            if sent == len(frame):
                return "sent"
            with self.state_lock:
                self.remainder = memoryview(frame)[sent:]
            return "partly"
        finally:
            self.send_lock.release()

    def count_queued(self, count):
        """Note broadcasts put in (count > 0) or dropped from (< 0) the queue."""
        with self.state_lock:
            self.queued_broadcasts = max(0, self.queued_broadcasts + count)


def install(engineio_server, max_message_bytes, hard_limit_bytes, on_oversize):
    """Serve this server's WebSockets with FeedWebSocket.

    Messages past max_message_bytes go to on_oversize(sid, head, size);
    past hard_limit_bytes the connection is closed. The process's concurrency
    (threads or gevent) is read once, here.
    """
    engineio_server._async = {
        **engineio_server._async,
        "websocket": functools.partial(
            FeedWebSocket,
            max_message_size=max_message_bytes,
            hard_limit=hard_limit_bytes,
            on_oversize=on_oversize,
            nowait=concurrency.nowait_options(),
            **concurrency.websocket_options(),
        ),
    }
