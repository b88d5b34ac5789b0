"""What each connection received, and counting it against what the writer committed.

Runs inside each reader process, so only counts, latencies and per-row last
arrival times travel back to the harness.
"""

from array import array


class Receipts:
    """Rows one connection received: arrival times with their ids, and resyncs."""

    def __init__(self):
        self.clear()

    def clear(self):
        """Forget everything received so far."""
        self.batches = []
        self.rows = 0
        self.resyncs = 0

    def add(self, arrived, ids):
        """Record ids that arrived together at time `arrived`."""
        self.batches.append((arrived, ids))
        self.rows += len(ids)


def summarize(connections, expected, want_latencies):
    """Counts and timings of every connection's receipts against `expected`.

    `expected` maps each committed row id to the time its COMMIT returned.
    """
    totals = {"missing": 0, "duplicates": 0, "unexpected": 0}
    latencies = array("d")
    last_arrival = {}
    for connection in connections:
        counts = _check_one(
            connection.receipts, expected, latencies if want_latencies else None
        )
        for name in totals:
            totals[name] += counts[name]
        _merge_last_arrival(last_arrival, counts["last_arrival"])
    return {
        **totals,
        "connections": len(connections),
        "deliveries": sum(c.receipts.rows for c in connections),
        "messages": sum(len(c.receipts.batches) for c in connections),
        "resyncs": sum(c.receipts.resyncs for c in connections),
        "errors": [c.error for c in connections if c.error],
        "latencies": latencies,
        "last_arrival": last_arrival,
    }


def _check_one(receipts, expected, latencies):
    seen = set()
    duplicates = unexpected = 0
    last_arrival = {}
    for arrived, ids in receipts.batches:
        for row_id in ids:
            if row_id in seen:
                duplicates += 1
                continue
            seen.add(row_id)
            committed = expected.get(row_id)
            if committed is None:
                unexpected += 1
                continue
            last_arrival[row_id] = arrived
            if latencies is not None:
                latencies.append(arrived - committed)
    return {
        "missing": len(expected) - len(last_arrival),
        "duplicates": duplicates,
        "unexpected": unexpected,
        "last_arrival": last_arrival,
    }


def _merge_last_arrival(into, arrivals):
    for row_id, arrived in arrivals.items():
        if arrived > into.get(row_id, float("-inf")):
            into[row_id] = arrived
