"""HTTP routes: the page, the health check and the metrics."""

import logging

from flask import Blueprint, Response, current_app, jsonify, render_template
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError

from ..database import queries
from ..extensions import db

log = logging.getLogger(__name__)

bp = Blueprint("feed", __name__)

DATABASE_UNREACHABLE = "the database does not answer through DATABASE_URL"

# The page runs only its own scripts and styles; Socket.IO connects back to the
# same origin (CSP 'self' covers ws: and wss: to it).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@bp.get("/")
def index():
    """The live feed page."""
    return render_template(
        "index.html",
        history_limit=current_app.config["FEED_HISTORY_LIMIT"],
        max_event_chars=current_app.config["FEED_MAX_EVENT_CHARS"],
    )


@bp.get("/healthz")
def healthz():
    """Database, listener, delivery and clients as JSON; 200 only when live."""
    state = current_app.extensions["feed"]
    database = _database_reachable()
    feed, reason = state.feed_state()
    if not database:
        reason = DATABASE_UNREACHABLE
    healthy = database and feed == "live"
    body = {
        "ok": healthy,
        "feed": feed,
        **({} if healthy else {"reason": reason}),
        "database": "reachable" if database else "unreachable",
        "listener": state.listener.status() if state.listener else {"state": "stopped"},
        "delivery": state.delivery.status() if state.delivery else {"state": "stopped"},
        "clients": len(state.clients),
    }
    return jsonify(body), 200 if healthy else 503


@bp.get("/metrics")
def metrics():
    """This process's feed metrics in Prometheus' text format."""
    registry = current_app.extensions["feed"].metrics.registry
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _database_reachable():
    try:
        queries.check_database(db.session)
    except DBAPIError as exc:
        log.warning("health check: database unreachable: %s", exc.orig)
        return False
    return True


def security_headers(response):
    """Headers on every HTTP response: CSP, no MIME sniffing, no referrer."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
