"""(g) Wake-up modes: live latency and database load of one pg-feed, per mode.

One database of its own, every migration. For each mode, notify then poll, the
database is switched with feed_set_mode() before a fresh `make serve`
(gunicorn, threaded) starts on it (poll mode with FEED_POLL_INTERVAL in its
environment, so that the report says which); modes_clients lean readers connect
and a writer process warms up. Then the instance's load on its database
(bench/database_load.py) over modes_idle_seconds with nobody writing, and
workload (a) at modes_rate for modes_seconds (paced single-row transactions,
each at a random moment of its slot; latency from the writer's COMMIT returning
to each client's receipt) with the load over it. Every client must get every
row exactly once."""

import contextlib
import dataclasses
import logging
import time
from urllib.parse import urlsplit

import psycopg2

from bench import scenarios
from bench.database import migrate, sibling_database
from bench.database_load import DatabaseLoad
from bench.services import pg_feed_overrides, start_pg_feed
from bench.summary import target
from bench.workers import BenchError, ReaderPool, start_writer

log = logging.getLogger(__name__)

MODES = ("notify", "poll")
SET_MODE = "SELECT feed_set_mode(%s)"
MODE_NOW = "SELECT mode FROM feed_mode"

# As users deploy it: `make serve` in its default (threaded) mode
SYSTEM = "pg-feed-gthread"


def run(settings, database_url):
    """(g): each mode's latency and load, the targets; the count checks."""
    interval = poll_interval(settings)
    database = f"{urlsplit(database_url).path.lstrip('/')}_modes"
    results, checks = {}, []
    with (
        sibling_database(database_url, database) as url,
        contextlib.closing(DatabaseLoad(database_url, database)) as load,
    ):
        migrate(url)
        for mode in MODES:
            log.info("(g) %s mode", mode)
            results[mode], mode_checks = _run_mode(mode, url, load, settings, interval)
            system = f"pg-feed, {mode} mode"
            checks += [{"round": 1, "system": system, **c} for c in mode_checks]
    document = {
        "clients": settings.modes_clients,
        "rate": settings.modes_rate,
        "seconds": settings.modes_seconds,
        "idle_seconds": settings.modes_idle_seconds,
        "poll_interval": interval,
        "modes": results,
        "targets": targets(results, interval),
    }
    return document, checks


def poll_interval(settings):
    """Poll mode's FEED_POLL_INTERVAL: BENCH_FEED_POLL_INTERVAL, else the setting."""
    asked = pg_feed_overrides().get("FEED_POLL_INTERVAL")
    return float(asked) if asked else settings.modes_poll_interval


def _run_mode(mode, url, load, settings, interval):
    switched = _set_mode(url, mode)
    app_settings = {"FEED_POLL_INTERVAL": f"{interval:g}"} if mode == "poll" else {}
    with _serving(url, app_settings, settings) as (server, pool, writer):
        checks = [scenarios.warm_up(pool, writer, settings)]
        measured, check = _measure(load, server, pool, writer, settings)
        checks.append(check)
        if not server.alive():
            raise BenchError(f"pg-feed died in {mode} mode:\n" + "".join(server.output))
    result = {"app_settings": app_settings, **switched, **measured}
    return result, [{**c, "scenario": f"(g) {c['scenario']}"} for c in checks]


@contextlib.contextmanager
def _serving(url, app_settings, settings):
    """Yield (server, readers, writer): `make serve` (SYSTEM) on the database with
    its clients connected; stopped after, the server first."""
    with contextlib.ExitStack() as stack:
        pool = ReaderPool(settings.readers)
        stack.callback(pool.stop)
        writer = start_writer(url)
        stack.callback(writer.stop)
        server = start_pg_feed(url, SYSTEM, settings=app_settings)
        stack.callback(_stop, server)
        pool.connect(server.url, settings.modes_clients)
        yield server, pool, writer


def _measure(load, server, pool, writer, settings):
    """The load idle, then the latency and the load while rows flow."""
    pid = load.listener_pid()
    backends = [name for _, name in load.backends()]
    _, idle = load.window(pid, writer, lambda: time.sleep(settings.modes_idle_seconds))
    workload = dataclasses.replace(
        settings,
        latency_rate=settings.modes_rate,
        latency_seconds=settings.modes_seconds,
    )
    (latency, check), flowing = load.window(
        pid, writer, lambda: _live(server, pool, writer, workload)
    )
    latency.pop("cdf_ms")
    measured = {"backends": backends, "latency": latency}
    return measured | {"load_idle": idle, "load_flowing": flowing}, check


def _live(server, pool, writer, workload):
    # Rows at random moments of their slots: at 200 rows/s a row every 5 ms
    # would keep in step with a 50 ms poll and see only ten waits, the same
    # all run long; writers in production keep no step with the poll.
    return scenarios.latency(server, pool, writer, workload, spread=True)


def _set_mode(url, mode):
    """feed_set_mode(mode) on the database, before any app instance uses it."""
    connection = psycopg2.connect(url, application_name="pg-feed-bench-modes")
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(SET_MODE, (mode,))
            before = cursor.fetchone()[0]
        with connection, connection.cursor() as cursor:
            cursor.execute(MODE_NOW)
            now = cursor.fetchone()[0]
    finally:
        connection.close()
    if now != mode:
        raise BenchError(f"feed_set_mode({mode!r}) left the database in {now} mode")
    return {"mode_before": before, "mode": now}


def _stop(server):
    code = server.stop()
    if code not in (0, -15):
        log.warning("%s exited with %s", server.name, code)


def targets(results, interval):
    """Poll mode's latency against its interval: p50 <= interval / 2 + 2 ms,
    p99 <= interval + 5 ms."""
    latency = results.get("poll", {}).get("latency", {})
    milliseconds = 1000.0 * interval
    p50_goal, p99_goal = milliseconds / 2 + 2, milliseconds + 5
    return [
        target(
            f"(g) poll p50 <= interval / 2 + 2 ms = {p50_goal:g} ms",
            latency.get("p50_ms"),
            p50_goal,
            "<=",
        ),
        target(
            f"(g) poll p99 <= interval + 5 ms = {p99_goal:g} ms",
            latency.get("p99_ms"),
            p99_goal,
            "<=",
        ),
    ]
