"""The delivery check alone: a real listener and the app's pool on a real PostgreSQL."""

import pytest

from feed import create_app
from feed.database.listener import Listener
from feed.extensions import db
from feed.service.delivery_check import NOT_SENT, DeliveryCheck
from support.waiting import wait_for

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


class Results:
    """An on_result callback that keeps (result, previous) pairs."""

    def __init__(self):
        self.calls = []

    def __call__(self, result, previous):
        self.calls.append((result, previous))


@pytest.fixture
def make_check(database_url):
    """Factory: make_check(listen_on=url, send_to=url) -> (check, results).

    The listener LISTENs through listen_on, the probe goes through the pool of
    an app on send_to; both default to the test database. Nothing is started.
    """
    made = []

    def make(listen_on=database_url, send_to=database_url, timeout=1.0):
        listener = Listener(listen_on, "events", on_batch=lambda batch: None)
        assert listener.start(timeout=10)
        app = create_app({"DATABASE_URL": send_to, "TESTING": True})
        results = Results()
        check = DeliveryCheck(app, listener, "events", 60, timeout, results)
        made.append((check, listener, app))
        return check, results

    yield make
    for check, listener, app in made:
        check.stop()
        listener.stop()
        with app.app_context():
            db.engine.dispose()


def test_a_probe_through_the_pool_comes_back_through_the_listener(make_check):
    check, results = make_check()
    assert check.verdict() == (None, None)
    result = check.probe()
    assert result.delivering is True and result.seconds < 1
    assert check.verdict() == (True, None)
    assert results.calls == [(result, None)]
    status = check.status()
    assert status["state"] == "delivering" and status["failed_probes"] == 0
    assert status["last_ok_at"] is not None and status["last_failure"] is None


def test_a_probe_the_listener_never_hears_is_a_stall_naming_the_cause(
    make_check, postgres
):
    # Listening on another database, as through a transaction-mode pooler:
    # LISTEN succeeds and the app's NOTIFY never reaches it.
    check, results = make_check(listen_on=postgres, timeout=0.3)
    result = check.probe()
    assert result.delivering is False
    assert "PgBouncer" in result.reason and "LISTENER_DATABASE_URL" in result.reason
    assert check.verdict() == (False, result.reason)
    check.probe()
    assert [previous for _result, previous in results.calls] == [None, False]
    status = check.status()
    assert status["state"] == "stalled" and status["failed_probes"] == 2
    assert status["last_failure"]["reason"] == result.reason
    assert check.listener._probes == {}  # a stalled feed does not pile up probes


def test_a_probe_that_cannot_be_sent_is_a_stall_with_the_error_kept_for_the_log(
    make_check,
):
    check, _results = make_check(send_to=UNREACHABLE)
    result = check.probe()
    assert result.delivering is False and result.reason == NOT_SENT
    assert "127.0.0.1" in result.detail  # the database's own words, for the log


def test_a_reconnect_is_unconfirmed_until_a_probe_sent_at_once(make_check):
    check, results = make_check()  # probes every 60 s
    check.start()  # the first at once
    wait_for(lambda: check.verdict() == (True, None), message="the first verdict")
    check.listening_again()
    assert check.status()["state"] == "unconfirmed"
    wait_for(lambda: len(results.calls) == 2, message="a probe well before 60 s")
    assert check.verdict() == (True, None)
    assert results.calls[-1][1] is True  # previous: not reset by the reconnect
