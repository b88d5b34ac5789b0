"""The terminal table of a run (Markdown, so docs/BENCHMARKS.md can quote it)."""

from bench import cost_report, modes_report
from bench.markdown import number, percent, table


def render(document):
    """Every table of a run: latency, throughput, capacity, ratios, targets, the
    sections (d) to (g), counts; of the sections that ran."""
    settings = document["settings"]
    sections = [_heading(document)]
    if "summary" in document:
        summary = document["summary"]
        sections += [
            _latency(settings, summary["latency"]),
            _throughput(settings, summary["throughput"]),
            _capacity(settings, summary["capacity"]),
            _ratios(summary["ratios"]),
            _targets(summary["targets"], settings["name"]),
        ]
    sections += cost_report.render(document)
    sections += modes_report.render(document)
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


def _throughput(settings, throughput):
    title = (
        f"Throughput (b): {settings['throughput_transactions']} transactions of "
        f"{settings['throughput_rows']} rows, {settings['clients']} clients "
        "(limit: 1 LISTEN receiver)"
    )
    header = ["system", "receivers", "row-deliveries/s", "drain s", "writer rows/s"]
    header += ["rows/message", "server CPU %", "readers CPU %"]
    rows = [
        [
            system,
            number(values["clients"], 0),
            number(values["row_deliveries_per_s"], 0),
            number(values["drain_s"], 3),
            number(values["writer_rows_per_s"], 0),
            number(values["rows_per_message"], 1),
            number(values["server_cpu_percent"], 0),
            number(values["readers_cpu_percent"], 0),
        ]
        for system, values in throughput.items()
    ]
    return table(title, header, rows)


def _capacity(settings, capacity):
    title = (
        f"Capacity (c): idle clients; server process RSS, threads, CPU over "
        f"{settings['capacity_idle_seconds']:g} s idle (% of one core), median time "
        f"for one row to reach all of them ({settings['capacity_probe_rows']} rows)"
    )
    header = ["system", "clients", "RSS MB", "threads", "idle CPU %", "to all ms"]
    rows = [
        [
            system,
            str(step["clients"]),
            number(step["rss_mb"], 0),
            number(step["threads"], 0),
            number(step["idle_cpu_percent"], 1),
            number(step["one_row_to_all_ms"], 1),
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
