"""The schema and the notify trigger, as the real migrations create them."""

import json
import os
import select
import shutil

import psycopg2
import pytest
from flask_migrate import downgrade, upgrade

from feed import create_app
from feed.extensions import db
from support.database import create_database, drop_database, insert_row
from support.processes import ROOT, run_flask
from support.waiting import wait_for


def relations(url):
    connection = psycopg2.connect(url)
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'table ' || relname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace "
            "WHERE nspname = 'public' AND relkind IN ('r', 'S') "
            "UNION ALL SELECT 'function ' || proname FROM pg_proc "
            "WHERE proname LIKE 'feed\\_%' "
            "UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger "
            "WHERE NOT tgisinternal"
        )
        found = sorted(name for (name,) in cursor.fetchall())
    connection.close()
    return found


@pytest.fixture
def empty_database(postgres):
    name = f"pgfeed_migrations_{os.getpid()}"
    yield create_database(postgres, name)
    drop_database(postgres, name)


def test_upgrade_downgrade_upgrade_again(empty_database):
    app = create_app({"DATABASE_URL": empty_database})
    with app.app_context():
        upgrade()
        assert relations(empty_database) == [
            "function feed_notify",
            "function feed_position",
            "function feed_record_removal",
            "function feed_removal_version",
            "function feed_set_mode",
            "function feed_trim_removals",
            "table alembic_version",
            "table events",
            "table events_id_seq",
            "table feed_change_seq",
            "table feed_epoch",
            "table feed_mode",
            "table feed_removals",
            "table feed_trimmed",
            "trigger events_log_removal",
            "trigger events_log_truncate",
            "trigger events_notify",
            "trigger events_notify_truncate",
            "trigger events_position",
        ]
        downgrade(revision="base")
        assert relations(empty_database) == ["table alembic_version"]
        upgrade()
        assert "trigger events_notify" in relations(empty_database)
        db.engine.dispose()


def test_flask_db_upgrade_cli_on_a_new_database(empty_database):
    app = create_app({"DATABASE_URL": empty_database})
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "table events" in relations(empty_database)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def listening(database_url, writer):
    """An autocommit connection LISTENing on `events`, and a reader of its payloads."""
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    connection.cursor().execute("LISTEN events")

    def receive(count):
        def arrived():
            if len(connection.notifies) < count:
                select.select([connection], [], [], 0.05)
                connection.poll()
            return len(connection.notifies) >= count

        wait_for(arrived, message=f"{count} notifications")
        payloads = [json.loads(n.payload) for n in connection.notifies]
        connection.notifies.clear()
        return payloads

    yield receive
    connection.close()


HOSTILE_TEXTS = [
    "it's a quote",
    'double "quotes"',
    "back\\slash \\n not a newline",
    "$$ dollar $tag$ quoting $$",
    "emoji 🎉👩‍💻 and ünïcödé",
    "'); NOTIFY events, 'injected'; --",
    "line\nbreak\ttab",
]


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_trigger_sends_every_op_with_the_row(writer, listening, text):
    with writer.cursor() as cursor:
        cursor.execute("INSERT INTO events (event) VALUES (%s) RETURNING id", (text,))
        (new_id,) = cursor.fetchone()
        cursor.execute(
            "UPDATE events SET event = %s WHERE id = %s", (text + "!", new_id)
        )
        cursor.execute("DELETE FROM events WHERE id = %s", (new_id,))
    insert, update, delete = listening(3)
    assert [insert["op"], update["op"], delete["op"]] == ["INSERT", "UPDATE", "DELETE"]
    assert {insert["id"], update["id"], delete["id"]} == {new_id}
    assert insert["table"] == "events"
    assert insert["row"]["event"] == text
    assert update["row"]["event"] == text + "!"
    assert delete["row"]["event"] == text + "!"
    assert insert["row"]["created_at"].endswith("+00:00")
    # Versions rise with each change; a DELETE's is its removal record's.
    versions = [insert["row"]["feed_seq"], update["row"]["feed_seq"], delete["version"]]
    assert versions == sorted(set(versions))
    assert delete["version"] == removal_seq(writer, "DELETE", new_id)


def removal_seq(writer, op, row_id=None):
    with writer.cursor() as cursor:
        cursor.execute(
            "SELECT max(feed_seq) FROM feed_removals WHERE op = %s "
            "AND row_id IS NOT DISTINCT FROM %s",
            (op, row_id),
        )
        return cursor.fetchone()[0]


def test_a_delete_with_its_log_trigger_disabled_still_commits(writer, listening):
    new_id = insert_row(writer, "x")
    listening(1)
    with writer.cursor() as cursor:
        cursor.execute(
            "BEGIN; ALTER TABLE events DISABLE TRIGGER events_log_removal; "
            "DELETE FROM events WHERE id = %s; "
            "ALTER TABLE events ENABLE TRIGGER events_log_removal; COMMIT",
            (new_id,),
        )
    (delete,) = listening(1)
    assert delete["op"] == "DELETE" and delete["version"] is None


def test_trigger_sends_truncate_once_per_statement(writer, listening):
    with writer.cursor() as cursor:
        cursor.execute("TRUNCATE events")
    version = removal_seq(writer, "TRUNCATE")
    assert listening(1) == [{"table": "events", "op": "TRUNCATE", "version": version}]


def test_large_row_commits_and_its_notification_leaves_the_row_out(writer, listening):
    text = "é" * 10_000  # 20,000 bytes in UTF-8
    with writer.cursor() as cursor:
        cursor.execute("INSERT INTO events (event) VALUES (%s) RETURNING id", (text,))
        (new_id,) = cursor.fetchone()
    (payload,) = listening(1)
    assert payload == {"table": "events", "op": "INSERT", "id": new_id}


def test_payload_just_under_the_limit_keeps_the_row(writer, listening):
    text = "x" * 7800
    with writer.cursor() as cursor:
        cursor.execute("INSERT INTO events (event) VALUES (%s)", (text,))
    (payload,) = listening(1)
    assert payload["row"]["event"] == text


def test_identical_rows_in_one_transaction_are_not_folded(
    database_url, writer, listening
):
    with writer.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute(
            "INSERT INTO events (event) SELECT 'same' FROM generate_series(1, 5)"
        )
        cursor.execute("COMMIT")
    assert len({p["id"] for p in listening(5)}) == 5


def test_trigger_timestamps_are_utc_whatever_the_writer_session(writer, listening):
    with writer.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Asia/Kolkata'")
        cursor.execute("INSERT INTO events (event) VALUES ('tz')")
    (payload,) = listening(1)
    assert payload["row"]["created_at"].endswith("+00:00")


def test_flask_db_migrate_on_a_migrated_database_finds_no_change(
    database_url, tmp_path
):
    # The user's own command, on a copy of migrations/ so nothing is written here.
    # It once proposed drop_table('events'): nothing imported the model.
    copy = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", copy)
    result = run_flask(database_url, "db", "migrate", "-d", str(copy))
    assert result.returncode == 0, result.stderr
    assert "No changes in schema detected." in result.stderr
    assert "drop_table" not in result.stderr + result.stdout
    new_files = {p.name for p in (copy / "versions").glob("*.py")}
    assert new_files == {
        p.name for p in (ROOT / "migrations" / "versions").glob("*.py")
    }


def test_positions_come_to_a_table_that_already_has_rows(empty_database):
    app = create_app({"DATABASE_URL": empty_database})
    with app.app_context():
        upgrade(revision="0002")
        with psycopg2.connect(empty_database) as connection:
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO events (event) SELECT 'old ' || i "
                    "FROM generate_series(1, 50) AS i"
                )
        connection.close()
        upgrade()
        with psycopg2.connect(empty_database) as connection:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(DISTINCT feed_seq), count(*) FROM events")
                assert cursor.fetchone() == (50, 50)
        connection.close()
        downgrade(revision="0002")
        assert "table feed_removals" not in relations(empty_database)
        with psycopg2.connect(empty_database) as connection:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM events")
                assert cursor.fetchone() == (50,)
        connection.close()
        db.engine.dispose()
