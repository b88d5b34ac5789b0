"""(e) What the feed costs writers: INSERT transactions run by pgbench.

Six databases on the benchmark's server, each with an `events` table made by
pg-feed's own migrations (bench/write_schemas.py): feed off (0001 alone: the
seed's columns, no trigger), poll mode (every migration, then
feed_set_mode('poll'): the triggers that run feed_notify() disabled),
previous version (0001 and 0002: NOTIFY, no positions), notify mode (every
migration, the default) and two experimental variants of notify mode whose row
trigger notifies with less: an id-only payload, and one constant payload that
PostgreSQL folds to one notification per transaction. A cell is one schema at
one number of writers (pgbench clients, a thread each) running single-row
INSERT transactions, or the multi-row case (write_multi_row: writers, rows per
INSERT), for write_seconds; a round runs every cell once, in an order that
rotates from round to round, and each cell is compared with feed off in the
same case and round. Nobody LISTENs.
"""

import contextlib
import logging
import re
import shutil
import statistics
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2

from bench.database import sibling_database
from bench.pgbench import Pgbench
from bench.write_schemas import FEED_OFF, SCHEMAS, prepare

log = logging.getLogger(__name__)

SCRIPT = "INSERT INTO events (event) VALUES ('pgbench row');\n"
MULTI_ROW_SCRIPT = (
    "INSERT INTO events (event) SELECT 'pgbench row' FROM generate_series(1, {rows});\n"
)
WARM_UP_SECONDS = 1
SERVER_SETTINGS = ("server_version", "fsync", "synchronous_commit", "wal_sync_method")


def run(settings, database_url):
    """(e): the schemas, every round's cells and the summary; no count checks."""
    folder = Path(tempfile.mkdtemp(prefix="pgfeed-bench-pgbench-"))
    try:
        single = Pgbench(folder / "single", SCRIPT)
        writers, rows = settings.write_multi_row
        multi = Pgbench(folder / "multi", MULTI_ROW_SCRIPT.format(rows=rows))
        cases = {str(count): (single, count) for count in settings.write_writers}
        cases[multi_row_case(writers, rows)] = (multi, writers)
        with _databases(database_url) as (urls, made):
            for schema, url in urls.items():
                log.info("(e) warm-up: %s", schema)
                single.cell(url, max(settings.write_writers), WARM_UP_SECONDS)
            rounds = _rounds(cases, urls, settings)
            server = _server_settings(urls[FEED_OFF])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    document = {
        "script": SCRIPT.strip(),
        "multi_row_script": MULTI_ROW_SCRIPT.format(rows=rows).strip(),
        "seconds": settings.write_seconds,
        "server": server,
        "schemas": {
            name: {"migrations": schema.migrations, "then": schema.then, **made[name]}
            for name, schema in SCHEMAS.items()
        },
        "rounds": rounds,
        "summary": summarize(rounds, list(cases)),
    }
    return document, []


@contextlib.contextmanager
def _databases(database_url):
    """Yield ({schema: URL}, {schema: what it looks like}): a database per
    schema, next to the benchmark's."""
    base = urlsplit(database_url).path.lstrip("/")
    with contextlib.ExitStack() as stack:
        urls, made = {}, {}
        for name, schema in SCHEMAS.items():
            database = f"{base}_writes_{re.sub('[^a-z0-9]+', '_', name).strip('_')}"
            urls[name] = stack.enter_context(sibling_database(database_url, database))
            made[name] = prepare(urls[name], schema)
        yield urls, made


def _server_settings(url):
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            values = {}
            for name in SERVER_SETTINGS:
                cursor.execute(f"SHOW {name}")  # names from the constant above
                values[name] = cursor.fetchone()[0]
            return values
    finally:
        connection.close()


def multi_row_case(writers, rows):
    """The multi-row case's name, as the tables show it."""
    return f"{writers} x {rows} rows"


def _rounds(cases, urls, settings):
    cells = [(schema, case) for case in cases for schema in urls]
    rounds = []
    for number in range(1, settings.write_rounds + 1):
        shift = (number - 1) % len(cells)
        order = cells[shift:] + cells[:shift]
        results = {schema: {} for schema in urls}
        for schema, case in order:
            bench, writers = cases[case]
            log.info("(e) round %d: %s, %s", number, schema, case)
            results[schema][case] = bench.cell(
                urls[schema], writers, settings.write_seconds
            )
        rounds.append(
            {"round": number, "order": [list(c) for c in order], "cells": results}
        )
    return rounds


def summarize(rounds, cases):
    """Per schema and case (writers, or the multi-row case): medians over
    rounds, and the same-round ratio of tps to feed off's."""
    schemas = list(rounds[0]["cells"])
    return {
        schema: {case: _cell_summary(rounds, schema, case) for case in cases}
        for schema in schemas
    }


def _cell_summary(rounds, schema, writers):
    cells = [r["cells"][schema][writers] for r in rounds]
    off = [r["cells"][FEED_OFF][writers] for r in rounds]
    ratios = [cell["tps"] / base["tps"] for cell, base in zip(cells, off, strict=True)]
    summary = {
        field: statistics.median(cell[field] for cell in cells)
        for field in ("tps", "commit_p50_ms", "commit_p99_ms")
    }
    summary["tps_per_round"] = [cell["tps"] for cell in cells]
    summary["to_feed_off"] = {"per_round": ratios, "median": statistics.median(ratios)}
    return summary
