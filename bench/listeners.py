"""How LISTEN/NOTIFY scales with listening processes: `python -m bench.listeners`.

For 1, 4, 16 and 32 listening processes (each one psycopg2 LISTEN connection, as
each pg-feed process holds), 1 and 4 writers INSERT single-row transactions into
the events table (its trigger NOTIFYs) for a few seconds. Reported: commits per
second, and commit-to-receive latency over every listener. Every listener must
receive every row.
"""

import argparse
import json
import logging
import multiprocessing
import select
import statistics
import time

import psycopg2

from bench.database import benchmark_database

STOP = '{"probe": "stop"}'


def listen(url, ready, results):
    """One listening process: stamp every notification until the stop probe."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    connection.cursor().execute("LISTEN events")
    ready.release()
    received = {}
    while True:
        select.select([connection], [], [], 5)
        connection.poll()
        now = time.monotonic()
        while connection.notifies:
            payload = connection.notifies.pop(0).payload
            if payload == STOP:
                results.put(received)
                return
            received[json.loads(payload)["id"]] = now


def write(url, seconds, results):
    """One writer: single-row transactions for `seconds`; commit times by id."""
    connection = psycopg2.connect(url)
    cursor = connection.cursor()
    committed = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        cursor.execute("INSERT INTO events (event) VALUES ('scale') RETURNING id")
        (row_id,) = cursor.fetchone()
        connection.commit()
        committed[row_id] = time.monotonic()
    results.put(committed)


def measure(url, listeners, writers, seconds):
    """One combination: commits/s, latency p50/p99/max in ms, complete or not."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Semaphore(0), context.Queue()
    readers = [
        context.Process(target=listen, args=(url, ready, results))
        for _ in range(listeners)
    ]
    for process in readers:
        process.start()
    for _ in readers:
        ready.acquire()
    writer_results = context.Queue()
    writing = [
        context.Process(target=write, args=(url, seconds, writer_results))
        for _ in range(writers)
    ]
    for process in writing:
        process.start()
    committed = {}
    for _ in writing:
        committed.update(writer_results.get())
    stop = psycopg2.connect(url)
    stop.autocommit = True
    stop.cursor().execute("SELECT pg_notify('events', %s)", (STOP,))
    received = [results.get(timeout=60) for _ in readers]
    for process in readers + writing:
        process.join(10)
    latencies = sorted(
        (got[row_id] - at) * 1000
        for got in received
        for row_id, at in committed.items()
        if row_id in got
    )
    complete = all(set(got) >= set(committed) for got in received)
    return {
        "listeners": listeners,
        "writers": writers,
        "commits_per_s": round(len(committed) / seconds),
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
        "max_ms": round(latencies[-1], 3),
        "complete": complete,
    }


def main():
    """Run every combination and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with benchmark_database() as url:
        for writers in (1, 4):
            for listeners in (1, 4, 16, 32):
                rows.append(measure(url, listeners, writers, arguments.seconds))
    print("| listeners | writers | commits/s | p50 ms | p99 ms | max ms | complete |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            "| {listeners} | {writers} | {commits_per_s} | {p50_ms} | {p99_ms} "
            "| {max_ms} | {complete} |".format(**row)
        )
    return 0 if all(row["complete"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
