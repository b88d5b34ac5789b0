"""pg-feed: PostgreSQL changes pushed to browsers over Socket.IO.

The app's names load on first use, so that `import feed.client` needs only
python-socketio's client, not Flask (README, "Python clients").
"""

_FACTORY = ("create_app", "cors_origins", "max_message_bytes")


def __getattr__(name):
    if name in _FACTORY:
        from . import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
