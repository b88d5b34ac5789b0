"""The LISTEN thread: its own psycopg2 connection, notifications drained in batches.

It knows nothing of Flask or Socket.IO: each batch goes to a plain callback.
"""

import json
import logging
import os
import random
import select
import threading
import time
from collections import deque

import psycopg2

from . import queries

log = logging.getLogger(__name__)

# libpq settings so that a silently dead network is noticed within seconds.
CONNECT_OPTIONS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


class Listener:
    """LISTENs on one channel in a daemon thread; calls on_batch(notifications).

    A notification is a dict {"table", "op", "id", "row"}; "row" is the changed
    row as a dict (read back from the table when the payload was too large).
    on_reconnect() runs after LISTEN is back in place following any failure.
    """

    def __init__(self, dsn, channel, on_batch, on_reconnect=None, idle_check=10.0):
        self.dsn = dsn
        self.channel = channel
        self.on_batch = on_batch
        self.on_reconnect = on_reconnect or (lambda: None)
        self.idle_check = idle_check
        self.backoff_first = 0.1
        self.backoff_max = 10.0
        self.state = "stopped"
        self.reconnects = 0
        self.last_notification_at = None
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
        """State for health checks: listening or not, reconnects, last notification."""
        return {
            "state": self.state,
            "reconnects": self.reconnects,
            "last_notification_at": self.last_notification_at,
        }

    def _run(self):
        failures = 0
        down_since = None
        while not self._stopping.is_set():
            try:
                self._connect()
            except psycopg2.Error as exc:
                failures += 1
                down_since = down_since or time.monotonic()
                self._log_failure(failures, "cannot connect", exc)
                self._backoff(failures)
                continue
            if down_since is not None:
                self._recovered(failures, time.monotonic() - down_since)
            failures, down_since = 0, None
            try:
                self._listen()
            except (psycopg2.Error, OSError) as exc:
                failures, down_since = 1, time.monotonic()
                self._log_failure(failures, "connection lost", exc)
            finally:
                self._disconnect()

    def _connect(self):
        self._conn = psycopg2.connect(self.dsn, **CONNECT_OPTIONS)
        self._conn.autocommit = True
        self._conn.notifies = deque()
        with self._conn.cursor() as cursor:
            cursor.execute(queries.SET_UTC)
            cursor.execute(queries.listen_statement(self.channel))
        self.state = "listening"
        self._ready.set()

    def _recovered(self, failures, seconds):
        self.reconnects += 1
        log.warning(
            "listener on %r is back after %.1f s (%d attempts)",
            self.channel,
            seconds,
            failures,
        )
        try:
            self.on_reconnect()
        except Exception:
            log.exception("on_reconnect callback failed")

    def _log_failure(self, failures, what, exc):
        self._ready.clear()
        self.state = "reconnecting"
        if failures == 1:
            log.warning(
                "listener on %r: %s (%s); retrying with backoff",
                self.channel,
                what,
                str(exc).strip(),
            )
        else:
            log.debug("listener retry %d failed: %s", failures, str(exc).strip())

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
        if self._stopping.is_set():
            self.state = "stopped"

    def _listen(self):
        conn = self._conn
        while not self._stopping.is_set():
            if not conn.notifies:
                ready, _, _ = select.select(
                    [conn, self._wake_read], [], [], self.idle_check
                )
                if self._wake_read in ready:
                    return
                if not ready:
                    self._health_check()
                    continue
                conn.poll()
            self._deliver(self._drain())

    def _health_check(self):
        # Any query can move pending notifications into conn.notifies; the loop
        # drains them before it selects again.
        with self._conn.cursor() as cursor:
            cursor.execute(queries.HEALTH_CHECK)

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
        batch = self._read_back_missing_rows(batch)
        if not batch:
            return
        try:
            self.on_batch(batch)
        except Exception:
            log.exception("on_batch callback failed on %d notifications", len(batch))

    def _decode(self, notify):
        try:
            payload = json.loads(notify.payload)
            _check_payload(payload)
        except ValueError as exc:
            log.warning(
                "ignoring notification on %r: %s: %.200r",
                notify.channel,
                exc,
                notify.payload,
            )
            return None
        return payload

    def _read_back_missing_rows(self, batch):
        missing = {}
        for n in batch:
            if "row" not in n and n["op"] in ("INSERT", "UPDATE"):
                missing.setdefault(n["table"], set()).add(n["id"])
        if not missing:
            return batch
        found = {}
        with self._conn.cursor() as cursor:
            for table, ids in missing.items():
                found[table] = self._rows_by_id(cursor, table, ids)
        return [n for n in batch if self._fill_row(n, found)]

    @staticmethod
    def _rows_by_id(cursor, table, ids):
        try:
            return queries.rows_by_id(cursor, table, ids)
        except (psycopg2.ProgrammingError, psycopg2.DataError) as exc:
            log.warning("cannot read back %s rows %s: %s", table, sorted(ids), exc)
            return {}

    @staticmethod
    def _fill_row(notification, found):
        if "row" in notification or notification["op"] not in ("INSERT", "UPDATE"):
            return True
        row = found[notification["table"]].get(notification["id"])
        if row is None:
            return False  # gone since; its DELETE notification follows
        notification["row"] = row
        return True


OPS = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")


def _check_payload(payload):
    """Raise ValueError unless payload has the shape feed_notify() sends."""
    if not isinstance(payload, dict) or payload.get("op") not in OPS:
        raise ValueError("not a feed notification")
    if not isinstance(payload.get("table"), str):
        raise ValueError("no table name")
    if payload["op"] != "TRUNCATE" and not isinstance(payload.get("id"), int):
        raise ValueError("no integer id")
    if "row" in payload and not isinstance(payload["row"], dict):
        raise ValueError("row is not an object")
