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

from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI

from ..service import concurrency
from .websocket_server import FeedServer, Oversize

log = logging.getLogger(__name__)


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

    def __init__(
        self,
        handler,
        server,
        nowait=None,
        on_oversize=None,
        send_buffer_bytes=0,
        **kwargs,
    ):
        super().__init__(handler, server, **kwargs)
        self.send_buffer_bytes = send_buffer_bytes  # SO_SNDBUF; 0: the kernel's
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
        if self.send_buffer_bytes:
            # What the kernel holds for a client that stopped reading, before
            # the backlog bound sees it (autotuned, it grows to tcp_wmem's max).
            self.ws.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes
            )
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


def install(
    engineio_server,
    max_message_bytes,
    hard_limit_bytes,
    on_oversize,
    send_buffer_bytes=0,
):
    """Serve this server's WebSockets with FeedWebSocket.

    Messages past max_message_bytes go to on_oversize(sid, head, size);
    past hard_limit_bytes the connection is closed. send_buffer_bytes: each
    WebSocket's SO_SNDBUF (0: the kernel's autotuning). The process's
    concurrency (threads or gevent) is read once, here.
    """
    engineio_server._async = {
        **engineio_server._async,
        "websocket": functools.partial(
            FeedWebSocket,
            max_message_size=max_message_bytes,
            hard_limit=hard_limit_bytes,
            on_oversize=on_oversize,
            send_buffer_bytes=send_buffer_bytes,
            nowait=concurrency.nowait_options(),
            **concurrency.websocket_options(),
        ),
    }
