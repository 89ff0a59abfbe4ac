"""Which addresses federation may reach without the admin's say-so."""

from __future__ import annotations

import ipaddress

import pytest

from swfed.core.addresses import is_public


@pytest.mark.parametrize(("address", "public"), [
    ("93.184.216.34", True),
    ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("10.0.0.7", False), ("172.16.1.1", False), ("192.168.1.20", False),
    ("127.0.0.1", False), ("0.0.0.0", False), ("169.254.169.254", False),
    ("100.64.0.1", False), ("100.100.100.200", False),  # shared address space (CGNAT)
    ("192.0.2.1", False), ("198.18.0.1", False), ("224.0.0.1", False),
    ("255.255.255.255", False),
    ("::1", False), ("fe80::1", False), ("fc00::1", False), ("ff02::1", False),
    ("::ffff:10.0.0.1", False), ("::ffff:93.184.216.34", True),
    ("2002:0a00:0001::1", False),  # 6to4 around 10.0.0.1
    ("2002:5db8:d822::1", True),  # 6to4 around 93.184.216.34
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # Teredo around 10.0.0.1
    ("64:ff9b::a00:1", False),  # NAT64 around 10.0.0.1
    ("64:ff9b::5db8:d822", True),
])
def test_is_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public
