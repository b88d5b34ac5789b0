"""The terminal table of a run (Markdown, so docs/BENCHMARKS.md can quote it)."""

from bench import cost_report, modes_report, scale_out_report, stalled_report
from bench.markdown import number, percent, table


def render(document):
    """Every table of a run: latency, fan-out, capacity, ratios, targets, the
    sections (d) to (g), counts; of the sections that ran."""
    settings = document["settings"]
    sections = [_heading(document)]
    if "summary" in document:
        summary = document["summary"]
        sections += [
            _latency(settings, summary["latency"]),
            _fanout(settings, summary["fanout"]),
            _capacity(settings, summary["capacity"]),
            _ratios(summary["ratios"]),
            _targets(summary["targets"], settings["name"]),
        ]
    sections += cost_report.render(document)
    sections += modes_report.render(document)
    sections += stalled_report.render(document)
    sections += scale_out_report.render(document)
    sections.append(_counts(document["checks"]))
    return "\n\n".join(sections) + "\n"


def _heading(document):
    run, settings = document["run"], document["settings"]
    ran = f"{settings['rounds']} round(s), medians over rounds"
    if "summary" not in document:
        ran = f"only {', '.join(run['sections'])}"
    heading = (
        f"pg-feed benchmark ({settings['name']}): {ran}; "
        f"run {run['id']}, {run['duration_s']:.0f} s"
    )
    overrides = run.get("pg_feed_overrides")
    if overrides:
        changed = ", ".join(f"{name}={value}" for name, value in overrides.items())
        heading += f"\npg-feed settings changed from their defaults: {changed}"
    return heading


def _latency(settings, latency):
    title = (
        f"Latency (a): single-row transactions at {settings['latency_rate']:g} rows/s "
        f"for {settings['latency_seconds']:g} s, {settings['clients']} clients; "
        "from the moment the writer's COMMIT returned"
    )
    header = ["system", "p50 ms", "p99 ms", "max ms", "before COMMIT returned"]
    header += ["COMMIT ms", "server CPU %", "readers CPU %"]
    rows = [
        [
            system,
            number(values["p50_ms"], 2),
            number(values["p99_ms"], 2),
            number(values["max_ms"], 2),
            percent(values["arrived_before_commit_returned"]),
            number(values["commit_ms_median"], 2),
            number(values["server_cpu_percent"], 0),
            number(values["readers_cpu_percent"], 0),
        ]
        for system, values in latency.items()
    ]
    return table(title, header, rows)


def _fanout(settings, fanout):
    title = (
        f"Fan-out (b): one transaction of {settings['fanout_rows']:,} rows committed "
        f"while {settings['clients']} clients are connected; row-deliveries per "
        "second from the moment its COMMIT returned to the last row reaching the "
        "last client (limit: 1 LISTEN receiver; pg-feed with a 16 MiB "
        "FEED_CLIENT_BACKLOG_BYTES, to hold the transaction: bench/runner.py)"
    )
    header = ["system", "receivers", "row-deliveries/s", "after COMMIT s"]
    header += ["transaction s", "rows/message", "server CPU %", "readers CPU %"]
    rows = [
        [
            system,
            number(values["clients"], 0),
            number(values["row_deliveries_per_s"], 0),
            number(values["after_commit_s"], 3),
            number(values["transaction_s"], 3),
            number(values["rows_per_message"], 1),
            number(values["server_cpu_percent"], 0),
            number(values["readers_cpu_percent"], 0),
        ]
        for system, values in fanout.items()
    ]
    return table(title, header, rows)


def _capacity(settings, capacity):
    title = (
        "Capacity (c): idle clients; server process RSS, per client (RSS over the "
        "server's before any client), threads, CPU while idle (% of one core; "
        f"over {settings['capacity_idle_seconds']:g} s up to "
        f"{max(settings['capacity_clients'])} clients, over one ping interval of "
        f"{settings['capacity_heartbeat_seconds']:g} s past that: one heartbeat of "
        "every client), time for one row to reach all of them (median and max of "
        f"{settings['capacity_probe_rows']} rows)"
    )
    header = ["system", "clients", "RSS MB", "per client KB", "threads"]
    header += ["idle CPU %", "to all ms", "to all max ms"]
    rows = [
        [
            system,
            str(step["clients"]),
            number(step["rss_mb"], 0),
            number(step.get("per_client_kb"), 1),
            number(step["threads"], 0),
            number(step["idle_cpu_percent"], 1),
            number(step["one_row_to_all_ms"], 1),
            number(step.get("one_row_to_all_max_ms"), 1),
        ]
        for system, steps in capacity.items()
        for step in steps
    ]
    return table(title, header, rows)


def _ratios(ratios):
    header = ["ratio", "per round", "median"]
    rows = [
        [
            name,
            ", ".join(number(v, 2) for v in values["per_round"]),
            number(values["median"], 2),
        ]
        for name, values in ratios.items()
    ]
    return table("Same-round ratios", header, rows)


def _targets(targets, settings_name):
    title = "Targets (pg-feed); a MISS does not fail the run"
    if settings_name != "full":
        title += f" ({settings_name} run: workloads too small to mean anything)"
    rows = [
        [
            t["target"],
            number(t["measured"], 2 if t["goal"] < 100 else 0),
            "PASS" if t["pass"] else "MISS",
        ]
        for t in targets
    ]
    return table(title, ["target", "measured", "result"], rows)


def _counts(checks):
    failed = [c for c in checks if not c["ok"]]
    delivered = sum(c["deliveries"] for c in checks)
    totals = {
        k: sum(c[k] for c in checks) for k in ("missing", "duplicates", "unexpected")
    }
    line = (
        f"Row counts: {len(checks)} scenarios, {delivered:,} row-deliveries counted; "
        f"lost {totals['missing']}, duplicated {totals['duplicates']}, "
        f"unexpected {totals['unexpected']}: {'FAILED' if failed else 'OK'}"
    )
    for check in failed:
        line += (
            f"\n  round {check['round']} {check['system']} {check['scenario']}: "
            f"lost {check['missing']}, duplicated {check['duplicates']}, "
            f"unexpected {check['unexpected']}, resyncs {check['resyncs']}, "
            f"errors {check['errors']}"
        )
    return line
