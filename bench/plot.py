"""The latency CDF of a run as a PNG (matplotlib, Agg backend: no display needed)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)

COLOURS = {
    "limit": "#7f7f7f",
    "pg-feed": "#1f77b4",
    "pg-feed-gthread": "#2ca02c",
    "pg-feed-gevent": "#9467bd",
    "pg-feed-gthread-queued": "#bcbd22",
    "pg-feed-gevent-queued": "#17becf",
    "pg-feed-gthread-plain": "#8c564b",
    "pg-feed-gevent-plain": "#e377c2",
    "redis-mq": "#d62728",
}


def latency_cdf(document, path):
    """Plot every system's commit-to-client latency CDF, all rounds pooled."""
    figure, axes = plt.subplots(figsize=(8, 4.8), dpi=120)
    for system, summary in document["summary"]["latency"].items():
        values = sorted(
            v
            for r in document["rounds"]
            for v in r["systems"][system]["latency"]["cdf_ms"]
        )
        shares = [(n + 0.5) / len(values) for n in range(len(values))]
        label = (
            f"{system} (p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms)"
        )
        axes.plot(values, shares, label=label, color=COLOURS.get(system), lw=1.8)
    axes.set_xscale("symlog", linthresh=0.01)
    axes.set_xlabel("commit-to-client latency, ms (from COMMIT returned; symlog)")
    axes.set_ylabel("share of row deliveries")
    axes.set_ylim(0, 1)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", fontsize=9)
    settings = document["settings"]
    axes.set_title(
        f"Latency (a): {settings['latency_rate']:g} rows/s to {settings['clients']} "
        f"clients (limit: 1 LISTEN receiver)\n{settings['rounds']} rounds pooled; "
        f"medians of rounds in the legend; run {document['run']['id']}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
