"""pgbench, as (e) runs it: one script, N clients for some seconds, each
transaction's latency logged (-l) and read back for percentiles."""

import re
import shutil
import subprocess

from bench.scenarios import percentiles
from bench.workers import BenchError

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.M)


def program():
    """The embedded PostgreSQL's pgbench, or the one on PATH."""
    from feed.service.embedded_postgres import bundled_bin

    bundled = bundled_bin() / "pgbench"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("pgbench")
    if found is None:
        raise BenchError("pgbench was found neither in the embedded server nor on PATH")
    return found


class Pgbench:
    """pgbench runs of one script, in a folder of its own for the logs."""

    def __init__(self, folder, script):
        self.program, self.folder = program(), folder
        folder.mkdir(parents=True, exist_ok=True)
        self.script = folder / "script.sql"
        self.script.write_text(script)
        self.runs = 0

    def cell(self, url, writers, seconds):
        """`writers` clients for `seconds`: tps, counts, commit latency in ms."""
        self.runs += 1
        prefix = self.folder / f"run{self.runs}"
        argv = [self.program, "-n", "-f", str(self.script), "-c", str(writers)]
        argv += ["-j", str(writers), "-T", str(seconds), "-l", "--log-prefix"]
        result = subprocess.run(
            [*argv, str(prefix), url],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        if result.returncode != 0:
            raise BenchError(f"pgbench failed ({result.returncode}): {result.stderr}")
        failed = int(_found(_FAILED, result.stdout))
        if failed:  # the feed must never make a write fail
            raise BenchError(f"{failed} pgbench transactions failed:\n{result.stdout}")
        latencies = sorted(_logged_latencies_ms(self.folder, prefix.name))
        return {
            "writers": writers,
            "tps": float(_found(_TPS, result.stdout)),
            "transactions": int(_found(_PROCESSED, result.stdout)),
            **{
                f"commit_{k}": v
                for k, v in percentiles(latencies).items()
                if k != "max_ms"
            },
        }


def _found(pattern, text):
    match = pattern.search(text)
    if match is None:
        raise BenchError(f"pgbench's output lacks {pattern.pattern!r}:\n{text}")
    return match.group(1)


def _logged_latencies_ms(folder, prefix):
    """Every transaction's latency from pgbench's -l logs (third field, in us);
    the logs are removed once read."""
    latencies = []
    for log_file in folder.glob(f"{prefix}.*"):
        with log_file.open() as lines:
            for line in lines:
                field = line.split(maxsplit=3)[2]
                if field.isdigit():  # not "failed" or "skipped"
                    latencies.append(int(field) / 1000.0)
        log_file.unlink()
    return latencies
