"""Real Socket.IO clients on /events: raw recorders, and feed.client's Feed."""

import functools
from collections import Counter

import engineio
import socketio
from engineio import payload
from engineio.packet import CLOSE

from feed.client import Feed

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


class RecordedFeed(Feed):
    """feed.client's Feed, connected, recording every change it applies in order."""

    def __init__(self, url, **options):
        self.applied = []
        self.resets = []
        self.statuses = []
        super().__init__(
            url,
            on_change=self.applied.append,
            on_reset=self.resets.append,
            on_status=self.statuses.append,
            **options,
        )
        try:
            self.connect()
        except BaseException:
            self.close()
            raise

    def texts(self):
        """{id: event} of the rows held, to compare with the table."""
        return {row_id: row["event"] for row_id, row in self.rows().items()}

    def holds(self, table):
        """True when this client holds exactly `table` ({id: event})."""
        return self.texts() == table

    def applied_ids(self, op="INSERT"):
        """Ids of the applied changes of one op, in the order applied."""
        return [row["id"] for row in list(self.applied) if row["op"] == op]

    def applied_twice(self):
        """The changes (op, id, version) applied more than once: none, always."""
        seen = Counter((row["op"], row["id"], row["version"]) for row in self.applied)
        return [change for change, count in seen.items() if count > 1]


def resume(feed_client, cursor, limit=None):
    """Page through sync {"cursor"} until more is false: (rows, last cursor).

    limit None: the server's default page size."""
    rows = []
    while True:
        request = (
            {"cursor": cursor} if limit is None else {"cursor": cursor, "limit": limit}
        )
        answer = feed_client.call("sync", request)
        assert answer["ok"] is True and "reset" not in answer, answer
        rows += answer["events"]
        cursor = answer["cursor"]
        if not answer["more"]:
            return rows, cursor


def client_factory(client_class):
    """Yield a function that connects client_class instances; close them after."""
    clients = []

    def connect(url, **options):
        clients.append(client_class(url, **options))
        return clients[-1]

    yield connect
    for feed_client in clients:
        feed_client.close()
