"""(d) Live latency of this pg-feed against the previous version's, in the same run.

The previous version (settings.previous_commit) is exported with `git archive`
into a temporary folder and served as `python app.py`, as this version is.
Each has a new database of its own on the benchmark's server, migrated by its
own migrations (`flask db upgrade` in its folder). Each gets workload (a) with
fresh readers and writer, in rounds whose order alternates (ABBA...). Noise is
the ratio between one system's consecutive rounds.
"""

import contextlib
import io
import logging
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from bench import scenarios
from bench.database import sibling_database
from bench.services import ROOT, pg_feed_environment, start_pg_feed
from bench.workers import BenchError, ReaderPool, start_writer

log = logging.getLogger(__name__)

CURRENT, PREVIOUS = "pg-feed", "pg-feed-previous"
FIELDS = ("p50_ms", "p99_ms", "max_ms", "commit_ms_median", "server_cpu_percent")
MIGRATE_TIMEOUT = 120.0


def run(settings, database_url):
    """(d): the previous commit, every round, the summary; and the count checks."""
    base = urlsplit(database_url).path.lstrip("/")
    with (
        exported(settings.previous_commit) as (root, commit),
        sibling_database(database_url, f"{base}_current") as current_url,
        sibling_database(database_url, f"{base}_previous") as previous_url,
    ):
        served = {CURRENT: (ROOT, current_url), PREVIOUS: (root, previous_url)}
        for folder, url in served.values():
            migrate_with_flask(folder, url)
        rounds, checks = [], []
        for number in range(1, settings.previous_rounds + 1):
            order = (CURRENT, PREVIOUS) if number % 2 else (PREVIOUS, CURRENT)
            results = {}
            for system in order:
                log.info("(d) round %d: %s", number, system)
                results[system], run_checks = _latency_run(
                    system, *served[system], settings
                )
                checks += [{"round": number, "system": system, **c} for c in run_checks]
            rounds.append({"round": number, "order": list(order), "systems": results})
    document = {"commit": commit, "rounds": rounds, "summary": summarize(rounds)}
    return document, checks


@contextlib.contextmanager
def exported(commit):
    """Yield (folder, {"hash", "subject"}) of `commit`'s tree exported from git."""
    described = _describe(commit)
    folder = Path(tempfile.mkdtemp(prefix="pgfeed-bench-previous-"))
    try:
        archive = _git("archive", "--format=tar", described["hash"])
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        yield folder, described
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _describe(commit):
    try:
        output = _git("log", "-1", "--format=%H%n%s", f"{commit}^{{commit}}")
    except BenchError as exc:
        raise BenchError(
            f"the previous version's commit {commit} is not in this clone "
            f"(a shallow clone? `git fetch --unshallow`): {exc}"
        ) from None
    full_hash, subject = output.decode().strip().split("\n", 1)
    return {"asked": commit, "hash": full_hash, "subject": subject}


def _git(*arguments):
    result = subprocess.run(
        ["git", *arguments], cwd=ROOT, capture_output=True, timeout=60
    )
    if result.returncode != 0:
        raise BenchError(f"git {arguments[0]}: {result.stderr.decode().strip()}")
    return result.stdout


def migrate_with_flask(root, url):
    """`flask db upgrade` of the pg-feed in `root` on the database at `url`."""
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        cwd=root,
        env={**pg_feed_environment(), "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-2000:]
        raise BenchError(f"flask db upgrade in {root} failed:\n{tail}")


def _latency_run(system, root, database_url, settings):
    """Warm-up and workload (a) on a fresh server: (latency, checks)."""
    with contextlib.ExitStack() as stack:
        pool = ReaderPool(settings.readers)
        stack.callback(pool.stop)
        writer = start_writer(database_url)
        stack.callback(writer.stop)
        server = start_pg_feed(database_url, system, root)
        stack.callback(_stop, server)
        pool.connect(server.url, settings.clients)
        checks = [scenarios.warm_up(pool, writer, settings)]
        latency, check = scenarios.latency(server, pool, writer, settings)
        checks.append(check)
        if not server.alive():
            tail = "".join(list(server.output)[-20:])
            raise BenchError(f"{system} died during the run:\n{tail}")
    latency.pop("cdf_ms")
    return latency, [{**c, "scenario": f"(d) {c['scenario']}"} for c in checks]


def _stop(server):
    code = server.stop()
    if code not in (0, -15):
        log.warning("%s exited with %s", server.name, code)


def summarize(rounds):
    """Medians per system; this / previous within each round; the noise; verdicts."""
    per_system = {
        system: {field: _values(rounds, system, field) for field in FIELDS}
        for system in (CURRENT, PREVIOUS)
    }
    summary = {
        "systems": {
            system: {field: _median(values[field]) for field in FIELDS}
            for system, values in per_system.items()
        },
    }
    for field in ("p50_ms", "p99_ms"):
        summary[field] = _comparison(per_system, field)
    return summary


def _comparison(per_system, field):
    current, previous = per_system[CURRENT][field], per_system[PREVIOUS][field]
    ratios = [_divide(c, p) for c, p in zip(current, previous, strict=True)]
    same_system = [
        _divide(later, earlier)
        for values in (current, previous)
        for earlier, later in zip(values, values[1:], strict=False)
    ]
    noise = max((max(r, 1 / r) for r in same_system if r), default=None)
    ratio = _median(ratios)
    return {
        "this_over_previous": {"per_round": ratios, "median": ratio},
        "rounds_this_slower": sum(1 for r in ratios if r is not None and r > 1),
        "same_system_ratios": same_system,
        "noise": noise,
        "verdict": _verdict(ratio, noise),
    }


def _verdict(ratio, noise):
    """Whether this version is worse than the previous by more than the noise."""
    if ratio is None or noise is None:
        return "noise not measured (one round)"
    if ratio > noise:
        return "worse by more than the noise"
    if ratio < 1 / noise:
        return "better by more than the noise"
    return "within the noise"


def _values(rounds, system, field):
    return [r["systems"][system][field] for r in rounds]


def _median(values):
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _divide(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator
