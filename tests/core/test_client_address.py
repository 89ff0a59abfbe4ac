"""Which address a request comes from, behind trusted proxies or not (a table)."""

from __future__ import annotations

import pytest

from swfed.core.addresses import client_address, parse_networks

TRUSTED = parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"])

CASES = [
    # (TCP peer, X-Forwarded-For values, the address believed)
    ("203.0.113.5", [], "203.0.113.5"),
    # anyone but a trusted proxy: the header is ignored
    ("203.0.113.5", ["198.51.100.7"], "203.0.113.5"),
    ("192.168.1.9", ["127.0.0.1"], "192.168.1.9"),
    # a trusted proxy: the hop it appended
    ("127.0.0.1", ["198.51.100.7"], "198.51.100.7"),
    # the client wrote the left part: the rightmost untrusted hop wins
    ("127.0.0.1", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
    ("127.0.0.1", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),
    # proxies in a chain are skipped
    ("127.0.0.1", ["6.6.6.6, 198.51.100.7, 10.1.2.3"], "198.51.100.7"),
    # only proxies: the leftmost of them
    ("127.0.0.1", ["10.1.2.3"], "10.1.2.3"),
    # a trusted proxy that sent no header is the client itself
    ("127.0.0.1", [], "127.0.0.1"),
    # garbage stops the walk at the last proxy seen
    ("127.0.0.1", ["not-an-ip"], "127.0.0.1"),
    ("127.0.0.1", ["198.51.100.7, junk, 10.0.0.2"], "10.0.0.2"),
    # IPv6, bracketed, and IPv4 mapped in IPv6
    ("::1", ["2001:db8::7"], "2001:db8::7"),
    ("::1", ["[2001:db8::7]:4711"], "2001:db8::7"),
    ("::ffff:127.0.0.1", ["198.51.100.7"], "198.51.100.7"),
    ("127.0.0.1", ["::ffff:10.0.0.3"], "10.0.0.3"),
    # no peer address (a Unix socket)
    (None, ["198.51.100.7"], "?"),
]


@pytest.mark.parametrize(("peer", "header", "expected"), CASES)
def test_client_address(peer: str | None, header: list[str], expected: str) -> None:
    assert client_address(peer, header, TRUSTED) == expected


def test_nothing_trusted_by_default() -> None:
    assert client_address("127.0.0.1", ["198.51.100.7"], ()) == "127.0.0.1"


def test_bad_network_names_the_item() -> None:
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        parse_networks(["127.0.0.1", "10.0.0.300"])
