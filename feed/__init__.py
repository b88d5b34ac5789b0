"""pg-feed: PostgreSQL changes pushed to browsers over Socket.IO.

create_app() configures and binds; it opens no connection and starts no thread.
"""

from flask import Flask

from config import BASE_DIR, Config

from . import realtime, views
from .backlog import BoundedManager
from .database_urls import sqlalchemy_url
from .extensions import db, migrate, socketio


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

    db.init_app(app)
    migrate.init_app(app, db, directory=str(BASE_DIR / "migrations"))
    socketio.init_app(
        app,
        async_mode="threading",
        async_handlers=False,
        cors_allowed_origins=cors_origins(app.config["FEED_CORS_ORIGINS"]),
        client_manager=BoundedManager(
            max_messages=app.config["FEED_CLIENT_BACKLOG_MESSAGES"],
            max_bytes=app.config["FEED_CLIENT_BACKLOG_BYTES"],
        ),
    )
    realtime.init_app(app)
    app.register_blueprint(views.bp)
    return app


def cors_origins(setting):
    """FEED_CORS_ORIGINS as python-engineio wants it: None means same origin only."""
    origins = [origin.strip() for origin in setting.split(",") if origin.strip()]
    if not origins:
        return None
    return "*" if "*" in origins else origins
