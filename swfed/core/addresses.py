"""Which addresses a federation request may go to (DESIGN §6): pure, over ``ipaddress``.

A peer's name must resolve to a *globally routable* address unless the admin
allowed private ones (or wrote the address in ``[federation.resolve]``).
"Private" is wider than RFC 1918: loopback, link-local, shared address space
(100.64.0.0/10, carrier-grade NAT, where cloud metadata services live), the
documentation and benchmarking ranges, multicast, reserved — and IPv6 forms
that carry an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by the
IPv4 address inside.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: NAT64's well-known prefix: the last 32 bits are an IPv4 address.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """May a federation request go to ``ip`` without the admin's say-so?"""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
    return bool(ip.is_global) and not ip.is_multicast
