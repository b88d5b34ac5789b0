"""The fan-out: one client's failure never costs another client a row."""

import random
import re
import subprocess
import threading

import pytest
import requests
import socketio
import websocket

from feed.extensions import socketio as server_socketio
from feed.upstream import sessions
from support.database import insert_row
from support.waiting import wait_for

NAMESPACE = "/events"


def closed_mid_broadcast(session):
    """Make a session fail as one does whose reader closed it during a broadcast.

    The fan-out looked it up while open; by the time it queues the message,
    python-engineio's Socket.send raises SocketIsClosedError.
    """

    def send(packet):
        raise sessions.SessionClosed()

    session.send = send
    websocket = getattr(session, "feed_websocket", None)
    if websocket is not None:  # its socket takes nothing more: it is closing
        websocket.send_now = lambda text: "queue"


def failures(url):
    text = requests.get(f"{url}/metrics", timeout=5).text
    (line,) = [
        x
        for x in text.splitlines()
        if x.startswith("feed_broadcast_send_failures_total")
    ]
    return float(line.split()[-1])


FAN_OUTS = {
    "frame once, write directly": {},
    "each writer frames": {"FEED_FAST_FANOUT": "off"},
    "without the reaches": {"FEED_UPSTREAM_REACHES": "off"},
}


@pytest.mark.parametrize("fan_out", FAN_OUTS)
@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_a_client_closing_mid_broadcast_costs_the_others_nothing(
    serve_app, sio_client, writer, fan_out, transport
):
    served = serve_app(**FAN_OUTS[fan_out])
    clients = [sio_client(served.url, transports=(transport,)) for _ in range(5)]
    eio = server_socketio.server.eio
    closed_mid_broadcast(eio.sockets[clients[1].sio.eio.sid])
    new_id = insert_row(writer, "after the close")
    for index in (0, 2, 3, 4):
        wait_for(lambda c=clients[index]: c.ids() == [new_id], message="the row")
    assert clients[1].ids() == []
    assert failures(served.url) == 1


class Churn:
    """Clients that connect and leave as fast as they can, some abruptly."""

    def __init__(self, url, seed=None):
        self.url = url
        self.seed = seed
        self.cycles = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        self.thread.join(30)

    def _run(self):
        chance = random.Random(self.seed)
        while not self.stopping.is_set():
            if chance.random() < 0.5:
                self._socketio_client(chance.choice(["websocket", "polling"]))
            else:
                self._vanishing_websocket()
            self.cycles += 1

    def _socketio_client(self, transport):
        client = socketio.Client(reconnection=False)
        try:
            client.connect(
                self.url, namespaces=[NAMESPACE], transports=[transport], wait_timeout=5
            )
        except socketio.exceptions.ConnectionError:
            return
        client.disconnect()

    def _vanishing_websocket(self):
        # Joins the namespace, then its TCP connection just goes: no CLOSE.
        url = self.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        raw = websocket.create_connection(url, timeout=5)
        raw.recv()
        raw.send("40/events,")
        raw.recv()
        raw.sock.close()


def test_clients_closing_during_broadcasts_cost_the_others_no_row(
    app_process, sio_client, writer, mode
):
    served = app_process(mode)
    steady = [sio_client(served.url) for _ in range(3)]
    steady.append(sio_client(served.url, transports=("polling",)))
    with Churn(served.url) as churn, Churn(served.url) as more_churn:
        written = [insert_row(writer, f"row {n}") for n in range(600)]
        wait_for(
            lambda: churn.cycles + more_churn.cycles >= 60,
            timeout=60,
            message="60 churn cycles",
        )
    for feed_client in steady:
        wait_for(lambda c=feed_client: len(c.ids()) >= 600, message="every row")
        assert feed_client.ids() == written  # each once, in commit order
    log = "".join(served.output)
    assert "emitting events failed" not in log
    assert "Traceback" not in log and "Exception in thread" not in log


def _send_buffers(port):
    """SO_SNDBUF (skmem tb) of the server's established sockets on `port`."""
    listing = subprocess.run(
        ["ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(size) for size in re.findall(r"\btb(\d+)", listing)]


@pytest.mark.parametrize("asked", [None, 65536])
def test_feed_send_buffer_bytes_sets_each_websockets_kernel_send_buffer(
    app_process, sio_client, mode, asked
):
    """What a stalled client can hold in the kernel is the send buffer: set, it
    is what was asked for (Linux doubles it); unset, autotuning's own."""
    settings = {} if asked is None else {"FEED_SEND_BUFFER_BYTES": str(asked)}
    served = app_process(mode, **settings)
    sio_client(served.url)
    port = int(served.url.rsplit(":", 1)[1])
    buffers = wait_for(lambda: _send_buffers(port), message="the WebSocket in ss")
    if asked is None:
        assert all(size != 2 * 65536 for size in buffers), buffers
    else:
        assert buffers == [2 * asked]
