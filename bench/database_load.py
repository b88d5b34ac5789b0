"""What one pg-feed instance costs its database: the transactions committed in its
database (pg_stat_database.xact_commit) and the CPU time of its listener's backend.

Read through a connection to another database of the same server, so that the
readings are not counted themselves. PostgreSQL adds a backend's commits to
pg_stat_database when that backend flushes its statistics: at most once a
second while it is busy, and a backend that goes idle before that second is
over holds them for up to 10 s. So each reading waits for the next change (in
poll mode, the listener's next flush) and the writer flushes its own before it
(Writer.flush_statistics), which makes its commits exact and subtractable.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from bench.services import process_status

log = logging.getLogger(__name__)

LISTENER = "pg-feed-listener"  # the listener connection's application_name
FLUSH_WAIT = 1.2  # seconds a reading waits for the next flush of statistics
READ_EVERY = 0.01
COMMITS = "SELECT xact_commit FROM pg_stat_database WHERE datname = %s"
BACKENDS = "SELECT pid, application_name FROM pg_stat_activity WHERE datname = %s"


@dataclass(frozen=True)
class Reading:
    """When, the database's commits so far, the listener backend's CPU seconds."""

    at: float
    commits: int
    cpu_seconds: float | None


class DatabaseLoad:
    """Readings of one database and of its listener's backend."""

    def __init__(self, monitor_url, database):
        self.database = database
        self.connection = psycopg2.connect(
            monitor_url, application_name="pg-feed-bench-monitor"
        )
        self.connection.autocommit = True  # a fresh statistics snapshot each time

    def close(self):
        """Close the monitor's connection."""
        self.connection.close()

    def backends(self):
        """[(pid, application_name)] of every connection to the database."""
        with self.connection.cursor() as cursor:
            cursor.execute(BACKENDS, (self.database,))
            return sorted(cursor.fetchall(), key=lambda row: row[1])

    def listener_pid(self):
        """The process id of the one listener backend, if there is one."""
        pids = [pid for pid, name in self.backends() if name == LISTENER]
        if len(pids) != 1:
            log.warning("%d backends named %s: no listener CPU", len(pids), LISTENER)
            return None
        return pids[0]

    def window(self, pid, writer, action):
        """(action(), the load while it ran): the database's commits less the
        writer's, per second, and the CPU of the listener's backend `pid`."""
        writer_before = writer.call("flush_statistics")["committed"]
        before = self._reading(pid)
        result = action()
        writer_after = writer.call("flush_statistics")["committed"]
        after = self._reading(pid)
        seconds = after.at - before.at
        commits = after.commits - before.commits
        instance = commits - (writer_after - writer_before)
        cpu = None
        if pid is not None and before.cpu_seconds is not None:
            cpu = after.cpu_seconds - before.cpu_seconds
        load = {
            "seconds": seconds,
            "commits": commits,
            "writer_commits": writer_after - writer_before,
            "instance_commits": instance,
            "instance_commits_per_s": instance / seconds,
            "listener_cpu_seconds": cpu,
            "listener_cpu_percent": None if cpu is None else 100.0 * cpu / seconds,
        }
        return result, load

    def _reading(self, pid):
        first = commits = self._commits()
        deadline = time.monotonic() + FLUSH_WAIT
        while commits == first and time.monotonic() < deadline:
            time.sleep(READ_EVERY)
            commits = self._commits()
        return Reading(time.monotonic(), commits, backend_cpu_seconds(pid))

    def _commits(self):
        with self.connection.cursor() as cursor:
            cursor.execute(COMMITS, (self.database,))
            return cursor.fetchone()[0]


def backend_cpu_seconds(pid):
    """User + system CPU seconds of the PostgreSQL backend `pid`, or None when it
    is not a process of this machine (a BENCH_DATABASE_URL elsewhere)."""
    if pid is None:
        return None
    try:
        if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"postgres"):
            return None
        return process_status(pid)["cpu_seconds"]
    except OSError:
        return None
