"""Every reach into python-engineio and simple-websocket internals, in one place.

Each reach says which defect or cost it answers and which version it was checked
on (docs/UPSTREAM.md has the write-ups).
"""


def engineio_sockets(engineio_server):
    """The Engine.IO sessions open now (python-engineio's sockets table)."""
    return list(engineio_server.sockets.values())


def still_sending(engineio_socket):
    """True while an Engine.IO session's writer has packets left to send."""
    # The writer leaves a None (its stop mark) in the queue; anything else is
    # still to be sent.
    return any(item is not None for item in list(engineio_socket.queue.queue))
