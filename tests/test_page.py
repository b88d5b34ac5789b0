"""The page in a real browser: Playwright driving Debian's Chromium."""

import os
import threading
from pathlib import Path

import pytest

from conftest import ServedApp, insert_row, insert_rows
from feed import create_app
from feed.realtime import stop_feed

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
def page(browser, server):
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
    browser, other_page, database_url, writer
):
    holder, origin = other_page
    feed_app = create_app({"DATABASE_URL": database_url, "FEED_CORS_ORIGINS": origin})
    served = ServedApp(feed_app).start()
    try:
        insert_rows(writer, 2, prefix="before")
        holder["html"] = readme_snippet().replace("http://127.0.0.1:5000", served.url)
        page = browser.new_page()
        page.goto(origin)
        # history, the snippet's own event, then a live row from psql
        page.wait_for_function("() => seen.size === 3", timeout=TIMEOUT_MS)
        new_id = insert_row(writer, "live")
        page.wait_for_function(f"() => seen.has({new_id})", timeout=TIMEOUT_MS)
        rows = page.evaluate("() => [...seen.values()]")
        texts = [row["event"] for row in sorted(rows, key=lambda row: row["id"])]
        assert texts == ["before 1", "before 2", "hello from another page", "live"]
        page.close()
    finally:
        served.stop()
        stop_feed(feed_app)
