"""The fan-out thread: takes listener output and emits it to every client.

The listener only hands off; this thread does the per-client work, merging
whatever piled up meanwhile into one `events` message, so neither a slow fan-out
nor a slow client ever stalls the LISTEN connection.
"""

import logging
import queue
import threading
import time

log = logging.getLogger(__name__)

_STOP = object()
MERGE_ROWS = 1000  # batches waiting together merge up to this many rows


class Relay:
    """Emits rows and messages to all clients of a namespace, in the order given."""

    def __init__(self, server, namespace, metrics):
        self.server = server
        self.namespace = namespace
        self.metrics = metrics
        self._pending = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def start(self):
        """Start the fan-out thread."""
        self._thread.start()

    def stop(self, timeout=5.0):
        """Emit what is pending, then stop."""
        self._pending.put(_STOP)
        self._thread.join(timeout)

    def rows(self, rows, drained_at, cursor):
        """Queue rows for one `events` message (merged with rows already waiting).

        drained_at: time.monotonic() when the listener drained them; cursor: the
        resume cursor that goes with them (a merged message carries the last).
        """
        self._pending.put(("events", Rows(rows, cursor), drained_at))

    def message(self, event, data):
        """Queue any other message, kept in order with the rows."""
        self._pending.put((event, data, None))

    def _run(self):
        while True:
            items = self._take_pending()
            for event, data, drained_at in _merge_rows(items):
                if event is _STOP:
                    return
                self._emit(event, data)
                if drained_at is not None:
                    self._count(data, drained_at)

    def _take_pending(self):
        """Wait for an item, then take it and whatever the listener adds meanwhile.

        Each time the queue runs dry the relay yields once (sleep(0)): under
        gevent the listener greenlet runs only then, and may have drained more of
        the same burst; a lone row waits one scheduler round.
        """
        items = [self._pending.get()]
        rows = _row_count(items[0])
        while rows < MERGE_ROWS:
            time.sleep(0)
            if self._pending.empty():
                break
            while not self._pending.empty():
                items.append(self._pending.get_nowait())
                rows += _row_count(items[-1])
        return items

    def _emit(self, event, data):
        if isinstance(data, Rows):
            data = (data.rows, data.cursor)  # events(rows, cursor)
        try:
            self.server.emit(event, data, namespace=self.namespace)
        except Exception:
            log.exception("emitting %s failed", event)

    def _count(self, rows, drained_at):
        rows = rows.rows
        self.metrics.rows_emitted.inc(len(rows))
        self.metrics.rows_per_message.observe(len(rows))
        self.metrics.emit_delay.observe(time.monotonic() - drained_at)


class Rows:
    """The rows of one `events` message and the cursor that follows them."""

    __slots__ = ("rows", "cursor")

    def __init__(self, rows, cursor):
        self.rows = rows
        self.cursor = cursor

    def __len__(self):
        return len(self.rows)


def _row_count(item):
    return len(item[1]) if item is not _STOP and item[0] == "events" else 0


def _can_extend(merged, count):
    last = merged[-1] if merged else None
    return (
        last is not None and last[0] == "events" and len(last[1]) + count <= MERGE_ROWS
    )


def _merge_rows(items):
    """Consecutive `events` items become one (keeping the earliest drain time)."""
    merged = []
    for item in items:
        if item is _STOP:
            merged.append((_STOP, None, None))
        elif item[0] == "events" and _can_extend(merged, len(item[1])):
            merged[-1][1].rows.extend(item[1].rows)
            merged[-1][1].cursor = item[1].cursor
        elif item[0] == "events":
            merged.append(("events", Rows(list(item[1].rows), item[1].cursor), item[2]))
        else:
            merged.append(item)
    return merged
