"""Log set-up for `python app.py`: readable lines, or JSON lines for collectors."""

import json
import logging
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
