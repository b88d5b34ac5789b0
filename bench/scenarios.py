"""The workloads: warm-up, latency (a), fan-out (b) and capacity (c).

Each runs against connected readers and returns its measurements and a count
check of every delivery.

Latency is measured from when the writer's COMMIT returned; a row that arrives
while COMMIT is still returning has a negative latency, kept as it is.
"""

import math
import statistics
import time

from bench.services import idle_cpu_percent, process_status

QUANTILES = 1000  # points kept of each latency distribution, for the CDF


def count_check(scenario, merged, rows):
    """Did every connection get every committed row exactly once?"""
    expected = rows * merged["connections"]
    check = {
        "scenario": scenario,
        "connections": merged["connections"],
        "rows": rows,
        "expected_deliveries": expected,
        "deliveries": merged["deliveries"],
        **{k: merged[k] for k in ("missing", "duplicates", "unexpected", "resyncs")},
        "errors": merged["errors"][:5],
    }
    lost_or_extra = merged["missing"] + merged["duplicates"] + merged["unexpected"]
    check["ok"] = lost_or_extra == 0 and not merged["errors"]
    return check


def warm_up(pool, writer, settings):
    """A few rows through everything before measuring; only counted."""
    pool.arm()
    log = writer.call("paced", count=settings.warmup_rows, interval=0.01)
    merged = pool.collect(log["commits"], timeout=15)
    return count_check("warm-up", merged, len(log["commits"]))


def latency(server, pool, writer, settings, spread=False):
    """Single-row transactions at a steady rate; commit-to-client percentiles.
    spread: each row at a random moment of its slot (Writer.paced)."""
    pool.arm()
    meter = CpuMeter(server)
    log = writer.call(
        "paced",
        count=settings.latency_rows,
        interval=1.0 / settings.latency_rate,
        spread=spread,
        timeout=settings.latency_seconds * 3 + 30,
    )
    merged = pool.collect(log["commits"], timeout=15, latencies=True)
    cpu = meter.read(merged)
    milliseconds = sorted(1000.0 * value for value in merged["latencies"])
    result = {
        **percentiles(milliseconds),
        "arrived_before_commit_returned": _share(v < 0 for v in milliseconds),
        "commit_ms_median": 1000.0 * statistics.median(log["commit_seconds"]),
        "writer_seconds": log["finished"] - log["started"],
        "messages": merged["messages"],
        **cpu,
        "cdf_ms": quantiles(milliseconds),
    }
    return result, count_check("latency", merged, len(log["commits"]))


def fanout(server, pool, writer, settings):
    """One transaction of many rows committed while the clients are connected:
    row-deliveries per second from the moment its COMMIT returned to the last
    row reaching the last client (the server's fan-out, not the writer's pace)."""
    pool.arm()
    meter = CpuMeter(server)
    log = writer.call("batches", transactions=1, rows=settings.fanout_rows, timeout=300)
    merged = pool.collect(log["commits"], timeout=120)
    cpu = meter.read(merged)
    check = count_check("fan-out", merged, len(log["commits"]))
    committed = max(log["commits"].values())
    last = max(merged["last_arrival"].values(), default=None)
    after_commit = None if last is None else last - committed
    delivered = check["expected_deliveries"] - merged["missing"]
    result = {
        "clients": merged["connections"],
        "rows": len(log["commits"]),
        "row_deliveries_per_s": delivered / after_commit if after_commit else None,
        "after_commit_s": after_commit,
        "transaction_s": log["finished"] - log["started"],
        "rows_per_message": merged["deliveries"] / max(merged["messages"], 1),
        **cpu,
    }
    return result, check


class CpuMeter:
    """CPU the server and the readers used from arming to collecting, in % of a core."""

    def __init__(self, server):
        self.pid = server.pid if server is not None else None
        self.started = time.monotonic()
        self.server_cpu = self._server_cpu()

    def _server_cpu(self):
        return process_status(self.pid)["cpu_seconds"] if self.pid else None

    def read(self, merged):
        """{server_cpu_percent, readers_cpu_percent} of the window that just ended."""
        wall = merged["cpu_until"] - self.started
        server = None
        if self.pid is not None:
            server = 100.0 * (self._server_cpu() - self.server_cpu) / wall
        readers = 100.0 * merged["cpu_seconds"] / wall
        return {"server_cpu_percent": server, "readers_cpu_percent": readers}


def capacity(server, pool, writer, settings, steps):
    """Idle clients in growing numbers (`steps`): memory, threads, idle CPU, one
    row to all. Steps past settings.capacity_clients (the large ones, gevent
    only) read idle CPU over capacity_heartbeat_seconds, one Engine.IO ping
    interval: a window that holds exactly one heartbeat of every client."""
    results, checks = [], []
    before = process_status(server.pid)["rss_mb"]  # no client yet
    for clients in steps:
        result, check = _capacity_step(server, pool, writer, settings, clients)
        if result["rss_mb"] is not None:
            result["per_client_kb"] = 1024 * (result["rss_mb"] - before) / clients
        results.append(result)
        checks.append(check)
    return results, checks


def _capacity_step(server, pool, writer, settings, clients):
    started = time.monotonic()
    pool.connect(server.url, clients)
    connected_s = time.monotonic() - started
    time.sleep(settings.capacity_settle_seconds)
    idle_seconds = settings.capacity_idle_seconds
    if clients > max(settings.capacity_clients):
        idle_seconds = settings.capacity_heartbeat_seconds
    cpu = idle_cpu_percent(server.pid, idle_seconds)
    pool.arm()
    log = writer.call(
        "paced",
        count=settings.capacity_probe_rows,
        interval=settings.capacity_probe_interval,
    )
    merged = pool.collect(log["commits"], timeout=60)
    check = count_check(f"capacity {clients}", merged, len(log["commits"]))
    result = {
        "clients": clients,
        "connect_s": connected_s,
        **_fed_clients_status(server, check),
        "idle_cpu_percent": cpu,
        "idle_seconds": idle_seconds,
        "per_client_kb": None,  # set by capacity(), which read RSS before any client
        **reach(log["commits"], merged["last_arrival"]),
    }
    return result, check


def reach(commits, last_arrival):
    """One row to all: median and max over the rows, from each COMMIT returned
    to the row's last arrival at any client, in ms."""
    times = [
        1000.0 * (last_arrival[row_id] - committed)
        for row_id, committed in commits.items()
        if row_id in last_arrival
    ]
    return {
        "one_row_to_all_ms": statistics.median(times) if times else None,
        "one_row_to_all_max_ms": max(times, default=None),
    }


def _fed_clients_status(server, check):
    """RSS and threads of the server, read once the count check has confirmed
    that every client got every probe row: the figure is then of `clients`
    clients all being served (a step where some were not has none)."""
    if not check["ok"]:
        return {"rss_mb": None, "threads": None}
    status = process_status(server.pid)
    return {"rss_mb": status["rss_mb"], "threads": status["threads"]}


def percentiles(sorted_values):
    """p50, p99 and max of an ascending list (nearest-rank percentiles)."""
    if not sorted_values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": _rank(sorted_values, 0.50),
        "p99_ms": _rank(sorted_values, 0.99),
        "max_ms": sorted_values[-1],
    }


def quantiles(sorted_values, points=QUANTILES):
    """`points` evenly spaced quantiles of an ascending list, for a CDF."""
    if not sorted_values:
        return []
    return [_rank(sorted_values, (n + 0.5) / points) for n in range(points)]


def _rank(sorted_values, fraction):
    index = math.ceil(fraction * len(sorted_values)) - 1
    return sorted_values[min(len(sorted_values) - 1, max(0, index))]


def _share(flags):
    flags = list(flags)
    return sum(flags) / len(flags) if flags else 0.0
