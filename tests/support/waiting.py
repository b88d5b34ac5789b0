"""Waiting for a condition with a deadline, instead of sleeping and hoping."""

import time


def wait_for(predicate, timeout=10.0, message="condition"):
    """Poll predicate until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")
