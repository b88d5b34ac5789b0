"""A reader process: many connections in one selector loop, steered over a pipe.

Commands (dicts with an "op") come from the harness; each gets one reply dict.
The loop keeps reading sockets while a command waits for its condition, so
receipt times are taken as bytes arrive, never after a command returns.
"""

import logging
import selectors
import time
from urllib.parse import urlsplit

from bench.connections import EventDecoder, FeedConnection
from bench.listen_receiver import ListenConnection
from bench.receipts import summarize
from bench.system_limits import raise_open_files_limit

log = logging.getLogger(__name__)

MAX_HANDSHAKES = 32  # connections opening at once: keeps the server's backlog short
CONNECT_TIMEOUT = 120.0


class Reader:
    """The connections of one reader process and the command waiting on them."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.selector = selectors.DefaultSelector()
        self.selector.register(pipe, selectors.EVENT_READ, None)
        self.connections = []
        self.to_open = []
        self.waiting = None
        self.running = True
        self.armed_cpu = 0.0
        self.decoder = EventDecoder()
        self.receive_buffer = None  # SO_RCVBUF of the connections opened next
        self.stalled = []  # connections not read, as if their client hung

    def run(self):
        """Serve commands until told to stop."""
        while self.running:
            for key, mask in self.selector.select(0.05):
                if key.data is None:
                    self._on_command(self.pipe.recv())
                else:
                    self._on_ready(key.data, mask)
            self._open_more()
            if self.waiting is not None:
                self.waiting()

    def _on_ready(self, connection, mask):
        if not _handled(connection, mask):
            self.selector.unregister(connection.sock)  # failed, and closed
        elif mask != connection.waiting_for:
            self.selector.modify(connection.sock, connection.waiting_for, connection)

    def _open_more(self):
        if not self.to_open:
            return
        opening = sum(1 for c in self.connections if c.error is None and not c.ready)
        while self.to_open and opening < MAX_HANDSHAKES:
            host, port = self.to_open.pop()
            connection = FeedConnection(
                host, port, time.monotonic, self.decoder, self.receive_buffer
            )
            self._add(connection)
            opening += 1

    def _add(self, connection):
        self.connections.append(connection)
        self.selector.register(connection.sock, connection.waiting_for, connection)

    def _reply(self, **answer):
        self.waiting = None
        self.pipe.send(answer)

    def _on_command(self, command):
        handler = getattr(self, f"_command_{command.pop('op')}")
        try:
            handler(**command)
        except Exception as exc:  # any failure goes back to the harness, not a hang
            log.exception("reader command failed")
            self._reply(ok=False, error=f"{type(exc).__name__}: {exc}")

    def _command_connect(self, url, count, receive_buffer=None):
        parts = urlsplit(url)
        self.receive_buffer = receive_buffer
        self.to_open.extend([(parts.hostname, parts.port)] * count)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        self.waiting = lambda: self._check_connected(deadline)

    def _check_connected(self, deadline):
        failed = [c.error for c in self.connections if c.error]
        if failed:
            self._reply(ok=False, error=f"{len(failed)} failed, first: {failed[0]}")
        elif not self.to_open and all(c.ready for c in self.connections):
            self._reply(ok=True, connected=len(self.connections))
        elif time.monotonic() > deadline:
            self._reply(ok=False, error="timed out opening connections")

    def _command_listen(self, dsn, channel):
        self._add(ListenConnection(dsn, channel, time.monotonic))
        self._reply(ok=True, connected=len(self.connections))

    def _command_arm(self):
        for connection in self.connections:
            connection.receipts.clear()
        self.armed_cpu = time.process_time()
        self._reply(ok=True)

    def _command_collect(self, expected, timeout, grace, latencies):
        deadline = time.monotonic() + timeout
        settled = []
        arrived = _Arrivals(self.connections, len(expected))

        def check():
            now = time.monotonic()
            if not settled and (arrived.all() or now > deadline):
                settled.append(now)
            elif settled and now > settled[0] + grace:
                cpu = {"cpu_seconds": time.process_time() - self.armed_cpu}
                cpu["cpu_until"] = time.monotonic()
                reading = [c for c in self.connections if not c.stalled]
                summary = summarize(reading, expected, latencies)
                self._reply(ok=True, **cpu, **summary)

        self.waiting = check

    def _command_stall(self, count):
        """Stop reading `count` connections (the first ones opened): their bytes
        pile up in the kernel, then in the server, as for a client that hung."""
        for connection in self.connections[:count]:
            if connection.error is None:
                self.selector.unregister(connection.sock)
                connection.stalled = True
                self.stalled.append(connection)
        self._reply(ok=True, stalled=len(self.stalled))

    def _command_resume(self, timeout):
        """Read the stalled connections again; reply once each has received a
        resync or failed (the server dropped it), or at the timeout."""
        for connection in self.stalled:
            connection.stalled = False
            if connection.error is None:
                self.selector.register(
                    connection.sock, connection.waiting_for, connection
                )
        stalled, self.stalled = self.stalled, []
        deadline = time.monotonic() + timeout

        def check():
            told = sum(1 for c in stalled if c.receipts.resyncs or c.error)
            if told == len(stalled) or time.monotonic() > deadline:
                self._reply(
                    ok=True,
                    resumed=len(stalled),
                    resynced=sum(1 for c in stalled if c.receipts.resyncs),
                    dropped=sum(1 for c in stalled if c.error),
                    neither=len(stalled) - told,
                )

        self.waiting = check

    def _command_close(self):
        for connection in self.connections:
            if connection.error is None:
                if not connection.stalled:
                    self.selector.unregister(connection.sock)
                connection.close()
        self.connections, self.to_open, self.stalled = [], [], []
        self._reply(ok=True)

    def _command_stop(self):
        self._command_close()
        self.running = False


class _Arrivals:
    """Whether every connection has `rows` rows (or failed), asked after every
    pass of the loop. A connection that had them keeps them, so each check
    resumes at the first one that did not: one pass over all of them in all,
    not one per loop pass (with 2500 connections in a reader, those passes
    were most of its CPU while a row reached them all)."""

    def __init__(self, connections, rows):
        self.connections = connections
        self.rows = rows
        self.done = 0

    def all(self):
        """True once every connection has its rows or has failed."""
        connections, rows = self.connections, self.rows
        while self.done < len(connections):
            connection = connections[self.done]
            waiting = connection.error is None and not connection.stalled
            if waiting and connection.receipts.rows < rows:
                return False
            self.done += 1
        return True


def _handled(connection, mask):
    try:
        return connection.handle(mask)
    except Exception as exc:  # one broken connection must not stop the others
        return connection.fail(f"{type(exc).__name__}: {exc}")


def main(pipe):
    """Entry point of a reader process."""
    logging.basicConfig(level=logging.WARNING)
    raise_open_files_limit()
    Reader(pipe).run()
