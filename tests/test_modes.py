"""Wake-up modes (migration 0006, docs/DEPLOYING.md "Wake-up modes"): poll mode
delivers what NOTIFY would, and a switch while writers write and instances
serve loses and duplicates nothing."""

import os
import random
import threading
import time

import psycopg2
import pytest
import requests

from feed.extensions import db
from feed.service import commands
from support.clients import resume
from support.database import (
    both_wake_modes,
    create_database,
    drop_database,
    insert_row,
    migrate_to_head,
    set_wake_mode,
)
from support.waiting import wait_for

QUICK = {
    "FEED_CONFIRM_INTERVAL": 0.2,
    "FEED_LISTENER_IDLE_CHECK": 0.5,
    "FEED_DELIVERY_CHECK_INTERVAL": 0.5,
}
INTERVAL = 0.05  # FEED_POLL_INTERVAL's default


def table_now(writer):
    with writer.cursor() as cursor:
        cursor.execute("SELECT id, event FROM events")
        return dict(cursor.fetchall())


def listener_status(served):
    return requests.get(f"{served.url}/healthz", timeout=10).json()["listener"]


def test_poll_mode_sends_every_kind_of_change_with_versions(
    serve_app, resuming_client, writer
):
    set_wake_mode(writer, "poll")
    served = serve_app(**QUICK)
    feed = resuming_client(served.url)
    assert feed.wait_synced(10)
    first = insert_row(writer, "one")
    second = insert_row(writer, "two")
    with writer.cursor() as cursor:
        cursor.execute("UPDATE events SET event = 'one!' WHERE id = %s", (first,))
        cursor.execute("DELETE FROM events WHERE id = %s", (second,))
    wait_for(lambda: feed.holds({first: "one!"}), message="the changes, polled")
    ops = [(row["op"], row["id"]) for row in feed.applied]
    assert ("UPDATE", first) in ops and ("DELETE", second) in ops
    assert all(isinstance(row["version"], int) for row in feed.applied)
    with writer.cursor() as cursor:
        cursor.execute("TRUNCATE events")
    wait_for(lambda: feed.holds({}), message="the TRUNCATE, polled")
    assert feed.applied[-1]["op"] == "TRUNCATE"
    assert feed.applied_twice() == []
    status = listener_status(served)
    assert status["mode"] == "poll" and status["poll_interval_seconds"] == INTERVAL


def test_poll_mode_runs_no_listen_and_no_trigger_notifies(
    serve_app, sio_client, writer, database_url
):
    set_wake_mode(writer, "poll")
    served = serve_app(**QUICK)
    feed_client = sio_client(served.url)
    feed_client.call("sync", {"after": None})
    watcher = psycopg2.connect(database_url)
    watcher.autocommit = True
    try:
        watcher.cursor().execute("LISTEN events")
        new_id = insert_row(writer, "quiet")
        wait_for(lambda: new_id in feed_client.ids(), message="the polled row")
        watcher.poll()
        assert [n.payload for n in watcher.notifies] == []  # writers notify nobody
    finally:
        watcher.close()
    with writer.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'pg-feed-listener' AND query ILIKE 'LISTEN%%'"
        )
        assert cursor.fetchone()[0] == 0


def test_a_transaction_open_across_many_polls_is_delivered_once_when_it_commits(
    serve_app, resuming_client, writer, database_url
):
    set_wake_mode(writer, "poll")
    served = serve_app(**QUICK)
    feed = resuming_client(served.url)
    assert feed.wait_synced(10)
    late = psycopg2.connect(database_url)
    try:
        with late.cursor() as cursor:
            cursor.execute("INSERT INTO events (event) VALUES ('late') RETURNING id")
            (late_id,) = cursor.fetchone()
            cursor.execute(
                "UPDATE events SET event = 'late!' WHERE id = %s", (late_id,)
            )
        others = [insert_row(writer, f"other {n}") for n in range(3)]
        wait_for(lambda: set(others) <= set(feed.rows()), message="the others, live")
        reads = listener_status(served)["last_read_at"]
        wait_for(
            lambda: listener_status(served)["last_read_at"] > reads + 10 * INTERVAL,
            message="ten more polls while the transaction stays open",
        )
        assert late_id not in feed.rows()
        late.commit()
    finally:
        late.close()
    wait_for(lambda: late_id in feed.rows(), message="the late row once committed")
    assert feed.rows()[late_id]["event"] == "late!"
    assert [row["id"] for row in feed.applied].count(late_id) == 1
    assert feed.holds(table_now(writer))


def test_health_is_live_in_poll_mode_and_probes_are_answered_by_reads(
    serve_app, writer
):
    set_wake_mode(writer, "poll")
    served = serve_app(**QUICK)
    body = requests.get(f"{served.url}/healthz", timeout=10).json()
    assert body["ok"] is True and body["feed"] == "live", body
    failed = body["delivery"]["failed_probes"]
    wait_for(
        lambda: (
            requests.get(f"{served.url}/healthz", timeout=10).json()["delivery"][
                "last_ok_at"
            ]
            > body["delivery"]["last_ok_at"]
        ),
        message="a later probe answered in poll mode",
    )
    body = requests.get(f"{served.url}/healthz", timeout=10).json()
    assert body["delivery"]["failed_probes"] == failed
    assert body["listener"]["mode"] == "poll"


def test_serving_instances_follow_a_switch_within_one_interval(
    serve_app, sio_client, writer
):
    served = serve_app(**QUICK)
    feed_client = sio_client(served.url)
    feed_client.call("sync", {"after": None})
    for mode in ("poll", "notify", "poll", "notify"):
        set_wake_mode(writer, mode)
        switched = time.monotonic()
        wait_for(
            lambda mode=mode: listener_status(served)["mode"] == mode,
            message=f"the listener in {mode} mode",
        )
        # The status is read over HTTP: the listener may have followed sooner.
        assert time.monotonic() - switched < 1
        new_id = insert_row(writer, f"in {mode} mode")
        wait_for(lambda new_id=new_id: new_id in feed_client.ids(), message=mode)


def test_switching_modes_under_writes_loses_and_duplicates_nothing(
    app_process, resuming_client, sio_client, writer, database_url
):
    """Two instances (threaded, gevent), clients on each, four writers changing
    the table, and the database switched back and forth a dozen times: every
    client ends with the table, no change applied twice, and a resume from the
    first cursor rebuilds it too."""
    rng = random.Random(12)
    quick = {name: str(value) for name, value in QUICK.items()}
    instances = [app_process("threaded", **quick), app_process("gevent", **quick)]
    feeds = [resuming_client(one.url) for one in instances for _ in range(2)]
    assert all(feed.wait_synced(10) for feed in feeds)
    first_cursor = feeds[0].cursor
    stop = threading.Event()
    errors = []

    def write(seed):
        rng = random.Random(seed)
        connection = psycopg2.connect(database_url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                while not stop.is_set():
                    cursor.execute("BEGIN")
                    for _ in range(rng.randint(1, 3)):
                        action = rng.random()
                        if action < 0.6:
                            cursor.execute("INSERT INTO events (event) VALUES ('w')")
                        elif action < 0.85:
                            cursor.execute(
                                "UPDATE events SET event = event || '+' WHERE id = "
                                "(SELECT id FROM events ORDER BY random() LIMIT 1)"
                            )
                        else:
                            cursor.execute(
                                "DELETE FROM events WHERE id = "
                                "(SELECT id FROM events ORDER BY random() LIMIT 1)"
                            )
                    cursor.execute("COMMIT")
                    commits[seed] += 1
        except psycopg2.Error as exc:
            errors.append(exc)
        finally:
            connection.close()

    commits = [0] * 4  # per writer, each counting its own
    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    try:
        for switch in range(12):
            set_wake_mode(writer, "poll" if switch % 2 == 0 else "notify")
            # Writers keep writing between switches: a random number of commits.
            wanted = sum(commits) + rng.randint(5, 60)
            wait_for(
                lambda wanted=wanted: sum(commits) >= wanted,
                message="writes between two switches",
            )
    finally:
        stop.set()
        for thread in writers:
            thread.join(10)
    assert not errors, errors
    for one in instances:  # probes crossing the switches were answered
        body = requests.get(f"{one.url}/healthz", timeout=10).json()
        assert body["delivery"]["failed_probes"] == 0, body
    final = table_now(writer)
    assert len(final) > 50
    for feed in feeds:
        wait_for(
            lambda feed=feed: feed.holds(final), message="a client holds the table"
        )
        assert feed.applied_twice() == []
    # The table was empty at the first cursor: a resume from it rebuilds it.
    held = {}
    rows, _ = resume(sio_client(instances[1].url), first_cursor)
    for row in rows:  # in version order, newest last, as a client applies them
        if row["op"] == "DELETE":
            held.pop(row["id"], None)
        else:
            held[row["id"]] = row["event"]
    assert held == final


def test_flask_feed_mode_shows_and_switches(app, runner, writer):
    assert runner.invoke(args=["feed", "mode"]).output.strip() == "notify"
    result = runner.invoke(args=["feed", "mode", "poll"])
    assert result.exit_code == 0, result.output
    assert "switched from notify to poll mode" in result.output
    assert runner.invoke(args=["feed", "mode"]).output.strip() == "poll"
    assert "already in poll mode" in runner.invoke(args=["feed", "mode", "poll"]).output
    with writer.cursor() as cursor:
        cursor.execute(
            "SELECT tgname, tgenabled FROM pg_trigger"
            " WHERE tgrelid = 'events'::regclass"
            " AND tgname LIKE 'events_notify%%' ORDER BY tgname"
        )
        assert cursor.fetchall() == [
            ("events_notify", "D"),
            ("events_notify_truncate", "D"),
        ]
    bad = runner.invoke(args=["feed", "mode", "sometimes"])
    assert bad.exit_code != 0 and "notify" in bad.output
    assert runner.invoke(args=["feed", "mode", "notify"]).exit_code == 0
    with app.app_context():
        assert commands.current_mode() == "notify"
        db.session.remove()


def test_a_switch_gives_way_to_a_long_writer_and_retries(app, writer, database_url):
    blocker = psycopg2.connect(database_url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute("INSERT INTO events (event) VALUES ('holding the table')")
        with app.app_context(), pytest.raises(Exception) as refused:
            commands.set_mode("poll", tries=2, lock_timeout="100ms")
        assert "lock timeout" in str(refused.value)
        blocker.commit()
        with app.app_context():
            assert commands.set_mode("poll", lock_timeout="100ms") == "notify"
            db.session.remove()
    finally:
        blocker.close()


@pytest.fixture
def other_database(postgres):
    """Another database with the feed's schema, in poll mode."""
    name = f"pgfeed_other_{os.getpid()}"
    url = create_database(postgres, name)
    migrate_to_head(url)
    connection = psycopg2.connect(url)
    connection.autocommit = True
    set_wake_mode(connection, "poll")
    connection.close()
    yield url
    drop_database(postgres, name)


def test_in_poll_mode_a_listener_on_another_database_is_a_stall_naming_it(
    serve_app, writer, other_database
):
    set_wake_mode(writer, "poll")
    served = serve_app(
        LISTENER_DATABASE_URL=other_database,
        FEED_DELIVERY_CHECK_TIMEOUT=0.5,
        **QUICK,
    )
    wait_for(
        lambda: requests.get(f"{served.url}/healthz", timeout=10).status_code == 503,
        message="health to say stalled",
    )
    body = requests.get(f"{served.url}/healthz", timeout=10).json()
    assert body["feed"] == "stalled" and body["listener"]["mode"] == "poll"
    assert "LISTENER_DATABASE_URL points at another database" in body["reason"]


@both_wake_modes
def test_a_live_rows_created_at_is_the_same_text_as_in_a_sync_answer(
    serve_app, sio_client, writer
):
    served = serve_app(**QUICK)
    feed_client = sio_client(served.url)
    feed_client.call("sync", {"after": None})
    with writer.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Asia/Kathmandu'")
        cursor.execute(
            "INSERT INTO events (event, created_at) VALUES "
            "('zeros', '2026-01-01 00:00:00.120000+00'), "
            "('whole', '2026-01-01 00:00:01+00') RETURNING id"
        )
        ids = [row_id for (row_id,) in cursor.fetchall()]
    wait_for(lambda: set(ids) <= set(feed_client.ids()), message="the live rows")
    live = {row["id"]: row["created_at"] for row in feed_client.rows()}
    answer = feed_client.call("sync", {"after": None})
    synced = {row["id"]: row["created_at"] for row in answer["events"]}
    assert (
        [live[i] for i in ids]
        == [synced[i] for i in ids]
        == [
            "2026-01-01T00:00:00.120000+00:00",
            "2026-01-01T00:00:01+00:00",
        ]
    )
