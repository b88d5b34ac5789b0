"""The LISTEN thread: its own psycopg2 connection, notifications drained in batches.

It knows nothing of Flask or Socket.IO: each batch goes to a plain callback, and
each change between listening and not listening to another.
"""

import logging
import os
import random
import select
import threading
import time
from collections import deque

import psycopg2
from psycopg2.extensions import POLL_OK, POLL_READ, POLL_WRITE

from . import notifications, positions, queries

log = logging.getLogger(__name__)

# libpq settings so that the kernel, too, notices a dead peer within seconds.
CONNECT_OPTIONS = {
    "application_name": "pg-feed-listener",
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 15000,
}


class ConnectionDead(Exception):
    """The listener's connection did not answer in time."""


class Stopping(Exception):
    """stop() was called while the thread waited."""


class Listener:
    """LISTENs on one channel in a daemon thread.

    on_batch(notifications) gets each drained batch: dicts {"table", "op", "id",
    "row"}, "row" read back from the table when the payload was too large.
    on_state(listening) runs when LISTEN is lost (False) and back (True).
    on_mode(mode) runs when the thread starts following another wake-up mode
    ("notify" or "poll") than before; not for the first it follows.
    tables: the tables whose notifications are delivered (None: all); others
    are dropped before any row is read back.
    reader: a positions.LiveReader. With one, on_batch(rows, cursor) gets wire
    rows with versions, none twice, and the confirmed cursor; and the thread
    confirms against the log every confirm_interval while changes flow, on its
    idle check, and after every (re)connect, sending what NOTIFY missed.
    With a reader the thread also follows the database's wake-up mode
    (migration 0006): in poll mode it does not LISTEN; it wakes every
    poll_interval, still blocked in select() on its connection in between,
    and sends what became visible since its previous read (LiveReader.poll).
    The connection is asynchronous so that every wait on it has a deadline: a
    silently dead network is found by the health query on idle, within
    idle_check + timeout seconds.
    """

    def __init__(
        self,
        dsn,
        channel,
        on_batch,
        on_state=None,
        on_mode=None,
        tables=None,
        reader=None,
        confirm_interval=1.0,
        poll_interval=0.05,
        idle_check=5.0,
        timeout=5.0,
    ):
        self.dsn = dsn
        self.tables = None if tables is None else frozenset(tables)
        self.reader = reader
        self.confirm_interval = confirm_interval
        self.poll_interval = poll_interval
        self.last_read_at = None
        self._next_confirm = 0.0
        self.channel = channel
        self.on_batch = on_batch
        self.on_state = on_state or (lambda listening: None)
        self.on_mode = on_mode or (lambda mode: None)
        self._followed = None
        self.idle_check = idle_check
        self.timeout = timeout
        self.backoff_first = 0.1
        self.backoff_max = 10.0
        self.state = "stopped"
        self.reconnects = 0
        self.last_notification_at = None
        self._probes = {}
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = os.pipe()
        self._thread = None
        self._conn = None

    def start(self, timeout=10.0):
        """Start the thread; True once LISTEN is in place within `timeout`."""
        self._thread = threading.Thread(
            target=self._run, name=f"listener-{self.channel}", daemon=True
        )
        self.state = "connecting"
        self._thread.start()
        return self._ready.wait(timeout)

    def is_listening(self):
        """True while LISTEN is in place."""
        return self._ready.is_set()

    def stop(self, timeout=5.0):
        """Stop the thread and close its connection."""
        self._stopping.set()
        os.write(self._wake_write, b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        os.close(self._wake_read)
        os.close(self._wake_write)
        self.state = "stopped"

    def status(self):
        """State for health checks: listening or not, reconnects, last change
        seen, and the wake-up mode with, in poll mode, when it last read."""
        status = {
            "state": self.state,
            "reconnects": self.reconnects,
            "last_notification_at": self.last_notification_at,
            "mode": self.mode,
        }
        if self.mode == "poll":
            status["poll_interval_seconds"] = self.poll_interval
            status["last_read_at"] = self.last_read_at
        return status

    @property
    def mode(self):
        """The wake-up mode it follows: "notify" or "poll" (migration 0006)."""
        return "notify" if self.reader is None else self.reader.mode

    def expect_probe(self, token, epoch=None):
        """An Event set when a notification {"probe": token} arrives on the
        channel or, in poll mode, when a read that began after this call is
        done on the database whose epoch is `epoch`."""
        arrived = threading.Event()
        self._probes[token] = (arrived, time.monotonic(), epoch)
        return arrived

    def forget_probe(self, token):
        """Stop expecting a probe that did not arrive (it would stay here for ever)."""
        self._probes.pop(token, None)

    def _run(self):
        failures, down_since = 0, None
        while not self._stopping.is_set():
            try:
                self._connect()
                if down_since is not None:
                    self._recovered(failures, time.monotonic() - down_since)
                failures, down_since = 0, None
                self._listen()
            except Stopping:
                break
            except (psycopg2.Error, OSError, ConnectionDead) as exc:
                failures += 1
                if down_since is None:
                    down_since = time.monotonic()
                    self._lost(exc)
                else:
                    log.debug("listener retry %d failed: %s", failures, exc)
                self._disconnect()
                self._backoff(failures)
        self._disconnect()
        self.state = "stopped"

    def _connect(self):
        self._conn = psycopg2.connect(self.dsn, async_=True, **CONNECT_OPTIONS)
        self._wait()
        self._conn.notifies = deque()
        self._query(queries.SET_UTC)
        if self.reader is not None:
            self._start_reader()
        if self.mode == "notify":
            self._query(queries.listen_statement(self.channel))
        self.state = "listening"
        self._ready.set()

    def _start_reader(self):
        try:
            self.reader.start(self._query)
        except (
            psycopg2.errors.UndefinedTable,
            psycopg2.errors.UndefinedFunction,
            psycopg2.errors.UndefinedColumn,
        ) as exc:
            # Not the app's database (or not migrated): LISTEN still works, so
            # the delivery check can say what is wrong; nothing to confirm.
            log.error(
                "listener on %r: its database has no feed schema (%s): live rows "
                "go out without a cursor; point LISTENER_DATABASE_URL at the "
                "app's database, or run flask db upgrade",
                self.channel,
                str(exc).strip().splitlines()[0],
            )
            self.reader.without_log()

    def _lost(self, exc):
        was_listening = self._ready.is_set()
        self._ready.clear()
        self.state = "reconnecting"
        what = "connection lost" if was_listening else "cannot connect"
        log.warning(
            "listener on %r: %s (%s); retrying with backoff",
            self.channel,
            what,
            str(exc).strip() or type(exc).__name__,
        )
        if was_listening:
            self._notify_state(False)

    def _recovered(self, failures, seconds):
        self.reconnects += 1
        log.warning(
            "listener on %r is back after %.1f s (%d failed attempts)",
            self.channel,
            seconds,
            failures,
        )
        self._notify_state(True)

    def _notify_state(self, listening):
        try:
            self.on_state(listening)
        except Exception:
            log.exception("on_state callback failed")

    def _backoff(self, failures):
        ceiling = min(self.backoff_max, self.backoff_first * 2 ** (failures - 1))
        self._stopping.wait(random.uniform(ceiling / 2, ceiling))

    def _disconnect(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
            self._conn = None

    def _wait(self):
        """Drive the asynchronous connection until its operation is done."""
        deadline = time.monotonic() + self.timeout
        while True:
            state = self._conn.poll()
            if state == POLL_OK:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectionDead(f"no answer within {self.timeout:g} s")
            if state == POLL_READ:
                self._select([self._conn], [], remaining)
            elif state == POLL_WRITE:
                self._select([], [self._conn], remaining)

    def _select(self, readers, writers, timeout):
        ready, _, _ = select.select([*readers, self._wake_read], writers, [], timeout)
        if self._wake_read in ready:
            raise Stopping

    def _query(self, statement, params=None):
        with self._conn.cursor() as cursor:
            cursor.execute(statement, params)
            self._wait()
            return cursor.fetchall() if cursor.description else None

    def _listen(self):
        while True:
            self._follow()
            if self.mode == "poll":
                self._poll_loop()  # returns once the database is in notify mode
                self._query(queries.listen_statement(self.channel))
                self._poll_once()  # what committed before LISTEN, sent now
                self._follow()
                if self.mode == "poll":  # switched back meanwhile
                    self._query(queries.UNLISTEN_ALL)
                    continue
            self._notify_loop()  # returns once it is in poll mode
            self._query(queries.UNLISTEN_ALL)

    def _follow(self):
        if self.mode == self._followed:
            return
        first, self._followed = self._followed is None, self.mode
        log.info("listener on %r: %s mode", self.channel, self.mode)
        if first:
            return
        try:
            self.on_mode(self.mode)
        except Exception:
            log.exception("on_mode callback failed")

    def _poll_loop(self):
        """Poll mode: a read every poll_interval, on a fixed schedule."""
        next_read = time.monotonic()
        while self.mode == "poll":
            wait = next_read - time.monotonic()
            if wait > 0:
                ready, _, _ = select.select([self._conn, self._wake_read], [], [], wait)
                if self._wake_read in ready:
                    raise Stopping
                if ready:
                    self._conn.poll()  # a closed connection raises here
                    self._conn.notifies.clear()  # a probe's NOTIFY, unheard
                continue
            self._poll_once()
            next_read += self.poll_interval
            now = time.monotonic()
            if next_read < now:  # the read overran: keep the schedule, skip
                next_read = now + self.poll_interval

    def _poll_once(self):
        started = time.monotonic()
        rows, announce = self.reader.poll(
            self._query, self._rows_by_id, started, self.confirm_interval
        )
        self.last_read_at = time.time()
        if rows:
            self.last_notification_at = self.last_read_at
        self._reads_done(started)
        if rows or announce:
            self._hand_over(rows)

    def _reads_done(self, started):
        """Answer the probes registered before a read that began at `started`
        on their database (epoch None: registered in notify mode, whose
        NOTIFY this listener, polling since, no longer hears)."""
        for token, (arrived, registered, epoch) in list(self._probes.items()):
            if registered <= started and epoch in (None, self.reader.epoch):
                self._probes.pop(token, None)
                arrived.set()

    def _notify_loop(self):
        if self.reader is not None:
            self._confirm()  # what committed while it was not listening
        while self.mode == "notify":
            if not self._conn.notifies:
                ready, _, _ = select.select(
                    [self._conn, self._wake_read], [], [], self._select_timeout()
                )
                if self._wake_read in ready:
                    raise Stopping
                if ready:
                    self._conn.poll()
                elif self.reader is not None:
                    self._confirm()  # also the health check
                else:
                    # Any query can move pending notifications into
                    # conn.notifies; the loop drains them before selecting.
                    self._query(queries.HEALTH_CHECK)
            self._deliver(self._drain())
            if self.reader is not None and self._confirm_due():
                self._confirm()
        # In poll mode from here: what was notified is delivered (the switch's
        # own notification came after it); the first read sends the rest.

    def _select_timeout(self):
        if self.reader is None or not self.reader.busy():
            return self.idle_check
        return max(0.0, self._next_confirm - time.monotonic())

    def _confirm_due(self):
        return self.reader.busy() and time.monotonic() >= self._next_confirm

    def _confirm(self):
        """Check the log: send what NOTIFY missed, then move the cursor."""
        self._next_confirm = time.monotonic() + self.confirm_interval
        rows, moved = self.reader.confirm(self._query, self._rows_by_id)
        if rows or moved:
            self._hand_over(rows)

    def _drain(self):
        notifies = self._conn.notifies
        batch = []
        while notifies:
            batch.append(notifies.popleft())
        return batch

    def _deliver(self, raw_batch):
        if not raw_batch:
            return
        self.last_notification_at = time.time()
        batch = [n for n in map(self._decode, raw_batch) if n is not None]
        missing = notifications.rows_to_read(batch)
        if missing:
            found = {table: self._rows_by_id(table, i) for table, i in missing.items()}
            batch = notifications.fill_rows(batch, found)
        if self.reader is not None:
            rows = self.reader.live([positions.wire_row(n) for n in batch])
            if rows:
                self._hand_over(rows)
            return
        if not batch:
            return
        try:
            self.on_batch(batch)
        except Exception:
            log.exception("on_batch callback failed on %d notifications", len(batch))

    def _hand_over(self, rows):
        try:
            self.on_batch(rows, self.reader.cursor)
        except Exception:
            log.exception("on_batch callback failed on %d rows", len(rows))

    def _decode(self, notify):
        """The notification, if it is one of the tables this listener feeds."""
        try:
            decoded = notifications.decode(notify.payload)
        except ValueError as exc:
            log.warning(
                "ignoring notification on %r: %s: %.200r",
                notify.channel,
                exc,
                notify.payload,
            )
            return None
        if isinstance(decoded, notifications.Probe):
            self._probe_arrived(decoded.token)
            return None
        if isinstance(decoded, notifications.ModeSwitch):
            if self.reader is not None and self.reader.snapshot is not None:
                self.reader.mode = decoded.mode
            return None
        if self.tables is not None and decoded["table"] not in self.tables:
            return None
        return decoded

    def _probe_arrived(self, token):
        probe = self._probes.pop(token, None)
        if probe is not None:
            probe[0].set()

    def _rows_by_id(self, table, ids):
        try:
            rows = self._query(queries.rows_by_id(table), (sorted(ids),))
        except (psycopg2.ProgrammingError, psycopg2.DataError) as exc:
            log.warning("cannot read back %s rows %s: %s", table, sorted(ids), exc)
            return {}
        return {row["id"]: row for (row,) in rows}
