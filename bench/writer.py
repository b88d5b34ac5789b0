"""The writer process: INSERTs rows in transactions and notes when each COMMIT returned.

For redis-mq it also publishes each transaction's rows, right after its COMMIT and
in the same code path, through an external Flask-SocketIO emitter (a
`SocketIO(message_queue=...)` with no app), as an app without LISTEN must.
time.monotonic() is system-wide on Linux, so readers compare against it.
"""

import logging
import random
import time
from datetime import UTC

import psycopg2

NAMESPACE = "/events"
INSERT_ROWS = (
    "INSERT INTO events (event) "
    "SELECT %s || i FROM generate_series(1, %s) AS i "
    "RETURNING id, event, created_at"
)
SPREAD_SEED = 12  # the same spread moments every run
# PostgreSQL 15 and later: flushed as the transaction ends, before COMMIT returns
FORCE_STATISTICS_FLUSH = "SELECT pg_stat_force_next_flush()"


class Writer:
    """One database connection that writes, and optionally a Redis emitter."""

    def __init__(self, dsn, emitter_url):
        self.connection = psycopg2.connect(dsn, application_name="pg-feed-bench-writer")
        self.emitter = _emitter(emitter_url) if emitter_url else None
        self.transactions = 0
        self.committed = 0

    def transaction(self, rows):
        """INSERT `rows` rows in one transaction: (ids, before COMMIT, after COMMIT)."""
        self.transactions += 1
        with self.connection.cursor() as cursor:
            cursor.execute(INSERT_ROWS, (f"bench {self.transactions}.", rows))
            returned = cursor.fetchall()
        before = time.monotonic()
        self.connection.commit()
        committed = time.monotonic()
        self.committed += 1
        if self.emitter is not None:
            wire = [_wire_row(*row) for row in returned]
            self.emitter.emit("events", wire, namespace=NAMESPACE)
        return [row[0] for row in returned], before, committed

    def paced(self, count, interval, spread=False):
        """`count` single-row transactions, one every `interval` seconds; with
        `spread`, each at a random moment of its interval (seeded), not at its
        start, so that no other schedule (a poll's) is in step with them."""
        log = _Log()
        offsets = random.Random(SPREAD_SEED) if spread else None
        start = time.monotonic()
        for n in range(count):
            offset = offsets.uniform(0, interval) if offsets else 0.0
            delay = start + n * interval + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            log.add(*self.transaction(1))
        return log.result(start)

    def batches(self, transactions, rows):
        """`transactions` transactions of `rows` rows each, back to back."""
        log = _Log()
        start = time.monotonic()
        for _ in range(transactions):
            log.add(*self.transaction(rows))
        return log.result(start)

    def flush_statistics(self):
        """Have PostgreSQL count this connection's commits in pg_stat_database now
        (it otherwise holds them for up to 10 s); the commits so far, this
        transaction's included."""
        with self.connection.cursor() as cursor:
            cursor.execute(FORCE_STATISTICS_FLUSH)
        self.connection.commit()
        self.committed += 1
        return {"committed": self.committed}

    def close(self):
        """Close the database connection."""
        self.connection.close()


class _Log:
    def __init__(self):
        self.commits = {}
        self.commit_seconds = []

    def add(self, ids, before, committed):
        self.commits.update(dict.fromkeys(ids, committed))
        self.commit_seconds.append(committed - before)

    def result(self, start):
        return {
            "commits": self.commits,
            "commit_seconds": self.commit_seconds,
            "started": start,
            "finished": time.monotonic(),
        }


def _emitter(url):
    from flask_socketio import SocketIO  # only redis-mq's writer needs it

    return SocketIO(message_queue=url, async_mode="threading")


def _wire_row(row_id, event, created_at):
    return {
        "id": row_id,
        "op": "INSERT",
        "event": event,
        "created_at": created_at.astimezone(UTC).isoformat(),
    }


def main(pipe, dsn, emitter_url):
    """Entry point of the writer process: one reply per command."""
    logging.basicConfig(level=logging.WARNING)
    writer = Writer(dsn, emitter_url)
    while True:
        command = pipe.recv()
        op = command.pop("op")
        if op == "stop":
            writer.close()
            pipe.send({"ok": True})
            return
        try:
            pipe.send({"ok": True, **getattr(writer, op)(**command)})
        except (psycopg2.Error, OSError) as exc:
            pipe.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
