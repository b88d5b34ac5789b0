"""The factory and the entry point: importing them opens nothing and starts nothing."""

import os
import subprocess
import sys

from feed import cors_origins, create_app
from support.processes import ROOT, run_flask

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"

CHECK_IMPORT = """
import threading
import app
assert threading.active_count() == 1, threading.enumerate()
assert app.app.extensions["feed"].listener is None
print("pure")
"""


def run_python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_importing_app_py_opens_no_connection_and_starts_no_thread():
    result = run_python(CHECK_IMPORT, DATABASE_URL=UNREACHABLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure"


def test_flask_db_command_runs_migrations_without_starting_the_listener(database_url):
    result = run_flask(database_url, "db", "current")
    assert result.returncode == 0, result.stderr
    assert "0006 (head)" in result.stdout
    assert "listener" not in result.stderr


def test_sqlalchemy_gets_psycopg2_from_a_plain_url():
    app = create_app({"DATABASE_URL": "postgresql://u@h/db"})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://u@h/db"


def test_socketio_is_pinned_to_threading_mode():
    app = create_app({"DATABASE_URL": UNREACHABLE})
    assert app.extensions["socketio"].server.async_mode == "threading"


def test_cors_origins_default_to_same_origin_only():
    assert cors_origins("") == []
    assert cors_origins(" https://a.example , http://localhost:3000 ") == [
        "https://a.example",
        "http://localhost:3000",
    ]
    assert cors_origins("*") == ["*"]


def test_feed_client_imports_without_flask():
    # A Python consumer installs python-socketio[client], not pg-feed's server.
    blocked = "import sys; sys.modules['flask'] = None; import feed.client"
    result = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
