"""The /events wire protocol: checking what clients send, shaping what they get."""

import re
from dataclasses import dataclass

MAX_ID = 2**63 - 1  # bigserial's ceiling


class InputError(ValueError):
    """A client sent something the protocol refuses; the message is for that client."""


def ok(**fields):
    """A successful ack."""
    return {"ok": True, **fields}


def error(message):
    """A refusal ack: ok false and a sentence a person understands."""
    return {"ok": False, "error": message}


def event_text(args, max_chars):
    """The text of an `event` message, or InputError saying what is wrong with it."""
    text = _single_argument(args, "event", "the event text")
    if not isinstance(text, str):
        raise InputError(f"event must be a string, not {_json_type(text)}")
    if not text.strip():
        raise InputError("event text is empty")
    if len(text) > max_chars:
        raise InputError(
            f"event text is too long: {len(text)} characters, the limit is {max_chars}"
        )
    if "\x00" in text:
        raise InputError("event text contains a NUL character, which is not allowed")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            "event text contains an unpaired surrogate, which is not valid Unicode"
        ) from None
    return text


@dataclass(frozen=True)
class SyncRequest:
    """What a `sync` asks for: one of after (None: the newest rows), before or
    cursor, and how many rows a page may hold."""

    limit: int
    after: int | None = None
    before: int | None = None
    cursor: object = None  # as sent: whether it is a valid cursor is checked later


SYNC_FIELDS = ("after", "before", "cursor")


def sync_request(args, default_limit, max_limit):
    """The SyncRequest of a `sync` message, or InputError saying what is wrong."""
    request = _single_argument(args, "sync", '{"after": <id or null>}')
    if request is None:
        request = {}
    if not isinstance(request, dict):
        raise InputError(f"sync takes an object, not {_json_type(request)}")
    unknown = sorted(set(request) - {*SYNC_FIELDS, "limit"})
    if unknown:
        raise InputError(f"sync does not know the field(s) {', '.join(unknown)}")
    asked = [field for field in SYNC_FIELDS if field in request]
    if len(asked) > 1:
        raise InputError("sync takes one of 'after', 'before' or 'cursor', not both")
    limit = request.get("limit", default_limit)
    if not _is_int(limit) or not 1 <= limit <= max_limit:
        raise InputError(f"sync 'limit' must be a whole number from 1 to {max_limit}")
    for field in ("after", "before"):
        value = request.get(field)
        if value is not None and (not _is_int(value) or not 0 <= value <= MAX_ID):
            raise InputError(f"sync '{field}' must be null or a whole number 0 or more")
    if "cursor" in request:
        return SyncRequest(limit, cursor=request["cursor"])
    return SyncRequest(limit, after=request.get("after"), before=request.get("before"))


def _single_argument(args, name, expected):
    if len(args) != 1:
        raise InputError(f"{name} takes exactly one argument: {expected}")
    return args[0]


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, bytes):
        return "binary data"
    return type(value).__name__


# The start of an Engine.IO message carrying a Socket.IO event: "4", the packet
# type (2 event, 5 binary event with "<n>-" attachments), an optional namespace
# ending in ",", an optional ack id, then the JSON array's first string.
_EVENT_HEAD = re.compile(
    r'4(?P<type>[25])(?:\d+-)?(?P<namespace>/[^,]*,)?(?P<ack>\d+)?\[\s*"'
    r'(?P<name>(?:[^"\\]|\\.){1,100})"'
)


def oversize_refusal(head, size, max_chars, max_bytes):
    """(namespace, ack id, event name, refusal) for a message past the size limit.

    head: the message's first characters; size: its whole size in bytes. The ack
    id is None when the sender asked for no answer; None overall when the head
    is not a Socket.IO event.
    """
    match = _EVENT_HEAD.match(head)
    if match is None:
        return None
    name = match["name"]
    if name == "event":
        reason = (
            f"event text is too long: the message was {size} bytes, "
            f"the limit is {max_chars} characters"
        )
    else:
        reason = f"message too large: {size} bytes, the limit is {max_bytes}"
    namespace = (match["namespace"] or "/,")[:-1]
    ack = int(match["ack"]) if match["ack"] else None
    return namespace, ack, name, error(reason)
