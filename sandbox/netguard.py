"""Which IP addresses are special (loopback, private, metadata, ...) and when one may be reached.

A skill's HTTP request is checked after DNS resolution: every address it would connect to must
be public, or be allowed explicitly by the operator. IPv6 forms that carry an IPv4 address
(mapped, compatible, translated, NAT64, 6to4, Teredo) are always special: the embedded address
is unwrapped and, when it is itself special, its reason is reported (a mapped metadata address
says "metadata"), otherwise the wrapper's reason is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from bastion.executor import IPNetwork
from bastion.netrule import IPAddress, NetRule

__all__ = ["LOCAL_NAMES", "METADATA_ADDRESSES", "allowed", "is_special", "special_target"]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

METADATA_ADDRESSES: Final[frozenset[IPAddress]] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle instance metadata
        "169.254.169.253",  # AWS VPC DNS
        "169.254.169.123",  # AWS time sync
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS pod identity
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "168.63.129.16",  # Azure WireServer (a public-looking platform address)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
    )
)
"""Cloud metadata and platform endpoints: credentials live behind these."""

_V4_TABLE: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = (
    (_V4("0.0.0.0/8"), "unspecified"),  # Linux connects 0.0.0.0 to the local host
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("100.64.0.0/10"), "cgnat"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
    (_V4("192.0.0.0/24"), "reserved"),
    (_V4("192.88.99.0/24"), "reserved"),
)

_V6_TABLE: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("fc00::/7"), "unique-local"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("2001:2::/48"), "benchmarking"),
    (_V6("100::/64"), "reserved"),
)

_MAPPED: Final = _V6("::ffff:0:0/96")
_TRANSLATED: Final = _V6("::ffff:0:0:0/96")
_COMPATIBLE: Final = _V6("::/96")
_NAT64: Final = _V6("64:ff9b::/96")
_NAT64_LOCAL: Final = _V6("64:ff9b:1::/48")
_SIXTOFOUR: Final = _V6("2002::/16")
_TEREDO: Final = _V6("2001::/32")


def _embedded(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address | None] | None:
    """The wrapper kind and embedded IPv4 of an IPv6 address that carries one, else None."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _MAPPED:
        return "ipv4-mapped", low32
    if ip in _TRANSLATED:
        return "ipv4-mapped", low32
    if ip in _COMPATIBLE:
        return "ipv4-compatible", low32
    if ip in _NAT64:
        return "nat64", low32
    if ip in _NAT64_LOCAL:
        return "nat64", None  # the embedding depends on the local prefix length
    if ip in _SIXTOFOUR:
        return "6to4", ip.sixtofour
    if ip in _TEREDO:
        teredo = ip.teredo
        return "teredo", teredo[1] if teredo else None
    return None


def _special_v4(ip: ipaddress.IPv4Address) -> str | None:
    if ip in METADATA_ADDRESSES:
        return "metadata"
    for net, reason in _V4_TABLE:
        if ip in net:
            return reason
    return None if ip.is_global else "reserved"


def is_special(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be reached without an explicit allowance, or None if it is public."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _special_v4(ip)
    if ip.scope_id is not None:
        ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")):
        return "unspecified" if int(ip) == 0 else "loopback"
    wrapped = _embedded(ip)
    if wrapped is not None:
        kind, inner = wrapped
        inner_reason = _special_v4(inner) if inner is not None else None
        return inner_reason or kind
    for net, reason in _V6_TABLE:
        if ip in net:
            return reason
    return None if ip.is_global else "reserved"


def allowed(ip: IPAddress, private_allow: Sequence[IPNetwork], rule: NetRule | None) -> bool:
    """Whether ``ip`` may be reached: public, inside an allowed network, or named by the rule.

    An operator who writes ``http://127.0.0.1:8080`` names that address explicitly, so the
    matching rule's own IP literal is allowed. Networks are compared by IP version: allowing
    ``127.0.0.1`` does not allow ``::ffff:127.0.0.1``.
    """
    if is_special(ip) is None:
        return True
    if any(ip.version == net.version and ip in net for net in private_allow):
        return True
    return rule is not None and rule.ip is not None and rule.ip == ip


LOCAL_NAMES: Final[tuple[str, ...]] = (
    "localhost",
    "localhost.localdomain",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
)
"""Names that mean this machine or a cloud metadata service wherever they are resolved."""
_LOCAL_SUFFIXES: Final[tuple[str, ...]] = (
    ".localhost",
    ".local",
    ".internal",
    ".home.arpa",
    ".lan",
    ".intranet",
    ".corp",
)


def special_target(host: str, ip: IPAddress | None) -> str | None:
    """Why a URL's host must never be *suggested* for allowing (a fix hint), or None.

    An IP literal is special when ``is_special`` says so; a name when it is a local or
    cloud-internal name (``localhost``, ``*.internal``, metadata names) or has no dot (resolved
    through the local search domains). A public-looking name can still resolve to a private
    address; that is refused after resolution, with its own message.
    """
    if ip is not None:
        return is_special(ip)
    name = host.lower().rstrip(".")
    if name in LOCAL_NAMES:
        return "metadata" if "metadata" in name or "instance-data" in name else "loopback"
    if name.endswith(_LOCAL_SUFFIXES) or "." not in name:
        return "local-network"
    return None
