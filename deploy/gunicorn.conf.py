"""gunicorn settings for `make serve`: pg-feed in production.

FEED_SERVER_MODE picks the worker: `threaded` (gthread, the default) or `gevent`
(gevent's worker: every client a greenlet, psycopg2 cooperative via psycogreen).
Never --preload: each worker loads the app itself and starts its own listener
once loaded (post_worker_init), before it accepts a client. In threaded mode a
WebSocket holds a worker thread for as long as it is open, so FEED_THREADS caps
the clients a worker can hold; in gevent mode FEED_CONNECTIONS does. Long-polling
clients must come back to the same worker: keep one worker per instance and
scale out with instances behind a sticky proxy (deploy/nginx.conf uses ip_hash).
"""

import os
import signal

from config import server_mode

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}"
mode = server_mode(os.environ.get("FEED_SERVER_MODE"))
workers = int(os.environ.get("FEED_WORKERS", "1"))
if mode == "gevent":
    worker_class = "gevent"
    worker_connections = int(os.environ.get("FEED_CONNECTIONS", "10000"))
else:
    worker_class = "gthread"
    threads = int(os.environ.get("FEED_THREADS", "1000"))
    worker_connections = threads + 100  # room for keep-alive HTTP beside WebSockets
timeout = 60  # a gthread worker that stops heartbeating this long is restarted
graceful_timeout = 10
preload_app = False
accesslog = None
control_socket_disable = True  # unused, and one path per user: instances would clash


def post_worker_init(worker):
    """LISTEN before this worker accepts its first client; close clients on TERM."""
    from feed.extensions import socketio
    from feed.service import logs, readiness
    from feed.service.concurrency import async_mode
    from feed.service.process_feed import close_clients, start_feed

    # The app's records (refusals, the self-test, listener outages) to stderr
    # beside gunicorn's, in the same format choice as `python app.py`.
    logs.configure_from_environment(worker.log.error_log.handlers)
    app = worker.wsgi
    if not start_feed(app, timeout=app.config["FEED_LISTENER_TIMEOUT"]):
        worker.log.error("serving without LISTEN: the database is unreachable")

    # A graceful stop waits for open requests, and a WebSocket is one until it
    # closes: close them first (in a thread, not in the signal handler), so the
    # worker stops in about a second instead of after graceful_timeout. Under
    # gevent the handler runs in the event loop, where nothing may block: the
    # background task is a greenlet there, a thread here.
    stop_gracefully = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        socketio.start_background_task(close_clients)
        stop_gracefully(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    worker.log.info(
        "pg-feed %s mode (Socket.IO async_mode %s): accepting clients",
        mode,
        async_mode(),
    )
    # gunicorn's master bound the socket (maybe to port 0): ask it which port.
    readiness.announce(readiness.socket_url(worker.sockets[0]), mode)


def worker_exit(server, worker):
    """Close every client cleanly and stop the listener."""
    from feed.service.process_feed import close_clients, stop_feed

    close_clients()
    stop_feed(worker.wsgi)
