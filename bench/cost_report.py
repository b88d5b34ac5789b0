"""The tables of (d), (e) and (f): latency, writers' commit rate, resume size."""

from bench.markdown import DASH, number, table

CURRENT, PREVIOUS = "pg-feed", "pg-feed-previous"


def render(document):
    """The tables of the sections (d) to (f) that ran."""
    settings = document["settings"]
    sections = []
    if "previous" in document:
        sections += _previous(settings, document["previous"], document["machine"])
    if "writers" in document:
        sections += [_schemas(document["writers"]), _writers(document["writers"])]
    if "resume" in document:
        sections.append(_resume(document["resume"]))
    return sections


def _previous(settings, previous, machine):
    commit, summary = previous["commit"], previous["summary"]
    title = (
        f"Latency (d): workload (a) ({settings['latency_rate']:g} rows/s for "
        f"{settings['latency_seconds']:g} s, {settings['clients']} clients), "
        f"`python app.py` of this version and of the previous one "
        f'({commit["hash"][:7]}, "{commit["subject"]}"), each on its own '
        f"database; {len(previous['rounds'])} rounds, order alternating"
        f"{_load(previous)}"
    )
    versions = {CURRENT: machine.get("commit"), PREVIOUS: commit["hash"][:7]}
    header = ["system", "version", "p50 ms per round", "p50 ms", "p99 ms per round"]
    header += ["p99 ms", "COMMIT ms", "server CPU %"]
    rows = [
        [
            system,
            versions[system],
            _series(r["systems"][system]["p50_ms"] for r in previous["rounds"]),
            number(values["p50_ms"], 2),
            _series(r["systems"][system]["p99_ms"] for r in previous["rounds"]),
            number(values["p99_ms"], 2),
            number(values["commit_ms_median"], 2),
            number(values["server_cpu_percent"], 0),
        ]
        for system, values in summary["systems"].items()
    ]
    verdicts = [
        [
            field.removesuffix("_ms"),
            _series(summary[field]["this_over_previous"]["per_round"]),
            number(summary[field]["this_over_previous"]["median"], 2),
            f"{summary[field]['rounds_this_slower']} of {len(previous['rounds'])}",
            _series(summary[field]["same_system_ratios"]),
            number(summary[field]["noise"], 2),
            summary[field]["verdict"],
        ]
        for field in ("p50_ms", "p99_ms")
    ]
    verdict_header = ["", "this / previous, per round", "median", "this slower"]
    verdict_header += ["same system, consecutive rounds", "noise (x)", "this version"]
    verdict_title = (
        "Latency (d): this version against the previous, and the noise "
        "(the largest same-system ratio, either way)"
    )
    if settings["name"] != "full":
        verdict_title += f" ({settings['name']} run: too small to mean anything)"
    return [
        table(title, header, rows),
        table(verdict_title, verdict_header, verdicts),
    ]


def _writers(writers):
    server = writers["server"]
    title = (
        f"Writer commit rate (e): pgbench, single-row INSERT transactions "
        f'(`{writers["script"]}`) and, in the case "writers x rows", '
        f"multi-row ones (`{writers.get('multi_row_script', '')}`; tps counts "
        f"transactions), {writers['seconds']} s per cell, "
        f"{len(writers['rounds'])} round(s) interleaved; PostgreSQL "
        f"{server['server_version']}, fsync {server['fsync']}, synchronous_commit "
        f"{server['synchronous_commit']}; nobody LISTENs{_load(writers)}"
    )
    header = ["schema", "writers", "tps", "x feed off, per round"]
    header += ["x feed off", "commit p50 ms", "commit p99 ms"]
    rows = [
        _writers_row(schema, count, cells[count])
        for count in next(iter(writers["summary"].values()))
        for schema, cells in writers["summary"].items()
    ]
    return table(title, header, rows)


def _writers_row(name, count, cell):
    return [
        name,
        count,
        number(cell["tps"], 0),
        _series(cell["to_feed_off"]["per_round"]),
        number(cell["to_feed_off"]["median"], 2),
        number(cell["commit_p50_ms"], 3),
        number(cell["commit_p99_ms"], 3),
    ]


def _schemas(writers):
    title = (
        "Schemas of (e): each made by pg-feed's migrations, then as said; the "
        "notifications one two-row INSERT transaction sent to a LISTEN on events"
    )
    header = ["schema", "made by", "triggers on events that NOTIFY"]
    header += ["notifications", "first payload"]
    rows = [
        [
            name,
            _made_by(schema),
            _notifying_triggers(schema["triggers"]),
            str(schema["sample_notifications"]),
            _payload(schema["sample_payload"]),
        ]
        for name, schema in writers["schemas"].items()
    ]
    return table(title, header, rows)


def _made_by(schema):
    revision = schema["migrations"]
    text = "all migrations" if revision == "head" else f"migrations up to {revision}"
    return f"{text}, then {schema['then']}" if schema["then"] else text


def _notifying_triggers(triggers):
    notifying = [t for t in triggers if "notify" in t["function"]]
    described = [
        f"{t['name']} ({t['function']}, {'on' if t['enabled'] else 'DISABLED'})"
        for t in notifying
    ]
    return ", ".join(described) or "none"


def _payload(payloads):
    if not payloads:
        return DASH
    text = payloads[0]
    text = f"{text[:60]}..." if len(text) > 60 else text
    return f"`{text}`" if text else "(empty)"


def _resume(resume):
    changes = resume["changes"]
    title = (
        f'Resume (f): sync {{"cursor": c}} pages until more is false, after '
        f"{changes['total']:,} changes to as many rows ({changes['INSERT']:,} INSERT, "
        f"{changes['UPDATE']:,} UPDATE, {changes['DELETE']:,} DELETE; "
        f"{changes['per_transaction']} to a transaction, written in "
        f"{changes['written_s']:.1f} s); JSON bytes of the answers{_load(resume)}"
    )
    header = ["page limit", "pages", "rows", "JSON bytes", "bytes/row"]
    header += ["largest page bytes", "seconds", "rows/s"]
    rows = [
        [
            "server default" if result["limit"] is None else str(result["limit"]),
            number(result["pages"], 0),
            number(result["rows"], 0),
            number(result["json_bytes"], 0),
            number(result["json_bytes"] / max(result["rows"], 1), 0),
            number(result["largest_page_bytes"], 0),
            number(result["seconds"], 2),
            number(result["rows"] / result["seconds"], 0),
        ]
        for result in resume["results"]
    ]
    return table(title, header, rows)


def _load(section):
    """The machine's 1-minute load average as the section started and ended."""
    if "load_average" not in section:
        return ""
    before, after = section["load_average"]
    return f"; load average {before:.1f} at the start, {after:.1f} at the end"


def _series(values):
    return ", ".join(number(value, 2) for value in values)
