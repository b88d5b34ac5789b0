"""Workload sizes: the full run of `make bench` and the seconds-long smoke run."""

from dataclasses import dataclass, replace

SYSTEMS = (
    "limit",
    "pg-feed",
    "pg-feed-gthread",
    "pg-feed-gevent",
    "pg-feed-gthread-queued",
    "pg-feed-gevent-queued",
    "pg-feed-gthread-plain",
    "pg-feed-gevent-plain",
    "redis-mq",
    "bare-fanout",
)
# Systems of capacity (c) only: bench/bare_fanout.py, the floor under one row to
# all (the send() calls and nothing else)
CAPACITY_ONLY = ("bare-fanout",)
# pg-feed under `make serve`: its system name and FEED_SERVER_MODE
SERVE_MODES = {
    "pg-feed-gthread": "threaded",
    "pg-feed-gevent": "gevent",
    "pg-feed-gthread-queued": "threaded",
    "pg-feed-gevent-queued": "gevent",
    "pg-feed-gthread-plain": "threaded",
    "pg-feed-gevent-plain": "gevent",
}
# -queued: each client's writer frames and sends every broadcast itself
# (FEED_FAST_FANOUT=off): what frame-once and direct-write are worth.
# -plain: without feed/upstream's library reaches at all (FEED_UPSTREAM_REACHES
# off, the fallback after a version mismatch): one emit per client.
QUEUED = {"FEED_FAST_FANOUT": "off"}
PLAIN = {"FEED_UPSTREAM_REACHES": "off"}
SYSTEM_SETTINGS = {
    "pg-feed-gthread-queued": QUEUED,
    "pg-feed-gevent-queued": QUEUED,
    "pg-feed-gthread-plain": PLAIN,
    "pg-feed-gevent-plain": PLAIN,
}
# Capacity (c) goes past 2000 clients for these only: a gthread worker holds
# each WebSocket in a thread of its own (8,005 threads at 2000 clients), and
# the -queued and -plain variants answer other questions
CAPACITY_LARGE_SYSTEMS = ("pg-feed-gevent", "bare-fanout")
# gthread holds one WebSocket per thread: room for the largest capacity step
GTHREAD_THREADS = 2200
# The last commit before the live-cursor server work: (d) measures against it
PREVIOUS_COMMIT = "a061e26"
# The parts of a run; --only picks some
SECTIONS = ("systems", "previous", "writers", "resume", "modes", "stalled", "scaleout")


@dataclass(frozen=True)
class Settings:
    """Every size and duration one benchmark run uses."""

    name: str = "full"
    rounds: int = 3
    readers: int = 2
    warmup_rows: int = 20
    clients: int = 100
    latency_rate: float = 200.0
    latency_seconds: float = 10.0
    fanout_rows: int = 20_000  # (b): one transaction of this many rows
    capacity_readers: int = 4
    capacity_clients: tuple[int, ...] = (500, 1000, 2000)
    # gevent (CAPACITY_LARGE_SYSTEMS) goes on to these; their idle CPU is read
    # over one Engine.IO ping interval (FEED_PING_INTERVAL's default, 25 s)
    capacity_large_clients: tuple[int, ...] = (5000, 10_000)
    capacity_heartbeat_seconds: float = 25.0
    capacity_settle_seconds: float = 1.0
    capacity_idle_seconds: float = 5.0
    capacity_probe_rows: int = 5
    capacity_probe_interval: float = 0.3
    # (d) latency (a) of `python app.py` against the previous version's
    previous_commit: str = PREVIOUS_COMMIT
    previous_rounds: int = 4
    # (e) single-row INSERT transactions by pgbench, per schema and writers
    write_writers: tuple[int, ...] = (1, 8, 32)
    write_multi_row: tuple[int, int] = (8, 10)  # writers, rows per INSERT
    write_seconds: int = 5
    write_rounds: int = 3
    # (f) sync by cursor after this many changes; page limits asked for
    # (None: the server's default)
    resume_changes: int = 10_000
    resume_limits: tuple[int | None, ...] = (None, 1000)
    # (g) wake-up modes: one `python app.py` per mode, its clients, a paced
    # writer; FEED_POLL_INTERVAL of poll mode (BENCH_FEED_POLL_INTERVAL wins);
    # the database load over an idle window of modes_idle_seconds
    modes_clients: int = 100
    modes_rate: float = 200.0
    modes_seconds: float = 20.0
    modes_poll_interval: float = 0.05
    modes_idle_seconds: float = 10.0
    # (h) stalled clients: one gevent process holds stalled_clients, of which
    # stalled_stopped stop reading (bench/stalled.py)
    stalled_clients: int = 10_000
    stalled_stopped: int = 1000
    stalled_readers: int = 4
    # (i) scale-out: scaleout_instances gevent instances behind nginx hold
    # scaleout_clients between them (bench/scale_out.py)
    scaleout_instances: int = 2
    scaleout_clients: int = 10_000
    scaleout_readers: int = 4

    @property
    def latency_rows(self):
        """Single-row transactions in the latency workload."""
        return round(self.latency_rate * self.latency_seconds)


FULL = Settings()

SMOKE = replace(
    FULL,
    name="smoke",
    rounds=1,
    warmup_rows=5,
    clients=5,
    latency_rate=50.0,
    latency_seconds=1.0,
    fanout_rows=200,
    capacity_readers=2,
    capacity_clients=(20, 40),
    capacity_large_clients=(60,),
    capacity_heartbeat_seconds=0.5,
    capacity_settle_seconds=0.2,
    capacity_idle_seconds=0.5,
    capacity_probe_rows=2,
    capacity_probe_interval=0.1,
    previous_rounds=2,
    write_seconds=1,
    write_rounds=1,
    resume_changes=200,
    modes_clients=5,
    modes_rate=50.0,
    modes_seconds=1.0,
    modes_idle_seconds=1.0,
    stalled_clients=40,
    stalled_stopped=4,
    stalled_readers=2,
    scaleout_clients=40,
    scaleout_readers=2,
)
