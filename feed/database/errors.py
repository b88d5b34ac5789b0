"""Which database errors mean "unavailable" and which mean "the row was refused"."""

# SQLSTATE classes of a server that cannot serve now: connection exception,
# insufficient resources, operator intervention (shutdown, cancel), system error.
UNAVAILABLE_CLASSES = ("08", "53", "57", "58")


def is_unavailable(exc):
    """True when a SQLAlchemy DBAPIError says the database cannot be reached now.

    Anything else (a CHECK or NOT NULL constraint, a trigger that raises, a
    missing privilege) is the database refusing this statement.
    """
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "pgcode", None)
    return code is None or code[:2] in UNAVAILABLE_CLASSES


def describe(exc):
    """SQLSTATE and the server's first line, for the log (never for clients)."""
    code = getattr(exc.orig, "pgcode", None) or "no SQLSTATE"
    first_line = (str(exc.orig).strip().splitlines() or ["?"])[0]
    return f"{code}: {first_line}"
