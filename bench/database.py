"""The benchmark's PostgreSQL: BENCH_DATABASE_URL, or an embedded server of its own.

Either way the schema comes from pg-feed's real migrations.
"""

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from feed.database.urls import mask_url

log = logging.getLogger(__name__)

DATABASE_NAME = "pgfeed_bench"
_DROP_DATABASE = "DROP DATABASE IF EXISTS {} WITH (FORCE)"


@contextlib.contextmanager
def benchmark_database():
    """Yield the libpq URL of a migrated database; stop what was started for it."""
    if os.environ.get("BENCH_DATABASE_URL"):
        url = os.environ["BENCH_DATABASE_URL"]
        log.info("database: %s (BENCH_DATABASE_URL)", mask_url(url))
        migrate(url)
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="pgfeed-bench-"))
    server = _start_embedded(folder / "data")
    try:
        url = _create_database(server.get_uri(), DATABASE_NAME)
        migrate(url)
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def _start_embedded(pgdata):
    from feed.service import embedded_postgres

    return embedded_postgres.start(pgdata, cleanup_mode="delete")


def _create_database(server_url, name):
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    database = sql.Identifier(name)
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL(_DROP_DATABASE).format(database))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(database))
    admin.close()
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@contextlib.contextmanager
def sibling_database(url, name):
    """Yield the URL of a new, empty database `name` on the server of `url`;
    drop it after. The role of `url` needs CREATEDB."""
    admin = psycopg2.connect(url)
    admin.autocommit = True
    database = sql.Identifier(name)
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL(_DROP_DATABASE).format(database))
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(database))
    except psycopg2.Error as exc:
        admin.close()
        raise RuntimeError(f"could not create the database {name}: {exc}") from exc
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL(_DROP_DATABASE).format(database))
        admin.close()


def migrate(url, revision="head"):
    """Apply pg-feed's migrations, up to `revision`, to the database at `url`."""
    from flask_migrate import upgrade

    from feed import create_app
    from feed.extensions import db

    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        try:
            upgrade(revision=revision)
        except SystemExit as exc:  # flask_migrate.upgrade() exits on errors
            raise RuntimeError("migrating the benchmark database failed") from exc
        db.engine.dispose()


def server_version(url):
    """PostgreSQL's version string, e.g. '18.4'."""
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return cursor.fetchone()[0]
    finally:
        connection.close()
