"""(i) Scale-out: scaleout_clients between scaleout_instances gevent instances on
one database, through Debian's nginx running deploy/nginx.conf, and the same
clients split directly over fresh instances, so that what nginx costs is a
difference measured in the same run.

Each layout gets its own instances (`make serve`, FEED_SERVER_MODE=gevent).
The lean readers connect, settle, then every process's CPU over an idle window
and a few probe rows: from each COMMIT returned to the last client, every client
getting every row exactly once. The site is the repository's own, rewritten as
tests/test_nginx.py does, less `ip_hash`: every reader connects from
127.0.0.1, so ip_hash would send all of them to one instance. The readers speak
WebSocket only (no long-polling session to keep), so round robin serves them.
"""

import contextlib
import json
import logging
import resource
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.nginx import NGINX, Nginx, nginx_config, open_files
from bench.scenarios import count_check, reach
from bench.services import process_status, start_pg_feed
from bench.workers import BenchError, ReaderPool, start_writer

log = logging.getLogger(__name__)

SYSTEM = "pg-feed-gevent"
LAYOUTS = ("direct", "nginx")


def run(settings, database_url):
    """(i): each layout's instances, nginx and delivery; one count check each."""
    if not Path(NGINX).exists():
        raise BenchError("nginx is missing: apt-get install nginx-light")
    config = nginx_config(settings.scaleout_clients)
    results, checks = {}, []
    with contextlib.ExitStack() as stack:
        pool = ReaderPool(settings.scaleout_readers)
        stack.callback(pool.stop)
        writer = start_writer(database_url)
        stack.callback(writer.stop)
        for layout in LAYOUTS:
            log.info("(i) %d clients, %s", settings.scaleout_clients, layout)
            results[layout], check = _run_layout(
                layout, settings, database_url, config, pool, writer
            )
            checks.append({"round": 1, "system": _system(layout, settings), **check})
    document = {
        "system": SYSTEM,
        "instances": settings.scaleout_instances,
        "clients": settings.scaleout_clients,
        "readers": settings.scaleout_readers,
        "idle_seconds": settings.capacity_idle_seconds,
        "probe_rows": settings.capacity_probe_rows,
        "probe_interval": settings.capacity_probe_interval,
        "machine": _machine_limits(),
        "nginx": config,
        "layouts": results,
    }
    return document, checks


def _system(layout, settings):
    through = "behind nginx" if layout == "nginx" else "direct"
    return f"{SYSTEM} x{settings.scaleout_instances} {through}"


def _run_layout(layout, settings, database_url, config, pool, writer):
    """Fresh instances (and nginx), the clients, the measurements; stopped after:
    the instances first, then nginx, then the readers' connections."""
    with contextlib.ExitStack() as stack:
        stack.callback(pool.close)
        instances = []
        for _ in range(settings.scaleout_instances):
            instances.append(_start_instance(database_url, stack))
        proxy = None
        if layout == "nginx":
            proxy = Nginx(instances, config)
            stack.callback(proxy.stop)
        result, check = _measure(layout, instances, proxy, pool, writer, settings)
        for instance in instances:
            if not instance.alive():
                raise BenchError(f"{instance.name} died:\n" + "".join(instance.output))
            _stop(instance)
    return result, {**check, "scenario": f"(i) {layout}"}


def _start_instance(database_url, stack):
    instance = start_pg_feed(database_url, SYSTEM)
    stack.callback(_stop, instance)
    return instance


def _measure(layout, instances, proxy, pool, writer, settings):
    started = time.monotonic()
    _connect(instances, proxy, pool, settings.scaleout_clients)
    connected_s = time.monotonic() - started
    time.sleep(settings.capacity_settle_seconds)
    pids = [i.pid for i in instances] + (proxy.workers if proxy else [])
    idle = _cpu_percent(pids, lambda: time.sleep(settings.capacity_idle_seconds))
    pool.arm()
    probe = {}
    flowing = _cpu_percent(pids, lambda: _probe_rows(pool, writer, settings, probe))
    check = count_check(layout, probe["merged"], len(probe["commits"]))
    result = {
        "clients": settings.scaleout_clients,
        "connect_s": connected_s,
        **reach(probe["commits"], probe["merged"]["last_arrival"]),
        "instances": [_instance_status(i, idle, flowing, check) for i in instances],
    }
    if proxy:
        result["nginx"] = proxy.status(idle, flowing, check)
    return result, check


def _probe_rows(pool, writer, settings, probe):
    """A few rows, each to every client, into `probe`; when the last arrived."""
    log = writer.call(
        "paced",
        count=settings.capacity_probe_rows,
        interval=settings.capacity_probe_interval,
    )
    probe["commits"] = log["commits"]
    probe["merged"] = pool.collect(log["commits"], timeout=60)
    return probe["merged"]["cpu_until"]


def _connect(instances, proxy, pool, clients):
    """All clients through nginx, or each instance its share directly."""
    if proxy:
        pool.connect(proxy.url, clients)
        return
    for number, instance in enumerate(instances, start=1):
        pool.connect(instance.url, round(clients * number / len(instances)))


def _cpu_percent(pids, window):
    """{pid: CPU % of one core} over `window()`, which may return its end time."""
    before = {pid: process_status(pid)["cpu_seconds"] for pid in pids}
    started = time.monotonic()
    ended = window() or time.monotonic()
    after = {pid: process_status(pid)["cpu_seconds"] for pid in pids}
    return {pid: 100.0 * (after[pid] - before[pid]) / (ended - started) for pid in pids}


def _instance_status(instance, idle, flowing, check):
    """Clients an instance holds (its /healthz), its open files, its RSS once
    every client got every probe row, and its CPU idle and over the probe."""
    status = process_status(instance.pid) if check["ok"] else {"rss_mb": None}
    return {
        "clients": _healthz(instance.url).get("clients"),
        "open_files": open_files([instance.pid])[0],
        "rss_mb": status["rss_mb"],
        "idle_cpu_percent": idle[instance.pid],
        "probe_cpu_percent": flowing[instance.pid],
    }


def _healthz(url):
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:  # 503 still says how many clients
        return json.load(exc)


def _stop(server):
    code = server.stop()
    if code not in (0, -15):
        log.warning("%s exited with %s", server.name, code)


def _machine_limits():
    """The limits this run served under: open files, somaxconn, ephemeral ports."""
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return {
        "open_files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "somaxconn": int(Path("/proc/sys/net/core/somaxconn").read_text()),
        "ip_local_port_range": [int(port) for port in ports],
    }
