"""The tables of section (i): instances behind nginx against the same clients
split directly over instances, and what nginx itself cost."""

from bench.markdown import DASH, number, table

LAYOUT_NAMES = {"direct": "direct, split over the instances", "nginx": "through nginx"}


def render(document):
    """The tables of (i), if it ran."""
    if "scaleout" not in document:
        return []
    section = document["scaleout"]
    return [_delivery(section), _instances(section), _nginx(section)]


def _delivery(section):
    limits = section["machine"]
    title = (
        f"Scale-out (i): {section['clients']:,} idle clients between "
        f"{section['instances']} `make serve` instances "
        f"(FEED_SERVER_MODE=gevent) on one database, through nginx "
        "(deploy/nginx.conf) and, for comparison, split evenly straight over "
        f"fresh instances; {section['readers']} reader processes; one row to all: "
        "from COMMIT returned to the last client, median and max over "
        f"{section['probe_rows']} rows {section['probe_interval']:g} s apart; "
        f"open-files limit {limits['open_files']:,}, somaxconn "
        f"{limits['somaxconn']}, ip_local_port_range "
        f"{'-'.join(str(p) for p in limits['ip_local_port_range'])}"
        f'{_load_average(section)} (`BENCH_ARGS="--only scaleout" make bench`)'
    )
    header = ["layout", "clients per instance", "connect s", "one row to all ms"]
    header += ["max ms", "instances' RSS MB", "instances' CPU %, idle / probe"]
    header += ["nginx RSS MB", "nginx CPU %, idle / probe"]
    rows = [
        _layout_row(layout, result) for layout, result in section["layouts"].items()
    ]
    rows.append(_difference(section["layouts"]))
    return table(title, header, rows)


def _layout_row(layout, result):
    instances = result["instances"]
    proxy = result.get("nginx", {})
    return [
        LAYOUT_NAMES.get(layout, layout),
        " / ".join(number(i["clients"], 0) for i in instances),
        number(result["connect_s"], 1),
        number(result["one_row_to_all_ms"], 1),
        number(result["one_row_to_all_max_ms"], 1),
        number(_instances_total(result, "rss_mb"), 0),
        _idle_and_probe(
            _instances_total(result, "idle_cpu_percent"),
            _instances_total(result, "probe_cpu_percent"),
        ),
        number(proxy.get("rss_mb"), 1),
        _idle_and_probe(proxy.get("idle_cpu_percent"), proxy.get("probe_cpu_percent")),
    ]


def _difference(layouts):
    """What nginx cost: through nginx minus direct, and nginx's own workers."""
    direct, proxied = layouts["direct"], layouts["nginx"]

    def minus(value, decimals):
        a, b = value(proxied), value(direct)
        return DASH if a is None or b is None else f"{a - b:+,.{decimals}f}"

    proxy = proxied["nginx"]
    return [
        "nginx's cost: through nginx − direct",
        DASH,
        minus(lambda r: r["connect_s"], 1),
        minus(lambda r: r["one_row_to_all_ms"], 1),
        minus(lambda r: r["one_row_to_all_max_ms"], 1),
        minus(lambda r: _instances_total(r, "rss_mb"), 0),
        " / ".join(
            minus(lambda r, k=key: _instances_total(r, k), 1)
            for key in ("idle_cpu_percent", "probe_cpu_percent")
        ),
        number(proxy["rss_mb"], 1),
        _idle_and_probe(proxy["idle_cpu_percent"], proxy["probe_cpu_percent"]),
    ]


def _idle_and_probe(idle, probe):
    if idle is None and probe is None:
        return DASH
    return f"{number(idle, 1)} / {number(probe, 1)}"


def _instances(section):
    title = (
        "Scale-out (i), per instance: clients held (its /healthz), open files of "
        "the worker that holds them, RSS once every client had every probe row, "
        "CPU in % of one core over "
        f"{section['idle_seconds']:g} s idle and over the probe rows"
    )
    header = ["layout", "instance", "clients", "open files", "RSS MB"]
    header.append("idle CPU %")
    header.append("probe CPU %")
    rows = [
        [
            LAYOUT_NAMES.get(layout, layout),
            str(number_),
            number(instance["clients"], 0),
            number(instance["open_files"], 0),
            number(instance["rss_mb"], 0),
            number(instance["idle_cpu_percent"], 1),
            number(instance["probe_cpu_percent"], 1),
        ]
        for layout, result in section["layouts"].items()
        for number_, instance in enumerate(result["instances"], start=1)
    ]
    return table(title, header, rows)


def _nginx(section):
    config = section["nginx"]
    proxy = section["layouts"]["nginx"]["nginx"]
    title = (
        f"nginx {config['version']} (i), the sum over its "
        f"{config['worker_processes']} worker processes (worker_processes "
        f"{config['worker_processes']}, worker_connections "
        f"{config['worker_connections']:,}, worker_rlimit_nofile "
        f"{config['worker_rlimit_nofile']:,}; {config['balancing']}); client "
        "connections from stub_status; open files per worker from /proc "
        "(each client: its socket and the upstream one)"
    )
    header = ["client connections", "open files per worker, at start → with clients"]
    header.append("RSS MB")
    header += ["idle CPU %", "probe CPU %", "error log lines"]
    row = [
        number(proxy["client_connections"], 0),
        " / ".join(
            f"{number(start, 0)} → {number(files, 0)}"
            for start, files in zip(
                proxy["open_files_at_start"], proxy["open_files"], strict=True
            )
        ),
        number(proxy["rss_mb"], 1),
        number(proxy["idle_cpu_percent"], 1),
        number(proxy["probe_cpu_percent"], 1),
        number(proxy["error_log_lines"], 0),
    ]
    rendered = table(title, header, [row])
    if proxy["errors"]:
        rendered += "\n\nnginx's first error log lines:\n" + "\n".join(
            f"    {line}" for line in proxy["errors"]
        )
    return rendered


def _total(values):
    values = list(values)
    return None if None in values else sum(values)


def _instances_total(result, key):
    return _total(instance[key] for instance in result["instances"])


def _load_average(section):
    if "load_average" not in section:
        return ""
    before, after = section["load_average"]
    return f"; load average {before:.1f} at the start, {after:.1f} at the end"
