"""Compressed responses: the page and its static files, over a real socket."""

import gzip
from pathlib import Path

import pytest
import requests

STATIC = Path(__file__).resolve().parent.parent / "static"
CLIENT_JS = "/static/vendor/socket.io/socket.io.min.js"


def fetch(url, **headers):
    """GET url; the response and its body as sent, not decoded by requests."""
    # requests sends its own Accept-Encoding unless the header is set to None.
    response = requests.get(
        url, headers={"Accept-Encoding": None, **headers}, stream=True, timeout=5
    )
    body = response.raw.read(decode_content=False)
    response.close()
    return response, body


def test_the_socket_io_client_is_sent_gzipped_to_who_accepts_gzip(server):
    response, body = fetch(server.url + CLIENT_JS, **{"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    original = (STATIC / "vendor/socket.io/socket.io.min.js").read_bytes()
    assert gzip.decompress(body) == original
    assert len(body) < len(original) / 2  # measured: 47,253 bytes sent as 14,808


def test_static_files_are_sent_as_they_are_without_accept_encoding(server):
    response, body = fetch(server.url + CLIENT_JS)
    assert "Content-Encoding" not in response.headers
    assert body == (STATIC / "vendor/socket.io/socket.io.min.js").read_bytes()


@pytest.mark.parametrize("path", ["/", "/static/feed.js", "/static/feed.css"])
def test_the_page_and_its_files_are_compressed_as_browsers_ask(server, path):
    browser_encodings = "gzip, deflate, br, zstd"
    response, body = fetch(server.url + path, **{"Accept-Encoding": browser_encodings})
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] in ("zstd", "br")
    plain = requests.get(server.url + path, timeout=5)
    assert len(body) < len(plain.content) / 2


def test_a_byte_range_is_sent_as_it_is_even_to_who_accepts_gzip(server):
    response, body = fetch(
        server.url + CLIENT_JS, **{"Accept-Encoding": "gzip", "Range": "bytes=0-9999"}
    )
    assert response.status_code == 206
    assert "Content-Encoding" not in response.headers
    assert body == (STATIC / "vendor/socket.io/socket.io.min.js").read_bytes()[:10000]
