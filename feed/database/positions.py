"""Cursors: where a client is in the stream of changes, and what it has not seen.

A position is (xid, seq): the writing transaction's xid8 and a sequence value
(migration 0003). Only positions below the snapshot's xmin are final: nothing
can commit there later. A cursor is the last final position a client was given
(or a watermark: everything below it); changes_after() returns what follows
it, in position order, each row as it is now with its version. docs/RESUME.md
has the argument.
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC

from . import queries

_CURSOR = re.compile(r"^(?P<epoch>[0-9a-f]{16})\.(?P<xid>\d{1,20})\.(?P<seq>\d{1,19})$")
MAX_SEQ = 2**63 - 1


class CursorReset(ValueError):
    """The cursor cannot be resumed from: the client must start over."""


@dataclass(frozen=True, order=True)
class Position:
    """A point in the stream: every change at or before it is accounted for."""

    xid: int
    seq: int

    def cursor(self, epoch):
        """The opaque cursor text for clients."""
        return f"{epoch}.{self.xid}.{self.seq}"


def epoch(session):
    """This database's epoch: its migration id, cluster and database, hashed."""
    parts = "/".join(queries.epoch_parts(session))
    return hashlib.sha256(parts.encode()).hexdigest()[:16]


def parse(cursor, current_epoch):
    """The Position of a cursor, or CursorReset saying why it cannot be used."""
    match = _CURSOR.match(cursor) if isinstance(cursor, str) else None
    if match is None:
        raise CursorReset("the cursor is not one this feed gave out")
    if match["epoch"] != current_epoch:
        raise CursorReset(
            "the cursor is from another database (or one made again): start over"
        )
    position = Position(int(match["xid"]), int(match["seq"]))
    if position.seq > MAX_SEQ or position.xid >= 2**64:
        raise CursorReset("the cursor is not one this feed gave out")
    return position


@dataclass
class Changes:
    """One page of changes after a position, and where the next page starts."""

    rows: list
    more: bool
    next_position: Position


def changes_after(session, position, limit):
    """Up to `limit` changes after `position` that are final, and what follows.

    Each row: {"id", "op", "event", "created_at", "version"}; op INSERT for a row
    as it is now (inserted or updated since), DELETE, or TRUNCATE (id None).
    """
    watermark, found = queries.changes_since(
        session, position.xid, position.seq, limit + 1
    )
    page, more = found[:limit], len(found) > limit
    if more:
        last = page[-1]
        next_position = Position(last[0], last[1])
    else:
        next_position = max(position, Position(watermark, 0))
    return Changes([_row(change) for change in page], more, next_position)


def _row(change):
    _xid, seq, op, row_id, event, created_at = change
    return {
        "id": row_id,
        "op": "INSERT" if op == "CHANGE" else op,
        "event": event,
        "created_at": None
        if created_at is None
        else created_at.astimezone(UTC).isoformat(),
        "version": seq,
    }
