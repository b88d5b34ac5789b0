"""(h) Stalled clients at scale: of 10,000 clients of one gevent process, 1000
stop reading, as clients that hang do.

The lean readers stop reading those sockets (bench/reader.py, stall): what the
server sends them fills the kernel's buffers, then the client's backlog in the
server, until the backlog policy (feed/fanout/backlog.py) drops it and queues a
`resync`. Measured, in this order on one server:

1. healthy: one row to all 10,000 (median and max of the probe rows), RSS;
2. stall 1000, then 500-row transactions every 0.3 s until the server has
   dropped a backlog (counted in /metrics) for every stalled client; the
   9000 reading clients must get every one of those rows exactly once;
3. stalled: one row to the 9000 reading clients while the 1000 stay stalled,
   and its ratio to the healthy figure (target <= 1.5); RSS at its highest
   while the backlogs filled and now;
4. resumed: the stalled clients read again; each must find a `resync` (the
   policy's promise) or have been dropped by the server.

Every connection of this section offers a 16 KiB receive window (SO_RCVBUF),
and the server runs with what DEPLOYING.md asks of a deployment this size
(server_settings): a stalled client then holds about 160 KiB in the kernel's
buffers, not the 4 MiB autotuning lets one send buffer grow to, so with a
256 KiB backlog bound the backlogs fill within seconds of the load: every
reading client must receive as much as a stalled one was sent.
"""

import contextlib
import logging
import re
import time
import urllib.request

from bench.scenarios import count_check, reach
from bench.services import process_status, start_pg_feed
from bench.workers import BenchError, ReaderPool, start_writer

log = logging.getLogger(__name__)

SYSTEM = "pg-feed-gevent"
RECEIVE_BUFFER = 16 * 1024
SEND_BUFFER = 64 * 1024
BACKLOG_BYTES = 256 * 1024
LOAD_ROWS = 500  # per transaction of the load: one message of about 65 KB
LOAD_INTERVAL = 0.3
LOAD_TIMEOUT = 60.0
PROBE_ROWS = 5
PROBE_INTERVAL = 0.3
RESUME_TIMEOUT = 60.0
TARGET_RATIO = 1.5
_OVERFLOWS = re.compile(r'^feed_resyncs_sent_total\{scope="client"\} (\S+)$', re.M)


def run(settings, database_url):
    """(h): the figures and the target; the count checks."""
    clients, stopped = settings.stalled_clients, settings.stalled_stopped
    checks = []
    with contextlib.ExitStack() as stack:
        pool = ReaderPool(settings.stalled_readers)
        stack.callback(pool.stop)
        writer = start_writer(database_url)
        stack.callback(writer.stop)
        server = start_pg_feed(database_url, SYSTEM, settings=server_settings(clients))
        stack.callback(server.stop)  # before the readers close (bench/runner.py)
        started = time.monotonic()
        pool.connect(server.url, clients, receive_buffer=RECEIVE_BUFFER)
        connect_s = time.monotonic() - started
        time.sleep(settings.capacity_settle_seconds)
        healthy, check = _probe(pool, writer, "healthy")
        checks.append(check)
        rss_before = process_status(server.pid)["rss_mb"]
        pool.stall(stopped)
        load, check = _load(server, pool, writer, stopped)
        checks.append(check)
        stalled, check = _probe(pool, writer, "stalled")
        checks.append(check)
        rss_stalled = process_status(server.pid)["rss_mb"]
        resumed = pool.resume(RESUME_TIMEOUT)
        if not server.alive():
            raise BenchError(f"{server.name} died during (h)")
    ratio = _ratio(stalled["one_row_to_all_ms"], healthy["one_row_to_all_ms"])
    document = {
        "system": SYSTEM,
        "clients": clients,
        "stalled": stopped,
        "receive_buffer": RECEIVE_BUFFER,
        "server_settings": server_settings(clients),
        "connect_s": connect_s,
        "healthy": healthy,
        "load": load,
        "while_stalled": stalled,
        "rss_mb": {
            "before": rss_before,
            "highest_while_filling": load.pop("rss_highest_mb"),
            "while_stalled": rss_stalled,
        },
        "resumed": resumed,
        "ratio": ratio,
        "target": {
            "goal": TARGET_RATIO,
            "pass": ratio is not None and ratio <= TARGET_RATIO,
        },
    }
    checks.append(_told_check(resumed, stopped))
    system = f"{SYSTEM}, {stopped} of {clients} stalled"
    return document, [{"round": 1, "system": system, **c} for c in checks]


def server_settings(clients):
    """What a deployment of this many clients per process sets, and (h) with it
    (docs/DEPLOYING.md, "Ten thousand clients"): room for /metrics beside the
    clients; a kernel send buffer of 64 KiB (128 KiB once Linux doubles it)
    instead of autotuning's up to 4 MiB per client; a 256 KiB backlog bound."""
    return {
        "FEED_CONNECTIONS": str(clients + 100),
        "FEED_SEND_BUFFER_BYTES": str(SEND_BUFFER),
        "FEED_CLIENT_BACKLOG_BYTES": str(BACKLOG_BYTES),
    }


def _probe(pool, writer, name):
    """One row at a time to every client that reads: median and max to all."""
    pool.arm()
    log_ = writer.call("paced", count=PROBE_ROWS, interval=PROBE_INTERVAL)
    merged = pool.collect(log_["commits"], timeout=60)
    result = {
        "reading_clients": merged["connections"],
        **reach(log_["commits"], merged["last_arrival"]),
    }
    return result, count_check(f"one row to all, {name}", merged, PROBE_ROWS)


def _load(server, pool, writer, stopped):
    """Transactions until every stalled client's backlog was dropped once
    (by the overflow count, which starts at 0 on a fresh server)."""
    pool.arm()
    commits, highest, started = {}, 0.0, time.monotonic()
    overflows = 0
    while overflows < stopped and time.monotonic() - started < LOAD_TIMEOUT:
        commits.update(
            writer.call("batches", transactions=1, rows=LOAD_ROWS)["commits"]
        )
        time.sleep(LOAD_INTERVAL)
        highest = max(highest, process_status(server.pid)["rss_mb"])
        overflows = _overflows(server.url)
    load_s = time.monotonic() - started
    merged = pool.collect(commits, timeout=120)
    highest = max(highest, process_status(server.pid)["rss_mb"])
    result = {
        "transactions": len(commits) // LOAD_ROWS,
        "rows": len(commits),
        "seconds": load_s,
        "overflows": overflows,
        "rss_highest_mb": highest,
    }
    if overflows < stopped:
        log.warning(
            "(h): %d backlog overflows for %d stalled clients after %.0f s",
            overflows,
            stopped,
            load_s,
        )
    return result, count_check("load while stalled", merged, len(commits))


def _overflows(url):
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = _OVERFLOWS.search(text)
    return float(found.group(1)) if found else 0.0


def _told_check(resumed, stopped):
    """Each stalled client found a resync once it read again, or was dropped."""
    return {
        "scenario": "stalled clients told (resync) or dropped",
        "connections": resumed["resumed"],
        "rows": 0,
        "expected_deliveries": 0,
        "deliveries": 0,
        "missing": resumed["neither"],
        "duplicates": 0,
        "unexpected": 0,
        "resyncs": resumed["resynced"],
        "errors": [] if resumed["resumed"] == stopped else ["not all were stalled"],
        "ok": resumed["neither"] == 0 and resumed["resumed"] == stopped,
    }


def _ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator
