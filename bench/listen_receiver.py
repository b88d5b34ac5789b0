"""The limit: a bare psycopg2 LISTEN receiver, what PostgreSQL itself delivers.

Driven by a reader process's selector loop like a Socket.IO connection, and
stamps each drained batch of notifications with time.monotonic().
"""

import json
import selectors

import psycopg2
from psycopg2 import sql

from bench.receipts import Receipts


class ListenConnection:
    """One LISTEN connection, read whenever the selector says it has data."""

    waiting_for = selectors.EVENT_READ
    ready = True
    stalled = False  # never stalled (bench/reader.py, stall)

    def __init__(self, dsn, channel, clock):
        self.clock = clock
        self.receipts = Receipts()
        self.error = None
        self.connection = psycopg2.connect(dsn, application_name="pg-feed-bench-limit")
        self.connection.autocommit = True
        with self.connection.cursor() as cursor:
            cursor.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self.sock = self.connection

    def handle(self, mask):
        """Read what arrived and record every notification's row id."""
        self.connection.poll()
        arrived = self.clock()
        notifies = self.connection.notifies
        ids = []
        while notifies:
            payload = json.loads(notifies.pop(0).payload)
            if payload.get("table") == "events" and "id" in payload:
                ids.append(payload["id"])
        if ids:
            self.receipts.add(arrived, ids)
        return True

    def fail(self, reason):
        """Record why the receiver stopped; close it."""
        self.error = reason
        self.connection.close()
        return False

    def close(self):
        """Close the database connection."""
        self.connection.close()
