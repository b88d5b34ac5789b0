"""Settings for pg-feed, each read from an environment variable with a default."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent


def _int(name, default):
    return int(os.environ.get(name, default))


SERVER_MODES = ("threaded", "gevent")


def server_mode(setting):
    """FEED_SERVER_MODE checked: "threaded" (the default) or "gevent"."""
    mode = (setting or "threaded").strip().lower()
    if mode not in SERVER_MODES:
        raise ValueError(
            f"FEED_SERVER_MODE={setting!r}: expected one of {', '.join(SERVER_MODES)}"
        )
    return mode


def embedded_database_dir():
    """Where `make run` keeps the embedded PostgreSQL's data when no URL is given."""
    return Path(
        os.environ.get("FEED_EMBEDDED_PGDATA", BASE_DIR / "instance" / "pgdata")
    )


def embedded_database_url():
    """The libpq URL of the embedded server: a Unix socket inside its data folder."""
    return f"postgresql://postgres:@/postgres?host={embedded_database_dir()}"


class Config:
    """Every setting, from the environment; see the README's Configuration table."""

    DATABASE_URL = os.environ.get("DATABASE_URL") or embedded_database_url()
    LISTENER_DATABASE_URL = os.environ.get("LISTENER_DATABASE_URL") or None
    HOST = os.environ.get("HOST", "127.0.0.1")
    PORT = _int("PORT", 5000)
    SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-change-me")
    FEED_SERVER_MODE = server_mode(os.environ.get("FEED_SERVER_MODE"))

    FEED_MAX_EVENT_CHARS = _int("FEED_MAX_EVENT_CHARS", 4096)
    FEED_HARD_MAX_MESSAGE_BYTES = _int("FEED_HARD_MAX_MESSAGE_BYTES", 16 * 2**20)
    FEED_UPSTREAM_REACHES = os.environ.get("FEED_UPSTREAM_REACHES", "on")
    FEED_FAST_FANOUT = os.environ.get("FEED_FAST_FANOUT", "on")
    FEED_HISTORY_LIMIT = _int("FEED_HISTORY_LIMIT", 100)
    FEED_SYNC_MAX_LIMIT = _int("FEED_SYNC_MAX_LIMIT", 1000)
    FEED_CORS_ORIGINS = os.environ.get("FEED_CORS_ORIGINS", "")
    FEED_READ_TOKEN = os.environ.get("FEED_READ_TOKEN") or None
    FEED_WRITE_TOKEN = os.environ.get("FEED_WRITE_TOKEN") or None
    FEED_EVENT_RATE = float(os.environ.get("FEED_EVENT_RATE", 20))
    FEED_EVENT_BURST = _int("FEED_EVENT_BURST", 40)
    FEED_MAX_CONNECTIONS_PER_ADDRESS = _int("FEED_MAX_CONNECTIONS_PER_ADDRESS", 0)
    FEED_CLIENT_BACKLOG_MESSAGES = _int("FEED_CLIENT_BACKLOG_MESSAGES", 500)
    FEED_CLIENT_BACKLOG_BYTES = _int("FEED_CLIENT_BACKLOG_BYTES", 2**20)
    # Each WebSocket's kernel send buffer (SO_SNDBUF; Linux doubles it): 0
    # leaves it to the kernel's autotuning, up to net.ipv4.tcp_wmem's max (4 MiB
    # here), which a client that stopped reading fills before its backlog bound
    # above sees anything (docs/DEPLOYING.md, "Ten thousand clients").
    FEED_SEND_BUFFER_BYTES = _int("FEED_SEND_BUFFER_BYTES", 0)
    # Engine.IO's heartbeat (Socket.IO's defaults): the server pings each client
    # every FEED_PING_INTERVAL seconds and closes one that has not answered
    # within FEED_PING_TIMEOUT. Each ping is a round trip through the server:
    # at 10,000 clients, 400 a second (docs/DEPLOYING.md).
    FEED_PING_INTERVAL = float(os.environ.get("FEED_PING_INTERVAL", 25))
    FEED_PING_TIMEOUT = float(os.environ.get("FEED_PING_TIMEOUT", 20))
    FEED_LISTENER_IDLE_CHECK = float(os.environ.get("FEED_LISTENER_IDLE_CHECK", 5))
    FEED_LISTENER_TIMEOUT = float(os.environ.get("FEED_LISTENER_TIMEOUT", 5))
    # Exact resume (docs/RESUME.md): how often the listener checks the log while
    # changes flow (the cursor lags live rows by up to about twice this), and
    # how long and how many DELETE/TRUNCATE records are kept for cursors.
    FEED_CONFIRM_INTERVAL = float(os.environ.get("FEED_CONFIRM_INTERVAL", 1))
    # Poll mode (`flask feed mode poll`, docs/DEPLOYING.md "Wake-up modes"):
    # how often each listener reads what committed. Live rows wait up to this
    # long; each instance runs 1/interval small queries a second.
    FEED_POLL_INTERVAL = float(os.environ.get("FEED_POLL_INTERVAL", 0.05))
    FEED_REMOVALS_KEEP_SECONDS = float(
        os.environ.get("FEED_REMOVALS_KEEP_SECONDS", 7 * 24 * 3600)
    )
    FEED_REMOVALS_KEEP_COUNT = _int("FEED_REMOVALS_KEEP_COUNT", 1_000_000)
    FEED_TRIM_INTERVAL = float(os.environ.get("FEED_TRIM_INTERVAL", 60))
    FEED_DELIVERY_CHECK_INTERVAL = float(
        os.environ.get("FEED_DELIVERY_CHECK_INTERVAL", 30)
    )
    FEED_DELIVERY_CHECK_TIMEOUT = float(
        os.environ.get("FEED_DELIVERY_CHECK_TIMEOUT", 5)
    )

    SQLALCHEMY_ENGINE_OPTIONS = {
        "pool_pre_ping": True,
        "pool_timeout": 10,
        "connect_args": {"connect_timeout": 5},
    }
