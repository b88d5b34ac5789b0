"""Database URL handling: the driver each consumer needs, and masking for logs."""

import re

_SCHEME = re.compile(r"^(postgres|postgresql)(\+\w+)?://")
_PASSWORD = re.compile(r"(://[^:/@?#]*:)[^@/?#]*@")


def sqlalchemy_url(url):
    """The URL for SQLAlchemy, pinned to psycopg2 (2.1 defaults to psycopg 3)."""
    return _SCHEME.sub("postgresql+psycopg2://", url, count=1)


def libpq_url(url):
    """The URL for psycopg2.connect: a plain postgresql:// URL, no driver suffix."""
    return _SCHEME.sub("postgresql://", url, count=1)


def mask_url(url):
    """The URL with its password replaced by ***, safe to log or show."""
    masked = _PASSWORD.sub(r"\1***@", url or "")
    return re.sub(r"(password=)[^&\s]*", r"\1***", masked)
