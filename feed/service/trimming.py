"""Trimming what the feed keeps only to answer cursors: the removal log.

Every FEED_TRIM_INTERVAL seconds each serving process asks the database to
trim feed_removals (migration 0005): records older than
FEED_REMOVALS_KEEP_SECONDS, or past the newest FEED_REMOVALS_KEEP_COUNT, go, a
batch at a time. The database lets one caller trim at a time (an advisory
lock), so any number of instances may run this. A cursor from before what was
trimmed is answered with a reset.
"""

import logging
import threading

from sqlalchemy.exc import DBAPIError

from ..database import errors, queries
from ..extensions import db

log = logging.getLogger(__name__)

BATCH = 10_000  # records per statement; more wait for the next round if busy
ROUNDS = 10  # statements per interval at most


class Trimmer:
    """Trims the removal log in a thread, every `interval` seconds."""

    def __init__(self, app, interval, keep_seconds, keep_count, on_trimmed=None):
        self.app = app
        self.interval = interval
        self.keep_seconds = keep_seconds
        self.keep_count = keep_count
        self.on_trimmed = on_trimmed or (lambda count: None)
        self.last_error = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trimmer", daemon=True)

    def start(self):
        """Start trimming: soon after start, then every interval."""
        if self.interval > 0:
            self._thread.start()

    def stop(self, timeout=5.0):
        """Stop; a trim under way finishes first."""
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def trim(self):
        """Trim now, up to ROUNDS batches; the number of records removed."""
        removed = 0
        with self.app.app_context():
            try:
                for _ in range(ROUNDS):
                    count = queries.trim_removals(
                        db.session, self.keep_seconds, self.keep_count, BATCH
                    )
                    removed += count
                    if count < BATCH:
                        break
            finally:
                db.session.remove()
        if removed:
            log.info("trimmed %d removal records", removed)
            self.on_trimmed(removed)
        return removed

    def _run(self):
        while not self._stopping.wait(self.interval):
            try:
                self.trim()
                self.last_error = None
            except DBAPIError as exc:
                self._failed(exc)

    def _failed(self, exc):
        what = errors.describe(exc)
        if what != self.last_error:  # one line per kind of failure, not per round
            log.warning("trimming the removal log failed: %s", what)
        self.last_error = what
