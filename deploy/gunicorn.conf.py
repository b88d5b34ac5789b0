"""gunicorn settings for `make serve`: pg-feed in production, threaded mode.

Never --preload: each worker loads the app itself and starts its own listener
once loaded (post_worker_init), before it accepts a client. A WebSocket holds a
worker thread for as long as it is open, so `threads` caps the clients a worker
can hold. Long-polling clients must come back to the same worker: keep one
worker per instance and scale out with instances behind a sticky proxy
(deploy/nginx.conf uses ip_hash).
"""

import os
import signal
import threading

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}"
worker_class = "gthread"
workers = int(os.environ.get("FEED_WORKERS", "1"))
threads = int(os.environ.get("FEED_THREADS", "1000"))
worker_connections = threads + 100  # room for keep-alive HTTP beside WebSockets
timeout = 60  # a gthread worker that stops heartbeating this long is restarted
graceful_timeout = 10
preload_app = False
accesslog = None


def post_worker_init(worker):
    """LISTEN before this worker accepts its first client; close clients on TERM."""
    from feed.realtime import close_clients, start_feed

    app = worker.wsgi
    if not start_feed(app, timeout=app.config["FEED_LISTENER_TIMEOUT"]):
        worker.log.error("serving without LISTEN: the database is unreachable")

    # A graceful stop waits for open requests, and a WebSocket is one until it
    # closes: close them first (in a thread, not in the signal handler), so the
    # worker stops in about a second instead of after graceful_timeout.
    stop_gracefully = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        threading.Thread(target=close_clients, daemon=True).start()
        stop_gracefully(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def worker_exit(server, worker):
    """Close every client cleanly and stop the listener."""
    from feed.realtime import close_clients, stop_feed

    close_clients()
    stop_feed(worker.wsgi)
