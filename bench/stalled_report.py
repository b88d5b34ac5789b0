"""The table of section (h): one row to all while a tenth of the clients hang."""

from bench.markdown import number, table


def render(document):
    """The table of (h), if it ran."""
    if "stalled" not in document:
        return []
    stalled = document["stalled"]
    load, resumed, rss = stalled["load"], stalled["resumed"], stalled["rss_mb"]
    title = (
        f"Stalled clients (h): one `make serve` (gevent), {stalled['clients']:,} "
        f"clients, of which {stalled['stalled']:,} stop reading; every client "
        f"offers a {stalled['receive_buffer'] // 1024} KiB receive window; one row "
        "to all the clients that read, from COMMIT returned (median and max of 5 "
        f"rows); {load['transactions']} transactions of {_per(load)} rows while "
        "stalled "
        f"({load['seconds']:.0f} s, {load['overflows']:.0f} backlogs dropped); "
        '`BENCH_ARGS="--only stalled" make bench`'
        f"{_load_average(stalled)}"
    )
    header = ["phase", "reading clients", "to all ms", "max ms", "RSS MB"]
    rows = [
        _phase("healthy", stalled["healthy"], rss["before"]),
        _phase("while stalled", stalled["while_stalled"], rss["while_stalled"]),
    ]
    rows.append(
        [
            "highest RSS while the backlogs filled",
            "",
            "",
            "",
            number(rss["highest_while_filling"], 0),
        ]
    )
    ratio = stalled["ratio"]
    verdict = "PASS" if stalled["target"]["pass"] else "MISS"
    rows.append(
        [
            f"while stalled / healthy (target <= {stalled['target']['goal']:g})",
            "",
            f"{number(ratio, 2)}: {verdict}",
            "",
            "",
        ]
    )
    rows.append(
        [
            "stalled clients reading again",
            f"{resumed['resumed']:,}",
            f"resync: {resumed['resynced']:,}, dropped: {resumed['dropped']:,}, "
            f"neither: {resumed['neither']:,}",
            "",
            "",
        ]
    )
    return [table(title, header, rows)]


def _per(load):
    return load["rows"] // max(load["transactions"], 1)


def _phase(name, result, rss):
    return [
        name,
        f"{result['reading_clients']:,}",
        number(result["one_row_to_all_ms"], 1),
        number(result["one_row_to_all_max_ms"], 1),
        number(rss, 0),
    ]


def _load_average(section):
    average = section.get("load_average")
    if not average:
        return ""
    return f"; load average {average[0]:.1f} at the start, {average[1]:.1f} at the end"
