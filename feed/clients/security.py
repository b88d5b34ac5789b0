"""Who may connect and how much they may send: origins, tokens, rate limits."""

import hmac
import logging
import threading
import time

log = logging.getLogger(__name__)


class OriginPolicy:
    """python-engineio's cors_allowed_origins as a callable that logs each refusal.

    No origins: same origin only (the page's own scheme://host, also as seen
    through X-Forwarded-Proto/Host). A request without an Origin header (not a
    browser) is not checked here; tokens guard those.
    """

    def __init__(self, origins):
        self.origins = frozenset(origins)
        self.any = "*" in self.origins
        if self.any:
            log.warning(
                "FEED_CORS_ORIGINS=*: pages on ANY site may connect to this feed"
            )

    def __call__(self, origin, environ):
        if origin is None:
            return False  # asked for CORS headers only: a request without Origin
        if self.any or origin in self.origins or origin in _own_origins(environ):
            return True
        log.warning(
            "refused a connection from origin %s: not the page's own origin%s",
            origin,
            " and not in FEED_CORS_ORIGINS"
            if self.origins
            else " (set FEED_CORS_ORIGINS to allow other pages)",
        )
        return False


def _own_origins(environ):
    host = environ.get("HTTP_HOST", "")
    scheme = environ.get("wsgi.url_scheme", "http")
    own = {f"{scheme}://{host}"}
    if "HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_HOST" in environ:
        forwarded_scheme = environ.get("HTTP_X_FORWARDED_PROTO", scheme)
        forwarded_host = environ.get("HTTP_X_FORWARDED_HOST", host)
        own.add(f"{_first(forwarded_scheme)}://{_first(forwarded_host)}")
    return own


def _first(header):
    return header.split(",")[0].strip()


class Tokens:
    """FEED_READ_TOKEN / FEED_WRITE_TOKEN: what a connect `auth` token allows."""

    def __init__(self, read_token, write_token):
        self.read_token = read_token or None
        self.write_token = write_token or None

    def rights(self, auth):
        """(can_read, can_write) for a connect's auth, compared in constant time."""
        token = auth.get("token") if isinstance(auth, dict) else None
        token = token if isinstance(token, str) else None
        has_write_token = _same(token, self.write_token)
        reads = (
            self.read_token is None or has_write_token or _same(token, self.read_token)
        )
        writes = reads and (self.write_token is None or has_write_token)
        return reads, writes


def _same(given, expected):
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


class TokenBucket:
    """Allows `rate` actions per second on average, `burst` at once."""

    def __init__(self, rate, burst):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self):
        """Spend one token; False when none is left."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class AddressLimit:
    """Caps concurrent connections per client address; 0 means no cap."""

    def __init__(self, limit):
        self.limit = limit
        self.counts = {}
        self.lock = threading.Lock()

    def acquire(self, address):
        """Count a connection from address; False when it is over the cap."""
        with self.lock:
            count = self.counts.get(address, 0)
            if self.limit and count >= self.limit:
                return False
            self.counts[address] = count + 1
            return True

    def release(self, address):
        """Forget one connection from address."""
        with self.lock:
            count = self.counts.get(address, 0) - 1
            if count > 0:
                self.counts[address] = count
            else:
                self.counts.pop(address, None)
