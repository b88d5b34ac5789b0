"""The tables of section (g): latency, targets and database load per wake-up mode."""

from bench.markdown import DASH, number, percent, table


def render(document):
    """The tables of (g), if it ran."""
    if "modes" not in document:
        return []
    modes = document["modes"]
    return [
        _latency(modes),
        _targets(modes["targets"], document["settings"]["name"]),
        _load(modes),
    ]


def _latency(modes):
    title = (
        "Wake-up modes (g): one `make serve` (gunicorn, threaded) per mode, "
        f"{modes['clients']} "
        f"clients, single-row transactions at {modes['rate']:g} rows/s for "
        f"{modes['seconds']:g} s; latency from the writer's COMMIT returning to "
        "each client's receipt, over every (row, client) receipt"
        f"{_load_average(modes)}"
    )
    header = ["mode", "app settings", "p50 ms", "p99 ms", "max ms"]
    header += ["before COMMIT returned", "COMMIT ms", "server CPU %"]
    rows = [
        [
            mode,
            _settings(result["app_settings"]),
            number(result["latency"]["p50_ms"], 2),
            number(result["latency"]["p99_ms"], 2),
            number(result["latency"]["max_ms"], 2),
            percent(result["latency"]["arrived_before_commit_returned"]),
            number(result["latency"]["commit_ms_median"], 2),
            number(result["latency"]["server_cpu_percent"], 0),
        ]
        for mode, result in modes["modes"].items()
    ]
    return table(title, header, rows)


def _targets(targets, settings_name):
    title = "Targets (g), poll mode; a MISS does not fail the run"
    if settings_name != "full":
        title += f" ({settings_name} run: workloads too small to mean anything)"
    rows = [
        [t["target"], number(t["measured"], 2), "PASS" if t["pass"] else "MISS"]
        for t in targets
    ]
    return table(title, ["target", "measured", "result"], rows)


def _load(modes):
    title = (
        "Database load of one instance (g): transactions committed in its "
        "database per second (pg_stat_database.xact_commit, the writer's own "
        "subtracted; the instance is the only other client), and the CPU time "
        "of its listener's backend (/proc/<pid>/stat utime + stime), idle "
        f"({modes['idle_seconds']:g} s, clients connected) and while rows flow"
    )
    header = ["mode", "window", "seconds", "transactions/s", "listener backend CPU %"]
    header += ["connections to the database"]
    rows = [
        [
            mode,
            window,
            number(result[key]["seconds"], 1),
            number(result[key]["instance_commits_per_s"], 1),
            number(result[key]["listener_cpu_percent"], 2),
            ", ".join(name or "(no name)" for name in result["backends"]),
        ]
        for mode, result in modes["modes"].items()
        for window, key in (
            ("idle", "load_idle"),
            (f"{modes['rate']:g} rows/s", "load_flowing"),
        )
    ]
    return table(title, header, rows)


def _settings(settings):
    return ", ".join(f"{name}={value}" for name, value in settings.items()) or DASH


def _load_average(section):
    if "load_average" not in section:
        return ""
    before, after = section["load_average"]
    return f"; load average {before:.1f} at the start, {after:.1f} at the end"
