"""Prometheus metrics of this process's feed, in a registry of the app's own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class FeedMetrics:
    """The counters, gauges and histograms behind GET /metrics."""

    def __init__(self, state):
        self.registry = CollectorRegistry()
        registry = self.registry
        self.notifications = Counter(
            "feed_notifications_received",
            "Notifications the listener drained",
            registry=registry,
        )
        self.rows_emitted = Counter(
            "feed_rows_emitted",
            "Rows sent to clients (once per broadcast)",
            registry=registry,
        )
        self.rows_per_message = Histogram(
            "feed_rows_per_message",
            "Rows in each `events` broadcast",
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000),
            registry=registry,
        )
        self.emit_delay = Histogram(
            "feed_notification_to_emit_seconds",
            "From the listener draining a notification to its broadcast being handed "
            "to every client",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=registry,
        )
        self.resyncs = Counter(
            "feed_resyncs_sent",
            "resync messages: to all clients after an outage "
            "(scope=all), to one client after a backlog overflow (scope=client)",
            ["scope"],
            registry=registry,
        )
        self.recovered = Counter(
            "feed_rows_recovered_from_log",
            "Rows the listener's check of the log sent because no notification "
            "brought them (NOTIFY dropped them, or the listener was away)",
            registry=registry,
        )
        self.trimmed = Counter(
            "feed_removals_trimmed",
            "DELETE and TRUNCATE records trimmed from feed_removals by this process",
            registry=registry,
        )
        self.inserts = Counter(
            "feed_inserts",
            "Rows inserted from clients' `event` messages",
            registry=registry,
        )
        self.refused = Counter(
            "feed_refused_inputs",
            "Client messages refused, by message",
            ["message"],
            registry=registry,
        )
        self.send_failures = Counter(
            "feed_broadcast_send_failures",
            "Times one client could not be handed a broadcast (its session closed "
            "mid-broadcast, or another error); the other clients still got it",
            registry=registry,
        )
        Gauge(
            "feed_connected_clients",
            "Clients connected to /events",
            registry=registry,
        ).set_function(lambda: len(state.clients))
        Gauge(
            "feed_listener_reconnects",
            "Times the LISTEN connection came back",
            registry=registry,
        ).set_function(lambda: state.listener.reconnects if state.listener else 0)
        Gauge(
            "feed_listener_up",
            "1 while LISTEN is in place",
            registry=registry,
        ).set_function(lambda: 1 if state.listening() else 0)
        Gauge(
            "feed_delivering",
            "1 while the feed is live: LISTEN in place and the last delivery probe "
            "(a NOTIFY through the app's pool) came back through the listener",
            registry=registry,
        ).set_function(lambda: 1 if state.feed_state()[0] == "live" else 0)
        self.probes_failed = Counter(
            "feed_delivery_probes_failed",
            "Delivery probes that could not be sent or did not come back in time",
            registry=registry,
        )
        self.probe_seconds = Histogram(
            "feed_delivery_probe_seconds",
            "Round trip of each delivery probe that came back: NOTIFY through the "
            "app's pool to its arrival at the listener",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=registry,
        )
