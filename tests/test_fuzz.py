"""Property-based fuzzing of `event` and `sync` over a real Socket.IO connection."""

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feed.clients import protocol
from support.waiting import wait_for

HUGE = st.integers(min_value=-(10**40), max_value=10**40)
JSON = st.recursive(
    st.none() | st.booleans() | HUGE | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ANY_CHARACTER = st.characters(blacklist_categories=())  # surrogates, NUL, controls
NASTY_TEXT = st.one_of(
    st.text(ANY_CHARACTER, max_size=50),
    st.sampled_from(
        [
            "\x00",
            "a\x00b",
            "\ud800",
            "\udfff tail",
            "\u202eright-to-left\u202c",
            "\u200f\u200e\u2066marks\u2069",
            "a" + "\u0301" * 10_000,  # 10,001 characters: over the limit
            "a" + "\u0301" * 4_095,  # exactly 4096 characters
            "🎉" * 4096,
            " \t\n ",
        ]
    ),
)
EVENT_ARGS = st.one_of(
    st.tuples(NASTY_TEXT),
    st.tuples(JSON),
    st.lists(JSON, max_size=3).map(tuple),
)
SYNC_ARGS = st.one_of(
    st.tuples(
        st.fixed_dictionaries(
            {},
            optional={
                "after": JSON | HUGE,
                "before": JSON | HUGE,
                "cursor": JSON | HUGE,
                "limit": JSON | HUGE,
            },
        )
    ),
    st.lists(JSON, max_size=3).map(tuple),
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def well_formed_refusal(ack):
    return (
        set(ack) == {"ok", "error"}
        and ack["ok"] is False
        and isinstance(ack["error"], str)
        and 0 < len(ack["error"]) < 300
        and "Traceback" not in ack["error"]
    )


def test_fuzz_event_and_sync(serve_app, sio_client, writer):
    served = serve_app(FEED_EVENT_RATE=10_000, FEED_EVENT_BURST=10_000)
    fuzzer, bystander = sio_client(served.url), sio_client(served.url)
    accepted = []

    @FUZZ
    @given(args=EVENT_ARGS)
    def fuzz_event(args):
        ack = fuzzer.call("event", *args)
        if ack.get("ok") is True:
            assert set(ack) == {"ok", "id"} and isinstance(ack["id"], int)
            accepted.append((ack["id"], args[0]))
        else:
            assert well_formed_refusal(ack), ack

    @FUZZ
    @given(args=SYNC_ARGS)
    def fuzz_sync(args):
        answer = fuzzer.call("sync", *args)
        if answer.get("ok") is True and answer.get("reset"):
            assert set(answer) - {"reason"} == {"ok", "reset", "message", "feed"}
            assert 0 < len(answer["message"]) < 300
        elif answer.get("ok") is True:
            assert set(answer) - {"reason"} == {
                "ok",
                "events",
                "more",
                "cursor",
                "feed",
            }
            assert isinstance(answer["events"], list)
            assert isinstance(answer["cursor"], str)
        else:
            assert well_formed_refusal(answer), answer

    fuzz_event()
    fuzz_sync()

    with writer.cursor() as cursor:
        cursor.execute("SELECT id, event FROM events ORDER BY id")
        stored = cursor.fetchall()
    assert stored == sorted(accepted)
    for _row_id, text in stored:
        assert protocol.event_text((text,), max_chars=4096) == text
    ids = [row_id for row_id, _text in stored]
    wait_for(lambda: bystander.ids() == ids, message="the bystander got every row")
    assert requests.get(f"{served.url}/healthz", timeout=5).status_code == 200
