"""This process's feed: its listener, relay, delivery check, clients, start and stop.

One per serving process, kept in app.extensions["feed"]. start_feed() runs once
the server is about to accept clients (python app.py, gunicorn's post_worker_init),
never from a request or in a CLI command.
"""

import logging
import threading
import time

from ..clients.security import AddressLimit, Tokens
from ..database import positions
from ..database.listener import Listener
from ..database.urls import libpq_url
from ..extensions import socketio
from ..fanout.relay import Relay
from ..upstream import sessions
from .delivery_check import DeliveryCheck
from .metrics import FeedMetrics
from .trimming import Trimmer

log = logging.getLogger(__name__)

NAMESPACE = "/events"
CHANNEL = "events"
TABLES = ("events",)
NOT_LISTENING = "the feed's LISTEN connection to PostgreSQL is down; reconnecting"
UNCONFIRMED = "LISTEN is in place; confirming that notifications arrive"


class ProcessFeed:
    """This process's feed: its listener, its relay and its connected clients."""

    def __init__(self, config):
        self.config = config
        self.lock = threading.Lock()
        self.listener = None
        self.relay = None
        self.delivery = None
        self.trimmer = None
        self.announced = None
        self.announce_lock = threading.Lock()
        self.clients = {}
        self.tokens = Tokens(config["FEED_READ_TOKEN"], config["FEED_WRITE_TOKEN"])
        self.addresses = AddressLimit(config["FEED_MAX_CONNECTIONS_PER_ADDRESS"])
        self.metrics = FeedMetrics(self)

    def listening(self):
        """True while the listener has LISTEN in place."""
        return self.listener is not None and self.listener.is_listening()

    def feed_state(self):
        """("live" | "offline" | "stalled", why when not live).

        live: LISTEN in place and the last probe came back; offline: LISTEN down
        (or just back, not yet confirmed); stalled: probes do not come back.
        """
        if not self.listening():
            return "offline", NOT_LISTENING
        delivering, reason = self.delivery.verdict()
        if delivering is None:
            return "offline", UNCONFIRMED
        return ("live", None) if delivering else ("stalled", reason)

    def feed_fields(self):
        """The state as clients get it: {"feed"}, and "reason" when not live."""
        feed, reason = self.feed_state()
        return {"feed": feed} if reason is None else {"feed": feed, "reason": reason}


def init_app(app):
    """Keep this process's feed on the app; nothing starts here."""
    app.extensions["feed"] = ProcessFeed(app.config)


def start_feed(app, timeout=10.0):
    """Start this process's relay, listener and delivery check once.

    True when LISTEN is in place; then it also waits for the first probe's
    verdict, so the process accepts its first client in a known state.
    """
    state = app.extensions["feed"]
    with state.lock:
        if state.listener is not None:
            return state.listener.is_listening()
        state.relay = Relay(socketio, NAMESPACE, state.metrics)
        state.relay.start()
        state.listener = _new_listener(app.config, state)
        state.delivery = _new_delivery_check(app, state)
        state.trimmer = _new_trimmer(app, state)
        listening = state.listener.start(timeout)
        state.delivery.start()
        state.trimmer.start()
    if listening:
        state.delivery.wait_for_verdict(timeout + state.delivery.timeout)
    announce_state(state)
    return listening


def stop_feed(app):
    """Stop this process's delivery check, listener and relay, if they run."""
    state = app.extensions["feed"]
    with state.lock:
        if state.listener is not None:
            state.trimmer.stop()
            state.delivery.stop()
            state.listener.stop()
            state.relay.stop()
            state.listener = state.relay = state.delivery = state.trimmer = None


def close_clients(timeout=2.0):
    """Close every client's connection with a proper CLOSE; wait briefly for it.

    Without the library reaches there is no way to see the CLOSE go out: the
    connections are closed without waiting.
    """
    all_sessions = sessions.all_sessions(socketio.server.eio)
    for session in all_sessions:
        session.close(wait=False, abort=False)
    if not socketio.server.manager.reaches:
        return
    # Only WebSockets are waited for. A long-polling session's CLOSE goes out
    # with a GET already waiting, at once; python-engineio refuses any later GET
    # of a closed session, so waiting for those could only time out (2 s).
    websockets = [s for s in all_sessions if sessions.direct_websocket(s)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(map(sessions.still_sending, websockets)):
        time.sleep(0.01)


def _new_listener(config, state):
    url = config["LISTENER_DATABASE_URL"] or config["DATABASE_URL"]

    def on_batch(rows, cursor):
        state.metrics.notifications.inc(len(rows))
        state.relay.rows(rows, time.monotonic(), cursor)

    def on_state(listening):
        if listening:
            state.delivery.listening_again()
        announce_state(state)

    def on_mode(mode):
        if state.delivery is not None:
            state.delivery.probe_soon()

    return Listener(
        libpq_url(url),
        CHANNEL,
        on_batch=on_batch,
        on_state=on_state,
        on_mode=on_mode,
        tables=TABLES,
        reader=positions.LiveReader(TABLES, on_recovered=state.metrics.recovered.inc),
        confirm_interval=config["FEED_CONFIRM_INTERVAL"],
        poll_interval=config["FEED_POLL_INTERVAL"],
        idle_check=config["FEED_LISTENER_IDLE_CHECK"],
        timeout=config["FEED_LISTENER_TIMEOUT"],
    )


def _new_trimmer(app, state):
    config = app.config
    return Trimmer(
        app,
        interval=config["FEED_TRIM_INTERVAL"],
        keep_seconds=config["FEED_REMOVALS_KEEP_SECONDS"],
        keep_count=config["FEED_REMOVALS_KEEP_COUNT"],
        on_trimmed=state.metrics.trimmed.inc,
    )


def _new_delivery_check(app, state):
    def on_result(result, previous):
        _count_probe(state.metrics, result)
        _log_verdict(state.delivery, result, previous)
        announce_state(state)

    return DeliveryCheck(
        app,
        state.listener,
        CHANNEL,
        interval=app.config["FEED_DELIVERY_CHECK_INTERVAL"],
        timeout=app.config["FEED_DELIVERY_CHECK_TIMEOUT"],
        on_result=on_result,
    )


def announce_state(state):
    """Tell every client when the feed's state changes; after a gap, to catch up."""
    with state.announce_lock:
        fields = state.feed_fields()
        previous, state.announced = state.announced, fields["feed"]
        if fields["feed"] == previous or state.relay is None:
            return
        # Kept in order with the rows: the relay sends them in the order queued.
        state.relay.message("status", fields)
        if fields["feed"] == "live" and previous is not None:
            state.relay.message("resync", {})
            state.metrics.resyncs.labels("all").inc()


def _count_probe(metrics, result):
    if result.delivering:
        metrics.probe_seconds.observe(result.seconds)
    else:
        metrics.probes_failed.inc()


HEARD = {
    "notify": "the listener hears the app's NOTIFY",
    "poll": "the listener's reads (poll mode) see the app's database",
}


def _log_verdict(delivery, result, previous):
    """One line when delivery is first known, starts failing, or is back."""
    heard = HEARD[delivery.listener.mode]
    if result.delivering and previous is None:
        log.info("delivery self-test: %s", heard)
    elif result.delivering and previous is False:
        log.warning(
            "delivery self-test: %s again, after %.1f s of failed probes",
            heard,
            time.time() - delivery.failing_since,
        )
    elif not result.delivering and previous is not False:
        detail = f" ({result.detail})" if result.detail else ""
        log.error("delivery self-test failing: %s%s", result.reason, detail)
