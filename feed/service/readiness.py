"""The ready file: how a serving process tells whoever started it that it serves.

With FEED_READY_FILE set, the process that holds the clients writes
{"url", "pid", "mode"} there as JSON once its feed is started and it is about to
accept clients; tests, the benchmark and supervisors wait for it, not log lines.
"""

import json
import os
import socket
import time
from pathlib import Path

READY_FILE_VARIABLE = "FEED_READY_FILE"


class NotReady(Exception):
    """The process exited, or the deadline passed, before its ready file appeared."""


def announce(url, mode):
    """Write the ready file, if FEED_READY_FILE names one (never a partial file)."""
    path = os.environ.get(READY_FILE_VARIABLE)
    if not path:
        return
    target = Path(path)
    # Written beside the target and renamed over it: a reader sees all or nothing.
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps({"url": url, "pid": os.getpid(), "mode": mode}))
    os.replace(partial, target)


def socket_url(sock):
    """The URL of a listening socket, with the port it really bound (PORT=0 too)."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def wait_until_ready(path, process, timeout):
    """The ready file's contents once it exists; NotReady if `process` (a Popen)
    exits or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NotReady(f"exited with {process.returncode} before it was ready")
        try:
            return json.loads(Path(path).read_text())
        except FileNotFoundError:
            time.sleep(0.02)
    raise NotReady(f"not ready after {timeout:g} s")
