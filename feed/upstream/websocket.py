"""The WebSocket transport under python-engineio: size-limited, frames built once.

python-engineio's threading mode wraps each WebSocket in SimpleWebSocketWSGI,
whose send() frames every message anew for every client (UTF-8 encode, frame
header, a copy) and reads every incoming message whole before checking its size.
Here a broadcast's frame is built once and written as is to every client, and
incoming messages stop at the size limit while they arrive.
"""

import functools
import socket
import threading

import simple_websocket
from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI

from ..service import concurrency


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


class WakingServer(simple_websocket.Server):
    """simple_websocket.Server whose receive() always learns that the socket closed.

    Its socket thread sets the wake-up event and only then marks the connection
    closed (a message too big, a close frame): a receive() that woke in between
    sees it still connected and waits again, for ever, so the session never
    ends. Setting the event once more when the thread ends closes that gap.
    """

    def _thread(self):
        try:
            super()._thread()
        finally:
            self.event.set()


class FeedWebSocket(SimpleWebSocketWSGI):
    """SimpleWebSocketWSGI that writes prebuilt frames, and can be written directly.

    The fan-out thread may write a broadcast frame straight to the socket when
    nothing else is waiting for this client (no queued broadcast, no unsent
    remainder): one non-blocking send() instead of waking the client's writer
    thread. Whatever does not fit is left for the writer thread, which sends it
    before anything else. One lock orders the two writers. Under gevent the
    same holds with greenlets: the locks are gevent's (the standard library is
    patched), and the direct write is told not to wait.
    """

    def __init__(self, handler, server, nowait=None, **kwargs):
        super().__init__(handler, server, **kwargs)
        self.nowait = nowait or {}  # send() options that make it never wait
        self.send_lock = threading.Lock()  # held while writing to the socket
        self.state_lock = threading.Lock()  # never held across I/O
        self.queued_broadcasts = 0
        self.remainder = b""

    def __call__(self, environ, start_response):
        # The handler is the engineio Socket's bound method: let that socket
        # (what the fan-out sees) know its WebSocket.
        self.app.__self__.feed_websocket = self
        # As SimpleWebSocketWSGI.__call__, with a Server that wakes its reader.
        self.ws = WakingServer(environ, **self.server_args)
        result = self.app(self)
        if self.ws.mode == "gunicorn":
            raise StopIteration()
        if self.ws.mode == "werkzeug":
            raise ConnectionError()
        return result

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


def install(engineio_server, max_message_bytes):
    """Use FeedWebSocket for this server, refusing messages past max_message_bytes.

    simple-websocket stops reading a message at the limit (closing with 1009,
    message too big); python-engineio alone would check only after reading it.
    The process's concurrency (threads or gevent) is read once, here.
    """
    engineio_server._async = {
        **engineio_server._async,
        "websocket": functools.partial(
            FeedWebSocket,
            max_message_size=max_message_bytes,
            nowait=concurrency.nowait_options(),
            **concurrency.websocket_options(),
        ),
    }
