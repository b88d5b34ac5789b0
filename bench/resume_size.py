"""(f) The size of a resume answer: `sync {"cursor": c}` after many changes.

A client (python-socketio's own Client, over a WebSocket) takes a cursor from
`sync` and goes away. Then resume_changes changes, each to a different row: half
INSERTs, 30 % UPDATEs and 20 % DELETEs of rows that were there before the
cursor, shuffled, ten to a transaction. The client comes back and pages
`sync {"cursor": c}` until `more` is false, once per page limit asked for.
Measured per limit: pages, rows, the JSON bytes of the answers as the server
sent them, and the time from the first request to the last answer. Every
changed row must come back exactly once, a deleted one as a DELETE.
"""

import contextlib
import json
import logging
import random
import time

import psycopg2
import socketio

from bench.services import start_pg_feed
from bench.workers import BenchError

log = logging.getLogger(__name__)

NAMESPACE = "/events"
CHANGES_PER_TRANSACTION = 10
SHARES = {"INSERT": 0.5, "UPDATE": 0.3, "DELETE": 0.2}
SEED = 11  # the shuffle of the changes, the same every run
SYNC_TIMEOUT = 120.0

INSERT_SEED_ROWS = (
    "INSERT INTO events (event) SELECT 'resume seed ' || i "
    "FROM generate_series(1, %s) AS i RETURNING id"
)
INSERT_ROW = "INSERT INTO events (event) VALUES (%s) RETURNING id"
UPDATE_ROW = "UPDATE events SET event = %s WHERE id = %s"
DELETE_ROW = "DELETE FROM events WHERE id = %s"


def run(settings, database_url):
    """(f): the changes made and one result per page limit; one check per limit."""
    with contextlib.ExitStack() as stack:
        server = start_pg_feed(database_url, "pg-feed")
        stack.callback(server.stop)
        writer = psycopg2.connect(database_url, application_name="pg-feed-bench-resume")
        stack.callback(writer.close)
        plan = _plan(writer, settings.resume_changes)
        cursor = _cursor_now(server.url)
        written = _write(writer, plan)
        results = [_resume(server.url, cursor, n) for n in settings.resume_limits]
        if not server.alive():
            raise BenchError("pg-feed died during (f):\n" + "".join(server.output))
    expected = {row_id: op for op, row_id in plan}
    checks = [_check(result, expected) for result in results]
    for result in results:
        del result["ids"]
    document = {
        "changes": {
            "total": len(plan),
            **{op: sum(1 for o, _ in plan if o == op) for op in SHARES},
            "per_transaction": CHANGES_PER_TRANSACTION,
            "written_s": written,
        },
        "results": results,
    }
    return document, checks


def _plan(writer, changes):
    """[(op, id)], shuffled; the rows to update and delete are made first."""
    counts = {op: round(share * changes) for op, share in SHARES.items()}
    counts["INSERT"] = changes - counts["UPDATE"] - counts["DELETE"]
    with writer, writer.cursor() as cursor:
        cursor.execute(INSERT_SEED_ROWS, (counts["UPDATE"] + counts["DELETE"],))
        existing = [row[0] for row in cursor.fetchall()]
    plan = [("UPDATE", row_id) for row_id in existing[: counts["UPDATE"]]]
    plan += [("DELETE", row_id) for row_id in existing[counts["UPDATE"] :]]
    plan += [("INSERT", None)] * counts["INSERT"]
    random.Random(SEED).shuffle(plan)
    return plan


def _write(writer, plan):
    """Make the planned changes, filling in the new ids; seconds it took."""
    started = time.monotonic()
    for first in range(0, len(plan), CHANGES_PER_TRANSACTION):
        with writer, writer.cursor() as cursor:
            for index in range(first, min(first + CHANGES_PER_TRANSACTION, len(plan))):
                plan[index] = _change(cursor, *plan[index], index)
    return time.monotonic() - started


def _change(cursor, op, row_id, index):
    if op == "INSERT":
        cursor.execute(INSERT_ROW, (f"resume change {index}",))
        return op, cursor.fetchone()[0]
    if op == "UPDATE":
        cursor.execute(UPDATE_ROW, (f"resume change {index}", row_id))
    else:
        cursor.execute(DELETE_ROW, (row_id,))
    return op, row_id


@contextlib.contextmanager
def _client(url):
    client = socketio.Client(reconnection=False)
    # Live rows are not what is measured; events carry (rows, cursor).
    client.on("events", lambda rows, cursor=None: None, namespace=NAMESPACE)
    client.connect(url, namespaces=[NAMESPACE], transports=["websocket"])
    try:
        yield client
    finally:
        client.disconnect()


def _sync(client, request):
    answer = client.call("sync", request, namespace=NAMESPACE, timeout=SYNC_TIMEOUT)
    if not answer.get("ok"):
        raise BenchError(f"sync {request} was refused: {answer}")
    return answer


def _cursor_now(url):
    """The cursor a client holds after `sync {"after": null}`; it then leaves."""
    with _client(url) as client:
        return _sync(client, {"after": None, "limit": 1})["cursor"]


def _resume(url, cursor, limit):
    """`sync {"cursor": c}` pages until more is false: what it took."""
    request = {} if limit is None else {"limit": limit}
    pages, ids, sizes = 0, [], []
    with _client(url) as client:
        started = time.monotonic()
        while True:
            answer = _sync(client, {"cursor": cursor, **request})
            pages += 1
            sizes.append(len(json.dumps(answer, separators=(",", ":")).encode()))
            if answer.get("reset"):
                ids.append(("reset", answer.get("message")))
                break
            ids += [(row["op"], row["id"]) for row in answer["events"]]
            cursor = answer["cursor"]
            if not answer["more"]:
                break
        seconds = time.monotonic() - started
    return {
        "limit": limit,
        "pages": pages,
        "rows": len(ids),
        "json_bytes": sum(sizes),
        "largest_page_bytes": max(sizes),
        "seconds": seconds,
        "ids": ids,
    }


def _check(result, expected):
    """Every changed row back exactly once, a deleted one as a DELETE."""
    seen, duplicates, unexpected, errors = set(), 0, 0, []
    for op, row_id in result["ids"]:
        wanted = expected.get(row_id)
        if op == "reset":
            errors.append(f"reset: {row_id}")
        elif row_id in seen:
            duplicates += 1
        elif wanted is None or (op == "DELETE") != (wanted == "DELETE"):
            unexpected += 1
        seen.add(row_id)
    missing = len(set(expected) - seen)
    return {
        "round": 1,
        "system": "pg-feed",
        "scenario": f"(f) sync by cursor, limit {result['limit'] or 'default'}",
        "connections": 1,
        "rows": len(expected),
        "expected_deliveries": len(expected),
        "deliveries": result["rows"],
        "missing": missing,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "resyncs": 0,
        "errors": errors,
        "ok": missing + duplicates + unexpected == 0 and not errors,
    }
