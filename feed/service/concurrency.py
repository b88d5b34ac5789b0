"""Threaded or gevent: which concurrency this process runs, and what follows from it.

FEED_SERVER_MODE picks gunicorn's worker (deploy/gunicorn.conf.py); the app
follows the process it finds itself in, so the two can never disagree: under
gunicorn's gevent worker the standard library is monkey-patched, and then
Socket.IO runs in gevent mode and psycopg2 waits cooperatively (psycogreen).
"""

import sys


def gevent_active():
    """True when gevent has monkey-patched this process's sockets."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


def async_mode():
    """The Socket.IO async_mode for this process: "gevent" or "threading"."""
    return "gevent" if gevent_active() else "threading"


def make_psycopg2_cooperative():
    """Have every blocking psycopg2 call yield to other greenlets (gevent only)."""
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()


def nowait_options():
    """Keyword arguments that make socket.send() never wait in this process.

    MSG_DONTWAIT is enough for a plain socket; a gevent socket turns EAGAIN into
    a cooperative wait unless also given timeout=0.
    """
    return {"timeout": 0.0} if gevent_active() else {}


def websocket_options():
    """Extra simple-websocket arguments: gevent's thread, event and selector."""
    if not gevent_active():
        return {}
    import gevent.event
    import gevent.selectors
    from engineio.async_drivers.gevent import Thread

    return {
        "thread_class": Thread,
        "event_class": gevent.event.Event,
        "selector_class": gevent.selectors.DefaultSelector,
    }
