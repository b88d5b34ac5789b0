"""A randomized, seeded campaign against exact resume (docs/RESUME.md).

Clients of two app instances (one threaded, one gevent) disconnect and
reconnect at random points while writers INSERT, UPDATE and DELETE across the
whole table; meanwhile: transactions that commit late with ids more than 2000
below the newest, UPDATEs and DELETEs of the oldest rows while clients are
away, a TRUNCATE, the instances' listener backends terminated, and the
database switched between wake-up modes (notify, poll) while all serve. At the end
every client holds exactly the table and applied no change twice.

The seed is printed, and in every failure message; FEED_CAMPAIGN_SEED=<n>
runs that seed again, FEED_CAMPAIGN_ROUNDS=<n> a longer campaign.
"""

import os
import random
import threading
from collections import Counter

import psycopg2
import pytest
import requests

from support.waiting import wait_for

QUICK = {
    "FEED_CONFIRM_INTERVAL": "0.2",
    "FEED_LISTENER_IDLE_CHECK": "1",
    "FEED_DELIVERY_CHECK_INTERVAL": "2",
}
ROUNDS = int(os.environ.get("FEED_CAMPAIGN_ROUNDS", 10))
LATE_BY = 2100  # ids committed above a late transaction's row before it commits


@pytest.fixture
def seed():
    chosen = int(os.environ.get("FEED_CAMPAIGN_SEED") or random.randrange(2**32))
    print(f"campaign seed {chosen} (FEED_CAMPAIGN_SEED={chosen} to run it again)")
    return chosen


class Writer(threading.Thread):
    """INSERTs, UPDATEs and DELETEs anywhere in the table until stopped."""

    def __init__(self, url, rng, counts):
        super().__init__(daemon=True)
        self.connection = psycopg2.connect(url)
        self.connection.autocommit = True
        self.rng = rng
        self.counts = counts
        self.stopping = threading.Event()
        self.failure = None

    def run(self):
        try:
            while not self.stopping.is_set():
                self.write_once()
                self.stopping.wait(self.rng.uniform(0, 0.01))  # the load's pace
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc
        finally:
            self.connection.close()

    def write_once(self):
        choice = self.rng.random()
        with self.connection.cursor() as sql:
            if choice < 0.5:
                count = self.rng.randint(1, 3)
                sql.execute(
                    "INSERT INTO events (event) "
                    "SELECT 'w' || md5(random()::text) FROM generate_series(1, %s)",
                    (count,),
                )
                self.counts["INSERT"] += count
                return
            sql.execute("SELECT min(id), max(id) FROM events")
            low, high = sql.fetchone()
            if low is None:
                return
            target = self.rng.randint(low, high)
            if choice < 0.8:
                sql.execute(
                    "UPDATE events SET event = 'u' || md5(random()::text) "
                    "WHERE id = (SELECT id FROM events WHERE id >= %s "
                    "ORDER BY id LIMIT 1)",
                    (target,),
                )
                self.counts["UPDATE"] += sql.rowcount
            else:
                sql.execute(
                    "DELETE FROM events WHERE id = (SELECT id FROM events "
                    "WHERE id >= %s ORDER BY id LIMIT 1)",
                    (target,),
                )
                self.counts["DELETE"] += sql.rowcount

    def stop(self):
        self.stopping.set()
        self.join(10)


class Campaign:
    """The faults and rare changes, each one step of the schedule."""

    def __init__(self, url, rng, instances, clients, counts):
        self.url = url
        self.instances = instances
        self.rng = rng
        self.clients = clients
        self.counts = counts
        self.admin = psycopg2.connect(url)
        self.admin.autocommit = True

    def run(self, action):
        getattr(self, action)()
        self.counts[action] += 1

    def execute(self, statement, params=None):
        with self.admin.cursor() as sql:
            sql.execute(statement, params)
            return sql.fetchall() if sql.description else sql.rowcount

    def late_commit(self):
        """A row that commits after 2100 newer ids, with an old row's UPDATE."""
        late = psycopg2.connect(self.url)
        try:
            with late.cursor() as sql:
                sql.execute("INSERT INTO events (event) VALUES ('late') RETURNING id")
                (late_id,) = sql.fetchone()
                sql.execute(
                    "UPDATE events SET event = 'late edit' "
                    "WHERE id = (SELECT min(id) FROM events)"
                )
            self.execute(
                "INSERT INTO events (event) SELECT 'bulk ' || i "
                "FROM generate_series(1, %s) AS i",
                (LATE_BY,),
            )
            self.counts["INSERT"] += LATE_BY + 1
            newest = self.execute("SELECT max(id) FROM events")[0][0]
            assert newest - late_id >= 2000
            late.commit()
        finally:
            late.close()

    def away_changes(self):
        """Some clients leave; the oldest rows change and go; they come back."""
        away = self.rng.sample(self.clients, self.rng.randint(1, len(self.clients)))
        for feed_client in away:
            feed_client.disconnect()
        oldest = [
            i for (i,) in self.execute("SELECT id FROM events ORDER BY id LIMIT 6")
        ]
        for row_id in oldest[:3]:
            self.execute(
                "UPDATE events SET event = 'old, edited' WHERE id = %s", (row_id,)
            )
        self.counts["UPDATE"] += len(oldest[:3])
        for row_id in oldest[3:]:
            self.execute("DELETE FROM events WHERE id = %s", (row_id,))
        self.counts["DELETE"] += len(oldest[3:])
        self.execute("INSERT INTO events (event) VALUES ('while away')")
        self.counts["INSERT"] += 1
        for feed_client in away:
            feed_client.connect()
        self.counts["client disconnects"] += len(away)

    def bounce_clients(self):
        """One client drops and comes back at a random moment of the writes."""
        feed_client = self.rng.choice(self.clients)
        feed_client.disconnect()
        threading.Event().wait(self.rng.uniform(0.05, 0.5))  # away for a while
        feed_client.connect()
        self.counts["client disconnects"] += 1

    def terminate_listeners(self):
        """Both instances lose their LISTEN connection at once."""
        wait_for(lambda: all(map(listening, self.instances)), 20, "both listening")
        killed = self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'pg-feed-listener' "
            "AND datname = current_database()"
        )
        assert len(killed) == 2, killed
        self.counts["listener backends terminated"] += len(killed)

    def switch_mode(self):
        """The database switched to the other wake-up mode while all serve."""
        (mode,) = self.execute("SELECT mode FROM feed_mode")[0]
        other = "poll" if mode == "notify" else "notify"
        self.execute("SELECT set_config('lock_timeout', '5s', false)")
        self.execute("SELECT feed_set_mode(%s)", (other,))
        self.counts[f"switches to {other}"] += 1

    def truncate(self):
        self.execute("TRUNCATE events")
        self.execute("INSERT INTO events (event) VALUES ('after the truncate')")
        self.counts["INSERT"] += 1

    def table(self):
        return dict(self.execute("SELECT id, event FROM events"))

    def close(self):
        self.admin.close()


def listening(instance):
    body = requests.get(f"{instance.url}/healthz", timeout=5).json()
    return body["listener"]["state"] == "listening"


def changes(counts):
    return counts["INSERT"] + counts["UPDATE"] + counts["DELETE"]


def schedule(rng, rounds):
    """Every kind of step at least once, the TRUNCATE once, the rest at random."""
    steps = [
        "late_commit",
        "away_changes",
        "terminate_listeners",
        "bounce_clients",
        "switch_mode",
    ]
    steps += rng.choices(steps, k=max(0, rounds - len(steps) - 1))
    rng.shuffle(steps)
    steps.insert(rng.randrange(1, len(steps)), "truncate")
    return steps


def test_a_seeded_campaign_leaves_every_client_with_exactly_the_table(
    seed, database_url, app_process, resuming_client, writer
):
    rng = random.Random(seed)
    instances = [app_process("threaded", **QUICK), app_process("gevent", **QUICK)]
    clients = [resuming_client(instances[n % 2].url) for n in range(4)]
    counts = Counter()
    writers = [
        Writer(database_url, random.Random(rng.random()), counts) for _ in range(3)
    ]
    campaign = Campaign(database_url, rng, instances, clients, counts)
    steps = schedule(rng, ROUNDS)
    try:
        for one in writers:
            one.start()
        for step in steps:
            before = changes(counts)
            wait_for(lambda n=before: changes(counts) > n + 30, message="writes")
            campaign.run(step)
    finally:
        for one in writers:
            one.stop()
    failures = [one.failure for one in writers if one.failure is not None]
    assert failures == [], f"seed {seed}: a writer failed: {failures}"
    table = campaign.table()
    campaign.close()
    print(f"campaign seed {seed}: steps {steps}; counts {dict(counts)}")
    for n, feed_client in enumerate(clients):
        wait_for(
            lambda c=feed_client: c.holds(table),
            timeout=60,
            message=f"client {n} to hold the table (seed {seed})",
        )
        assert feed_client.applied_twice() == [], f"seed {seed}"
