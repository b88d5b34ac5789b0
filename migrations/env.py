"""Alembic environment: runs the migrations on the Flask app's database engine."""

import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

config = context.config

# Configure logging only for the bare CLI: a serving app has its own set-up, and
# fileConfig would otherwise disable the app's loggers and raise the root level.
if config.config_file_name is not None and not logging.getLogger().handlers:
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

target_db = current_app.extensions["migrate"].db


def get_engine_url():
    """The engine's URL with its password, escaped for ConfigParser."""
    url = target_db.engine.url.render_as_string(hide_password=False)
    return url.replace("%", "%%")


config.set_main_option("sqlalchemy.url", get_engine_url())


def run_migrations_offline():
    """Emit the migrations as SQL text (`flask db upgrade --sql`)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_db.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def skip_empty_revisions(context, revision, directives):
    """`flask db migrate` with nothing to change writes no empty revision file."""
    if getattr(config.cmd_opts, "autogenerate", False):
        script = directives[0]
        if script.upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected.")


def outside_the_feed(obj, name, type_, reflected, compare_to):
    """Autogenerate leaves the feed's bookkeeping to its own migrations: the
    feed_* tables, the feed_* position columns and their indexes (*_feed_*)."""
    name = name or ""
    return not name.startswith("feed_") and "_feed_" not in name


def run_migrations_online():
    """Run the migrations on a live connection."""
    conf_args = current_app.extensions["migrate"].configure_args
    conf_args.setdefault("process_revision_directives", skip_empty_revisions)
    conf_args.setdefault("include_object", outside_the_feed)
    with target_db.engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_db.metadata, **conf_args
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
