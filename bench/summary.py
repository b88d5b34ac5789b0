"""From rounds to one answer: medians per system, same-round ratios, the targets.

Absolute times drift between runs on a shared machine; ratios are taken within
each round, where the systems ran minutes apart, and then their median.
"""

import statistics

LATENCY_FIELDS = (
    "p50_ms",
    "p99_ms",
    "max_ms",
    "arrived_before_commit_returned",
    "commit_ms_median",
    "server_cpu_percent",
    "readers_cpu_percent",
)
THROUGHPUT_FIELDS = (
    "clients",
    "row_deliveries_per_s",
    "drain_s",
    "writer_rows_per_s",
    "rows_per_message",
    "server_cpu_percent",
    "readers_cpu_percent",
)
CAPACITY_FIELDS = (
    "connect_s",
    "rss_mb",
    "threads",
    "idle_cpu_percent",
    "one_row_to_all_ms",
)


def summarize(rounds):
    """Medians over rounds, ratios within rounds, and each target's PASS or MISS."""
    systems = list(rounds[0]["systems"])
    summary = {
        "latency": {s: _medians(rounds, s, "latency", LATENCY_FIELDS) for s in systems},
        "throughput": {
            s: _medians(rounds, s, "throughput", THROUGHPUT_FIELDS) for s in systems
        },
        "capacity": {s: _capacity(rounds, s) for s in systems if s != "limit"},
        "ratios": _ratios(rounds),
    }
    summary["targets"] = targets(summary)
    return summary


def _medians(rounds, system, workload, fields):
    results = [r["systems"][system][workload] for r in rounds]
    return {field: _median([result[field] for result in results]) for field in fields}


def _capacity(rounds, system):
    steps = zip(*(r["systems"][system]["capacity"] for r in rounds), strict=True)
    return [
        {"clients": step[0]["clients"]}
        | {field: _median([s[field] for s in step]) for field in CAPACITY_FIELDS}
        for step in steps
    ]


def _ratios(rounds):
    def per_round(workload, field, numerator, denominator):
        values = [
            _divide(
                r["systems"][numerator][workload][field],
                r["systems"][denominator][workload][field],
            )
            for r in rounds
        ]
        return {"per_round": values, "median": _median(values)}

    return {
        "throughput pg-feed / redis-mq": per_round(
            "throughput", "row_deliveries_per_s", "pg-feed", "redis-mq"
        ),
        "latency p50 pg-feed / redis-mq": per_round(
            "latency", "p50_ms", "pg-feed", "redis-mq"
        ),
        "latency p99 pg-feed / redis-mq": per_round(
            "latency", "p99_ms", "pg-feed", "redis-mq"
        ),
    }


def targets(summary):
    """The issue's targets for pg-feed, each with what was measured."""
    latency = summary["latency"]["pg-feed"]
    throughput = summary["throughput"]["pg-feed"]["row_deliveries_per_s"]
    ratios = summary["ratios"]
    rows = [
        ("throughput (b) >= 100,000 row-deliveries/s", throughput, 100_000, ">="),
        (
            "throughput (b) >= 2x redis-mq, same round",
            ratios["throughput pg-feed / redis-mq"]["median"],
            2.0,
            ">=",
        ),
        ("latency (a) p50 <= 3 ms", latency["p50_ms"], 3.0, "<="),
        ("latency (a) p99 <= 15 ms", latency["p99_ms"], 15.0, "<="),
        (
            "latency (a) p50 <= redis-mq p50, same round",
            ratios["latency p50 pg-feed / redis-mq"]["median"],
            1.0,
            "<=",
        ),
    ]
    rows += _capacity_targets(summary["capacity"].get("pg-feed-gevent"))
    return [target(*row) for row in rows]


def _capacity_targets(steps):
    """Issue 6: one gevent process, its largest step (2000 clients in a full run)."""
    if not steps:
        return []
    largest = max(steps, key=lambda step: step["clients"])
    clients = largest["clients"]
    return [
        (
            f"capacity (c) gevent, {clients} clients: idle CPU <= 10 %",
            largest["idle_cpu_percent"],
            10.0,
            "<=",
        ),
        (
            f"capacity (c) gevent, one row to all {clients} <= 50 ms (median)",
            largest["one_row_to_all_ms"],
            50.0,
            "<=",
        ),
    ]


def target(name, measured, goal, comparison):
    """One target: what was measured against its goal, PASS or MISS."""
    if measured is None:
        met = False
    elif comparison == ">=":
        met = measured >= goal
    else:
        met = measured <= goal
    return {"target": name, "measured": measured, "goal": goal, "pass": met}


def _median(values):
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _divide(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator
