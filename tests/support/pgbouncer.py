"""Debian's PgBouncer in front of the test PostgreSQL, started by a test itself.

The pooler tests need the real thing: LISTEN "works" through a transaction-mode
pool and nothing ever arrives, which no fake reproduces faithfully.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from support.waiting import wait_for

PGBOUNCER = Path("/usr/sbin/pgbouncer")

CONFIG = """\
[databases]
* = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
pool_mode = {pool_mode}
default_pool_size = 10
max_client_conn = 200
server_login_retry = 1
"""


def start_or_skip(server_url, pool_mode="transaction"):
    """A PgBouncer for the test; skip it if PgBouncer is not installed.

    With FEED_REQUIRE_PGBOUNCER=1 (CI) a missing PgBouncer fails instead.
    """
    if not PGBOUNCER.exists():
        if os.environ.get("FEED_REQUIRE_PGBOUNCER") == "1":
            pytest.fail(f"FEED_REQUIRE_PGBOUNCER=1 but {PGBOUNCER} is missing")
        pytest.skip("Debian's pgbouncer is not installed (apt-get install pgbouncer)")
    return PgBouncer(server_url, pool_mode)


def server_target(server_url):
    """The [databases] entry reaching the server at a libpq URL; its host; its user."""
    parts = urlsplit(server_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    user = parts.username or "postgres"
    target = f"host={host} port={parts.port or 5432} user={user}"
    if parts.password:
        target += f" password={parts.password}"
    return target, host, user


def run_as(host):
    """The user to run as, given as root: the owner of a socket folder, else nobody.

    PgBouncer refuses to run as root; as the PostgreSQL server's own user it may
    open the server's Unix socket, whose folder is private to that user.
    """
    if os.geteuid() != 0:
        return None
    if host.startswith("/"):
        return pwd.getpwuid(os.stat(host).st_uid).pw_name
    return "nobody"


def free_port():
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PgBouncer:
    """/usr/sbin/pgbouncer in the foreground on a free port, in front of one server.

    url(database) is the libpq URL of a database through it. restart(pool_mode)
    stops it and starts it again on the same port, as an operator changing its
    pool mode would.
    """

    def __init__(self, server_url, pool_mode="transaction"):
        self.target, host, self.user = server_target(server_url)
        self.run_as = run_as(host)
        self.directory = Path(tempfile.mkdtemp(prefix="pgfeed-pgbouncer-"))
        # Readable by the user PgBouncer switches to (it re-reads both on reload).
        self.directory.chmod(0o755)
        (self.directory / "userlist.txt").write_text(f'"{self.user}" ""\n')
        self.port = free_port()
        self.process = None
        self.reader = None
        self.output = []
        self.start(pool_mode)

    def url(self, database):
        """The libpq URL of `database` through this PgBouncer."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self, pool_mode):
        """Write the configuration for this pool mode, start, wait until it listens."""
        self.pool_mode = pool_mode
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            CONFIG.format(
                target=self.target,
                port=self.port,
                directory=self.directory,
                pool_mode=pool_mode,
            )
        )
        config.chmod(0o644)
        user = ["-u", self.run_as] if self.run_as else []
        self.process = subprocess.Popen(
            [str(PGBOUNCER), *user, str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(
            target=self._read_output, args=(self.process,), daemon=True
        )
        self.reader.start()
        wait_for(self._accepts, timeout=10, message=f"pgbouncer on {self.port}")

    def _read_output(self, process):
        for line in process.stdout:
            self.output.append(line)

    def _accepts(self):
        if self.process.poll() is not None:
            raise AssertionError(
                f"pgbouncer exited with {self.process.returncode}:\n"
                + "".join(self.output)
            )
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def restart(self, pool_mode):
        """Stop (cutting every connection through it) and start in `pool_mode`."""
        self.stop()
        self.start(pool_mode)

    def stop(self):
        """Stop PgBouncer if it runs (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None or self.process.stdout.closed:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(5)
        self.process.stdout.close()

    def close(self):
        """Stop PgBouncer and remove its files."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
