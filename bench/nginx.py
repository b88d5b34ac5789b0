"""Debian's nginx for section (i): deploy/nginx.conf's site in a folder of its
own, pointed at the instances, and what its workers hold and cost."""

import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.services import ROOT, free_port, process_status, stop_process
from bench.workers import BenchError

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_WORKERS = 2  # worker_processes: one per core of this machine
# worker_connections counts client and upstream connections: two per client
CONNECTIONS_MARGIN = 512
FILES_MARGIN = 64  # the worker's other descriptors: listeners, logs, channels
NGINX_READY_TIMEOUT = 10.0
BALANCING = (
    "round robin: deploy/nginx.conf's ip_hash removed, since every reader "
    "connects from 127.0.0.1 and ip_hash would send them all to one instance"
)
SERVER_LINE = re.compile(r"^(\s*server )127\.0\.0\.1:500\d( [^;]*;\n)", re.MULTILINE)


class Nginx:
    """Debian's nginx in a folder of its own: deploy/nginx.conf's site pointed at
    `instances` on a free loopback port, with `config`'s worker settings, and a
    stub_status server on another port."""

    def __init__(self, instances, config):
        self.folder = Path(tempfile.mkdtemp(prefix="pgfeed-bench-nginx-"))
        self.port, status_port = _two_free_ports()
        self.url = f"http://127.0.0.1:{self.port}"
        self.status_url = f"http://127.0.0.1:{status_port}/status"
        self.config = config
        (self.folder / "site.conf").write_text(_site(instances, self.port))
        main = _main_config(self.config, status_port)
        (self.folder / "nginx.conf").write_text(main)
        (self.folder / "tmp").mkdir()
        with open(self.folder / "stderr.log", "w") as stderr:
            self.process = subprocess.Popen(
                [NGINX, "-p", str(self.folder), "-c", "nginx.conf"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.workers = self._wait_until_ready()
        self.files_at_start = open_files(self.workers)

    def _wait_until_ready(self):
        """The worker pids, once the status server answers and all are up."""
        deadline = time.monotonic() + NGINX_READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            workers = _children(self.process.pid)
            if len(workers) == NGINX_WORKERS and self._active_connections():
                return workers
            time.sleep(0.05)
        output = self._log("stderr.log") + self._log("error.log")
        self.stop()
        raise BenchError(f"nginx did not start: {output}")

    def _active_connections(self):
        """stub_status's client connections (this request among them), or None."""
        try:
            with urllib.request.urlopen(self.status_url, timeout=5) as answer:
                first = answer.read().decode().splitlines()[0]
        except OSError:
            return None
        return int(first.split(":")[1])

    def _log(self, name):
        path = self.folder / name
        return path.read_text() if path.exists() else ""

    def status(self, idle, flowing, check):
        """Its workers' RSS (once every client got every probe row) and CPU, idle
        and over the probe; client connections; open files per worker; errors."""
        workers = self.workers
        rss = sum(process_status(pid)["rss_mb"] for pid in workers)
        errors = self._log("error.log").splitlines()
        return {
            "workers": len(workers),
            "rss_mb": rss if check["ok"] else None,
            "idle_cpu_percent": sum(idle[pid] for pid in workers),
            "probe_cpu_percent": sum(flowing[pid] for pid in workers),
            "client_connections": (self._active_connections() or 1) - 1,
            "open_files_at_start": self.files_at_start,
            "open_files": open_files(workers),
            "error_log_lines": len(errors),
            "errors": errors[:5],
        }

    def stop(self):
        """Fast shutdown (SIGTERM); SIGKILL after 10 s; the folder removed."""
        stop_process(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


def nginx_config(clients):
    """worker_connections for two connections per client (all in one worker, if
    the open-files limit allows), worker_rlimit_nofile at this process's limit."""
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    connections = min(2 * clients + CONNECTIONS_MARGIN, open_files - FILES_MARGIN)
    version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr
    return {
        "version": version.strip().rsplit("/", 1)[-1],
        "worker_processes": NGINX_WORKERS,
        "worker_connections": connections,
        "worker_rlimit_nofile": open_files,
        "balancing": BALANCING,
    }


def _site(instances, port):
    """deploy/nginx.conf with one `server` line per instance, no ip_hash, and
    `listen` on the loopback port."""
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    matches = SERVER_LINE.findall(site)
    if not matches or "ip_hash;" not in site or "listen 80;" not in site:
        raise BenchError("deploy/nginx.conf changed: (i) cannot rewrite its site")
    prefix, suffix = matches[0]
    ports = [instance.url.rsplit(":", 1)[1] for instance in instances]
    servers = iter(["".join(f"{prefix}127.0.0.1:{p}{suffix}" for p in ports)])
    site = SERVER_LINE.sub(lambda _: next(servers, ""), site)
    site = re.sub(r"^\s*ip_hash;\n", "", site, flags=re.MULTILINE)
    return site.replace("listen 80;", f"listen 127.0.0.1:{port};")


def _main_config(config, status_port):
    return (
        "daemon off; pid nginx.pid; error_log error.log warn;\n"
        f"worker_processes {config['worker_processes']};\n"
        f"worker_rlimit_nofile {config['worker_rlimit_nofile']};\n"
        f"events {{ worker_connections {config['worker_connections']}; }}\n"
        "http { access_log off; client_body_temp_path tmp; proxy_temp_path tmp;\n"
        "       include site.conf;\n"
        f"       server {{ listen 127.0.0.1:{status_port};\n"
        "                location = /status { stub_status; } } }\n"
    )


def _two_free_ports():
    first = free_port()
    while (second := free_port()) == first:
        pass
    return first, second


def open_files(pids):
    return [len(os.listdir(f"/proc/{pid}/fd")) for pid in pids]


def _children(pid):
    """The pids whose parent is `pid` (nginx's workers), from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)
