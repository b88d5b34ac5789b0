"""The harness's side of its helper processes: readers and the writer, over pipes.

Every helper is a spawned process running a loop that answers one reply per
command; a helper that fails or goes silent raises BenchError here.
"""

import multiprocessing

from bench import reader, writer

_CONTEXT = multiprocessing.get_context("spawn")


class BenchError(Exception):
    """The benchmark could not be carried out (not a measured miss)."""


class Worker:
    """One helper process and the pipe to it."""

    def __init__(self, name, target, *args):
        self.name = name
        self.pipe, child_end = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(
            target=target, args=(child_end, *args), name=name, daemon=True
        )
        self.process.start()
        child_end.close()

    def send(self, op, **arguments):
        """Send a command without waiting for its reply."""
        self.pipe.send({"op": op, **arguments})

    def reply(self, timeout):
        """The reply to the last command; BenchError on failure or silence."""
        if not self.pipe.poll(timeout):
            raise BenchError(f"{self.name} did not answer within {timeout:g} s")
        try:
            answer = self.pipe.recv()
        except EOFError:
            self.process.join(1)
            code = self.process.exitcode
            raise BenchError(f"{self.name} exited (code {code})") from None
        if not answer.pop("ok"):
            raise BenchError(f"{self.name}: {answer['error']}")
        return answer

    def call(self, op, timeout=60.0, **arguments):
        """Send a command and wait for its reply."""
        self.send(op, **arguments)
        return self.reply(timeout)

    def stop(self):
        """Ask the process to stop; end it if it does not."""
        if self.process.is_alive():
            try:
                self.call("stop", timeout=10)
            except (BenchError, OSError):
                pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.pipe.close()


class ReaderPool:
    """Reader processes; connections spread evenly over them."""

    def __init__(self, processes):
        self.workers = [
            Worker(f"reader-{n}", reader.main) for n in range(1, processes + 1)
        ]
        self.connections = 0

    def connect(self, url, total, timeout=180.0, receive_buffer=None):
        """Open connections until `total` are open, spread over the readers;
        receive_buffer: their SO_RCVBUF (None: the system's)."""
        for worker, count in zip(
            self.workers,
            _spread(self.connections, total, len(self.workers)),
            strict=True,
        ):
            worker.send("connect", url=url, count=count, receive_buffer=receive_buffer)
        self._gather(timeout)
        self.connections = total

    def listen(self, dsn, channel):
        """One bare LISTEN receiver, in the first reader."""
        self.workers[0].call("listen", dsn=dsn, channel=channel)
        self.connections = 1

    def arm(self):
        """Forget what every connection received so far."""
        self._broadcast("arm", reply_timeout=30)

    def collect(self, expected, timeout, grace=0.3, latencies=False):
        """Wait for `expected` rows on every connection; the merged counts."""
        answers = self._broadcast(
            "collect",
            expected=expected,
            timeout=timeout,
            grace=grace,
            latencies=latencies,
            reply_timeout=timeout + grace + 60,
        )
        return _merge(answers)

    def stall(self, total):
        """Stop reading `total` connections, spread over the readers."""
        counts = _spread(0, total, len(self.workers))
        for worker, count in zip(self.workers, counts, strict=True):
            worker.send("stall", count=count)
        return sum(answer["stalled"] for answer in self._gather(30))

    def resume(self, timeout):
        """Read the stalled connections again: {resumed, resynced, dropped,
        neither} once each got a resync or was dropped (or at the timeout)."""
        answers = self._broadcast("resume", reply_timeout=timeout + 30, timeout=timeout)
        return {
            name: sum(answer[name] for answer in answers)
            for name in ("resumed", "resynced", "dropped", "neither")
        }

    def close(self):
        """Close every connection, keeping the processes."""
        self._broadcast("close", reply_timeout=60)
        self.connections = 0

    def stop(self):
        """Stop every reader process."""
        for worker in self.workers:
            worker.stop()

    def _broadcast(self, op, reply_timeout, **arguments):
        for worker in self.workers:
            worker.send(op, **arguments)
        return self._gather(reply_timeout)

    def _gather(self, timeout):
        return [worker.reply(timeout) for worker in self.workers]


def _spread(current, total, parts):
    """How many more connections each of `parts` readers opens to reach `total`."""
    wanted = [total // parts + (1 if n < total % parts else 0) for n in range(parts)]
    had = [current // parts + (1 if n < current % parts else 0) for n in range(parts)]
    return [w - h for w, h in zip(wanted, had, strict=True)]


def _merge(answers):
    merged = {
        name: sum(a[name] for a in answers)
        for name in (
            "cpu_seconds",
            "connections",
            "deliveries",
            "messages",
            "resyncs",
            "missing",
            "duplicates",
            "unexpected",
        )
    }
    merged["cpu_until"] = max(a["cpu_until"] for a in answers)
    merged["errors"] = [error for a in answers for error in a["errors"]]
    merged["latencies"] = [value for a in answers for value in a["latencies"]]
    last_arrival = {}
    for answer in answers:
        for row_id, arrived in answer["last_arrival"].items():
            last_arrival[row_id] = max(arrived, last_arrival.get(row_id, arrived))
    merged["last_arrival"] = last_arrival
    return merged


def start_writer(dsn, emitter_url=None):
    """The writer process, emitting through Redis when `emitter_url` is given."""
    return Worker("writer", writer.main, dsn, emitter_url)
