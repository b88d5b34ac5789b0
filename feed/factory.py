"""The app factory: create_app() configures and binds; it opens no connection
and starts no thread."""

from flask import Flask
from flask_compress import Compress

from config import BASE_DIR, Config

from . import models  # noqa: F401  (Alembic compares against its metadata)
from .clients import namespace, views
from .clients.security import OriginPolicy
from .clients.wsgi import AnswerEndedSessions, LargeMessages
from .database.urls import sqlalchemy_url
from .extensions import db, migrate, socketio
from .fanout.backlog import BoundedManager
from .service import commands, concurrency, process_feed
from .upstream import check as upstream_reaches_allowed
from .upstream import websocket


def create_app(config=None):
    """Build the app; `config` (a dict) overrides settings from the environment."""
    app = Flask(
        __name__,
        template_folder=str(BASE_DIR / "templates"),
        static_folder=str(BASE_DIR / "static"),
        instance_path=str(BASE_DIR / "instance"),
    )
    app.config.from_object(Config)
    app.config.update(config or {})
    app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(app.config["DATABASE_URL"])
    if concurrency.gevent_active():
        concurrency.make_psycopg2_cooperative()

    db.init_app(app)
    migrate.init_app(app, db, directory=str(BASE_DIR / "migrations"))
    reaches = upstream_reaches_allowed(app.config["FEED_UPSTREAM_REACHES"])
    max_bytes = max_message_bytes(app.config["FEED_MAX_EVENT_CHARS"])
    _init_socketio(app, reaches, max_bytes)
    process_feed.init_app(app)
    commands.init_app(app)
    namespace.init_app(app)
    _bound_message_sizes(app, reaches, max_bytes)
    app.register_blueprint(views.bp)
    app.after_request(views.security_headers)
    _compress(app)
    return app


# Static files are streamed responses, which flask-compress encodes only with
# COMPRESS_ALGORITHM_STREAMING: its default leaves out gzip, the one encoding
# every HTTP client speaks. Socket.IO's responses never pass through Flask.
STREAMED_ENCODINGS = ["zstd", "br", "gzip", "deflate"]


def _compress(app):
    """Compress responses a client accepts compressed, except byte ranges."""
    app.config.setdefault("COMPRESS_ALGORITHM_STREAMING", STREAMED_ENCODINGS)
    app.config["COMPRESS_REGISTER"] = False
    compress = Compress(app)

    @app.after_request
    def compressed(response):
        # flask-compress would encode a 206 too, whose Content-Range counts the
        # file's bytes, not the encoded ones: a client would join wrong pieces.
        if response.status_code == 206:
            return response
        return compress.after_request(response)


def _init_socketio(app, reaches, max_bytes):
    socketio.init_app(
        app,
        async_mode=concurrency.async_mode(),
        async_handlers=False,
        cors_allowed_origins=OriginPolicy(
            cors_origins(app.config["FEED_CORS_ORIGINS"])
        ),
        max_http_buffer_size=max_bytes,
        ping_interval=app.config["FEED_PING_INTERVAL"],
        ping_timeout=app.config["FEED_PING_TIMEOUT"],
        client_manager=BoundedManager(
            max_messages=app.config["FEED_CLIENT_BACKLOG_MESSAGES"],
            max_bytes=app.config["FEED_CLIENT_BACKLOG_BYTES"],
            reaches=reaches,
            fast=app.config["FEED_FAST_FANOUT"].strip().lower() != "off",
        ),
    )


def _bound_message_sizes(app, reaches, max_bytes):
    """Refuse messages past max_bytes with an ack; close only past the hard limit."""
    hard_limit = max(app.config["FEED_HARD_MAX_MESSAGE_BYTES"], max_bytes)
    answer = namespace.OversizeAnswer(app, max_bytes)
    if reaches:
        websocket.install(
            socketio.server.eio,
            max_bytes,
            hard_limit,
            answer,
            send_buffer_bytes=app.config["FEED_SEND_BUFFER_BYTES"],
        )
    app.wsgi_app = LargeMessages(app.wsgi_app, max_bytes, hard_limit, answer)
    if reaches:
        app.wsgi_app = AnswerEndedSessions(app.wsgi_app)


def cors_origins(setting):
    """The origins listed in FEED_CORS_ORIGINS (empty: same origin only)."""
    return [origin.strip() for origin in setting.split(",") if origin.strip()]


def max_message_bytes(max_event_chars):
    """The largest incoming message to read, from the longest allowed event.

    JSON may spend up to 12 bytes on a character (an emoji escaped as two
    \\uXXXX surrogates). 16 per character plus 1 KiB of framing is room for
    any allowed text; a message past this is discarded as it arrives and
    refused with an ack (feed/upstream/websocket.py, feed/clients/wsgi.py).
    """
    return max_event_chars * 16 + 1024
