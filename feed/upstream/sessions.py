"""Reaches into python-engineio's sessions (engineio.Socket), checked on 4.15.1.

python-engineio offers no public way to see a session's outgoing queue, its
WebSocket, or whether it is closed. The fan-out needs all three to bound a slow
client's backlog and to write idle WebSockets directly; the shutdown needs the
queue to know when the CLOSE packets are out.
"""

import contextlib
import logging

import engineio.exceptions

log = logging.getLogger(__name__)


def open_session(engineio_server, eio_sid):
    """The engineio.Socket of a session that is still open, else None."""
    session = engineio_server.sockets.get(eio_sid)
    if session is None or session.closed:
        return None
    return session


def all_sessions(engineio_server):
    """Every Engine.IO session in the server's table now."""
    return list(engineio_server.sockets.values())


def direct_websocket(session):
    """The session's FeedWebSocket once it is upgraded to one, else None."""
    websocket = getattr(session, "feed_websocket", None)
    return websocket if websocket is not None and session.upgraded else None


def queue_packet(session, packet):
    """Append a packet to the session's outgoing queue (what Socket.send does).

    Raises SessionClosed when the session closed since it was looked up.
    """
    session.send(packet)


SessionClosed = engineio.exceptions.SocketIsClosedError


def backlog_length(session):
    """Packets waiting in the session's outgoing queue."""
    return session.queue.qsize()


def backlog_characters(session):
    """Characters of the packets waiting in the session's outgoing queue."""
    backlog = session.queue
    with _locked(backlog):
        return sum(len(p.data or "") for p in backlog.queue if p is not None)


def drop_queued(session, droppable):
    """Remove the queued packets for which droppable(packet) is true; how many.

    The queue is the standard library's queue.Queue (threaded) or gevent's
    JoinableQueue (gevent); both keep their items in a deque.
    """
    backlog = session.queue
    with _locked(backlog):
        kept = [p for p in backlog.queue if not droppable(p)]
        dropped = len(backlog.queue) - len(kept)
        backlog.queue.clear()
        backlog.queue.extend(kept)
    # Keep join() (used when a socket closes) balanced: one task_done() per item.
    for _ in range(dropped):
        backlog.task_done()
    return dropped


def still_sending(session):
    """True while the session's writer has packets left to send."""
    # The writer leaves a None (its stop mark) in the queue; anything else is
    # still to be sent.
    return any(item is not None for item in list(session.queue.queue))


def is_ended_session(exc):
    """True for the KeyError python-engineio raises for a session that just closed.

    Its _get_socket raises KeyError("Session is disconnected") for a session
    still in its table but closed; the request handler does not catch it.
    """
    return isinstance(exc, KeyError) and exc.args == ("Session is disconnected",)


def _locked(backlog):
    """The queue's own lock (queue.Queue); gevent's queue needs none: no greenlet
    switch can happen while the deque is read or rewritten."""
    mutex = getattr(backlog, "mutex", None)
    return mutex if mutex is not None else contextlib.nullcontext()


def sweep(engineio_server):
    """One pass of python-engineio's client monitor (Server._service_task) over
    the session table: forget closed sessions, close those whose ping went
    unanswered past ping_timeout. The number of sessions closed.

    The library's monitor visits one session every ping_timeout / sessions
    seconds (2 ms at 10,000 clients: 500 wake-ups a second, each with its own
    timer); Sweeper makes the same pass at once, every few seconds.
    """
    table = engineio_server.sockets
    closed = 0
    for session in list(table.values()):
        if session.closed:
            table.pop(session.sid, None)
        elif not session.closing and not session.check_ping_timeout():
            closed += 1
    return closed


class Sweeper:
    """sweep() every `interval` seconds in a background task of the Socket.IO
    server (a thread, or a greenlet under gevent), until stop()."""

    def __init__(self, socketio_server, interval):
        self.server = socketio_server
        self.interval = interval
        self.running = False

    def start(self):
        """Start sweeping."""
        self.running = True
        self.server.start_background_task(self._run)

    def stop(self):
        """Stop after the current pass (at most `interval` seconds from now)."""
        self.running = False

    def _run(self):
        while self.running:
            self.server.sleep(self.interval)
            try:
                sweep(self.server.eio)
            except Exception:  # one bad pass must not end the sweeping
                log.exception("sweeping the Engine.IO sessions failed")
