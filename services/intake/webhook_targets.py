"""Where the bureau may post an issuer's webhook: never into its own networks (SSRF).

A URL is checked when the issuer sets it and again at every delivery:
- https only in production (any environment but dev and test; http is allowed there, for
  local receivers);
- no user info, a host name or address, in production the port 443 or 8443 only;
- names that only mean something inside the bureau (`localhost`, a single-label service name,
  `.internal`, `.local`, `.localhost`, `.cluster.local`, `.svc`, `.lan`, `.home.arpa`) refused;
- every address the host resolves to must be globally routable (ipaddress `is_global`, which
  excludes RFC 1918, loopback, link-local with the cloud metadata address 169.254.169.254,
  CGNAT, ULA, documentation and reserved ranges), unless an operator allowed its network
  (`webhook_allowed_networks`, e.g. an issuer's private link); link-local is never allowed;
- the delivery connects to the address that was checked, not to a second resolution of the
  name (no DNS rebinding): the URL is rewritten to that address, the Host header and the TLS
  server name (SNI, and so the certificate check) stay the issuer's host name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Host name -> its addresses (the system resolver by default; tests pass their own).
Resolver = Callable[[str, int], Awaitable[list[IpAddress]]]

INTERNAL_SUFFIXES = (
    ".internal",
    ".local",
    ".localhost",
    ".localdomain",
    ".cluster.local",
    ".svc",
    ".lan",
    ".home.arpa",
    ".intranet",
    ".corp",
)
PRODUCTION_PORTS = (443, 8443)
RESOLVE_TIMEOUT_S = 5.0


class TargetRefused(ValueError):
    """The URL or its addresses are not a place the bureau posts to; the message says why
    without naming what answered there."""


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the address the delivery must connect to."""

    url: str  # the URL with the checked address in place of the host name
    host: str  # the issuer's host name: the TLS server name
    host_header: str  # the Host header: the name, and the port when the URL gave one
    address: IpAddress


async def system_resolver(host: str, port: int) -> list[IpAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a label IDNA cannot encode
        raise TargetRefused(f"the host {host!r} does not resolve") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def parse_networks(spec: str) -> list[IpNetwork]:
    """`webhook_allowed_networks`: comma-separated CIDRs; link-local can never be allowed."""
    networks = [ipaddress.ip_network(p.strip()) for p in spec.split(",") if p.strip()]
    for network in networks:
        if network.is_link_local or network.overlaps(ipaddress.ip_network("169.254.0.0/16")):
            raise ValueError(f"{network} is link-local (cloud metadata): never a webhook target")
    return networks


def check_url(url: str, *, production: bool) -> SplitResult:
    """The parts of a webhook URL, or TargetRefused naming what is wrong (no I/O here)."""
    parts = urlsplit(url.strip())
    allowed = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed:
        raise TargetRefused(f"the URL must use {' or '.join(allowed)}")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL must not carry a user name or password")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise TargetRefused("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused("the URL's port is not a number from 0 to 65535") from exc
    if production and port not in PRODUCTION_PORTS:
        raise TargetRefused(f"the port must be one of {', '.join(map(str, PRODUCTION_PORTS))}")
    if not _is_address(host):
        if host == "localhost" or "." not in host or host.endswith(INTERNAL_SUFFIXES):
            raise TargetRefused(f"{host!r} is a name internal to a network, not a public host")
    return parts


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def address_allowed(address: IpAddress, allowed: Sequence[IpNetwork]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    if address.is_link_local:
        return False
    if address.is_global and not address.is_multicast:
        return True
    return any(address in network for network in allowed)


async def resolve_target(
    url: str,
    *,
    production: bool,
    allowed: Sequence[IpNetwork] = (),
    resolver: Resolver = system_resolver,
) -> Target:
    """Check the URL, resolve its host once, refuse if any address is internal, and pin the
    first: the caller connects to `Target.url`, never to the name again."""
    parts = check_url(url, production=production)
    host = (parts.hostname or "").rstrip(".").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if _is_address(host):
        addresses: list[IpAddress] = [ipaddress.ip_address(host)]
    else:
        try:
            addresses = await asyncio.wait_for(resolver(host, port), RESOLVE_TIMEOUT_S)
        except TimeoutError as exc:
            raise TargetRefused(f"the host {host!r} did not resolve in time") from exc
    if not addresses:
        raise TargetRefused(f"the host {host!r} does not resolve")
    if not all(address_allowed(a, allowed) for a in addresses):
        raise TargetRefused(
            f"the host {host!r} resolves to an address the bureau does not call"
            " (private, loopback, link-local or otherwise internal)"
        )
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return Target(url=pinned, host=host, host_header=host_header, address=address)
