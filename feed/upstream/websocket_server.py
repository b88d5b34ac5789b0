"""simple-websocket's Server with its defects answered, checked on simple-websocket
1.1.0 (the table in __init__.py; docs/UPSTREAM.md 1-3): a message past the size
limit is counted and discarded as it arrives and handed on as an Oversize; only
past the hard limit is the connection closed.
"""

import logging

import simple_websocket
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

log = logging.getLogger(__name__)

HEAD_CHARACTERS = 512  # of an oversized message: enough to read its ack id and name


class Oversize:
    """A message past the size limit: its first characters and its size in bytes."""

    __slots__ = ("head", "size")

    def __init__(self, head, size):
        self.head = head
        self.size = size


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
