"""redis-mq: the alternative pg-feed argues against, served for the benchmark.

The same kind of Flask-SocketIO app (threading mode, namespace /events, `events`
messages of row lists) that takes its messages from a Redis message queue and
never LISTENs: writers publish each transaction's rows after COMMIT through an
external emitter. Run as `BENCH_REDIS_URL=redis://... python -m bench.redis_app`.
"""

import logging
import os
import signal
import threading
import time

import redis
from flask import Flask
from flask_socketio import Namespace, SocketIO
from werkzeug.serving import make_server

from bench.system_limits import raise_open_files_limit
from feed.service import readiness
from feed.service.process_feed import NAMESPACE

log = logging.getLogger(__name__)

CHANNEL = "flask-socketio"  # Flask-SocketIO's default queue channel


class EventsNamespace(Namespace):
    """/events: clients only listen here; every message comes through Redis."""

    def on_connect(self, auth=None):
        return True


def create_app(redis_url):
    """The Flask app and its SocketIO, bound to the Redis queue at `redis_url`."""
    app = Flask(__name__)
    socketio = SocketIO(
        app, async_mode="threading", message_queue=redis_url, channel=CHANNEL
    )
    socketio.on_namespace(EventsNamespace(NAMESPACE))
    return app, socketio


def subscribe_now(socketio, redis_url, timeout=10.0):
    """Subscribe to the queue before serving, as pg-feed LISTENs before serving.

    python-socketio subscribes on the first client's connect, so rows published
    before that would be lost; start its subscriber here and wait until Redis
    counts it.
    """
    server = socketio.server
    server.manager_initialized = True
    server.manager.initialize()
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while dict(client.pubsub_numsub(CHANNEL)).get(CHANNEL.encode(), 0) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the Redis subscription did not start")
        time.sleep(0.01)
    client.close()


def serve(app, host, port):
    """Serve until SIGTERM or SIGINT."""
    server = make_server(host, port, app, threaded=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: _shutdown_soon(server))
    print(f" * redis-mq serving on http://{host}:{server.port}", flush=True)
    readiness.announce(readiness.socket_url(server.socket), mode="redis-mq")
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


def _shutdown_soon(server):
    threading.Thread(target=server.shutdown, daemon=True).start()


def main():
    """Entry point: configure from the environment, subscribe, serve."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    raise_open_files_limit()
    redis_url = os.environ["BENCH_REDIS_URL"]
    app, socketio = create_app(redis_url)
    subscribe_now(socketio, redis_url)
    serve(app, os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", 0)))


if __name__ == "__main__":
    main()
