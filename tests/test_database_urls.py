"""Database URLs: the driver each consumer needs, and passwords kept out of logs."""

import pytest

from feed.database.urls import libpq_url, mask_url, sqlalchemy_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg2://u:p@h/db"),
        ("postgres://u:p@h/db", "postgresql+psycopg2://u:p@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg2://u@h/db"),
    ],
)
def test_sqlalchemy_url_pins_psycopg2(url, expected):
    assert sqlalchemy_url(url) == expected


def test_libpq_url_drops_the_driver():
    assert libpq_url("postgresql+psycopg2://u@h:5433/db") == "postgresql://u@h:5433/db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/feed", "postgresql://app:***@db:5432/feed"),
        ("postgresql://app@db/feed", "postgresql://app@db/feed"),
        (
            "postgresql://db/feed?password=s3cret&x=1",
            "postgresql://db/feed?password=***&x=1",
        ),
        ("host=db password=s3cret user=app", "host=db password=*** user=app"),
    ],
)
def test_mask_url_hides_the_password(url, expected):
    assert mask_url(url) == expected
