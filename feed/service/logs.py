"""Log set-up for `python app.py` and gunicorn: readable lines, or JSON lines."""

import json
import logging
import os
import time

READABLE = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and exception)."""

    def format(self, record):
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level="INFO", log_format="text"):
    """Send every log record to stderr, as text or (log_format "json") JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLines() if log_format == "json" else logging.Formatter(READABLE)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def configure_from_environment(extra_handlers=()):
    """configure() with FEED_LOG_LEVEL and FEED_LOG_FORMAT; format extra_handlers alike.

    extra_handlers: handlers of loggers that do not propagate (gunicorn's own).
    """
    log_format = os.environ.get("FEED_LOG_FORMAT", "text")
    configure(os.environ.get("FEED_LOG_LEVEL", "INFO"), log_format)
    if log_format == "json":
        for handler in extra_handlers:
            handler.setFormatter(JsonLines())
