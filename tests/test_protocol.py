"""What the /events protocol accepts and refuses, case by case."""

import pytest

from feed.clients import protocol
from feed.database import positions


@pytest.mark.parametrize(
    "text", ["hello", "x" * 4096, "🎉 emoji", 'it\'s "quoted" \\ $$', "  padded  "]
)
def test_event_text_accepts_valid_text_unchanged(text):
    assert protocol.event_text((text,), max_chars=4096) == text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1,), "event must be a string, not a number"),
        ((None,), "event must be a string, not null"),
        ((b"raw",), "event must be a string, not binary data"),
        ((["x"],), "event must be a string, not an array"),
        (("",), "event text is empty"),
        (("x" * 11,), "event text is too long: 11 characters, the limit is 10"),
        (("a\x00",), "event text contains a NUL character, which is not allowed"),
        (("\udfff",), "unpaired surrogate"),
        ((), "event takes exactly one argument"),
    ],
)
def test_event_text_refusals_say_why(args, message):
    with pytest.raises(protocol.InputError, match=message):
        protocol.event_text(args, max_chars=10)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (({"after": None},), protocol.SyncRequest(100)),
        (({},), protocol.SyncRequest(100)),
        ((None,), protocol.SyncRequest(100)),
        (({"after": 0, "limit": 1},), protocol.SyncRequest(1, after=0)),
        (
            ({"after": 2**63 - 1, "limit": 1000},),
            protocol.SyncRequest(1000, after=2**63 - 1),
        ),
        (({"before": 50},), protocol.SyncRequest(100, before=50)),
        (({"cursor": "c", "limit": 5},), protocol.SyncRequest(5, cursor="c")),
    ],
)
def test_sync_request_accepts(args, expected):
    assert protocol.sync_request(args, default_limit=100, max_limit=1000) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (({"after": 1, "cursor": "c"},), "one of 'after', 'before' or 'cursor'"),
        (({"before": -1},), "'before' must be null or a whole number"),
        (({"since": 1},), "does not know the field"),
    ],
)
def test_sync_request_refusals_say_why(args, message):
    with pytest.raises(protocol.InputError, match=message):
        protocol.sync_request(args, default_limit=100, max_limit=1000)


def test_wire_row_for_truncate_has_null_fields_and_its_version():
    row = positions.wire_row({"table": "events", "op": "TRUNCATE", "version": 9})
    assert row == {
        "table": "events",
        "id": None,
        "op": "TRUNCATE",
        "event": None,
        "created_at": None,
        "version": 9,
    }


def test_wire_row_for_insert_keeps_only_the_contract_fields():
    notification = {
        "table": "events",
        "op": "INSERT",
        "id": 7,
        "row": {"id": 7, "event": "x", "created_at": "t", "extra": 1, "feed_seq": 4},
    }
    assert positions.wire_row(notification) == {
        "table": "events",
        "id": 7,
        "op": "INSERT",
        "event": "x",
        "created_at": "t",
        "version": 4,
    }


def test_wire_row_for_delete_takes_the_removal_version_not_the_rows():
    notification = {
        "table": "events",
        "op": "DELETE",
        "id": 7,
        "version": 12,
        "row": {"id": 7, "event": "x", "created_at": "t", "feed_seq": 4},
    }
    assert positions.wire_row(notification)["version"] == 12


def live_row(op, row_id, version):
    return {"table": "events", "id": row_id, "op": op, "event": None,
            "created_at": None, "version": version}  # fmt: skip


def test_the_live_stream_sends_each_version_once_and_never_an_older_one():
    reader = positions.LiveReader(["events"])
    first = reader.live([live_row("INSERT", 1, 5), live_row("UPDATE", 1, 6)])
    assert [row["version"] for row in first] == [5, 6]
    again = reader.live([live_row("UPDATE", 1, 6), live_row("INSERT", 1, 5)])
    assert again == []
    assert reader.live([live_row("DELETE", 1, 7)])[0]["op"] == "DELETE"
    assert reader.live([live_row("UPDATE", 1, 6)]) == []


def test_the_live_stream_drops_rows_older_than_a_truncate_it_sent():
    reader = positions.LiveReader(["events"])
    assert len(reader.live([live_row("TRUNCATE", None, 10)])) == 1
    assert reader.live([live_row("INSERT", 2, 9), live_row("TRUNCATE", None, 10)]) == []
    assert [row["id"] for row in reader.live([live_row("INSERT", 3, 11)])] == [3]
