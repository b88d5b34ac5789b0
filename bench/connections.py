"""The lean Socket.IO client a reader process holds many of, and its event decoder.

Each connection is driven by the reader's selector loop through `handle(mask)`
and keeps its receipts: (time.monotonic() when the bytes were read, [row ids]).
It speaks Engine.IO 4 / Socket.IO 5 over a WebSocket and nothing else: no
polling, no acks, no reconnection.
"""

import errno
import json
import selectors
import socket

from bench.receipts import Receipts
from bench.websocket import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    MessageAssembler,
    encode_frame,
    parse_upgrade_response,
    take_frame,
    upgrade_request,
)

NAMESPACE = "/events"
ENGINEIO_PATH = "/socket.io/?EIO=4&transport=websocket"
RECEIVE_BYTES = 2**18

_CONNECT = f"40{NAMESPACE},".encode()  # the client asks, the server answers alike
_REFUSED = f"44{NAMESPACE},".encode()
_EVENT = f"42{NAMESPACE},".encode()
_LEFT = f"41{NAMESPACE},".encode()


class EventDecoder:
    """Row ids of an `events` payload, parsed once per distinct payload.

    Every client of a broadcast receives the same bytes, so a reader process
    holding many clients parses each message once; every delivery is still
    counted on its own connection.
    """

    def __init__(self, size=256):
        self.size = size
        self._cache = {}

    def decode(self, body):
        """(event name, [row ids] or None) of a Socket.IO event's JSON body."""
        decoded = self._cache.get(body)
        if decoded is None:
            decoded = _decode_event(body)
            if len(self._cache) >= self.size:
                del self._cache[next(iter(self._cache))]
            self._cache[body] = decoded
        return decoded


def _decode_event(body):
    name, *arguments = json.loads(body)
    if name != "events":
        return name, None
    return name, [row["id"] for row in arguments[0]]


class FeedConnection:
    """One Socket.IO client on /events, over a raw non-blocking WebSocket."""

    def __init__(self, host, port, clock, decoder, receive_buffer=None):
        self.host, self.port = host, port
        self.clock, self.decoder = clock, decoder
        self.receipts = Receipts()
        self.state = "connecting"
        self.error = None
        self.stalled = False  # the reader stopped reading it (stall)
        self._buffer = bytearray()
        self._assembler = MessageAssembler()
        self._key = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if receive_buffer:  # before connect(): it sets the window offered
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        code = self.sock.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, f"connect to {host}:{port} failed")

    @property
    def ready(self):
        """True once the server has accepted the /events namespace."""
        return self.state == "ready"

    @property
    def waiting_for(self):
        """The selector events this connection waits for now."""
        if self.state == "connecting":
            return selectors.EVENT_WRITE
        return selectors.EVENT_READ

    def handle(self, mask):
        """Advance on a selector event; False when the connection is finished."""
        if self.state == "connecting":
            return self._on_connected()
        try:
            data = self.sock.recv(RECEIVE_BYTES)
        except BlockingIOError:
            return True
        if not data:
            return self.fail("the server closed the connection")
        self._buffer += data
        return self._on_bytes(self.clock())

    def fail(self, reason):
        """Mark the connection failed (unless it was closing anyway); close it."""
        if self.state != "closing":
            self.error = reason
        self.state = "closed"
        self.sock.close()
        return False

    def close(self):
        """Close the TCP connection without ceremony."""
        self.state = "closing"
        self.sock.close()

    def _on_connected(self):
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            return self.fail(f"connect failed: {errno.errorcode.get(code, code)}")
        request, self._key = upgrade_request(self.host, self.port, ENGINEIO_PATH)
        self.sock.sendall(request)
        self.state = "upgrading"
        return True

    def _on_bytes(self, arrived):
        if self.state == "upgrading":
            rest = parse_upgrade_response(self._buffer, self._key)
            if rest is None:
                return True
            self._buffer = bytearray(rest)
            self.state = "opening"
        while (frame := take_frame(self._buffer)) is not None:
            message = self._assembler.add(*frame)
            if message is not None and not self._on_message(arrived, *message):
                return False
        return True

    def _on_message(self, arrived, opcode, payload):
        if opcode == OP_TEXT:
            return self._on_engineio(arrived, payload)
        if opcode == OP_PING:
            self.sock.sendall(encode_frame(OP_PONG, payload))
            return True
        if opcode == OP_CLOSE:
            return self.fail("the server sent a WebSocket close")
        return opcode == OP_PONG or self.fail(f"unexpected frame opcode {opcode}")

    def _on_engineio(self, arrived, payload):
        if payload.startswith(_EVENT):
            return self._on_event(arrived, payload[len(_EVENT) :])
        if payload[:1] == b"2":
            self._send_text(b"3" + payload[1:])
        elif payload[:1] == b"0" and self.state == "opening":
            self._send_text(_CONNECT)
            self.state = "joining"
        elif payload.startswith(_CONNECT) and self.state == "joining":
            self.state = "ready"
        elif payload.startswith((_REFUSED, _LEFT)) or payload[:1] == b"1":
            return self.fail(f"the server refused or closed: {payload[:200]!r}")
        return True

    def _on_event(self, arrived, body):
        name, ids = self.decoder.decode(body)
        if ids is not None:
            self.receipts.add(arrived, ids)
        elif name == "resync":
            self.receipts.resyncs += 1
        return True

    def _send_text(self, text):
        self.sock.sendall(encode_frame(OP_TEXT, text))
