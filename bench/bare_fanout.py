"""bare-fanout: the floor under one row to many clients on this machine.

`python -m bench.bare_fanout` serves the lean readers' WebSocket, Engine.IO
and Socket.IO handshake and nothing else (no pings, no acks, no backlog, no
resume), LISTENs on `events` (DATABASE_URL), and sends each notification's row
as one frame, built once, to every client in a tight loop of non-blocking
send() calls, one selector thread for all. Capacity (c) runs it beside the
servers: what a fan-out costs when the server does nothing but the send()
calls, on the same cores as the readers.

A client whose socket is full misses the row (the count check says so); with
idle lean readers that does not happen.
"""

import base64
import hashlib
import json
import os
import selectors
import socket

import psycopg2

from feed.service import readiness

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OPEN = (
    '0{"sid":"bare","upgrades":[],"pingInterval":3600000,'
    '"pingTimeout":3600000,"maxPayload":1000000}'
)
_JOINED = '40/events,{"sid":"bare"}'
_ACCEPTS = 64  # connections accepted per wake-up


def frame(text):
    """An unmasked final text frame (as a server sends)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


class BareFanout:
    """The listening socket, the LISTEN connection and the joined clients."""

    def __init__(self, database_url, host, port):
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server((host, port), backlog=4096)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self.database = psycopg2.connect(database_url)
        self.database.autocommit = True
        self.database.cursor().execute("LISTEN events")
        self.selector.register(self.database, selectors.EVENT_READ, self._notified)
        self.clients = []
        self.joined = set()

    def serve(self):
        """Serve until killed."""
        readiness.announce(readiness.socket_url(self.listener), "bare")
        while True:
            for key, _ in self.selector.select():
                key.data(key.fileobj)

    def _accept(self, listener):
        for _ in range(_ACCEPTS):
            try:
                client, _ = listener.accept()
            except BlockingIOError:
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.selector.register(client, selectors.EVENT_READ, self._read)

    def _read(self, client):
        try:
            data = client.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(client)
            client.close()
            if client in self.joined:
                self.joined.discard(client)
                self.clients.remove(client)
            return
        if b"Sec-WebSocket-Key" in data:
            client.sendall(_upgrade(data) + frame(_OPEN))
        elif client not in self.joined:  # its first frame: the namespace connect
            client.sendall(frame(_JOINED))
            self.joined.add(client)
            self.clients.append(client)

    def _notified(self, database):
        database.poll()
        while database.notifies:
            payload = json.loads(database.notifies.pop(0).payload)
            if "id" not in payload:
                continue
            row = {"id": payload["id"], "op": payload["op"]}
            message = frame('42/events,["events",' + json.dumps([row]) + "]")
            for client in self.clients:
                try:
                    client.send(message, socket.MSG_DONTWAIT)
                except OSError:
                    pass


def _upgrade(request):
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


if __name__ == "__main__":
    from bench.system_limits import raise_open_files_limit

    raise_open_files_limit()
    BareFanout(
        os.environ["DATABASE_URL"], os.environ["HOST"], int(os.environ["PORT"])
    ).serve()
