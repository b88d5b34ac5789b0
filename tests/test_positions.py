"""Positions and cursors on a real PostgreSQL: resuming skips nothing, whatever
commits late, changes old rows, deletes or truncates (docs/RESUME.md)."""

import psycopg2
import pytest

from feed import create_app
from feed.database import positions
from feed.extensions import db
from support.database import insert_row

START = positions.Position(0, 0)  # before everything


@pytest.fixture
def reader(database_url, writer):
    """Factory-like: reader.catch_up(position) -> (rows, final position)."""
    app = create_app({"DATABASE_URL": database_url, "TESTING": True})
    with app.app_context():
        yield Reader()
        db.session.remove()
        db.engine.dispose()


class Reader:
    """Pages through changes_after as a resuming client would."""

    def __init__(self):
        self.epoch = positions.epoch(db.session)
        # Earlier tests' changes stay in the log: each test starts after them.
        self.start = self.catch_up(START)[1]

    def catch_up(self, position, limit=1000):
        """Every change after position, page by page; (rows, final position)."""
        rows = []
        while True:
            page = positions.changes_after(db.session, position, limit)
            db.session.commit()
            rows += page.rows
            position = page.next_position
            if not page.more:
                return rows, position


@pytest.fixture
def late_writer(database_url):
    """A second connection whose transaction can stay open while others commit."""
    connection = psycopg2.connect(database_url)
    yield connection
    connection.rollback()
    connection.close()


def ops(rows):
    return [(row["op"], row["id"], row["event"]) for row in rows]


def test_every_change_is_returned_once_in_order(reader, writer):
    first = insert_row(writer, "one")
    with writer.cursor() as cursor:
        cursor.execute("UPDATE events SET event = 'one!' WHERE id = %s", (first,))
    second = insert_row(writer, "two")
    with writer.cursor() as cursor:
        cursor.execute("DELETE FROM events WHERE id = %s", (second,))
    rows, position = reader.catch_up(reader.start)
    assert ops(rows) == [("UPDATE", first, "one!"), ("DELETE", second, None)]
    assert reader.catch_up(position)[0] == []  # nothing twice


def test_a_late_commit_of_a_lower_id_is_not_skipped(reader, writer, late_writer):
    with late_writer.cursor() as cursor:  # takes id 1, commits last
        cursor.execute("INSERT INTO events (event) VALUES ('late') RETURNING id")
        (late_id,) = cursor.fetchone()
    early_id = insert_row(writer, "early")
    assert late_id < early_id
    rows, held = reader.catch_up(reader.start)
    # The open transaction holds the watermark back: "early" is not final,
    # so it comes as settling, and the cursor stays below it.
    assert ops(rows) == [("INSERT", early_id, "early")]
    assert held.xid <= late_xid(late_writer)
    late_writer.commit()
    rows, position = reader.catch_up(held)
    assert sorted(ops(rows)) == [
        ("INSERT", late_id, "late"),
        ("INSERT", early_id, "early"),
    ]
    assert position > held
    assert reader.catch_up(position)[0] == []  # both final now: never again


def late_xid(connection):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text")
        return int(cursor.fetchone()[0])


def test_updates_and_deletes_of_old_rows_after_the_cursor_come_back(reader, writer):
    ids = [insert_row(writer, f"row {n}") for n in range(5)]
    _rows, position = reader.catch_up(reader.start)
    with writer.cursor() as cursor:
        cursor.execute("UPDATE events SET event = 'edited' WHERE id = %s", (ids[0],))
        cursor.execute("DELETE FROM events WHERE id = %s", (ids[1],))
    rows, _ = reader.catch_up(position)
    assert ops(rows) == [("UPDATE", ids[0], "edited"), ("DELETE", ids[1], None)]


def test_a_row_changed_twice_comes_back_once_as_it_is_now(reader, writer):
    new_id = insert_row(writer, "a")
    _rows, position = reader.catch_up(reader.start)
    with writer.cursor() as cursor:
        cursor.execute("UPDATE events SET event = 'b' WHERE id = %s", (new_id,))
        cursor.execute("UPDATE events SET event = 'c' WHERE id = %s", (new_id,))
    rows, _ = reader.catch_up(position)
    assert ops(rows) == [("UPDATE", new_id, "c")]


def test_versions_rise_with_each_change_of_a_row(reader, writer):
    new_id = insert_row(writer, "a")
    (inserted,), position = reader.catch_up(reader.start)
    with writer.cursor() as cursor:
        cursor.execute("UPDATE events SET event = 'b' WHERE id = %s", (new_id,))
    (updated,), position = reader.catch_up(position)
    with writer.cursor() as cursor:
        cursor.execute("DELETE FROM events WHERE id = %s", (new_id,))
    (deleted,), _ = reader.catch_up(position)
    assert inserted["version"] < updated["version"] < deleted["version"]


def test_a_truncate_comes_back_before_the_rows_after_it(reader, writer):
    insert_row(writer, "before")
    _rows, position = reader.catch_up(reader.start)
    with writer.cursor() as cursor:
        cursor.execute("TRUNCATE events")
    after = insert_row(writer, "after")
    rows, _ = reader.catch_up(position)
    assert ops(rows) == [("TRUNCATE", None, None), ("INSERT", after, "after")]
    assert rows[0]["version"] < rows[1]["version"]


def test_pages_continue_where_the_last_one_ended(reader, writer):
    with writer.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events (event) SELECT 'r' || i FROM generate_series(1, 25) i"
        )
    page = positions.changes_after(db.session, reader.start, 10)
    assert page.more and len(page.rows) == 10
    rows, _ = reader.catch_up(page.next_position, limit=10)
    assert [r["event"] for r in page.rows + rows] == [f"r{i}" for i in range(1, 26)]


@pytest.mark.parametrize(
    "cursor",
    ["", "garbage", "0123456789abcdef.1", "0123456789abcdef.1.2", 17, None],
)
def test_a_cursor_not_from_this_database_is_refused(reader, cursor):
    with pytest.raises(positions.CursorReset):
        positions.parse(cursor, reader.epoch)


def test_a_cursor_round_trips(reader, writer):
    insert_row(writer, "x")
    _rows, position = reader.catch_up(reader.start)
    assert positions.parse(position.cursor(reader.epoch), reader.epoch) == position


def test_the_epoch_changes_when_the_schema_is_made_again(reader, writer):
    with writer.cursor() as cursor:
        cursor.execute("UPDATE feed_epoch SET epoch = gen_random_uuid()")
    assert positions.epoch(db.session) != reader.epoch


@pytest.fixture
def writer_role(database_url, writer):
    """A connection as a role granted only what writing events takes."""
    with writer.cursor() as cursor:
        cursor.execute("DROP ROLE IF EXISTS feed_writer_test")
        cursor.execute("CREATE ROLE feed_writer_test LOGIN")
        cursor.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON events TO feed_writer_test"
        )
        cursor.execute("GRANT USAGE ON SEQUENCE events_id_seq TO feed_writer_test")
    url = database_url.replace("postgresql://postgres", "postgresql://feed_writer_test")
    connection = psycopg2.connect(url)
    connection.autocommit = True
    yield connection
    connection.close()
    with writer.cursor() as cursor:
        cursor.execute("REVOKE ALL ON events FROM feed_writer_test")
        cursor.execute("REVOKE ALL ON SEQUENCE events_id_seq FROM feed_writer_test")
        cursor.execute("DROP ROLE feed_writer_test")


def test_a_writer_needs_no_grant_for_the_positions(reader, writer_role):
    new_id = insert_row(writer_role, "as a plain writer")
    with writer_role.cursor() as cursor:
        cursor.execute("UPDATE events SET event = 'edited' WHERE id = %s", (new_id,))
        cursor.execute("DELETE FROM events WHERE id = %s", (new_id,))
    rows, _ = reader.catch_up(reader.start)
    assert ops(rows) == [("DELETE", new_id, None)]
