"""Special addresses: every blocked range named, wrapped IPv4 unwrapped, allowances explicit."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.netrule import NetRule
from bastion.sandbox.netguard import METADATA_ADDRESSES, allowed, is_special

ip = ipaddress.ip_address
net = ipaddress.ip_network


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "cgnat"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("100.100.100.200", "metadata"),
        ("168.63.129.16", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.0.8", "reserved"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fec0::1", "site-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fd00:ec2::254", "metadata"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("2001:2::1", "benchmarking"),
        ("100::1", "reserved"),
        # IPv4 carried in IPv6: the embedded address is judged...
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:0:a00:1", "private"),
        ("::127.0.0.1", "loopback"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("2002:a9fe:a9fe::1", "metadata"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # teredo client 127.0.0.1
        # ...and the wrapper is special even around a public address.
        ("::ffff:8.8.8.8", "ipv4-mapped"),
        ("::8.8.8.8", "ipv4-compatible"),
        ("64:ff9b::808:808", "nat64"),
        ("64:ff9b:1::1", "nat64"),
        ("2002:808:808::1", "6to4"),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "teredo"),  # client 8.8.8.8
    ],
)
def test_special_addresses_are_named(address: str, reason: str) -> None:
    assert is_special(ip(address)) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450::1"]
)
def test_public_addresses_are_not_special(address: str) -> None:
    assert is_special(ip(address)) is None


def test_every_metadata_address_is_special() -> None:
    assert all(is_special(a) == "metadata" for a in METADATA_ADDRESSES)


SPECIAL_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "224.0.0.0/4",
    "240.0.0.0/4",
]


@st.composite
def special_v4(draw: st.DrawFn) -> ipaddress.IPv4Address:
    n = net(draw(st.sampled_from(SPECIAL_V4)))
    return ipaddress.IPv4Address(int(n.network_address) + draw(st.integers(0, n.num_addresses - 1)))


def _wrappers(v4: ipaddress.IPv4Address) -> list[ipaddress.IPv6Address]:
    x = int(v4)
    return [
        ipaddress.IPv6Address((0xFFFF << 32) | x),  # ::ffff:a.b.c.d
        ipaddress.IPv6Address(x) if x > 1 else ipaddress.IPv6Address((0xFFFF << 32) | x),
        ipaddress.IPv6Address((0x64FF9B << 96) | x),  # NAT64
        ipaddress.IPv6Address((0x2002 << 112) | (x << 80)),  # 6to4
        ipaddress.IPv6Address((0x20010000 << 96) | (x ^ 0xFFFFFFFF)),  # teredo client
    ]


@given(special_v4())
@settings(max_examples=300)
def test_wrapped_special_ipv4_keeps_its_reason(v4: ipaddress.IPv4Address) -> None:
    reason = is_special(v4)
    assert reason is not None
    for v6 in _wrappers(v4):
        assert is_special(v6) == reason, v6


@given(st.ip_addresses(v=4))
@settings(max_examples=300)
def test_every_wrapped_ipv4_is_special(v4: ipaddress.IPv4Address) -> None:
    for v6 in _wrappers(v4):
        assert is_special(v6) is not None, v6


@given(st.ip_addresses())
@settings(max_examples=500)
def test_non_global_addresses_are_special(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    if not address.is_global:
        assert is_special(address) is not None


def test_allowed_public_and_explicit_only() -> None:
    assert allowed(ip("8.8.8.8"), [], None)
    assert not allowed(ip("127.0.0.1"), [], None)
    assert allowed(ip("127.0.0.1"), [net("127.0.0.0/8")], None)
    assert allowed(ip("10.1.2.3"), [net("10.1.0.0/16")], None)
    assert not allowed(ip("10.2.0.1"), [net("10.1.0.0/16")], None)
    # Allowing an IPv4 network does not allow its IPv6-mapped twin, nor anything else.
    assert not allowed(ip("::ffff:127.0.0.1"), [net("127.0.0.0/8")], None)
    assert allowed(ip("::ffff:127.0.0.1"), [net("::ffff:127.0.0.1/128")], None)
    assert not allowed(ip("169.254.169.254"), [net("127.0.0.1/32")], None)


def test_a_rule_naming_the_address_allows_it() -> None:
    rule = NetRule.parse("http://127.0.0.1:8080")
    assert allowed(ip("127.0.0.1"), [], rule)
    assert not allowed(ip("127.0.0.2"), [], rule)
    assert not allowed(ip("::ffff:127.0.0.1"), [], rule)
    assert not allowed(ip("127.0.0.1"), [], NetRule.parse("http://localhost:8080"))
    assert allowed(ip("::1"), [], NetRule.parse("http://[::1]"))
