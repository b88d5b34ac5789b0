"""A WebSocket server object over a real socketpair, and the client end to drive it.

For tests of simple-websocket and python-engineio internals: no HTTP server,
but real sockets, the real handshake and real frames.
"""

import re
import socket
import threading

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

HANDSHAKE_ENVIRON = {
    "HTTP_HOST": "localhost",
    "HTTP_CONNECTION": "Upgrade",
    "HTTP_UPGRADE": "websocket",
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
    "REMOTE_ADDR": "127.0.0.1",
}


class GatedSocket(socket.socket):
    """A socket whose next send() can be held until another thread has closed it.

    hold_next_send(): the next send() signals `sending`, then waits for close()
    (by any thread) before it writes: the interleaving of a race, made certain.
    """

    def hold_next_send(self):
        self.sending = threading.Event()
        self.was_closed = threading.Event()

    def send(self, data, *args):
        held = getattr(self, "sending", None)
        if held is not None and not held.is_set():
            held.set()
            self.was_closed.wait(5)
        return super().send(data, *args)

    def close(self):
        super().close()
        closed = getattr(self, "was_closed", None)
        if closed is not None:
            closed.set()


class WebSocketPair:
    """server_class's instance on one end of a socketpair, a wsproto client on the
    other."""

    def __init__(self, server_class, **options):
        server_end, self.client_end = socket.socketpair()
        self.server_socket = GatedSocket(
            server_end.family, server_end.type, 0, server_end.detach()
        )
        self.client = WSConnection(ConnectionType.CLIENT)
        request = self.client.send(Request(host="localhost", target="/"))
        key = re.search(rb"(?i)sec-websocket-key: *([^\r]+)", request)[1].decode()
        environ = {
            **HANDSHAKE_ENVIRON,
            "HTTP_SEC_WEBSOCKET_KEY": key,
            "werkzeug.socket": self.server_socket,
        }
        self.server = server_class(environ, **options)
        self._read_until(AcceptConnection)

    def send_text(self, text):
        """Send one text message from the client end."""
        self.client_end.sendall(self.client.send(TextMessage(data=text)))

    def close_frame_received(self, timeout=5):
        """True when the server closed with a close frame; its code (or None)."""
        event = self._read_until(CloseConnection, timeout)
        return event.code if event is not None else None

    def vanish(self):
        """The client end goes away without a close frame."""
        self.client_end.close()

    def _read_until(self, kind, timeout=5):
        self.client_end.settimeout(timeout)
        while True:
            for event in self.client.events():
                if isinstance(event, kind):
                    return event
            try:
                data = self.client_end.recv(65536)
            except (TimeoutError, OSError):
                return None
            if not data:
                return None
            self.client.receive_data(data)

    def close(self):
        """Close both ends."""
        for end in (self.client_end, self.server_socket):
            try:
                end.close()
            except OSError:
                pass
