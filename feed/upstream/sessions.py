"""Reaches into python-engineio's sessions (engineio.Socket), checked on 4.15.1.

python-engineio offers no public way to see a session's outgoing queue, its
WebSocket, or whether it is closed. The fan-out needs all three to bound a slow
client's backlog and to write idle WebSockets directly; the shutdown needs the
queue to know when the CLOSE packets are out.
"""

import contextlib

import engineio.exceptions


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
