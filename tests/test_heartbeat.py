"""Engine.IO's heartbeat as FEED_PING_INTERVAL and FEED_PING_TIMEOUT set it: a
client that stops answering pings is closed, and the others stay."""

import requests

from support.database import insert_row
from support.waiting import wait_for

FAST_HEARTBEAT = {"FEED_PING_INTERVAL": "1", "FEED_PING_TIMEOUT": "1"}


def _clients(url):
    return requests.get(f"{url}/healthz", timeout=5).json()["clients"]


def _abandoned_polling_session(url):
    """Open a long-polling session, join /events, then never poll again."""
    base = f"{url}/socket.io/?EIO=4&transport=polling"
    opened = requests.get(base, timeout=5)
    sid = opened.text.split('"sid":"', 1)[1].split('"', 1)[0]
    joined = requests.post(f"{base}&sid={sid}", data="40/events,", timeout=5)
    assert joined.status_code == 200
    assert "40/events," in requests.get(f"{base}&sid={sid}", timeout=5).text
    return sid


def test_a_client_that_stops_answering_pings_is_closed_and_others_stay(
    app_process, sio_client, writer, mode
):
    served = app_process(mode, **FAST_HEARTBEAT)
    healthy = sio_client(served.url)
    _abandoned_polling_session(served.url)
    wait_for(lambda: _clients(served.url) == 2, message="both clients joined")
    # Pinged after 1 s, unanswered after 1 s more: python-engineio's client
    # monitor closes it (nothing else would: its writer times out only for a
    # WebSocket).
    wait_for(
        lambda: _clients(served.url) == 1,
        timeout=10,
        message="the silent session closed",
    )
    # The healthy client answered every ping meanwhile and still gets rows.
    row = insert_row(writer, "after the sweep")
    wait_for(lambda: row in healthy.ids(), message="the row on the healthy client")
    assert healthy.ids() == [row]
    assert "Traceback" not in "".join(served.output)
