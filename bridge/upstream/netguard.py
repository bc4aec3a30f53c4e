"""Server-side request forgery guard: which addresses an upstream connection may reach, and pinning.

An upstream url that names a host is resolved by the bridge itself, every answer is checked, and the
connection is made to the very address that was checked: there is no second lookup for a rebinding
DNS server to answer differently. Internal addresses (loopback, private, link-local, CGNAT, reserved,
multicast, unspecified, and the IPv4-mapped, IPv4-compatible, NAT64 and 6to4 spellings of them) are
refused unless the upstream says ``allow_private = true``. A url that names an address literally, or
``localhost``, means what it says: the operator wrote it. ``AddressGuard.addresses`` is asked by the
connection classes of ``origin_pool.py`` for every new connection, including those for redirect hops;
the Host header, TLS SNI and certificate checks keep using the name. This module decides; it does not
connect, choose upstreams, follow redirects or render errors.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import UpstreamAddressRefused, UpstreamUnreachable

log = logging.getLogger("bridge.upstream")

# host, port -> the addresses to try, in order (strings such as "192.0.2.1" or "2001:db8::1")
Resolver = Callable[[str, int], Sequence[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOCALHOST = ("127.0.0.1", "::1")  # RFC 6761 section 6.3: localhost is loopback, never asked of DNS
CGNAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 shared address space
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: the last 32 bits are IPv4
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use translation
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")  # RFC 3056: bits 16-48 are IPv4
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291 section 2.5.5.1, deprecated


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answers for ``host``, de-duplicated, in its order of preference."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, in the spellings that route to it."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64 or address in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in SIX_TO_FOUR:
        return address.sixtofour
    return None


def address_problem(text: str) -> str | None:
    """Why an upstream connection may not go to this address, or None when it is a public one."""
    try:
        address: IPAddress = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return f"{text!r} is not an IP address"
    if address.is_loopback or address.is_unspecified:  # before ::/96, which holds ::1 and ::
        return "loopback" if address.is_loopback else "unspecified"
    inner = embedded_ipv4(address)
    if inner is not None:
        problem = address_problem(str(inner))
        return None if problem is None else f"{problem} (as {address})"
    checks = (
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("CGNAT shared address space", address in CGNAT),
        ("local-use NAT64", address in NAT64_LOCAL),
        ("private", address.is_private),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def is_literal_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AddressGuard:
    """The connection policy of one upstream: its resolver and whether internal answers are allowed."""

    upstream: str
    allow_private: bool = False
    resolver: Resolver = system_resolver

    def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for ``host``; raises UpstreamAddressRefused."""
        host = host.strip("[]").rstrip(".")
        if is_literal_address(host):
            return [host]  # the operator wrote the address; redirects cannot leave it (within_base)
        if host.lower() == "localhost":
            return list(LOCALHOST)
        try:
            answers = list(self.resolver(host, port))
        except (OSError, UnicodeError):
            raise UpstreamUnreachable(f"the name of upstream {self.upstream!r} does not "
                                      "resolve") from None
        if not answers:
            raise UpstreamUnreachable(f"the name of upstream {self.upstream!r} resolves to no "
                                      "address")
        if not self.allow_private:
            # One internal answer refuses them all: a name that mixes public and internal answers is
            # a rebinding setup, and trying the public one first would only hide it.
            for answer in answers:
                problem = address_problem(answer)
                if problem is not None:
                    # The address is for the operator's log: a client learns only that it is refused.
                    log.warning("upstream %r: %s resolves to a %s address (%s), refused; set "
                                "allow_private = true for it if that is intended",
                                self.upstream, host, problem, answer)
                    raise UpstreamAddressRefused(
                        f"the address upstream {self.upstream!r} resolves to is refused: the bridge "
                        "does not connect to internal addresses by name (the operator's log says "
                        "which; allow_private = true for this upstream allows them)")
        return answers
