"""RFC 6455 on the client side: the upgrade request and frame encoding and decoding.

Pure functions on bytes, no sockets: the reader process owns the I/O.
"""

import base64
import hashlib
import os
import struct

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEADER_END = b"\r\n\r\n"


class ProtocolError(Exception):
    """The server broke the WebSocket protocol."""


def upgrade_request(host, port, path):
    """The HTTP request that opens a WebSocket, and the key it carries."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    return request.encode(), key


def parse_upgrade_response(buffer, key):
    """Bytes after a complete 101 response (its accept key checked), else None."""
    end = buffer.find(_HEADER_END)
    if end < 0:
        return None
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    if not head[0].startswith("HTTP/1.1 101"):
        raise ProtocolError(f"upgrade refused: {head[0]!r}")
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
    headers = dict(_header(line) for line in head[1:] if ":" in line)
    if headers.get("sec-websocket-accept") != accept:
        raise ProtocolError("upgrade answered with a wrong Sec-WebSocket-Accept")
    return buffer[end + len(_HEADER_END) :]


def _header(line):
    name, value = line.split(":", 1)
    return name.strip().lower(), value.strip()


def encode_frame(opcode, payload):
    """One final client frame, masked as RFC 6455 requires of clients."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 2**16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    mask = os.urandom(4)
    return header + mask + _apply_mask(payload, mask)


def _apply_mask(payload, mask):
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(payload), "big")


def take_frame(buffer):
    """Remove the first complete frame from `buffer`: (fin, opcode, payload) or None."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    length, offset = second & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, offset = struct.unpack_from("!H", buffer, 2)[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
    mask = None
    if second & 0x80:
        mask, offset = bytes(buffer[offset : offset + 4]), offset + 4
    if len(buffer) < offset + length:
        return None
    payload = bytes(buffer[offset : offset + length])
    del buffer[: offset + length]
    if mask:
        payload = _apply_mask(payload, mask)
    return bool(first & 0x80), first & 0x0F, payload


class MessageAssembler:
    """Joins fragmented data frames into whole messages; control frames pass through."""

    def __init__(self):
        self._parts = []
        self._opcode = None

    def add(self, fin, opcode, payload):
        """(opcode, payload) of a complete message or control frame, else None."""
        if opcode >= OP_CLOSE:
            return opcode, payload
        if opcode != OP_CONTINUATION:
            if self._parts:
                raise ProtocolError("a new message began inside a fragmented one")
            self._opcode = opcode
        elif not self._parts:
            raise ProtocolError("a continuation frame with no message to continue")
        self._parts.append(payload)
        if not fin:
            return None
        message = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = []
        return self._opcode, message
