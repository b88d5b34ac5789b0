"""Markdown tables for the terminal report, so docs/BENCHMARKS.md can quote it."""

DASH = "—"


def table(title, header, rows):
    """A titled Markdown table."""
    lines = [title, "", row(header), row(["---"] * len(header))]
    lines += [row(cells) for cells in rows]
    return "\n".join(lines)


def row(cells):
    """One Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def number(value, decimals):
    """A number with thousands separators; a dash for None."""
    if value is None:
        return DASH
    return f"{value:,.{decimals}f}"


def percent(value):
    """A share as a percentage with one decimal; a dash for None."""
    return DASH if value is None else f"{100 * value:.1f}%"
