"""`flask feed ...`: commands for operators, run against DATABASE_URL.

`flask feed mode` shows the database's wake-up mode; `flask feed mode poll` and
`flask feed mode notify` switch it (migration 0006, docs/DEPLOYING.md "Wake-up
modes"). A switch is one transaction: the triggers that NOTIFY are disabled
or enabled, feed_mode is updated, and every listener in NOTIFY mode is told.
Instances keep serving: a listener in NOTIFY mode hears the switch at once, one
in poll mode reads it with its next poll.
"""

import time

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ..database import queries
from ..extensions import db

feed_cli = AppGroup("feed", help="Operate pg-feed's database side.")

LOCK_TIMEOUT = "2s"  # how long one try waits for writers in flight
TRIES = 5


@feed_cli.command("mode")
@click.argument("mode", required=False, type=click.Choice(["notify", "poll"]))
def mode_command(mode):
    """Show the wake-up mode, or switch it to MODE (notify or poll)."""
    try:
        if mode is None:
            click.echo(current_mode())
            return
        previous = set_mode(mode, echo=lambda line: click.echo(line, err=True))
    except DBAPIError as exc:
        raise click.ClickException(_reason(exc)) from None
    if previous == mode:
        click.echo(f"already in {mode} mode")
    else:
        interval = current_app.config["FEED_POLL_INTERVAL"]
        follow = "at once" if mode == "poll" else f"within {interval:g} s"
        click.echo(
            f"switched from {previous} to {mode} mode; listeners follow {follow}"
        )


def current_mode():
    """The database's wake-up mode."""
    return db.session.execute(text(queries.FEED_MODE)).scalar_one()


def set_mode(mode, echo=None, tries=TRIES, lock_timeout=LOCK_TIMEOUT):
    """Switch the database to `mode`; the mode it was in.

    Each try waits at most lock_timeout for the writing transactions in
    flight (the triggers are switched under a lock on the table) and gives
    up on them rather than hold every new writer behind it; then it retries.
    """
    for attempt in range(1, tries + 1):
        try:
            db.session.execute(
                text("SELECT set_config('lock_timeout', :t, true)"), {"t": lock_timeout}
            )
            previous = db.session.execute(
                text("SELECT feed_set_mode(:mode)"), {"mode": mode}
            ).scalar_one()
            db.session.commit()
            return previous
        except DBAPIError as exc:
            db.session.rollback()
            if getattr(exc.orig, "pgcode", None) != "55P03" or attempt == tries:
                raise
            if echo is not None:
                echo(
                    f"try {attempt}: a writing transaction held the table for "
                    f"{lock_timeout}; trying again"
                )
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _reason(exc):
    message = str(exc.orig).strip().splitlines()[0]
    if getattr(exc.orig, "pgcode", None) in ("42883", "42P01"):  # not migrated
        return f"{message} (run flask db upgrade first)"
    if getattr(exc.orig, "pgcode", None) == "42501":  # insufficient privilege
        return f"{message} (run it as the role that ran flask db upgrade)"
    return message


def init_app(app):
    """Register `flask feed`."""
    app.cli.add_command(feed_cli)
