"""The library reaches in feed/upstream: each upstream defect reproduced, and answered.

Each `..._upstream_...` test reproduces a defect on the plain library at the
pinned version (docs/UPSTREAM.md). When an upgrade fixes one, its test fails:
that reach may then go. The test beside it shows the reach answering it.
"""

import json
import logging
import threading

import engineio
import pytest
import requests
import simple_websocket
import socketio
from werkzeug.serving import make_server

from feed import upstream
from feed.clients.wsgi import AnswerEndedSessions
from feed.extensions import socketio as server_socketio
from feed.fanout.backlog import BoundedManager
from feed.upstream import sessions
from feed.upstream.websocket_server import FeedServer, Oversize
from support.waiting import wait_for
from support.websocket_pair import WebSocketPair


class WakesTooEarly(threading.Event):
    """An Event whose first set() returns only once the woken waiter waits again.

    simple-websocket's socket thread sets its event, then marks the connection
    closed; this makes the receiver run in between, every time.
    """

    def __init__(self):
        super().__init__()
        self.waits = 0
        self.counted = threading.Condition()
        self.first_set = True

    def wait(self, timeout=None):
        with self.counted:
            self.waits += 1
            self.counted.notify_all()
        return super().wait(timeout)

    def set(self):
        first, self.first_set = self.first_set, False
        with self.counted:
            waits = self.waits
        super().set()
        if first:
            with self.counted:
                self.counted.wait_for(lambda: self.waits > waits, timeout=5)


def receive_in_thread(server):
    """Start server.receive() in a thread; an Event set when it returns or raises."""
    returned = threading.Event()

    def receive():
        try:
            server.receive()
        except simple_websocket.ConnectionClosed:
            pass
        returned.set()

    threading.Thread(target=receive, daemon=True).start()
    return returned


@pytest.fixture
def pairs():
    """Factory: pairs(server_class, **options) -> a WebSocketPair, closed after."""
    made = []

    def make(server_class, **options):
        made.append(WebSocketPair(server_class, **options))
        return made[-1]

    yield make
    for pair in made:
        pair.close()


def test_upstream_receive_misses_the_close_after_a_too_big_message(pairs):
    pair = pairs(
        simple_websocket.Server, max_message_size=100, event_class=WakesTooEarly
    )
    returned = receive_in_thread(pair.server)
    wait_for(lambda: pair.server.event.waits == 1, message="receive() waiting")
    pair.send_text("x" * 200)
    assert pair.close_frame_received() == 1009
    wait_for(lambda: not pair.server.thread.is_alive(), message="socket thread end")
    assert not returned.wait(1), "upstream fixed: receive() now sees the close"


def test_feed_server_receive_sees_the_close(pairs):
    pair = pairs(
        FeedServer, max_message_size=50, hard_limit=100, event_class=WakesTooEarly
    )
    returned = receive_in_thread(pair.server)
    wait_for(lambda: pair.server.event.waits == 1, message="receive() waiting")
    pair.send_text("x" * 200)
    assert pair.close_frame_received() == 1009
    assert returned.wait(5)


def test_upstream_a_message_past_the_limit_closes_the_connection(pairs):
    pair = pairs(simple_websocket.Server, max_message_size=100)
    pair.send_text("x" * 200)
    assert pair.close_frame_received() == 1009


def test_feed_server_discards_a_message_past_the_limit_and_stays_open(pairs):
    pair = pairs(FeedServer, max_message_size=100, hard_limit=10_000)
    pair.send_text('42/events,7["event","' + "x" * 5000 + '"]')
    pair.send_text("next")
    oversize = pair.server.receive(timeout=5)
    assert isinstance(oversize, Oversize)
    assert oversize.head.startswith('42/events,7["event","xxx')
    assert len(oversize.head) <= 512 and oversize.size == 5000 + 23
    assert pair.server.receive(timeout=5) == "next"
    assert pair.server.connected


def test_upstream_close_races_the_socket_thread_with_ebadf(pairs):
    pair = pairs(simple_websocket.Server)
    assert close_while_the_peer_vanishes(pair) == "OSError 9"


def test_feed_server_close_after_the_socket_thread_closed_is_quiet(pairs):
    pair = pairs(FeedServer, max_message_size=100, hard_limit=1000)
    assert close_while_the_peer_vanishes(pair) is None
    assert not pair.server.connected


def close_while_the_peer_vanishes(pair):
    """ws.close() passes its `connected` check, then the socket thread closes the
    socket (the peer vanished) before close() writes. What close() raised."""
    raised = []
    pair.server_socket.hold_next_send()

    def close():
        try:
            pair.server.close()
        except OSError as exc:
            raised.append(f"OSError {exc.errno}")

    closer = threading.Thread(target=close)
    closer.start()
    assert pair.server_socket.sending.wait(5)
    pair.vanish()
    closer.join(10)
    return raised[0] if raised else None


class PlainServer:
    """A WSGI app served on a real port in a thread: python-engineio or -socketio."""

    def __init__(self, wsgi_app):
        self.http = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
        self.url = f"http://127.0.0.1:{self.http.port}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.http.shutdown()
        self.thread.join(5)
        self.http.server_close()


@pytest.fixture
def plain_server():
    """Factory: plain_server(wsgi_app) -> a PlainServer, stopped after."""
    started = []

    def start(wsgi_app):
        started.append(PlainServer(wsgi_app))
        return started[-1]

    yield start
    for one in started:
        one.stop()


def post_after_close(url):
    """Open a polling session, CLOSE it, POST once more: the status code."""
    base = f"{url}/socket.io/?EIO=4&transport=polling"
    sid = json.loads(requests.get(base, timeout=5).text[1:])["sid"]
    assert requests.post(f"{base}&sid={sid}", data="1", timeout=5).status_code == 200
    return requests.post(f"{base}&sid={sid}", data="2", timeout=5).status_code


def test_upstream_a_post_for_a_session_that_just_closed_is_a_500(plain_server):
    eio = engineio.Server(async_mode="threading")
    served = plain_server(engineio.WSGIApp(eio, engineio_path="socket.io"))
    assert post_after_close(served.url) == 500


def test_answer_ended_sessions_turns_it_into_a_400(plain_server):
    eio = engineio.Server(async_mode="threading")
    served = plain_server(
        AnswerEndedSessions(engineio.WSGIApp(eio, engineio_path="socket.io"))
    )
    assert post_after_close(served.url) == 400


def broadcast_with_one_session_closing(plain_server, manager):
    """Three clients; the middle one's session closes mid-broadcast. Who got it."""
    server = socketio.Server(async_mode="threading", client_manager=manager)
    served = plain_server(socketio.WSGIApp(server))
    received = [threading.Event() for _ in range(3)]
    clients = []
    try:
        for got in received:
            clients.append(socketio.Client(reconnection=False))
            clients[-1].on("news", lambda data, got=got: got.set())
            clients[-1].connect(served.url, transports=["polling"], wait_timeout=5)
        middle = server.eio.sockets[clients[1].eio.sid]
        middle.send = lambda packet: (_ for _ in ()).throw(sessions.SessionClosed())
        try:
            server.emit("news", {"n": 1})
        except sessions.SessionClosed:
            pass
        return [event.wait(2) for event in (received[0], received[2])]
    finally:  # every client, even when a connect or the broadcast failed
        for client in clients:
            client.disconnect()


def test_upstream_broadcast_stops_at_a_session_that_closed(plain_server):
    got = broadcast_with_one_session_closing(plain_server, socketio.Manager())
    assert got == [True, False], "upstream fixed: the broadcast reaches the rest"


@pytest.mark.parametrize("reaches", [True, False])
def test_bounded_manager_broadcast_reaches_the_rest(plain_server, reaches):
    manager = BoundedManager(reaches=reaches)
    got = broadcast_with_one_session_closing(plain_server, manager)
    assert got == [True, True]


def test_a_version_other_than_the_checked_one_falls_back_with_one_warning(
    monkeypatch, caplog
):
    installed = {**upstream.CHECKED_VERSIONS, "simple-websocket": "9.0.0"}
    monkeypatch.setattr(upstream, "installed_versions", lambda: installed)
    upstream.check.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="feed.upstream"):
            assert upstream.check("on") is False
            assert upstream.check("on") is False
    finally:
        upstream.check.cache_clear()
    (warning,) = caplog.records
    assert "simple-websocket 1.1.0" in warning.getMessage()
    assert "simple-websocket 9.0.0 is installed" in warning.getMessage()


def test_the_installed_versions_are_the_checked_ones():
    # requirements.txt pins them; a mismatch here means the pins moved.
    assert upstream.installed_versions() == upstream.CHECKED_VERSIONS


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_without_the_reaches_the_feed_still_delivers(
    serve_app, sio_client, writer, transport
):
    served = serve_app(FEED_UPSTREAM_REACHES="off")
    assert server_socketio.server.manager.reaches is False
    readers = [sio_client(served.url, transports=(transport,)) for _ in range(2)]
    ack = readers[0].call("event", "through the libraries' own paths")
    for reader in readers:
        wait_for(lambda r=reader: r.ids() == [ack["id"]], message="the row")
