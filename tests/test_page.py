"""The page in a real browser: Playwright driving Debian's Chromium."""

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from feed.extensions import socketio
from support.database import (
    create_database,
    drop_database,
    insert_row,
    insert_rows,
    migrate_to_head,
)
from support.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("FEED_REQUIRE_BROWSER") == "1":
            pytest.fail("FEED_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            message.type == "error" and problems.append(f"console: {message.text}")
        ),
    )
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    page.problems = problems
    yield page
    context.close()


def row(page, row_id):
    return page.locator(f'#events li.event[data-id="{row_id}"]')


SHOWN_IDS = (
    "() => [...document.querySelectorAll('#events li.event')]"
    ".map((item) => Number(item.dataset.id))"
)


def table_ids(writer):
    """Every id in the table, highest first, as the page lists them."""
    with writer.cursor() as cursor:
        cursor.execute("SELECT id FROM events ORDER BY id DESC")
        return [row_id for (row_id,) in cursor.fetchall()]


def expect_shown_ids(page, expected):
    """Wait until the page lists exactly these ids, in this order (so none twice)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    try:
        page.wait_for_function(
            f"(expected) => JSON.stringify(({SHOWN_IDS})())"
            " === JSON.stringify(expected)",
            arg=expected,
            timeout=TIMEOUT_MS,
        )
    except PlaywrightTimeoutError:
        pytest.fail(f"the page shows ids {page.evaluate(SHOWN_IDS)}, not {expected}")


def change_unheard(database_url, *statements):
    """Run statements with the NOTIFY triggers off: changes no listener hears of.

    Their positions are still recorded, so a resume by cursor finds them.
    """
    connection = psycopg2.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            for trigger in NOTIFY_TRIGGERS:
                cursor.execute(f"ALTER TABLE events DISABLE TRIGGER {trigger}")
            for statement in statements:
                cursor.execute(*statement)
            for trigger in NOTIFY_TRIGGERS:
                cursor.execute(f"ALTER TABLE events ENABLE TRIGGER {trigger}")
    finally:
        connection.close()


NOTIFY_TRIGGERS = ("events_notify", "events_notify_truncate")


def send_to_pages(message, data):
    """Emit a server message to every page, as the app itself would."""
    socketio.emit(message, data, namespace="/events")


# Holds each `sync` answer the page receives until RELEASE_SYNC_ANSWERS, so a test
# can change the table while a catch-up is in flight.
HOLD_SYNC_ANSWERS = """() => {
  const socket = pgFeed.socket;
  const timeout = socket.timeout.bind(socket);
  window.heldSyncAnswers = [];
  window.holdingSyncAnswers = true;
  socket.timeout = (ms) => {
    const timed = timeout(ms);
    return {
      emitWithAck: async (event, ...args) => {
        const answer = await timed.emitWithAck(event, ...args);
        if (event !== "sync" || !window.holdingSyncAnswers) return answer;
        return new Promise((resolve) => {
          window.heldSyncAnswers.push(() => resolve(answer));
        });
      },
    };
  };
}"""
RELEASE_SYNC_ANSWERS = """() => {
  window.holdingSyncAnswers = false;
  window.heldSyncAnswers.splice(0).forEach((release) => release());
}"""


def hold_a_catch_up(page):
    """Start a catch-up with a resync and hold its answer."""
    page.evaluate(HOLD_SYNC_ANSWERS)
    send_to_pages("resync", {})
    page.wait_for_function("() => window.heldSyncAnswers.length === 1")


def test_page_shows_history_live_rows_and_sends_events(page, server, writer):
    from playwright.sync_api import expect

    insert_rows(writer, 3, prefix="history")
    page.goto(server.url)
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#events li.event")).to_have_count(3)
    expect(row(page, 3).locator(".event-text")).to_have_text("history 3")

    new_id = insert_row(writer, "from psql")
    expect(row(page, new_id).locator(".event-text")).to_have_text("from psql")
    expect(page.locator("#events li.event").first).to_have_attribute(
        "data-id", str(new_id)
    )

    page.click("#generate")
    expect(page.locator("#events li.event")).to_have_count(5)
    expect(
        page.locator("#events li.event").first.locator(".event-text")
    ).to_contain_text("user event ")

    page.fill("#event-input", "typed by hand")
    page.press("#event-input", "Enter")
    expect(page.locator("#events li.event").first.locator(".event-text")).to_have_text(
        "typed by hand"
    )
    expect(page.locator("#event-input")).to_have_value("")
    assert page.problems == []


def test_page_works_under_make_serve_in_each_mode(page, app_process, writer, mode):
    from playwright.sync_api import expect

    served = app_process(mode)
    insert_rows(writer, 2, prefix="history")
    page.goto(served.url)
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#events li.event")).to_have_count(2)
    page.fill("#event-input", f"typed under {mode}")
    page.press("#event-input", "Enter")
    expect(page.locator("#events li.event").first.locator(".event-text")).to_have_text(
        f"typed under {mode}"
    )
    new_id = insert_row(writer, "from psql")
    expect(row(page, new_id).locator(".event-text")).to_have_text("from psql")
    assert page.problems == []
    assert served.stop() == 0  # the page sees the server go: it shows it
    expect(page.locator("#status")).not_to_have_attribute("data-state", "connected")


def test_page_applies_updates_deletes_and_truncate(page, server, writer):
    from playwright.sync_api import expect

    first = insert_row(writer, "first")
    second = insert_row(writer, "second")
    page.goto(server.url)
    expect(page.locator("#events li.event")).to_have_count(2)
    with writer.cursor() as cursor:
        cursor.execute("UPDATE events SET event = 'edited' WHERE id = %s", (first,))
        cursor.execute("DELETE FROM events WHERE id = %s", (second,))
    expect(row(page, first).locator(".event-text")).to_have_text("edited")
    expect(row(page, second)).to_have_count(0)
    with writer.cursor() as cursor:
        cursor.execute("TRUNCATE events")
    expect(page.locator("#events li.event")).to_have_count(0)
    assert page.problems == []


def test_page_shows_markup_in_events_as_text(page, server, writer):
    from playwright.sync_api import expect

    page.goto(server.url)
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    markup = "<img src=x onerror=alert(1)>"
    new_id = insert_row(writer, markup)
    expect(row(page, new_id).locator(".event-text")).to_have_text(markup)
    assert page.locator("#events img").count() == 0
    assert page.problems == []


def test_page_shows_a_refusal_from_the_server(page, server):
    from playwright.sync_api import expect

    page.goto(server.url)
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    page.fill("#event-input", "   ")
    page.click("#send")
    page.evaluate("document.getElementById('event-input').removeAttribute('required')")
    page.fill("#event-input", "   ")
    page.click("#send")
    expect(page.locator("#send-error")).to_contain_text("empty")


def test_page_exposes_its_feed_and_its_socket(page, server):
    from playwright.sync_api import expect

    page.goto(server.url)
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    assert page.evaluate("Object.keys(window.pgFeed)") == ["feed", "socket"]
    assert page.evaluate("pgFeed.socket.connected") is True
    assert page.evaluate("pgFeed.feed.socket === pgFeed.socket") is True
    assert page.evaluate("Object.keys(window.PgFeed)") == ["connect"]


def test_page_catches_up_on_reconnect_with_a_late_commit_update_and_delete(
    page, server, writer, database_url
):
    from playwright.sync_api import expect

    status = page.locator("#status")
    kept = insert_row(writer, "kept")
    doomed = insert_row(writer, "doomed")
    late = psycopg2.connect(database_url)
    try:
        late_id = insert_row(late, "late")  # takes the lower id, commits later
        early_id = insert_row(writer, "early")
        assert late_id < early_id
        page.goto(server.url)
        expect_shown_ids(page, [early_id, doomed, kept])

        page.evaluate("pgFeed.socket.disconnect()")
        expect(status).to_have_attribute("data-state", "offline")
        late.commit()
        with writer.cursor() as cursor:
            cursor.execute("UPDATE events SET event = 'edited' WHERE id = %s", (kept,))
            cursor.execute("DELETE FROM events WHERE id = %s", (doomed,))
        page.evaluate("pgFeed.socket.connect()")

        expect(status).to_have_attribute("data-state", "connected")
        expect_shown_ids(page, [early_id, late_id, kept])
        assert table_ids(writer) == [early_id, late_id, kept]
        expect(row(page, late_id).locator(".event-text")).to_have_text("late")
        expect(row(page, kept).locator(".event-text")).to_have_text("edited")
    finally:
        late.close()
    assert page.problems == []


def test_page_shows_a_late_commit_that_arrives_live_once(
    page, server, writer, database_url
):
    late = psycopg2.connect(database_url)
    try:
        late_id = insert_row(late, "late")
        early_id = insert_row(writer, "early")
        page.goto(server.url)
        expect_shown_ids(page, [early_id])
        late.commit()
        expect_shown_ids(page, [early_id, late_id])
    finally:
        late.close()
    insert_row(writer, "after the late one")  # the page is still live and in order
    expect_shown_ids(page, table_ids(writer))
    assert page.problems == []


def test_page_catches_up_on_resync(page, server, writer, database_url):
    from playwright.sync_api import expect

    kept = insert_row(writer, "kept")
    doomed = insert_row(writer, "doomed")
    page.goto(server.url)
    expect_shown_ids(page, [doomed, kept])
    change_unheard(
        database_url,
        ("UPDATE events SET event = 'edited unheard' WHERE id = %s", (kept,)),
        ("DELETE FROM events WHERE id = %s", (doomed,)),
        ("INSERT INTO events (event) VALUES ('inserted unheard')",),
    )
    send_to_pages("resync", {})
    expect_shown_ids(page, table_ids(writer))
    expect(row(page, kept).locator(".event-text")).to_have_text("edited unheard")
    assert page.problems == []


def test_page_catches_up_across_sync_pages(page, server, writer):
    from playwright.sync_api import expect

    insert_row(writer, "first")
    page.goto(server.url)
    expect(page.locator("#events li.event")).to_have_count(1)
    page.evaluate("pgFeed.socket.disconnect()")
    expect(page.locator("#status")).to_have_attribute("data-state", "offline")
    insert_rows(writer, 1500, prefix="while away")  # more than one sync answer
    page.evaluate("pgFeed.socket.connect()")
    expect_shown_ids(page, table_ids(writer)[:500])  # the page keeps the newest 500
    assert page.problems == []


def test_page_pages_back_through_history_with_load_older(page, server, writer):
    from playwright.sync_api import expect

    insert_rows(writer, 250, prefix="history")
    page.goto(server.url)
    summary = page.locator("#events-summary")
    load_older = page.locator("#load-older")
    expect_shown_ids(page, list(range(250, 150, -1)))  # the newest 100
    expect(summary).to_have_text("Latest 100 events, older ones not loaded")
    expect(load_older).to_be_visible()

    load_older.click()
    expect_shown_ids(page, list(range(250, 50, -1)))
    expect(summary).to_have_text("Latest 200 events, older ones not loaded")
    load_older.click()
    expect_shown_ids(page, table_ids(writer))  # all 250, in id order
    expect(summary).to_have_text("All 250 events")
    expect(load_older).to_be_hidden()

    new_id = insert_row(writer, "live after paging back")  # under the cap: kept
    expect_shown_ids(page, [new_id, *range(250, 0, -1)])
    expect(summary).to_have_text("All 251 events")
    assert page.problems == []


def test_page_says_all_rows_are_shown_when_there_are_no_older_ones(
    page, server, writer
):
    from playwright.sync_api import expect

    insert_rows(writer, 5, prefix="history")
    page.goto(server.url)
    expect_shown_ids(page, [5, 4, 3, 2, 1])
    expect(page.locator("#events-summary")).to_have_text("All 5 events")
    expect(page.locator("#load-older")).to_be_hidden()
    assert page.problems == []


def test_page_keeps_live_changes_made_during_a_catch_up(page, server, writer):
    from playwright.sync_api import expect

    edited = insert_row(writer, "original")
    doomed = insert_row(writer, "doomed")
    page.goto(server.url)
    expect_shown_ids(page, [doomed, edited])
    hold_a_catch_up(page)  # its answer still has doomed and the original text

    with writer.cursor() as cursor:
        cursor.execute("DELETE FROM events WHERE id = %s", (doomed,))
        cursor.execute("UPDATE events SET event = 'edited' WHERE id = %s", (edited,))
    added = insert_row(writer, "added during the catch-up")
    expect_shown_ids(page, [added, edited])
    page.evaluate(RELEASE_SYNC_ANSWERS)

    marker = insert_row(writer, "after the catch-up")
    expect_shown_ids(page, [marker, added, edited])
    expect(row(page, edited).locator(".event-text")).to_have_text("edited")
    assert page.problems == []


def test_page_restarts_a_catch_up_cut_by_truncate(page, server, writer):
    insert_rows(writer, 3, prefix="before truncate")
    page.goto(server.url)
    expect_shown_ids(page, [3, 2, 1])
    hold_a_catch_up(page)  # its answer still has rows 1 to 3

    with writer.cursor() as cursor:
        cursor.execute("TRUNCATE events")
    expect_shown_ids(page, [])
    after = insert_row(writer, "after truncate")
    expect_shown_ids(page, [after])
    page.evaluate(RELEASE_SYNC_ANSWERS)

    marker = insert_row(writer, "after the catch-up")
    expect_shown_ids(page, [marker, after])
    assert page.problems == []


HELD_ROWS = "() => pgFeed.feed.rows().map((row) => [row.id, row.event])"
RECORD_RESETS = (
    "() => { window.resets = []; pgFeed.feed.on('reset', (m) => resets.push(m)); }"
)
# Replaces the cursor of the page's next `sync {"cursor": ...}` with another one.
REWRITE_NEXT_CURSOR = """(cursor) => {
  const socket = pgFeed.socket;
  const timeout = socket.timeout.bind(socket);
  socket.timeout = (ms) => ({
    emitWithAck: (event, request) => {
      if (event !== "sync" || !request || !("cursor" in request)) {
        return timeout(ms).emitWithAck(event, request);
      }
      socket.timeout = timeout;
      return timeout(ms).emitWithAck(event, { ...request, cursor });
    },
  });
}"""


def table_rows(connection):
    """Every [id, event] in the table, ascending by id."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, event FROM events ORDER BY id")
        return [list(found) for found in cursor.fetchall()]


def wait_for_window_of_table(page, connection, timeout=20.0):
    """Wait until the page's feed has caught up and holds its window of the table.

    Every row it holds is as the table has it, and every table row from the
    lowest id it holds up is held. Returns what it holds.
    """
    last = {}

    def holds_its_window():
        if not page.evaluate("pgFeed.feed.synced"):
            return None
        last["held"], last["table"] = page.evaluate(HELD_ROWS), table_rows(connection)
        if not last["held"]:
            return None
        lowest = last["held"][0][0]
        window = [found for found in last["table"] if found[0] >= lowest]
        return last["held"] if last["held"] == window else None

    try:
        return wait_for(holds_its_window, timeout, message="the table's rows")
    except AssertionError:
        held, table = last.get("held") or [], last.get("table") or []
        lowest = held[0][0] if held else 0
        window = [found for found in table if found[0] >= lowest]
        pytest.fail(
            f"the feed holds {len(held)} rows from id {lowest}: only it holds "
            f"{[found for found in held if found not in window]}, only the table "
            f"{[found for found in window if found not in held]}"
        )


def page_errors(page):
    """The page's script errors (a server that is down logs failed requests too)."""
    return [problem for problem in page.problems if problem.startswith("page error")]


def test_page_resumes_by_cursor_across_a_server_restart(
    page, app_process, writer, database_url
):
    from playwright.sync_api import expect

    insert_rows(writer, 150, prefix="history")  # the page holds the newest 100
    late = psycopg2.connect(database_url)
    try:
        late_id = insert_row(late, "late")  # takes id 151, commits while down
        first = app_process()
        page.goto(first.url)
        status = page.locator("#status")
        expect(status).to_have_attribute("data-state", "connected")
        expect_shown_ids(page, list(range(150, 50, -1)))
        page.evaluate(RECORD_RESETS)

        assert first.stop() == 0
        expect(status).to_have_attribute("data-state", "reconnecting")
        late.commit()
        added = [insert_row(writer, "added while down") for _ in range(2)]
        with writer.cursor() as cursor:
            edit = "UPDATE events SET event = %s WHERE id = %s"
            cursor.execute(edit, ("edited while down", 51))  # the oldest row it holds
            cursor.execute(edit, ("edited while down", 120))
            cursor.execute(edit, ("below its window", 10))
            cursor.execute("DELETE FROM events WHERE id IN (100, 150)")
        app_process(PORT=str(urlsplit(first.url).port))  # back on the same port
        held = wait_for_window_of_table(page, writer)
    finally:
        late.close()

    assert held[0] == [51, "edited while down"]  # resumed where it was, no restart
    assert page.evaluate("resets") == []
    assert {late_id, *added} <= {row_id for row_id, _ in held}
    expect(status).to_have_attribute("data-state", "connected")
    expect_shown_ids(page, [row_id for row_id, _ in reversed(held)])
    expect(row(page, 120).locator(".event-text")).to_have_text("edited while down")
    expect(page.locator("#events-summary")).to_have_text(
        f"Latest {len(held)} events, older ones not loaded"
    )
    new_id = insert_row(writer, "live after the restart")
    expect(row(page, new_id).locator(".event-text")).to_have_text(
        "live after the restart"
    )
    assert page_errors(page) == []


@pytest.mark.parametrize(
    "cursor",
    ["not a cursor", "0123456789abcdef.1.0"],
    ids=["garbage", "another-database"],
)
def test_page_starts_over_when_the_server_cannot_use_its_cursor(
    page, server, writer, cursor
):
    from playwright.sync_api import expect

    edited = insert_row(writer, "original")
    doomed = insert_row(writer, "doomed")
    page.goto(server.url)
    expect_shown_ids(page, [doomed, edited])
    page.evaluate(RECORD_RESETS)
    page.evaluate(REWRITE_NEXT_CURSOR, cursor)
    page.evaluate("pgFeed.socket.disconnect()")
    expect(page.locator("#status")).to_have_attribute("data-state", "offline")
    with writer.cursor() as sql:
        sql.execute("UPDATE events SET event = 'edited' WHERE id = %s", (edited,))
        sql.execute("DELETE FROM events WHERE id = %s", (doomed,))
    added = insert_row(writer, "added while away")
    page.evaluate("pgFeed.socket.connect()")

    expect_shown_ids(page, [added, edited])
    expect(row(page, edited).locator(".event-text")).to_have_text("edited")
    resets = page.evaluate("resets")
    assert len(resets) == 1 and resets[0]
    assert page.evaluate("pgFeed.feed.cursor") not in (None, cursor)
    marker = insert_row(writer, "live after starting over")
    expect_shown_ids(page, [marker, added, edited])
    assert page.problems == []


def test_page_starts_over_when_the_server_comes_back_on_another_database(
    page, app_process, writer, postgres
):
    insert_rows(writer, 3, prefix="first database")
    first = app_process()
    page.goto(first.url)
    expect_shown_ids(page, [3, 2, 1])
    page.evaluate(RECORD_RESETS)
    name = f"pgfeed_test_other_{os.getpid()}"
    other_url = create_database(postgres, name)
    migrate_to_head(other_url)
    other = psycopg2.connect(other_url)
    other.autocommit = True
    try:
        insert_rows(other, 5, prefix="other database")
        assert first.stop() == 0
        second = app_process(database_url=other_url, PORT=str(urlsplit(first.url).port))
        held = wait_for_window_of_table(page, other)
        second.stop()
    finally:
        other.close()
        drop_database(postgres, name)
    assert [text for _, text in held] == [f"other database {n}" for n in range(1, 6)]
    assert len(page.evaluate("resets")) == 1
    assert page_errors(page) == []


def test_page_shows_when_the_feed_is_offline(page, server):
    from playwright.sync_api import expect

    status = page.locator("#status")
    page.goto(server.url)
    expect(status).to_have_attribute("data-state", "connected")

    send_to_pages("status", {"feed": "offline"})
    expect(status).to_have_attribute("data-state", "feed-offline")
    expect(status).to_have_text("feed offline")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#generate")).to_be_enabled()
    feed_offline_colour = status.evaluate("(el) => getComputedStyle(el).color")

    send_to_pages("status", {"feed": "live"})
    expect(status).to_have_attribute("data-state", "connected")
    expect(status).to_have_text("connected")

    page.evaluate("pgFeed.socket.disconnect()")
    expect(status).to_have_attribute("data-state", "offline")
    assert status.evaluate("(el) => getComputedStyle(el).color") != feed_offline_colour
    expect(page.locator("#send")).to_be_disabled()
    assert page.problems == []


def test_page_shows_a_stalled_feed_behind_a_transaction_pool_until_it_recovers(
    pgbouncer, page, serve_app, database_url, writer
):
    from playwright.sync_api import expect

    served = serve_app(
        DATABASE_URL=pgbouncer.url(urlsplit(database_url).path.lstrip("/")),
        FEED_DELIVERY_CHECK_INTERVAL=0.5,
        FEED_DELIVERY_CHECK_TIMEOUT=1,
        FEED_LISTENER_IDLE_CHECK=30,
    )
    status = page.locator("#status")
    page.goto(served.url)
    expect(status).to_have_attribute("data-state", "feed-stalled")
    expect(status).to_have_text("feed stalled")
    expect(page.locator("#feed-reason")).to_contain_text("feed stalled: ")
    expect(page.locator("#feed-reason")).to_contain_text("PgBouncer")
    expect(page.locator("#send")).to_be_enabled()
    stalled_colour = status.evaluate("(el) => getComputedStyle(el).color")

    pgbouncer.restart("session")  # the cause goes away
    expect(status).to_have_attribute("data-state", "connected", timeout=20_000)
    expect(page.locator("#feed-reason")).to_be_hidden()
    assert status.evaluate("(el) => getComputedStyle(el).color") != stalled_colour
    new_id = insert_row(writer, "after the pool went to session mode")
    expect(row(page, new_id).locator(".event-text")).to_have_text(
        "after the pool went to session mode"
    )
    assert page.problems == []


def readme_snippet():
    """The README's HTML snippet for another page, exactly as documented."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return readme.split("```html\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def other_page(browser):
    """A page served from another origin (its own port), as a user's site would."""
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response

    holder = {}
    site = make_server(
        "127.0.0.1",
        0,
        lambda environ, start: Response(holder["html"], content_type="text/html")(
            environ, start
        ),
    )
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield holder, f"http://127.0.0.1:{site.port}"
    site.shutdown()
    thread.join(5)
    site.server_close()


def test_readme_snippet_works_from_an_allowed_origin(
    page, other_page, serve_app, writer
):
    from playwright.sync_api import expect

    holder, origin = other_page
    served = serve_app(FEED_CORS_ORIGINS=origin)
    insert_rows(writer, 2, prefix="before")
    holder["html"] = readme_snippet().replace("http://127.0.0.1:5000", served.url)
    page.goto(origin)
    expect(page.locator("#events li")).to_have_text(["before 2", "before 1"])
    assert table_ids(writer) == [2, 1]  # loading the page inserted nothing
    ack = page.evaluate("() => send('hello from another page')")
    assert ack == {"ok": True, "id": 3}
    insert_row(writer, "live")  # then a live row from psql
    expect(page.locator("#events li")).to_have_text(
        ["live", "hello from another page", "before 2", "before 1"]
    )
    assert [row["event"] for row in page.evaluate("() => feed.rows()")] == [
        "before 1",
        "before 2",
        "hello from another page",
        "live",
    ]
    assert page.problems == []


def snippet_message(page, url):
    """Open url; the first console message the README snippet logs ("feed: ...")."""
    with page.expect_console_message(
        lambda message: message.text.startswith("feed: "), timeout=TIMEOUT_MS
    ) as logged:
        page.goto(url)
    return logged.value.type, logged.value.text


def test_readme_snippet_stops_and_says_why_when_its_origin_is_refused(
    page, other_page, serve_app
):
    holder, origin = other_page
    served = serve_app()  # the other page's origin is not allowed
    holder["html"] = readme_snippet().replace("http://127.0.0.1:5000", served.url)
    assert snippet_message(page, origin) == (
        "error",
        "feed: the server refused this page: is its origin in FEED_CORS_ORIGINS?",
    )
    assert page.evaluate("() => feed.socket.active") is False  # no more retries


def test_readme_snippet_stops_and_says_why_when_its_token_is_refused(
    page, other_page, serve_app
):
    holder, origin = other_page
    served = serve_app(FEED_CORS_ORIGINS=origin, FEED_READ_TOKEN="secret")
    holder["html"] = readme_snippet().replace("http://127.0.0.1:5000", served.url)
    assert snippet_message(page, origin) == (
        "error",
        "feed: a valid token is required to connect",
    )
    assert page.evaluate("() => feed.socket.active") is False


def test_readme_snippet_keeps_retrying_while_the_server_is_down(
    page, other_page, serve_app
):
    holder, origin = other_page
    served = serve_app(FEED_CORS_ORIGINS=origin)  # serves the client scripts only
    with socket.create_server(("127.0.0.1", 0)) as unused:
        down_url = f"http://127.0.0.1:{unused.getsockname()[1]}"  # closed after
    snippet = readme_snippet().replace(
        'url: "http://127.0.0.1:5000"', f'url: "{down_url}"'
    )
    holder["html"] = snippet.replace("http://127.0.0.1:5000", served.url)
    assert snippet_message(page, origin) == (
        "warning",
        "feed: xhr poll error, retrying",
    )
    assert page.evaluate("() => feed.socket.active") is True


def test_page_shows_the_feed_offline_while_the_database_is_down_then_recovers(
    page, faulty_postgres, app_process
):
    from playwright.sync_api import expect

    faulty_postgres.stop()
    served = app_process(
        database_url=faulty_postgres.url,
        FEED_LISTENER_IDLE_CHECK="1",
        FEED_LISTENER_TIMEOUT="1",
    )
    page.goto(served.url)
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "feed-offline")
    page.fill("#event-input", "while the database is down")
    page.press("#event-input", "Enter")
    expect(page.locator("#send-error")).to_contain_text("database is unavailable")

    faulty_postgres.start()
    expect(status).to_have_attribute("data-state", "connected", timeout=20_000)
    new_id = insert_row_at(faulty_postgres, "after the database came back")
    expect(row(page, new_id).locator(".event-text")).to_have_text(
        "after the database came back"
    )


def insert_row_at(database, text):
    connection = psycopg2.connect(database.url)
    connection.autocommit = True
    try:
        return insert_row(connection, text)
    finally:
        connection.close()


HOSTILE_TEXTS = [
    "<script>alert('script')</script>",
    "<img src=x onerror=alert('img')>",
    "javascript:alert('link')",
    '<a href="javascript:alert(1)">click</a>',
    "<svg onload=alert('svg')>",
    "<style>body{display:none}</style>",
]


def test_page_renders_hostile_text_literally_under_its_csp(page, server, writer):
    from playwright.sync_api import expect

    page.add_init_script(
        "window.cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (event) => window.cspViolations.push(event.violatedDirective));"
    )
    response = page.goto(server.url)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    ids = [insert_row(writer, text) for text in HOSTILE_TEXTS]
    for row_id, text in zip(ids, HOSTILE_TEXTS, strict=True):
        expect(row(page, row_id).locator(".event-text")).to_have_text(text)
    page.fill("#event-input", HOSTILE_TEXTS[0])
    page.press("#event-input", "Enter")
    expect(page.locator("#events li.event")).to_have_count(len(HOSTILE_TEXTS) + 1)
    assert (
        page.locator("#events script, #events img, #events a, #events svg").count() == 0
    )
    assert page.evaluate("window.cspViolations") == []
    assert page.locator("body").is_visible()
    assert page.problems == []


def test_page_passes_a_token_from_its_url_fragment(browser, serve_app):
    from playwright.sync_api import expect

    served = serve_app(FEED_READ_TOKEN="page-read-token")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(served.url)
        expect(page.locator("#status")).to_have_attribute("data-state", "offline")
        expect(page.locator("#send-error")).to_contain_text("a valid token is required")
        page.goto(served.url + "/#token=page-read-token")
        page.reload()
        expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    finally:
        context.close()
