"""Cursors: where a client is in the stream of changes, and what it has not seen.

A position is (xid, seq): the writing transaction's xid8 and a sequence value
(migration 0003). Only positions below the snapshot's xmin are final: nothing
can commit there later. A cursor is the last final position a client was given
(or a watermark: everything below it); changes_after() returns what follows
it, in position order, each row as it is now with its version. docs/RESUME.md
has the argument.
"""

import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

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


CHANGES = ("INSERT", "UPDATE")  # a row's latest change, read from the row
SETTLING_MAX = 10_000  # changes a last page may add past a long-open transaction


def changes_after(session, position, limit):
    """Up to `limit` changes after `position` that are final, and what follows.

    Each row: {"id", "op", "event", "created_at", "version"}; op INSERT or UPDATE
    for a row as it is now (its latest change), DELETE, or TRUNCATE (id None).
    The last page (more false) also carries the changes that committed after
    the watermark (an older transaction is still open): a client that came
    after they went out live has them, while its cursor stays at the watermark.
    CursorReset when the removal log was trimmed past `position`, or when more
    than SETTLING_MAX changes wait behind an open transaction.
    """
    watermark, trimmed, found = queries.changes_since(
        session, position.xid, position.seq, limit + 1
    )
    if trimmed:
        raise CursorReset("the feed no longer keeps changes that far back")
    page, more = found[:limit], len(found) > limit
    if more:
        last = page[-1]
        return Changes([_row(c) for c in page], True, Position(last[0], last[1]))
    next_position = max(position, Position(watermark, 0))
    settling = queries.settling_since(
        session, watermark, next_position.xid, next_position.seq, SETTLING_MAX + 1
    )
    if len(settling) > SETTLING_MAX:
        raise CursorReset(
            f"more than {SETTLING_MAX} changes are waiting behind a long-open "
            "transaction"
        )
    return Changes([_row(c) for c in page + settling], False, next_position)


def _row(change):
    _xid, seq, op, row_id, event, created_at = change
    return {
        "id": row_id,
        "op": op,
        "event": event,
        "created_at": None
        if created_at is None
        else created_at.astimezone(UTC).isoformat(),
        "version": seq,
    }


class LiveReader:
    """The live stream's bookkeeping: versions on every row, nothing twice, a
    confirmed cursor, and what NOTIFY missed (docs/RESUME.md, "Live").

    Notifications are the live stream: live() turns each into a wire row with
    its version and drops one already sent. confirm(), run by the listener
    every confirm interval while changes flow (and on its idle check), reads
    from the log what became visible since its previous read: the changes of
    the read before that which were not sent by now are sent from the log
    (NOTIFY lost them, or they came while the listener was away), and only
    then does the cursor move to that read's watermark. So every change below
    the cursor went out before the cursor did; and a live row never waits on
    the watermark.
    """

    def __init__(self, tables, on_recovered=None):
        self.tables = tuple(tables)
        self.on_recovered = on_recovered or (lambda count: None)
        self.epoch = None
        self.snapshot = None  # the previous read's snapshot
        self.cursor = None  # the confirmed cursor, text
        self.candidates = []  # the previous read's changes: (table, id, op, seq)
        self.uncovered = False  # rows went out since the cursor last went out
        self.sent_recently = False  # rows went out since the last confirm
        # Versions sent, this round and last (a version names one change: the
        # sequence is shared), and for rows sent from the log, the version sent
        # per (table, id), so an older notification of them arriving late is
        # dropped. Rounds end at each confirm.
        self._sent = [set(), set()]
        self._from_log = [{}, {}]
        self._truncated = {}  # {table: version} of the last TRUNCATE sent
        self.mode = "notify"  # the database's wake-up mode, as last read
        # Rows sent so far have xids below this: a cursor below it may lie
        # before some of them, and goes out when it moves (poll mode).
        self._cover_to = 0
        self._next_round = 0.0

    def start(self, query):
        """On every (re)connect: note the epoch; the first time, where to begin.

        A changed epoch (another database behind the same address) starts
        again from now.
        """
        current = epoch_of(query(queries.EPOCH_PARTS)[0])
        self.mode = query(queries.FEED_MODE)[0][0]  # 0006: fails before it
        changed = current != self.epoch
        self.epoch = current
        if self.snapshot is None or changed:
            self.snapshot = query(queries.CURRENT_SNAPSHOT)[0][0]
            self.candidates = []
            self.cursor = Position(_xmin(self.snapshot), 0).cursor(self.epoch)

    def without_log(self):
        """No feed schema on this connection: rows go out, no cursor, no checks."""
        self.cursor = None
        self.candidates = []
        self.snapshot = None
        self.epoch = None
        self.mode = "notify"

    def live(self, rows):
        """The wire rows not sent yet, in the order given; remembers them."""
        fresh = [row for row in rows if self._is_new(row)]
        if fresh:
            self.uncovered = self.sent_recently = True
        return fresh

    def busy(self):
        """True while a confirm may send something or move the cursor past rows."""
        return self.snapshot is not None and (self.uncovered or bool(self.candidates))

    def confirm(self, query, read_rows):
        """(rows, announce): what NOTIFY missed, and whether the cursor, moved
        past rows that went out, should go out even with no rows.

        read_rows(table, ids) -> {id: row as JSON}: the current rows (a row gone
        since was deleted, and its DELETE comes by a later read).
        """
        previous = self.snapshot
        if previous is None:  # without_log()
            return [], False
        result = query(self._statement, queries.since_parameters(previous, self.tables))
        missed = self._missed(self.candidates, read_rows)
        # Kept until the next confirm: only what no notification brought yet.
        self.candidates = [
            (table, row_id, op, seq)
            for _s, _m, table, seq, op, row_id, _x, _r in result
            if seq is not None and not self._was_sent(table, row_id, op, seq)
        ]
        self.snapshot, self.mode = result[0][0], result[0][1]
        if missed or self.sent_recently:
            self._cover_to = max(self._cover_to, _xmax(self.snapshot))
        self._sent = [set(), self._sent[0]]
        self._from_log = [{}, self._from_log[0]]
        cursor = Position(_xmin(previous), 0).cursor(self.epoch)
        moved, self.cursor = cursor != self.cursor, cursor
        announce = moved and (self.uncovered or bool(missed))
        if announce:  # rows sent since `previous` may still lie beyond it
            self.uncovered = self.sent_recently
        self.sent_recently = False
        return missed, announce

    def poll(self, query, read_rows, now, round_seconds):
        """(rows, announce) of poll mode: every change that became visible since
        the previous read, sent now, and the cursor moved to this read's
        watermark, which they carry.

        Nothing is waited on: a read's snapshot sees every transaction that
        committed before it, and the next read starts from that snapshot, so
        each change is in exactly one read (docs/RESUME.md, "Poll mode"); one
        still open is in the read after it commits. Changes a notify-mode read
        found and no notification brought (just after a switch) go out too.
        The versions sent are remembered for round_seconds (rounds end at
        `now` past that), so that notifications crossing a switch of modes
        are dropped, not sent twice.
        """
        previous = self.snapshot
        if previous is None:  # without_log()
            return [], False
        result = query(
            self._poll_statement, queries.since_parameters(previous, self.tables)
        )
        rows = self._missed(self.candidates, read_rows) if self.candidates else []
        self.candidates = []
        for _s, _m, table, seq, op, row_id, _xid, data in result:
            if seq is None:
                continue
            if op in CHANGES:
                row = row_from_json(table, op, data)
            else:
                row = removal_row(table, op, row_id, seq)
            if self._is_new(row):
                rows.append(row)
                self._read_from_log(table, row_id, row)
        self.snapshot, self.mode = result[0][0], result[0][1]
        if rows or self.sent_recently:
            self._cover_to = max(self._cover_to, _xmax(self.snapshot))
        self.sent_recently = False
        previous_xid = None if self.cursor is None else parse_xid(self.cursor)
        self.cursor = Position(_xmin(self.snapshot), 0).cursor(self.epoch)
        moved = previous_xid != _xmin(self.snapshot)
        announce = not rows and moved and (previous_xid or 0) < self._cover_to
        self.uncovered = _xmin(self.snapshot) < self._cover_to
        if now >= self._next_round:
            self._next_round = now + round_seconds
            self._sent = [set(), self._sent[0]]
            self._from_log = [{}, self._from_log[0]]
        return rows, announce

    def _missed(self, candidates, read_rows):
        unsent = [c for c in candidates if not self._was_sent(*c)]
        wanted = {}
        for table, row_id, op, _seq in unsent:
            if op in CHANGES:
                wanted.setdefault(table, set()).add(row_id)
        found = {table: read_rows(table, ids) for table, ids in wanted.items()}
        recovered = []
        for table, row_id, op, seq in unsent:
            if op not in CHANGES:
                row = removal_row(table, op, row_id, seq)
            elif row_id in found[table]:
                row = row_from_json(table, op, found[table][row_id])
            else:
                continue  # deleted since: its DELETE comes by a later read
            if self._is_new(row):
                recovered.append(row)
                self._sent[0].add(seq)
                self._read_from_log(table, row_id, row)
        if recovered:
            self.on_recovered(len(recovered))
        return recovered

    def _read_from_log(self, table, row_id, row):
        """Note the version of a row sent as read from the log, so an older
        notification of that row, arriving late, is dropped."""
        if row_id is not None:
            self._from_log[0][(table, row_id)] = row["version"]

    def _was_sent(self, table, row_id, op, seq):
        if op == "TRUNCATE":
            return self._truncated.get(table, -1) >= seq
        return self._already_sent(table, row_id, seq)

    def _already_sent(self, table, row_id, version):
        if version in self._sent[0] or version in self._sent[1]:
            return True
        key = (table, row_id)
        newest = max(self._from_log[0].get(key, -1), self._from_log[1].get(key, -1))
        return newest >= version

    def _is_new(self, row):
        table, version = row.pop("table"), row["version"]
        if version is None:  # a schema without positions: nothing to compare
            return True
        if row["op"] == "TRUNCATE":
            if self._truncated.get(table, -1) >= version:
                return False
            self._truncated[table] = version
            return True
        if version < self._truncated.get(table, -1):
            return False
        if self._already_sent(table, row["id"], version):
            return False
        self._sent[0].add(version)
        return True

    @functools.cached_property
    def _statement(self):
        return queries.visible_since(self.tables)

    @functools.cached_property
    def _poll_statement(self):
        return queries.visible_since(self.tables, with_rows=True)


def wire_row(notification):
    """The wire row (with "table", which live() takes off) of a notification."""
    op, row = notification["op"], notification.get("row") or {}
    version = notification.get("version", row.get("feed_seq"))
    if op == "TRUNCATE":
        return removal_row(notification["table"], op, None, version)
    return {
        "table": notification["table"],
        "id": notification.get("id"),
        "op": op,
        "event": row.get("event"),
        "created_at": utc_text(row.get("created_at")),
        "version": version,
    }


def row_from_json(table, op, row):
    """The wire row of a row read as JSON (to_json of the table's row)."""
    return {
        "table": table,
        "id": row["id"],
        "op": op,
        "event": row.get("event"),
        "created_at": utc_text(row.get("created_at")),
        "version": row.get("feed_seq"),
    }


@functools.lru_cache(maxsize=256)
def _utc_text(timestamp):
    try:
        parsed = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if parsed.tzinfo is None:  # a timestamp without time zone: no UTC to give
        return timestamp
    return parsed.astimezone(UTC).isoformat()


def utc_text(timestamp):
    """A JSON timestamp (to_json's, in the session's time zone, trailing zeros
    of the fraction dropped) as the wire writes every time: UTC, isoformat,
    the same text a sync answer gives. Anything else is passed on as it is."""
    if not isinstance(timestamp, str):
        return timestamp
    # Cached: the rows of one transaction share its now(), so a large
    # transaction parses one timestamp, not one per row.
    return _utc_text(timestamp)


def removal_row(table, op, row_id, seq):
    """The wire row of a DELETE or TRUNCATE."""
    return {
        "table": table,
        "id": row_id,
        "op": op,
        "event": None,
        "created_at": None,
        "version": seq,
    }


def _xmin(snapshot_text):
    return int(snapshot_text.split(":", 1)[0])


def parse_xid(cursor):
    """The xid part of a cursor this feed made."""
    return int(cursor.split(".")[1])


def _xmax(snapshot_text):
    return int(snapshot_text.split(":", 2)[1])


def epoch(session):
    """This database's epoch: its migration id, cluster and database, hashed."""
    return epoch_of(queries.epoch_parts(session))


def epoch_of(parts):
    """The epoch of (migration id, cluster system identifier, database oid)."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]
