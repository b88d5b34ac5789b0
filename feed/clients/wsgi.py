"""WSGI middleware in front of Engine.IO: long-polling bodies of any size answered in
bounded memory, and requests for a session that just ended answered with 400."""

import io
import logging
from urllib.parse import parse_qs

from ..upstream import sessions

log = logging.getLogger(__name__)


class LargeMessages:
    """WSGI middleware: long-polling POSTs past the size limit, read in bounded memory.

    A body up to max_bytes passes as it is. A larger one, up to hard_limit, is
    read in chunks and split into its Engine.IO packets as it arrives: each
    packet within max_bytes is handed on alone, in order, as a POST of its own;
    a larger packet is discarded as it arrives, but for its first characters,
    and goes to on_oversize(sid, head, size) to be refused with an ack. A body
    past hard_limit gets 413 before it is read.
    """

    def __init__(self, wsgi_app, max_bytes, hard_limit, on_oversize):
        self.wsgi_app = wsgi_app
        self.max_bytes = max_bytes
        self.hard_limit = hard_limit
        self.on_oversize = on_oversize

    def __call__(self, environ, start_response):
        length = _content_length(environ)
        if length <= self.max_bytes or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        if length > self.hard_limit:
            return self._refuse(environ, start_response, length)
        sid = parse_qs(environ.get("QUERY_STRING", "")).get("sid", [None])[0]
        if sid is None:
            return self._refuse(environ, start_response, length)
        return self._split(environ, start_response, length, sid)

    def _split(self, environ, start_response, length, sid):
        answer = _OK
        for packet in _packets(environ["wsgi.input"], length, self.max_bytes):
            if not answer[0].startswith("200"):
                continue  # the session is gone: read the rest, hand on nothing
            if isinstance(packet, tuple):
                self.on_oversize(sid, *packet)
            else:
                answer = _call(self.wsgi_app, environ, packet)
        status, headers, body = answer
        start_response(status, headers)
        return body

    def _refuse(self, environ, start_response, length):
        log.warning(
            "refused a %d-byte request body from %s: past the hard limit of %d "
            "bytes (FEED_HARD_MAX_MESSAGE_BYTES)",
            length,
            environ.get("REMOTE_ADDR", "unknown"),
            self.hard_limit,
        )
        reason = f"request body too large: the limit is {self.hard_limit} bytes\n"
        start_response(
            "413 Request Entity Too Large",
            [("Content-Type", "text/plain"), ("Connection", "close")],
        )
        return [reason.encode()]


_OK = ("200 OK", [("Content-Type", "text/html; charset=UTF-8")], [b"ok"])
_CHUNK = 16384
_HEAD_BYTES = 512


def _content_length(environ):
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _packets(body, length, max_bytes):
    """Each packet of an Engine.IO payload: its bytes, or (head, size) past max_bytes.

    Packets are separated by the record separator 0x1e, which JSON text never
    holds unescaped. At most max_bytes + one chunk is held at a time.
    """
    current, size, remaining = bytearray(), 0, length
    while remaining > 0:
        chunk = body.read(min(_CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        *finished, rest = chunk.split(b"\x1e")
        for piece in finished:
            yield _finish(current, size, piece, max_bytes)
            current, size = bytearray(), 0
        size += len(rest)
        if len(current) < max_bytes:
            current += rest[: max_bytes + 1 - len(current)]
    if size:
        yield _finish(current, size, b"", max_bytes)


def _finish(current, size, piece, max_bytes):
    size += len(piece)
    if len(current) < max_bytes + 1:
        current += piece[: max_bytes + 1 - len(current)]
    if size <= max_bytes:
        return bytes(current)
    head = bytes(current[:_HEAD_BYTES]).decode("utf-8", "ignore")
    return head, size


def _call(wsgi_app, environ, packet):
    """Run one packet through the app as a POST of its own: (status, headers, body)."""
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = status, headers

    single = {**environ, "CONTENT_LENGTH": str(len(packet))}
    single["wsgi.input"] = io.BytesIO(packet)
    body = list(wsgi_app(single, start_response))
    return answer["status"], answer["headers"], body


class AnswerEndedSessions:
    """WSGI middleware: a long-polling request for a session that just ended gets 400.

    python-engineio answers 400 for an unknown session, but a POST for one that
    closed a moment ago (still in its table) raises KeyError from its
    _get_socket: a 500 and a traceback in the log, each time a client's last POST
    crosses its own CLOSE or a server-side close (docs/UPSTREAM.md).
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        try:
            return self.wsgi_app(environ, start_response)
        except KeyError as exc:
            if not sessions.is_ended_session(exc):
                raise
        log.info(
            "%s for an ended session from %s",
            environ.get("REQUEST_METHOD"),
            environ.get("REMOTE_ADDR", "unknown"),
        )
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"Session is disconnected\n"]
