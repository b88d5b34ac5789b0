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
FANOUT_FIELDS = (
    "clients",
    "rows",
    "row_deliveries_per_s",
    "after_commit_s",
    "transaction_s",
    "rows_per_message",
    "server_cpu_percent",
    "readers_cpu_percent",
)
CAPACITY_FIELDS = (
    "connect_s",
    "rss_mb",
    "per_client_kb",
    "threads",
    "idle_cpu_percent",
    "idle_seconds",
    "one_row_to_all_ms",
    "one_row_to_all_max_ms",
)
# the pg-feed systems whose fan-out (b) is held to the targets: each serving mode
FANOUT_SYSTEMS = ("pg-feed", "pg-feed-gthread", "pg-feed-gevent")


def summarize(rounds, clients):
    """Medians over rounds, ratios within rounds, and each target's PASS or MISS.
    clients: of (a) and (b), what the limit's one receiver is multiplied by."""
    systems = list(rounds[0]["systems"])
    delivering = [s for s in systems if "latency" in rounds[0]["systems"][s]]
    summary = {
        "latency": {
            s: _medians(rounds, s, "latency", LATENCY_FIELDS) for s in delivering
        },
        "fanout": {s: _medians(rounds, s, "fanout", FANOUT_FIELDS) for s in delivering},
        "capacity": {s: _capacity(rounds, s) for s in systems if s != "limit"},
        "ratios": _ratios(rounds, clients),
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


def _ratios(rounds, clients):
    def per_round(workload, field, numerator, denominator, times=1):
        values = [
            _divide(
                r["systems"][numerator][workload][field],
                _times(r["systems"][denominator][workload][field], times),
            )
            for r in rounds
        ]
        return {"per_round": values, "median": _median(values)}

    fanout = {}
    for system in FANOUT_SYSTEMS:
        fanout[f"fan-out {system} / redis-mq"] = per_round(
            "fanout", "row_deliveries_per_s", system, "redis-mq"
        )
        fanout[f"fan-out {system} / (limit x {clients})"] = per_round(
            "fanout", "row_deliveries_per_s", system, "limit", clients
        )
    return {
        **fanout,
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
    ratios = summary["ratios"]
    rows = []
    for name, ratio in ratios.items():
        if name.startswith("fan-out") and "redis-mq" in name:
            rows.append((f"{name} >= 2, same round", ratio["median"], 2.0, ">="))
        elif name.startswith("fan-out"):
            rows.append((f"{name} >= 0.5, same round", ratio["median"], 0.5, ">="))
    rows += [
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
    """One gevent process: issue 6's at 2000 clients (the third step), issue
    13's at its largest (10,000 in a full run)."""
    if not steps:
        return []
    ordered = sorted(steps, key=lambda step: step["clients"])
    middle, largest = ordered[min(2, len(ordered) - 1)], ordered[-1]
    small, large = middle["clients"], largest["clients"]
    return [
        (
            f"capacity (c) gevent, {small} clients: idle CPU <= 10 %",
            middle["idle_cpu_percent"],
            10.0,
            "<=",
        ),
        (
            f"capacity (c) gevent, one row to all {small} <= 50 ms (median)",
            middle["one_row_to_all_ms"],
            50.0,
            "<=",
        ),
        (
            f"capacity (c) gevent, one row to all {large} <= 120 ms (median)",
            largest["one_row_to_all_ms"],
            120.0,
            "<=",
        ),
        (
            f"capacity (c) gevent, {large} clients: idle CPU <= 3 % (one heartbeat)",
            largest["idle_cpu_percent"],
            3.0,
            "<=",
        ),
        (
            f"capacity (c) gevent, {large} clients: RSS <= 500 MB",
            largest["rss_mb"],
            500.0,
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


def _times(value, factor):
    return None if value is None else value * factor


def _divide(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator
