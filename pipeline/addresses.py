"""No reach inside the network: where a media URL (or a redirect) may lead.

A URL on another host than the API's must not lead somewhere more internal than the
API itself. It is checked on the address really connected to, after each redirect, so
DNS tricks do not pass: ``GuardedResolver`` sits in the client's connector and drops the
addresses a name resolves to that the policy refuses; an IP literal (which aiohttp does
not resolve) is checked by the client before each request (``AddressGuard.check``).

How internal an address is (``Reach``): public < private (RFC 1918, ULA, CGNAT, ...) <
loopback. With a public API, private and loopback storage are refused; with an API on a
private address, private storage is fine but loopback is not; with an API on loopback
(the sandbox, tests, the demo), loopback storage is fine. Link-local (169.254.0.0/16,
fe80::/10: cloud metadata), multicast, unspecified and reserved addresses are always
refused. ``[media] allow_private_addresses`` lifts the private/loopback rule, never the
last one.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from enum import IntEnum

from pipeline import tls  # noqa: F401  first: it imports aiohttp (see there)
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from pipeline.errors import UnsafeUrlError

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Reach(IntEnum):
    PUBLIC = 0
    PRIVATE = 1
    LOOPBACK = 2
    NEVER = 3  # link-local, multicast, unspecified, reserved

    @property
    def label(self) -> str:
        return {0: "public", 1: "private", 2: "loopback", 3: "link-local/multicast/reserved"}[self.value]


def reach_of(address: str) -> Reach:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) says nothing more
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.is_loopback:  # before is_reserved: ::1 is in the reserved ::/8
        return Reach.LOOPBACK
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return Reach.NEVER
    return Reach.PUBLIC if ip.is_global else Reach.PRIVATE


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a non-API host may have, given how internal the API is."""

    api_reach: Reach
    allow_private: bool = False

    def refusal(self, address: str) -> str | None:
        """Why ``address`` is refused, or None."""
        reach = reach_of(address)
        if reach is Reach.NEVER:
            return f"{address} is a {reach.label} address; always refused"
        if self.allow_private or reach <= self.api_reach:
            return None
        return (f"{address} is a {reach.label} address, more internal than the API's ({self.api_reach.label});"
                " refused (see [media] allow_private_addresses)")


class AddressGuard:
    """The policy for one client: the API's reach is found on first use (its own
    resolved addresses, the most public of them) unless given."""

    def __init__(self, api_host: str, *, allow_private: bool, api_reach: Reach | None = None,
                 resolver: AbstractResolver | None = None):
        self.api_host = api_host
        self.allow_private = allow_private
        self._api_reach = api_reach
        self._resolver = resolver
        self._policy: AddressPolicy | None = None

    @property
    def resolver(self) -> AbstractResolver:
        if self._resolver is None:
            self._resolver = DefaultResolver()
        return self._resolver

    async def policy(self) -> AddressPolicy:
        if self._policy is None:
            reach = self._api_reach
            if reach is None:
                if is_ip_literal(self.api_host):
                    reach = reach_of(self.api_host.strip("[]"))
                else:
                    found = await self.resolver.resolve(self.api_host, 0, socket.AF_UNSPEC)
                    reach = min(reach_of(entry["host"]) for entry in found)
            self._policy = AddressPolicy(reach, self.allow_private)
        return self._policy

    async def check(self, host: str) -> None:
        """For an IP literal of another host than the API's: UnsafeUrlError if refused."""
        if host == self.api_host or not is_ip_literal(host):
            return
        refusal = (await self.policy()).refusal(host.strip("[]"))
        if refusal:
            raise UnsafeUrlError(refusal, url=host)

    async def allowed(self, host: str, found: list[ResolveResult]) -> list[ResolveResult]:
        if host == self.api_host:
            return found
        policy = await self.policy()
        allowed = [entry for entry in found if policy.refusal(entry["host"]) is None]
        if not allowed:
            refusal = policy.refusal(found[0]["host"]) if found else "no address"
            raise UnsafeUrlError(f"{host} resolves to {refusal}", url=host)
        return allowed


class GuardedResolver(AbstractResolver):
    """The connector's resolver: another resolver's answers, less what the guard refuses.
    UnsafeUrlError is not an OSError, so aiohttp lets it through as it is."""

    def __init__(self, guard: AddressGuard):
        self.guard = guard

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self.guard.resolver.resolve(host, port, family)
        return await self.guard.allowed(host, found)

    async def close(self) -> None:
        await self.guard.resolver.close()
