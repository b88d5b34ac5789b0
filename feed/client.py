"""A Python client of pg-feed's /events: the table's rows, kept live, resumed by cursor.

Needs only python-socketio[client] and imports nothing else of pg-feed, so this
file also works copied on its own. It follows the wire contract's client algorithm.
Its one reach into python-engineio (messages handled in arrival order) is checked
on CHECKED_VERSIONS at construction; docs/UPSTREAM.md, 10, has the write-up.
"""

import collections
import functools
import logging
import random
import threading
import time
from importlib.metadata import PackageNotFoundError, version

import engineio
import socketio
import websocket

log = logging.getLogger(__name__)

NAMESPACE = "/events"
PAGE_LIMIT = 1000  # rows per sync page: the server's default FEED_SYNC_MAX_LIMIT
TOMBSTONE_LIMIT = 10000
SERVER_CLOSED = socketio.Client.reason.SERVER_DISCONNECT
HANDLED = ("connect", "disconnect", "connect_error", "events", "resync", "status")
# InOrderEngineIOClient reaches into python-engineio's client: checked on these only
CHECKED_VERSIONS = {"python-engineio": "4.15.1", "python-socketio": "5.18.1"}
# Without the reach, a `resync` resumes from the cursor held this long before it
# was handled: a newer cursor may come from an `events` sent after the resync.
RESYNC_LOOKBACK_SECONDS = 5.0
CURSOR_HISTORY_SPACING = 0.05  # seconds; a cursor not kept only rewinds further
ANOTHER_DATABASE = "another database"  # in the reset message of such a cursor


class FeedError(Exception):
    """The feed could not do what was asked; the message says why."""


class ConnectError(FeedError):
    """Connecting failed: refused by the server (with its reason) or unreachable."""


class Interrupted(FeedError):
    """A call got no answer: not connected, the connection dropped, or a timeout."""


class PromptlyClosingWebSocket(websocket.WebSocket):
    """websocket-client's WebSocket, waiting at most 0.2 s for the close frame.

    python-engineio's read loop takes the server's close frame itself, so
    close() would wait its full default of 3 s for a frame that never comes.
    """

    def close(self, status=websocket.STATUS_NORMAL, reason=b"", timeout=0.2):
        super().close(status, reason, timeout)


class InOrderEngineIOClient(engineio.Client):
    """python-engineio's client, handling each message in its read thread, in order.

    A reach (docs/UPSTREAM.md, 10; checked on CHECKED_VERSIONS): the library's
    _receive_packet runs every message's handler in a new thread, so a `resync`
    could be handled after the newer `events` that followed it. Feed's handlers
    only apply rows under its lock and never wait on a call (syncs run in its
    worker, and a callback may not call), so running them inline cannot stall
    the read loop.
    """

    def _trigger_event(self, event, *args, **kwargs):
        if event == "message":
            kwargs["run_async"] = False
        return super()._trigger_event(event, *args, **kwargs)


class InOrderClient(socketio.Client):
    """python-socketio's client on InOrderEngineIOClient."""

    def _engineio_client_class(self):
        return InOrderEngineIOClient


def in_order_reach_checked():
    """True when python-engineio and python-socketio are the versions checked.

    On any other, one warning (per difference) says what is lost instead.
    """
    installed = {}
    for name in CHECKED_VERSIONS:
        try:
            installed[name] = version(name)
        except PackageNotFoundError:
            installed[name] = None
    differ = {n: v for n, v in installed.items() if v != CHECKED_VERSIONS[n]}
    if differ:
        _warn_once(
            "feed.client: python-engineio's client was checked on "
            + ", ".join(f"{n} {CHECKED_VERSIONS[n]}" for n in differ)
            + ", but "
            + ", ".join(f"{n} {v or 'nothing'}" for n, v in differ.items())
            + " is installed: messages are handled in the library's threads, "
            "possibly out of order; a resync resumes from an older cursor "
            "instead (docs/UPSTREAM.md, 10)"
        )
    return not differ


@functools.cache
def _warn_once(message):
    log.warning(message)


class HeldRows:
    """Rows by id under the version rules: only a newer change of a row applies."""

    def __init__(self, tombstone_limit=TOMBSTONE_LIMIT):
        self.tombstone_limit = tombstone_limit
        self.clear()

    def clear(self, keep_removals=False):
        """Forget every row, and (unless keep_removals) deletion and truncation.

        Keep them only for the same database: versions of another are unrelated.
        """
        self.rows = {}
        if not keep_removals:
            self.tombstones = {}  # id -> version of its DELETE, oldest first
            self.truncated_at = 0

    def apply(self, row):
        """Apply one change; True when it was applied, False when it was stale."""
        version = row["version"]
        if row["op"] == "TRUNCATE":
            return self._truncate(version)
        if version < self.truncated_at:
            return False
        held = self.rows.get(row["id"])
        if held is not None and held["version"] >= version:
            return False
        if self.tombstones.get(row["id"], -1) >= version:
            return False
        if row["op"] == "DELETE":
            self.rows.pop(row["id"], None)
            self._bury(row["id"], version)
        else:
            self.rows[row["id"]] = row
        return True

    def _truncate(self, version):
        if version <= self.truncated_at:
            return False
        self.truncated_at = version
        self.rows = {i: r for i, r in self.rows.items() if r["version"] >= version}
        self.tombstones = {i: v for i, v in self.tombstones.items() if v >= version}
        return True

    def _bury(self, row_id, version):
        self.tombstones.pop(row_id, None)
        self.tombstones[row_id] = version
        if len(self.tombstones) > self.tombstone_limit:
            del self.tombstones[next(iter(self.tombstones))]


class Feed:
    """Follows one pg-feed server: holds its rows, live, and resumes by cursor.

    window None (the default) holds the whole table; window=n starts from the
    newest n rows, and load_older() pages back. cursor: resume from a cursor
    saved from an earlier Feed (rows are then the changes since). Callbacks run
    in python-socketio's read thread or this client's, under its lock: keep them
    short, and do not call send() or load_older() from one (FeedError: its
    answer would wait behind the callback). on_change(row) is called once per
    applied change, on_reset(reason) when the rows held are dropped to start
    over, on_status(status) when the feed's state changes.
    """

    def __init__(
        self,
        url,
        token=None,
        *,
        transports=None,
        window=None,
        cursor=None,
        on_change=None,
        on_reset=None,
        on_status=None,
        sync_timeout=10.0,
        page_limit=PAGE_LIMIT,
        reconnection_delay=0.5,
        reconnection_delay_max=5.0,
    ):
        self.url, self.window, self.sync_timeout = url, window, sync_timeout
        self.page_limit = page_limit
        self.reconnection_delays = (reconnection_delay, reconnection_delay_max)
        self.on_change, self.on_reset, self.on_status = on_change, on_reset, on_status
        self.connect_error = None  # why the last connect failed; None once connected
        self.status = {}  # {"feed": "live"|"offline"|"stalled", "reason"?}
        self.last_reset = None  # the server's reason for the last reset
        self.resyncs = 0  # `resync` messages received
        self._connect_options = {
            "auth": {"token": token} if token else None,
            "transports": transports,
        }
        self._held = HeldRows()
        self._lock = threading.RLock()
        self._held_cursors = collections.deque()  # (monotonic time, cursor)
        self._hold_cursor(cursor)
        self._in_callback = threading.local()
        self.in_order = in_order_reach_checked()  # False: the library's threads
        self._changed = threading.Condition(self._lock)
        self._emit_lock = threading.Lock()
        self._synced = threading.Event()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._online = False
        self._generation = 0  # one more at every connect and disconnect
        self._wanted = self._served = 0  # catch-ups asked for, and done
        self._starts = 0  # start-overs begun: load_older's rows must not cross one
        self._reconnect_wanted = False
        self._answers = set()  # events of calls waiting for an ack
        self._sio = self._socketio_client(reconnection_delay, reconnection_delay_max)
        self._worker = threading.Thread(
            target=self._run, name="feed-client", daemon=True
        )

    def _socketio_client(self, delay, delay_max):
        client_class = InOrderClient if self.in_order else socketio.Client
        client = client_class(
            reconnection=True,
            reconnection_delay=delay,
            reconnection_delay_max=delay_max,
            websocket_extra_options={"class_": PromptlyClosingWebSocket},
        )
        for name in HANDLED:
            client.on(name, getattr(self, f"_on_{name}"), namespace=NAMESPACE)
        return client

    def connect(self, timeout=10.0):
        """Connect (reconnects are automatic from then on); ConnectError if refused."""
        if self._closed.is_set():
            raise FeedError("this Feed is closed: make a new one")
        if self._worker.ident is None:
            self._worker.start()
        self.connect_error = None
        try:
            self._connect(timeout)
        except (socketio.exceptions.ConnectionError, ValueError) as exc:
            raise ConnectError(self.connect_error or str(exc)) from None
        return self

    def _connect(self, timeout):
        self._sio.connect(
            self.url,
            namespaces=[NAMESPACE],
            wait_timeout=timeout,
            **self._connect_options,
        )

    @property
    def cursor(self):
        """The cursor to resume from: everything before it is applied."""
        with self._lock:
            return self._cursor

    @property
    def synced(self):
        """True when the rows held are caught up with the table (and live)."""
        return self._synced.is_set()

    def rows(self):
        """A snapshot of the rows held: {id: row}."""
        with self._lock:
            return {row_id: dict(row) for row_id, row in self._held.rows.items()}

    def wait_synced(self, timeout=10.0):
        """Wait until caught up; False if not within `timeout` seconds."""
        return self._synced.wait(timeout)

    def wait_until(self, predicate, timeout=10.0):
        """Wait until predicate(self) is true, checked at every change; or False."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def send(self, text, timeout=10.0):
        """Send an event's text; the server's ack ({"ok": true, "id": n} or why not)."""
        with self._lock:
            generation = self._generation
        return self._call("event", text, generation, timeout)

    def load_older(self, timeout=10.0):
        """Window mode: add the rows just older than those held; True if more exist."""
        if not self.window:
            raise FeedError("load_older() is for window mode (Feed(window=n))")
        with self._lock:
            lowest, starts = min(self._held.rows, default=None), self._starts
            generation = self._generation
        if lowest is None:
            return False
        answer = self._sync(
            {"before": lowest, "limit": self.window}, generation, timeout
        )
        with self._lock:
            if starts == self._starts:  # rows from before a start-over are stale
                self._apply_all(answer["events"])
        return answer["more"]

    def disconnect(self):
        """Disconnect, keeping the rows and cursor: connect() resumes from them."""
        self._outside_callbacks(self._sio.disconnect)

    def close(self):
        """Disconnect for good and stop this client's thread."""
        with self._lock:
            self._closed.set()
            self._release_calls()
        self._wake.set()
        self._outside_callbacks(self._shut_down)

    def _shut_down(self):
        self._sio.shutdown()
        if self._sio.connected:
            self._sio.disconnect()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(10)

    def _outside_callbacks(self, work):
        # A callback may run in python-engineio's read thread, which disconnecting
        # joins: from a callback, the work is done in a thread of its own.
        if getattr(self._in_callback, "active", False):
            threading.Thread(target=work, name="feed-client-close", daemon=True).start()
        else:
            work()

    def _on_connect(self):
        with self._lock:
            self._online, self.connect_error = True, None
            self._generation += 1
        self._want_catch_up()

    def _on_disconnect(self, reason=None):
        with self._lock:
            self._online = False
            self._generation += 1
            self._synced.clear()
            self._release_calls()
            # python-socketio reconnects after a transport error, not after the
            # server's clean close (a restart, a deploy): this client does.
            if reason == SERVER_CLOSED and not self._closed.is_set():
                self._reconnect_wanted = True
        self._wake.set()

    def _on_connect_error(self, data=None):
        message = data.get("message") if isinstance(data, dict) else data
        self.connect_error = str(message or "connection failed")
        log.info("feed %s: connecting failed: %s", self.url, self.connect_error)

    def _on_events(self, rows, cursor=None):
        with self._lock:
            self._apply_all(rows)
            # Before this connection's catch-up is done, the rows between the
            # old cursor and this connection's first live row are not held.
            if self._synced.is_set() and cursor is not None:
                self._hold_cursor(cursor)

    def _on_resync(self, data=None):
        log.info("feed %s: resync asked for", self.url)
        with self._lock:
            self.resyncs += 1
            if not self.in_order:
                self._rewind_cursor()
        self._want_catch_up()

    def _hold_cursor(self, cursor):
        # The cursors adopted, kept a while for _rewind_cursor.
        self._cursor, now, history = cursor, time.monotonic(), self._held_cursors
        if cursor is None:
            return history.clear()
        if history and now - history[-1][0] < CURSOR_HISTORY_SPACING:
            return
        history.append((now, cursor))
        while len(history) > 1 and history[1][0] <= now - RESYNC_LOOKBACK_SECONDS:
            history.popleft()

    def _rewind_cursor(self):
        # In the library's threads an `events` sent after this resync may have
        # been handled first: resume from the cursor held a while ago. An older
        # cursor is always safe, it only brings rows again.
        moment, rewound = time.monotonic() - RESYNC_LOOKBACK_SECONDS, None
        for held_at, cursor in self._held_cursors:
            if rewound is not None and held_at > moment:
                break
            rewound = cursor
        if rewound is not None:
            self._cursor = rewound

    def _on_status(self, data):
        self._note_status(data)

    def _want_catch_up(self):
        with self._lock:
            self._synced.clear()
            self._wanted += 1
        self._wake.set()

    def _run(self):
        while not self._closed.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                reconnect, self._reconnect_wanted = self._reconnect_wanted, False
                wanted, online = self._wanted, self._online
                generation = self._generation
            if reconnect:
                self._reconnect()
            elif online and wanted != self._served:
                self._serve_catch_up(wanted, generation)
        if self._sio.connected:  # connected again while close() was shutting down
            self._sio.disconnect()

    def _reconnect(self):
        delay, delay_max = self.reconnection_delays
        while not self._closed.wait(delay * (0.5 + random.random())):
            if self._sio.connected:
                return
            try:
                return self._connect(self.sync_timeout)
            except (socketio.exceptions.ConnectionError, ValueError) as exc:
                log.info("feed %s: reconnecting failed: %s", self.url, exc)
            delay = min(delay * 2, delay_max)

    def _serve_catch_up(self, wanted, generation):
        try:
            self._catch_up(generation)
        except Interrupted as exc:
            log.info("feed %s: catch-up interrupted, again: %s", self.url, exc)
            return self._retry_after(self.reconnection_delays[0])
        except (KeyError, TypeError, ValueError):
            log.exception("feed %s: a sync answer it cannot read", self.url)
            return self._retry_after(self.reconnection_delays[1])
        with self._lock:
            self._served = wanted
            if wanted == self._wanted and generation == self._generation:
                self._synced.set()
                self._changed.notify_all()

    def _retry_after(self, delay):
        if not self._closed.wait(delay):
            self._wake.set()  # served if still connected; if not, by the next connect

    def _catch_up(self, generation):
        with self._lock:
            cursor = self._cursor
        while cursor is not None:
            answer = self._sync(
                {"cursor": cursor, "limit": self.page_limit}, generation
            )
            if answer.get("reset"):
                self.last_reset = answer.get("message")
                log.info("feed %s: reset: %s", self.url, self.last_reset)
                return self._start_over(generation, self.last_reset)
            with self._lock:
                self._apply_all(answer["events"])
                self._hold_cursor(answer["cursor"])
                cursor = self._cursor
            if not answer["more"]:
                return
        self._start_over(generation)

    def _start_over(self, generation, reason=None):
        # A reset on the same database keeps the tombstones: a live row deleted
        # meanwhile may still be handled late, after the clear.
        same_database = reason is not None and ANOTHER_DATABASE not in reason
        with self._lock:
            held = bool(self._held.rows or self._held.tombstones)
            self._held.clear(keep_removals=same_database)
            self._hold_cursor(None)
            self._starts += 1
            if reason or held:
                self._callback(self.on_reset, reason or "starting over")
        if self.window:
            request = {"after": None, "limit": self.window}
            answer = self._sync(request, generation)
            return self._adopt_last_page(answer)
        after = 0
        while True:
            answer = self._sync({"after": after, "limit": self.page_limit}, generation)
            if not answer["more"]:
                return self._adopt_last_page(answer)
            with self._lock:
                self._apply_all(answer["events"])
            after = answer["events"][-1]["id"]

    def _adopt_last_page(self, answer):
        with self._lock:
            self._apply_all(answer["events"])
            self._hold_cursor(answer["cursor"])

    def _sync(self, request, generation, timeout=None):
        answer = self._call("sync", request, generation, timeout or self.sync_timeout)
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise Interrupted(f"sync refused: {error}")
        self._note_status(answer)
        return answer

    def _call(self, event, data, generation, timeout):
        if getattr(self._in_callback, "active", False):
            raise FeedError(
                f"{event} cannot be sent from a callback: its answer would wait "
                "behind the callback"
            )
        answered, answers = threading.Event(), []

        def on_answer(*args):
            answers.append(args[0] if args else None)
            answered.set()

        with self._lock:
            if not self._online or generation != self._generation:
                raise Interrupted("not connected")
            self._answers.add(answered)
        try:
            with self._emit_lock:
                self._sio.emit(event, data, namespace=NAMESPACE, callback=on_answer)
            if not answered.wait(timeout):
                raise Interrupted(f"no answer to {event} within {timeout:g} s")
        except socketio.exceptions.SocketIOError as exc:
            raise Interrupted(f"not connected: {exc}") from None
        finally:
            with self._lock:
                self._answers.discard(answered)
        if not answers:
            raise Interrupted(f"the connection dropped before {event} was answered")
        return answers[0]

    def _release_calls(self):
        for answered in self._answers:
            answered.set()

    def _apply_all(self, rows):
        for row in rows:
            if self._held.apply(row):
                self._callback(self.on_change, row)
        self._changed.notify_all()

    def _note_status(self, data):
        status = {key: data[key] for key in ("feed", "reason") if key in data}
        with self._lock:
            if not status or status == self.status:
                return
            self.status = status
            self._callback(self.on_status, dict(status))
            self._changed.notify_all()

    def _callback(self, callback, argument):
        if callback is None:
            return
        self._in_callback.active = True
        try:
            callback(argument)
        except Exception:
            log.exception("feed %s: %r failed on %r", self.url, callback, argument)
        finally:
            self._in_callback.active = False
