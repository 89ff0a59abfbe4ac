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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: list[str] | tuple[str, ...]) -> tuple[Network, ...]:
    """``["127.0.0.1", "10.0.0.0/8", "::1"]`` -> networks; raises ValueError naming the item."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network like \"10.0.0.0/8\"") \
                from None
    return tuple(out)


def _ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]" or "[v6]:port"
        text = text[1:text.index("]")]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: IPAddress | None, trusted: tuple[Network, ...]) -> bool:
    return ip is not None and any(ip.version == net.version and ip in net for net in trusted)


def client_address(peer: str | None, forwarded_for: list[str],
                   trusted: tuple[Network, ...]) -> str:
    """The address a request comes from, for rate limits, logs and audit.

    ``peer`` is the TCP peer. Only when it is one of the ``trusted`` proxies
    is ``X-Forwarded-For`` read (``forwarded_for``: the header's values in
    order; each proxy appends the address it was reached from). From the
    right, trusted proxies are skipped; the first hop that is not one is the
    client — anything left of it was written by the client and proves
    nothing. A hop that is not an address ends the walk at the last proxy
    (the chain was not written by proxies beyond it). ``"?"`` when there is
    no peer address at all (a Unix socket).
    """
    if not peer:
        return "?"
    here = _ip(peer)
    if not _trusted(here, trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    shown = str(here)
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return shown
        shown = str(ip)
        if not _trusted(ip, trusted):
            return shown
    return shown
