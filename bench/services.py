"""Processes the harness starts and stops: the servers under test and redis-server.

Also reads a process's memory, threads and CPU time from /proc.
"""

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from bench.settings import GTHREAD_THREADS, SERVE_MODES, SYSTEM_SETTINGS
from feed.service import readiness

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = os.environ.get("BENCH_REDIS_SERVER", "/usr/bin/redis-server")
_TICKS = os.sysconf("SC_CLK_TCK")
# pg-feed runs with its defaults: the caller's FEED_* settings and these are not
# passed on (BENCH_FEED_<NAME> sets FEED_<NAME> on purpose).
_PG_FEED_OWN = ("DATABASE_URL", "LISTENER_DATABASE_URL", "HOST", "PORT")
LOGGED_WARNINGS = 10  # of a server's warnings, only the first few are passed on
READY_TIMEOUT = 60.0


class ServerProcess:
    """A server under test in its own process, ready once it wrote FEED_READY_FILE.

    The file gives its URL and the process that holds the clients (under
    gunicorn, the worker), which is the one measured.
    """

    def __init__(self, name, argv, env, root=ROOT):
        self.name = name
        self.warnings = 0
        self.output = deque(maxlen=200)
        self.folder = Path(tempfile.mkdtemp(prefix="pgfeed-bench-server-"))
        self.ready_file = self.folder / "ready.json"
        self.process = subprocess.Popen(
            argv,
            cwd=root,
            env={
                **env,
                "PYTHONUNBUFFERED": "1",
                "FEED_READY_FILE": str(self.ready_file),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._drainer = threading.Thread(
            target=self._drain, name=f"{name}-output", daemon=True
        )
        self._drainer.start()
        self.url = self._wait_until_ready()["url"]

    @property
    def pid(self):
        """The id of the process that holds the clients (gunicorn: its worker)."""
        return json.loads(self.ready_file.read_text())["pid"]

    def _wait_until_ready(self):
        try:
            return readiness.wait_until_ready(
                self.ready_file, self.process, READY_TIMEOUT
            )
        except readiness.NotReady as exc:
            self.stop()
            raise RuntimeError(f"{self.name} {exc}:\n" + "".join(self.output)) from None

    def _drain(self):
        for line in self.process.stdout:
            self.output.append(line)
            if " WARNING " in line or " ERROR " in line:
                self._pass_on(line.rstrip())

    def _pass_on(self, line):
        self.warnings += 1
        if self.warnings <= LOGGED_WARNINGS:
            log.warning("%s: %s", self.name, line)
        elif self.warnings == LOGGED_WARNINGS + 1:
            log.warning("%s: more warnings follow; not shown", self.name)

    def alive(self):
        """True while the server process runs."""
        return self.process.poll() is None

    def stop(self, timeout=15.0):
        """SIGTERM, then SIGKILL after `timeout` seconds; the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %g s; killing it", self.name, timeout)
            self.process.kill()
            code = self.process.wait()
        self._drainer.join(5)  # everything it printed, for a caller's report
        shutil.rmtree(self.folder, ignore_errors=True)
        return code


def start_pg_feed(database_url, system="pg-feed", root=ROOT, settings=None):
    """pg-feed with its defaults, BENCH_FEED_*, the system's own settings and
    `settings` (FEED_* names): `python app.py`, or gunicorn as `make serve` runs
    it in the system's mode. `root`: the folder of the pg-feed to run (another
    version's, exported)."""
    mode = SERVE_MODES.get(system)
    env = {
        **pg_feed_environment(),
        **pg_feed_overrides(),
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "FEED_MIGRATE": "0",
        "FEED_LOG_LEVEL": "WARNING",
        **SYSTEM_SETTINGS.get(system, {}),
        **(settings or {}),
    }
    if mode is None:
        return ServerProcess(system, [sys.executable, "app.py"], env, root)
    env["FEED_SERVER_MODE"] = mode
    if mode == "threaded":
        env.setdefault("FEED_THREADS", str(GTHREAD_THREADS))
    argv = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"]
    return ServerProcess(system, [*argv, "app:app"], env)


def pg_feed_environment():
    """This process's environment without FEED_* and pg-feed's own settings."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("FEED_") and name not in _PG_FEED_OWN
    }


def pg_feed_overrides():
    """pg-feed settings asked for as BENCH_FEED_<NAME>, passed on as FEED_<NAME>."""
    return {
        name.removeprefix("BENCH_"): value
        for name, value in os.environ.items()
        if name.startswith("BENCH_FEED_")
    }


def start_redis_app(redis_url):
    """The redis-mq alternative (bench/redis_app.py)."""
    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "HOST": "127.0.0.1", "PORT": "0"}
    return ServerProcess("redis-mq", [sys.executable, "-m", "bench.redis_app"], env)


def start_bare_fanout(database_url):
    """bench/bare_fanout.py: the floor under one row to all."""
    env = {**pg_feed_environment(), "DATABASE_URL": database_url}
    env.update(HOST="127.0.0.1", PORT="0")
    argv = [sys.executable, "-m", "bench.bare_fanout"]
    return ServerProcess("bare-fanout", argv, env)


@contextlib.contextmanager
def running_redis():
    """Yield a RedisServer of this run's own; stop it after."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


class RedisServer:
    """Debian's redis-server on a free loopback port, with no persistence."""

    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port)]
            + ["--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        _wait_for_port(self.port, self.process)

    def stop(self):
        """Stop redis-server."""
        stop_process(self.process)


def stop_process(process, timeout=10.0):
    """SIGTERM (if it still runs), SIGKILL after `timeout` seconds; the exit code."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port, process, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not listen on {port} within {timeout:g} s")


def process_status(pid):
    """Resident memory in MB, thread count and CPU seconds (user + system) of `pid`."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {
        "rss_mb": int(fields["VmRSS"][0]) / 1024,
        "threads": int(fields["Threads"][0]),
        "cpu_seconds": (int(stat[11]) + int(stat[12])) / _TICKS,
    }


def idle_cpu_percent(pid, seconds):
    """CPU the process used over `seconds` of wall time, in percent of one core."""
    before, started = process_status(pid)["cpu_seconds"], time.monotonic()
    time.sleep(seconds)
    after, elapsed = process_status(pid)["cpu_seconds"], time.monotonic() - started
    return 100.0 * (after - before) / elapsed
