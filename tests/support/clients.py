"""Real Socket.IO clients on /events that record what the server pushes."""

import functools
import threading

import engineio
import socketio
from engineio import payload
from engineio.packet import CLOSE

NAMESPACE = "/events"


class _InOrderEngineIOClient(engineio.Client):
    # python-socketio's client runs each message's handler in a new thread, so
    # messages can be recorded out of order; tests of ordering need them in order.
    def _trigger_event(self, event, *args, **kwargs):
        kwargs["run_async"] = False
        return super()._trigger_event(event, *args, **kwargs)

    def disconnect(self, abort=False, reason=None):
        # Over long-polling, python-engineio's write loop may see the state
        # change and stop before it has POSTed CLOSE; the server then answers
        # the pending poll only with its next ping, 25 s later (seen 1 time in
        # 2 to 20). Sending CLOSE first ends the session at once.
        if self.state == "connected" and self.current_transport == "polling":
            close = payload.Payload(packets=[engineio.packet.Packet(CLOSE)])
            self._send_request(
                "POST",
                self.base_url,
                body=close.encode(),
                headers={"Content-Type": "text/plain"},
                timeout=5,
            )
        return super().disconnect(abort=abort, reason=reason)


class _InOrderClient(socketio.Client):
    def _engineio_client_class(self):
        return _InOrderEngineIOClient


class FeedClient:
    """A python-socketio client on /events that records what the server pushes."""

    def __init__(
        self, url, transports=("websocket",), reconnection=False, **connect_options
    ):
        self.messages = []
        self.cursors = []  # each events message's cursor, in arrival order
        self.resyncs = 0
        self.sio = _InOrderClient(
            reconnection=reconnection, reconnection_delay=0.2, reconnection_delay_max=1
        )
        # Handlers are methods, so a subclass's are in place before the first row.
        self.sio.on("events", self._on_events, namespace=NAMESPACE)
        self.sio.on("resync", self._on_resync, namespace=NAMESPACE)
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.url = url
        self.connect_options = {"transports": list(transports), **connect_options}
        self.reconnect()

    def reconnect(self):
        """Connect (again) with the options given at first."""
        self.sio.connect(
            self.url, namespaces=[NAMESPACE], wait_timeout=10, **self.connect_options
        )

    def _on_events(self, rows, cursor=None):
        self.messages.append(rows)
        self.cursors.append(cursor)

    def _on_resync(self, data=None):
        self.resyncs += 1

    def _on_connect(self):
        pass

    def call(self, event, *args, timeout=10):
        """Send `event` with these arguments and return the server's ack."""
        return self.sio.call(event, tuple(args), namespace=NAMESPACE, timeout=timeout)

    def rows(self, op=None):
        """Every row pushed so far, in arrival order, optionally of one op."""
        return [
            row
            for batch in list(self.messages)
            for row in batch
            if op is None or row["op"] == op
        ]

    def ids(self, op="INSERT"):
        """Ids of the pushed rows of one op, in arrival order."""
        return [row["id"] for row in self.rows(op)]

    def drop(self):
        """Disconnect, keeping what was received; reconnect() connects again."""
        # websocket-client's close() waits 3 s for the server's close frame, which
        # the client's own read loop has usually consumed already.
        ws = getattr(self.sio.eio, "ws", None)
        if ws is not None:
            ws.close = functools.partial(ws.close, timeout=0.2)
        self.sio.disconnect()

    def close(self):
        """Disconnect for good."""
        self.drop()


class CatchUpClient(FeedClient):
    """A client following the documented protocol: live rows, plus catch-up by sync.

    On every connect and every `resync` it reconciles the lookback window: the
    rows with id > (highest id held - LOOKBACK_IDS) are replaced by what `sync`
    returns, except rows that changed live meanwhile (live is newer). Its
    catch-up thread starts once connected and is joined by close().
    """

    LOOKBACK_IDS = 1000

    def __init__(self, url, **options):
        self.held = {}
        self.live_inserts = []
        self._lock = threading.Lock()
        self._touched = set()
        self._wanted = threading.Event()
        self._catch_up_from = None
        self._retry_pause = threading.Event()
        self._closing = False
        self._worker = threading.Thread(target=self._catch_up_loop, daemon=True)
        super().__init__(url, **options)
        self._worker.start()

    def _on_events(self, rows, cursor=None):
        self.messages.append(rows)
        with self._lock:
            for row in rows:
                self._apply(row)

    def _on_resync(self, data=None):
        self.resyncs += 1
        self._want_catch_up()

    def _on_connect(self):
        self._want_catch_up()

    def _want_catch_up(self):
        # The position is taken now, where the gap is in the stream: rows that
        # arrive live after a resync must not move the catch-up past the gap.
        with self._lock:
            position = max(self.held, default=0)
            if self._catch_up_from is not None:
                position = min(position, self._catch_up_from)
            self._catch_up_from = position
        self._wanted.set()

    def _apply(self, row):
        if row["op"] == "TRUNCATE":
            self.held.clear()
            self._catch_up_from = 0
            self._wanted.set()
            return
        self._touched.add(row["id"])
        if row["op"] == "DELETE":
            self.held.pop(row["id"], None)
        else:
            self.held[row["id"]] = row["event"]
            if row["op"] == "INSERT":
                self.live_inserts.append(row["id"])

    def _catch_up_loop(self):
        while not self._closing:
            if not self._wanted.wait(0.1):
                continue
            self._wanted.clear()
            with self._lock:
                position, self._catch_up_from = self._catch_up_from, None
            try:
                self.catch_up(position or 0)
            except (socketio.exceptions.SocketIOError, AssertionError):
                with self._lock:  # not connected or refused: try again
                    self._catch_up_from = min(position, self._catch_up_from or position)
                self._wanted.set()
                self._retry_pause.wait(0.05)

    def catch_up(self, position):
        """Reconcile the rows above position - LOOKBACK_IDS with the table."""
        base = max(0, position - self.LOOKBACK_IDS)
        with self._lock:
            self._touched = set()
        answer, after = {}, base
        while True:
            # A short timeout: an answer lost to a disconnect must not hold up
            # the catch-up that the reconnect asks for.
            page = self.call("sync", {"after": after, "limit": 1000}, timeout=2)
            assert page["ok"], page
            answer.update((row["id"], row["event"]) for row in page["events"])
            if not page["more"]:
                break
            after = page["events"][-1]["id"]
        with self._lock:
            for row_id in [i for i in self.held if i > base]:
                if row_id not in answer and row_id not in self._touched:
                    del self.held[row_id]
            for row_id, event in answer.items():
                if row_id not in self._touched:
                    self.held[row_id] = event

    def holds(self, table):
        """True when this client holds exactly `table` ({id: event})."""
        with self._lock:
            return self.held == table

    def close(self):
        """Disconnect for good and stop the catch-up thread."""
        self._closing = True
        super().close()
        if self._worker.is_alive():
            self._worker.join(5)


def client_factory(client_class):
    """Yield a function that connects client_class instances; close them after."""
    clients = []

    def connect(url, **options):
        clients.append(client_class(url, **options))
        return clients[-1]

    yield connect
    for feed_client in clients:
        feed_client.close()
