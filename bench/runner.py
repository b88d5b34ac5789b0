"""Rounds of the three systems, each alone on the machine, in a rotating order.

limit: one bare LISTEN receiver. pg-feed: `python app.py`. pg-feed-gthread
and pg-feed-gevent: gunicorn as `make serve` runs it, in each FEED_SERVER_MODE;
the same with -queued: each client's writer frames every broadcast itself
(FEED_FAST_FANOUT=off); with -plain: without feed/upstream's library reaches.
redis-mq: bench/redis_app.py fed by the writer through Redis. bare-fanout
(capacity only): bench/bare_fanout.py, the send() calls and nothing else.
Each system gets a fresh server for the delivery workloads and another for
capacity. Servers stop
before their readers close: a SIGTERM with clients connected takes a second or
two, while thousands of clients dropping at once keep a threading-mode server
busy for much longer.
"""

import contextlib
import logging
import time

from bench import scenarios
from bench.services import (
    pg_feed_overrides,
    start_bare_fanout,
    start_pg_feed,
    start_redis_app,
)
from bench.settings import CAPACITY_LARGE_SYSTEMS, CAPACITY_ONLY, SYSTEMS
from bench.workers import BenchError, ReaderPool, start_writer

log = logging.getLogger(__name__)

CHANNEL = "events"
DELIVERY_BACKLOG_BYTES = 16 * 2**20


class Context:
    """What every system's run needs: sizes, the database and Redis URLs."""

    def __init__(self, settings, database_url, redis_url):
        self.settings = settings
        self.database_url = database_url
        self.redis_url = redis_url


def run_rounds(context):
    """Every round of every system: ([{system: results}], [count checks])."""
    rounds, checks = [], []
    for number in range(1, context.settings.rounds + 1):
        order = SYSTEMS[number - 1 :] + SYSTEMS[: number - 1]
        results = {}
        for system in order:
            log.info("round %d: %s", number, system)
            started = time.monotonic()
            results[system], system_checks = run_system(system, context)
            checks += [{"round": number, "system": system, **c} for c in system_checks]
            log.info("round %d: %s done in %.1f s", number, system, _since(started))
        rounds.append({"round": number, "order": list(order), "systems": results})
    return rounds, checks


def run_system(system, context):
    """The delivery workloads (not for bare-fanout), then capacity (not for
    limit): (results, checks)."""
    results, checks = {}, []
    if system not in CAPACITY_ONLY:
        results, checks = _delivery(system, context)
    if system != "limit":
        results["capacity"], capacity_checks = _capacity(system, context)
        checks += capacity_checks
    return results, checks


def _delivery(system, context):
    settings = context.settings
    with contextlib.ExitStack() as stack:
        pool = _readers(stack, settings.readers)
        writer = _writer(stack, system, context)
        server = stack.enter_context(_serving(system, context, delivery_settings()))
        if server is None:
            pool.listen(context.database_url, CHANNEL)
        else:
            pool.connect(server.url, settings.clients)
        checks = [scenarios.warm_up(pool, writer, settings)]
        latency, check = scenarios.latency(server, pool, writer, settings)
        checks.append(check)
        _ensure_alive(server)
        fanout, check = scenarios.fanout(server, pool, writer, settings)
        checks.append(check)
        _ensure_alive(server)
    return {"latency": latency, "fanout": fanout}, checks


def _capacity(system, context):
    settings = context.settings
    with contextlib.ExitStack() as stack:
        pool = _readers(stack, settings.capacity_readers)
        writer = _writer(stack, system, context)
        server = stack.enter_context(_serving(system, context))
        steps = settings.capacity_clients
        if system in CAPACITY_LARGE_SYSTEMS:
            steps += settings.capacity_large_clients
        results, checks = scenarios.capacity(server, pool, writer, settings, steps)
        _ensure_alive(server)
    return results, checks


def delivery_settings():
    """pg-feed's settings for (a) and (b): a backlog bound that holds (b)'s
    transaction. Its 20,000 rows are about 3 MB to each client, past the
    default FEED_CLIENT_BACKLOG_BYTES (1 MiB): a client whose server-side
    writer falls that far behind is, by the policy, resynced instead of sent
    the rows (run 20261202T063020Z: 3 of 100 clients of pg-feed-gthread-queued
    in one round), and a lean reader does not sync. redis-mq and the -plain
    systems have no bound at all. BENCH_FEED_CLIENT_BACKLOG_BYTES still wins."""
    if "FEED_CLIENT_BACKLOG_BYTES" in pg_feed_overrides():
        return {}
    return {"FEED_CLIENT_BACKLOG_BYTES": str(DELIVERY_BACKLOG_BYTES)}


@contextlib.contextmanager
def _serving(system, context, settings=None):
    if system == "limit":
        yield None
        return
    if system.startswith("pg-feed"):
        server = start_pg_feed(context.database_url, system, settings=settings)
    elif system == "bare-fanout":
        server = start_bare_fanout(context.database_url)
    else:
        server = start_redis_app(context.redis_url)
    try:
        yield server
    finally:
        code = server.stop()
        if code not in (0, -15):
            log.warning("%s exited with %s", system, code)


def _readers(stack, processes):
    pool = ReaderPool(processes)
    stack.callback(pool.stop)
    return pool


def _writer(stack, system, context):
    emitter = context.redis_url if system == "redis-mq" else None
    writer = start_writer(context.database_url, emitter)
    stack.callback(writer.stop)
    return writer


def _ensure_alive(server):
    if server is not None and not server.alive():
        tail = "".join(list(server.output)[-20:])
        raise BenchError(f"{server.name} died during the run:\n{tail}")


def _since(started):
    return time.monotonic() - started
