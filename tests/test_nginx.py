"""Scale-out: Debian's nginx with deploy/nginx.conf in front of three instances."""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from support.database import insert_row
from support.processes import ROOT
from support.waiting import wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def instances(app_process, mode):
    """Three `make serve` instances in one mode on one database, on free ports."""
    return [
        app_process(mode, PORT=str(free_port()), FEED_LISTENER_IDLE_CHECK="1")
        for _ in range(3)
    ]


@pytest.fixture
def nginx(instances):
    """nginx running deploy/nginx.conf, pointed at the instances, on a free port."""
    if not Path(NGINX).exists():
        if os.environ.get("CI"):
            pytest.fail("nginx is missing: .ci/run installs nginx-light")
        pytest.skip("Debian's nginx is not installed (apt-get install nginx-light)")
    folder = Path(tempfile.mkdtemp(prefix="pgfeed-nginx-"))
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    ports = iter(instance.url.rsplit(":", 1)[1] for instance in instances)
    site = re.sub(
        r"server 127\.0\.0\.1:500\d", lambda _: f"server 127.0.0.1:{next(ports)}", site
    )
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    (folder / "site.conf").write_text(site)
    (folder / "nginx.conf").write_text(
        "daemon off; pid nginx.pid; error_log error.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http { access_log off; client_body_temp_path tmp; proxy_temp_path tmp;\n"
        "       include site.conf; }\n"
    )
    (folder / "tmp").mkdir()
    process = subprocess.Popen([NGINX, "-p", str(folder), "-c", "nginx.conf"])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), message="nginx to listen")
        yield url
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _answers(url):
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_thirty_clients_through_nginx_get_every_row_once_and_survive_a_dead_instance(
    instances, nginx, writer, resuming_client, sio_client
):
    clients = [resuming_client(nginx) for _ in range(30)]
    ids = [insert_row(writer, "from psql")]
    for instance in instances:  # written through each instance directly
        direct = sio_client(instance.url)
        ids.append(direct.call("event", f"via {instance.url}")["id"])
        direct.close()
    for feed_client in clients:
        wait_for(lambda c=feed_client: sorted(c.applied_ids()) == sorted(ids))
    assert all(c.applied_twice() == [] for c in clients)

    serving = next(i for i in instances if _has_clients(i))
    serving.kill()  # no goodbye: nginx must send them elsewhere
    ids += [insert_row(writer, f"while moving {n}") for n in range(20)]
    table = dict(_table(writer))
    for feed_client in clients:
        wait_for(lambda c=feed_client: c.holds(table), timeout=30, message="converge")


def _has_clients(instance):
    return requests.get(f"{instance.url}/healthz", timeout=5).json()["clients"] > 0


def _table(writer):
    with writer.cursor() as cursor:
        cursor.execute("SELECT id, event FROM events ORDER BY id")
        return cursor.fetchall()
