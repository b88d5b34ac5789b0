"""The end-to-end delivery check: a NOTIFY sent through the app's own pool must come
back through the listener, at start, every FEED_DELIVERY_CHECK_INTERVAL seconds and
at once after the listener reconnects. Its verdict is the feed's health signal.
In poll mode the listener answers a probe with its next read, if that read is of
the database DATABASE_URL names (the same epoch).
"""

import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError

from ..database import positions, queries
from ..extensions import db

NOT_HEARD = (
    "a NOTIFY sent through DATABASE_URL did not come back through the listener "
    "within {timeout:g} s: likely a transaction-mode pooler such as PgBouncer "
    "between the listener and PostgreSQL (LISTEN does not work through one), or "
    "DATABASE_URL and LISTENER_DATABASE_URL pointing at different databases; fix: "
    "set LISTENER_DATABASE_URL to a direct (or session-mode) connection to the "
    "same database"
)
NOT_READ = (
    "the listener's reads (poll mode) did not see the database DATABASE_URL "
    "names within {timeout:g} s: LISTENER_DATABASE_URL points at another "
    "database, or the listener's reads fail (see its log); fix: point both at "
    "the same database"
)
NOT_SENT = "the delivery probe could not be sent through DATABASE_URL"
# While the listener is down nothing is probed; this long between looks at it
# covers a first connect that succeeds late (no reconnect is reported for it).
WHILE_NOT_LISTENING = 0.5


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome: reason is for clients, detail only for the log."""

    delivering: bool
    reason: str | None = None
    detail: str | None = None
    seconds: float | None = None


class DeliveryCheck:
    """Probes delivery in a thread; on_result(result, previous) after each verdict.

    previous: the verdict before this one (True, False, or None before the
    first), not reset by reconnects, so a caller can log only the changes.
    """

    def __init__(self, app, listener, channel, interval, timeout, on_result):
        self.app = app
        self.listener = listener
        self.channel = channel
        self.interval = interval
        self.timeout = timeout
        self.on_result = on_result
        self.delivering = None  # None: not confirmed since LISTEN was (re)made
        self.reason = None
        self.last_verdict = None
        self.last_ok_at = None
        self.last_round_trip = None
        self.last_failure = None
        self.failing_since = None
        self.failed_probes = 0
        self._lock = threading.Lock()
        self._verdict = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._arrived = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="delivery-check", daemon=True
        )

    def start(self):
        """Start probing: at once, then every `interval` seconds."""
        self._thread.start()

    def stop(self, timeout=5.0):
        """Stop probing; a probe waiting for its NOTIFY gives up at once."""
        self._stopping.set()
        self._wake.set()
        self._arrived.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def wait_for_verdict(self, timeout):
        """True once a probe since LISTEN was (re)made has a verdict."""
        return self._verdict.wait(timeout)

    def listening_again(self):
        """The listener reconnected: unconfirmed until a new probe, sent now."""
        with self._lock:
            self.delivering = self.reason = None
            self._verdict.clear()
        self._wake.set()

    def probe_soon(self):
        """Probe now rather than at the next interval (the listener changed
        how it is woken: the last verdict may be stale)."""
        self._wake.set()

    def verdict(self):
        """(delivering: True, False or None when unconfirmed, reason or None)."""
        with self._lock:
            return self.delivering, self.reason

    def status(self):
        """The check's state for /healthz."""
        with self._lock:
            states = {True: "delivering", False: "stalled", None: "unconfirmed"}
            return {
                "state": states[self.delivering],
                "last_ok_at": self.last_ok_at,
                "last_round_trip_seconds": self.last_round_trip,
                "last_failure": self.last_failure,
                "failed_probes": self.failed_probes,
                "interval_seconds": self.interval,
            }

    def _run(self):
        while not self._stopping.is_set():
            listening = self.listener.is_listening()
            if listening:
                self.probe()
            self._wake.wait(self.interval if listening else WHILE_NOT_LISTENING)
            self._wake.clear()

    def probe(self):
        """Send one probe; record its verdict unless the listener changed meanwhile."""
        reconnects = self.listener.reconnects
        result = self._round_trip()
        changed = self.listener.reconnects != reconnects
        if changed or self._stopping.is_set() or not self.listener.is_listening():
            return None  # it tested a connection that is gone: no verdict
        self._record(result)
        return result

    def _round_trip(self):
        token = uuid.uuid4().hex
        polling = self.listener.mode == "poll"
        epoch = None
        if polling:  # answered by a read of the database DATABASE_URL names
            epoch, error = self._epoch()
            if error is not None:
                return ProbeResult(False, NOT_SENT, detail=error)
        self._arrived = arrived = self.listener.expect_probe(token, epoch)
        started = time.monotonic()
        # Sent in poll mode too: a probe that crosses a switch to NOTIFY mode
        # is still answered.
        error = self._send(token)
        if error is not None:
            self.listener.forget_probe(token)
            return ProbeResult(False, NOT_SENT, detail=error)
        try:
            if arrived.wait(self.timeout):
                return ProbeResult(True, seconds=time.monotonic() - started)
            unseen = NOT_READ if polling else NOT_HEARD
            return ProbeResult(False, unseen.format(timeout=self.timeout))
        finally:
            self.listener.forget_probe(token)

    def _send(self, token):
        """NOTIFY through the app's pool; None when sent, else the database's error."""
        with self.app.app_context():
            try:
                db.session.execute(queries.notify_probe(self.channel, token))
                db.session.commit()
            except DBAPIError as exc:
                return str(exc.orig).strip() or type(exc.orig).__name__
        return None

    def _epoch(self):
        """(epoch of DATABASE_URL's database, None) or (None, the error)."""
        with self.app.app_context():
            try:
                found = positions.epoch(db.session)
                db.session.commit()
                return found, None
            except DBAPIError as exc:
                db.session.rollback()
                return None, str(exc.orig).strip() or type(exc.orig).__name__

    def _record(self, result):
        now = time.time()
        with self._lock:
            previous, self.last_verdict = self.last_verdict, result.delivering
            self.delivering, self.reason = result.delivering, result.reason
            if result.delivering:
                self.last_ok_at, self.last_round_trip = now, result.seconds
            else:
                self.failed_probes += 1
                self.last_failure = {"at": now, "reason": result.reason}
                if previous is not False:
                    self.failing_since = now
            self._verdict.set()
        self.on_result(result, previous)
