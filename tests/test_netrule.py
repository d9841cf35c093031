"""Network rules and URL parsing: the grammar, normalisation, and attacks on the matcher."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bastion.errors import RuleError
from bastion.netrule import NetRule, ParsedURL, first_match, parse_url

# -- grammar --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scheme", "host", "port", "wildcard", "canonical"),
    [
        (
            "https://api.example.com",
            "https",
            "api.example.com",
            443,
            False,
            "https://api.example.com",
        ),
        (
            "HTTP://API.Example.COM.:8080",
            "http",
            "api.example.com",
            8080,
            False,
            "http://api.example.com:8080",
        ),
        ("https://*.Example.com", "https", "example.com", 443, True, "https://*.example.com"),
        ("https://a.com:443/", "https", "a.com", 443, False, "https://a.com"),
        ("http://127.0.0.1:8080", "http", "127.0.0.1", 8080, False, "http://127.0.0.1:8080"),
        ("http://[::1]", "http", "::1", 80, False, "http://[::1]"),
        (
            "https://bücher.example",
            "https",
            "xn--bcher-kva.example",
            443,
            False,
            "https://xn--bcher-kva.example",
        ),
        (
            "https://*.xn--bcher-kva.example:8443",
            "https",
            "xn--bcher-kva.example",
            8443,
            True,
            "https://*.xn--bcher-kva.example:8443",
        ),
    ],
)
def test_rules_parse_and_normalise(
    text: str, scheme: str, host: str, port: int, wildcard: bool, canonical: str
) -> None:
    rule = NetRule.parse(text)
    assert (rule.scheme, rule.host, rule.port, rule.wildcard) == (scheme, host, port, wildcard)
    assert rule.text == text
    assert str(rule) == canonical
    assert NetRule.parse(canonical) == rule


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("*", "no scheme"),
        ("api.example.com", "no scheme"),
        ("ftp://example.com", "scheme 'ftp'"),
        ("https://*", "leftmost label"),
        ("https://*foo.com", "leftmost label"),
        ("https://a.*.com", "leftmost label"),
        ("https://*.*.com", "leftmost label"),
        ("https://example.com/path", "a path"),
        ("https://example.com/?q", "a path"),
        ("https://example.com?q=1", "a query"),
        ("https://example.com#f", "a fragment"),
        ("https://user@example.com", "userinfo"),
        ("https://example.com:0", "port '0'"),
        ("https://example.com:65536", "port '65536'"),
        ("https://example.com:", "port ''"),
        ("https://example.com:http", "port 'http'"),
        ("https://", "empty host"),
        ("https://*.", "empty"),
        ("https://a..com", "empty label"),
        (" https://example.com", "U+0020"),
        ("https://exa mple.com", "U+0020"),
        ("https://example.com\\", "backslash"),
        ("http://0177.0.0.1", 'write it as "http://127.0.0.1"'),
        ("http://2130706433:81", 'write it as "http://127.0.0.1:81"'),
        ("http://127.1", 'write it as "http://127.0.0.1"'),
        ("http://[::FFFF:7F00:1]", 'write it as "http://[::ffff:7f00:1]"'),
        ("http://::1", "brackets"),
        ("https://*.10.0.0.1", "not an IP address"),
        ("https://*.[::1]", "IPv6"),
        ("http://[::1%25eth0]", "zone"),
        ("http://%65xample.com", "percent"),
        ("http://foo.123", "not a number"),
        ("http://xn--zz.com", "punycode"),
    ],
)
def test_bad_rules_are_refused_quoting_the_text(text: str, needle: str) -> None:
    with pytest.raises(RuleError) as info:
        NetRule.parse(text)
    err = info.value
    assert repr(text) in str(err)
    assert needle in str(err)
    assert err.fix  # every refusal says how to fix it
    assert err.code == "RULE_INVALID"


def test_rule_ip_property() -> None:
    assert NetRule.parse("http://10.0.0.1").ip == ipaddress.ip_address("10.0.0.1")
    assert NetRule.parse("http://[fd00::1]:81").ip == ipaddress.ip_address("fd00::1")
    assert NetRule.parse("http://a.test").ip is None
    assert NetRule.parse("http://*.a.test").ip is None


def test_rule_equality_ignores_spelling() -> None:
    a, b = (
        NetRule.parse("HTTPS://Bücher.Example.:443/"),
        NetRule.parse("https://xn--bcher-kva.example"),
    )
    assert a == b and hash(a) == hash(b) and a.text != b.text


# -- URLs -----------------------------------------------------------------------------------


def test_parse_url_normalises() -> None:
    u = parse_url("HTTPS://Bücher.Example.:8443/ä b?x=1#frag".replace(" ", "%20"))
    assert (u.scheme, u.host, u.port, u.ip) == ("https", "xn--bcher-kva.example", 8443, None)
    assert u.path_and_query == "/%C3%A4%20b?x=1"
    assert u.url == "https://xn--bcher-kva.example:8443/%C3%A4%20b?x=1"
    assert u.origin == ("https", "xn--bcher-kva.example", 8443)
    assert parse_url("http://a.test").path_and_query == "/"
    assert parse_url("http://a.test?q").path_and_query == "/?q"
    assert parse_url("http://[::1]:81/x").authority == "[::1]:81"
    assert parse_url("http://a.test:80/").authority == "a.test"


@pytest.mark.parametrize(
    ("url", "ip"),
    [
        ("http://2130706433/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://0x7f.1/", "127.0.0.1"),
        ("http://0x7F000001/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://127.0.1/", "127.0.0.1"),
        ("http://017700000001/", "127.0.0.1"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254"),
        ("http://2852039166/", "169.254.169.254"),
        ("http://127.0.0.1./", "127.0.0.1"),
        (
            "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
            "127.0.0.1",
        ),  # fullwidth digits map to ASCII under IDNA
        ("http://127\u30020\u30020\u30021/", "127.0.0.1"),  # ideographic full stops
        ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
        ("http://[0:0:0:0:0:ffff:7f00:1]/", "::ffff:7f00:1"),
    ],
)
def test_numeric_ipv4_spellings_are_read_as_addresses(url: str, ip: str) -> None:
    u = parse_url(url)
    assert u.ip == ipaddress.ip_address(ip)
    assert u.host == ip
    # ...so a name rule can never match them, while the canonical IP rule does.
    assert not NetRule.parse("http://localhost").matches(u)
    assert NetRule.parse(f"http://{'[' + ip + ']' if ':' in ip else ip}").matches(u)


@pytest.mark.parametrize(
    "url",
    [
        "http://good.test@127.0.0.1/",
        "http://good.test:80@127.0.0.1/",
        "http://user:pw@good.test/",
        "http://@good.test/",
        "http://good.test\\@127.0.0.1/",
        "http://127.0.0.1\\.good.test/",
        "http:\\\\good.test/",
        "http:/good.test/",
        "//good.test/",
        "good.test/",
        "http://good.test /",
        "http://good.test\t/",
        "http://good.test\n.evil/",
        "http://good.test\x00.evil/",
        "http://good.test\u200b/",  # zero-width space
        "http://good.test\u3000/",  # ideographic space
        "http:///path",
        "http://:80/",
        "http://good.test:/",
        "http://good.test:0/",
        "http://good.test:99999/",
        "http://good.test:+80/",
        "http://good.test:8_0/",
        "http://good.test:\uff18\uff10/",
        "file:///etc/passwd",
        "gopher://good.test/",
        "javascript:alert(1)",
        "ws://good.test/",
        "http://%67ood.test/",
        "http://[::1%eth0]/",
        "http://[127.0.0.1]/",
        "http://[::1/",
        "http://[::1]x/",
        "http://1.2.3.4.5/",
        "http://256.0.0.1/",
        "http://1.2.3.256/",
        "http://1.16777216/",
        "http://4294967296/",
        "http://08.0.0.1/",
        "http://0xg.1/",
        "http://foo.123/",
        "http://good.test..evil/",
        "http://.good.test/",
        "http://good.test../",
        "http://" + "a" * 64 + ".test/",
        "http://" + "1" * 5000 + "/",
        "http://xn--zz.test/",
    ],
)
def test_junk_urls_are_refused(url: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_url(url)
    assert info.value.fix


@given(st.text(max_size=60))
@settings(max_examples=500)
def test_parse_url_raises_only_rule_errors_and_is_idempotent(tail: str) -> None:
    for candidate in (tail, "http://" + tail, "https://a.test/" + tail):
        try:
            u = parse_url(candidate)
        except RuleError:
            continue
        assert "@" not in u.host and "\\" not in u.url and "#" not in u.url
        assert u.url.isascii()
        assert parse_url(u.url) == u


_octet = st.integers(0, 255)


def _spell(n: int, style: str) -> str:
    return {"d": str(n), "o": "0" + format(n, "o"), "x": hex(n)}[style]


@st.composite
def ipv4_spellings(draw: st.DrawFn) -> tuple[str, ipaddress.IPv4Address]:
    value = draw(st.integers(0, 2**32 - 1))
    ip = ipaddress.IPv4Address(value)
    parts = draw(st.integers(1, 4))
    octets = list(ip.packed)
    nums = [*octets[: parts - 1], int.from_bytes(bytes(octets[parts - 1 :]), "big")]
    styles = draw(st.lists(st.sampled_from("dox"), min_size=parts, max_size=parts))
    return ".".join(_spell(n, s) for n, s in zip(nums, styles, strict=True)), ip


@given(ipv4_spellings())
@settings(max_examples=400)
@example(("0x7f.1", ipaddress.IPv4Address("127.0.0.1")))
def test_ipv4_spellings_agree_with_libc(spelled: tuple[str, ipaddress.IPv4Address]) -> None:
    text, ip = spelled
    assert socket.inet_aton(text) == ip.packed  # the oracle: libc reads it this way
    u = parse_url(f"http://{text}/")
    assert u.ip == ip and u.host == str(ip)


@given(
    st.lists(
        st.sampled_from(["0", "1", "09", "0x", "0xff", "255", "256", "077", "4294967295"]),
        min_size=1,
        max_size=5,
    )
)
def test_all_numeric_hosts_are_addresses_or_refused(parts: list[str]) -> None:
    text = ".".join(parts)
    try:
        u = parse_url(f"http://{text}/")
    except RuleError:
        return
    assert u.ip is not None  # never a DNS name
    try:
        assert socket.inet_aton(text) == u.ip.packed
    except OSError:
        pytest.fail(f"{text!r} parsed as {u.ip} but libc refuses it")


# -- matching -------------------------------------------------------------------------------


def test_wildcards_match_subdomains_never_the_apex() -> None:
    rule = NetRule.parse("https://*.good.test")
    assert rule.matches("https://a.good.test/x")
    assert rule.matches("https://a.b.c.good.test")
    assert rule.matches("https://A.GOOD.TEST./")
    assert not rule.matches("https://good.test/")
    assert not rule.matches("https://evilgood.test/")
    assert not rule.matches("https://good.test.evil.test/")
    assert not rule.matches("http://a.good.test/")
    assert not rule.matches("https://a.good.test:8443/")


def test_attacks_on_a_name_rule() -> None:
    rules = [NetRule.parse("http://good.test")]
    assert first_match(rules, "http://good.test/anything?x=@evil") == rules[0]
    for url in (
        "http://good.test.evil.test/",
        "http://evil.test/good.test",
        "http://evil.test/?u=http://good.test",
        "http://goodXtest/",
        "http://good.test:8080/",
        "https://good.test/",
        "http://127.0.0.1/",
    ):
        assert first_match(rules, url) is None, url
    for url in ("http://good.test@127.0.0.1/", "http://good.test%2f@127.0.0.1/"):
        with pytest.raises(RuleError):
            first_match(rules, url)


def test_ip_rules_match_only_their_address() -> None:
    rule = NetRule.parse("http://127.0.0.1:8080")
    assert rule.matches("http://127.0.0.1:8080/x")
    assert rule.matches("http://2130706433:8080/x")  # the same address, however spelled
    assert not rule.matches("http://[::ffff:127.0.0.1]:8080/")  # a different address family
    assert not rule.matches("http://127.0.0.2:8080/")
    assert not rule.matches("http://localhost:8080/")
    v6 = NetRule.parse("http://[2001:db8::1]")
    assert v6.matches("http://[2001:DB8:0:0::1]/")


def test_first_match_returns_the_first_rule_and_accepts_parsed_urls() -> None:
    a, b = NetRule.parse("https://*.t.test"), NetRule.parse("https://x.t.test")
    u = parse_url("https://x.t.test/")
    assert isinstance(u, ParsedURL)
    assert first_match([a, b], u) is a
    assert first_match([b, a], u) is b
    assert first_match([], u) is None


# -- properties against an independent oracle ----------------------------------------------

LABELS = ["a", "b", "api", "cdn", "bücher"]
PUNY = {"bücher": "xn--bcher-kva"}
label_lists = st.lists(st.sampled_from(LABELS), min_size=1, max_size=3).map(
    lambda ls: [*ls, "test"]
)


@st.composite
def rule_specs(draw: st.DrawFn) -> tuple[str, bool, list[str], int | None]:
    return (
        draw(st.sampled_from(["http", "https"])),
        draw(st.booleans()),
        draw(label_lists),
        draw(st.sampled_from([None, 80, 443, 8080])),
    )


def _rule_text(spec: tuple[str, bool, list[str], int | None]) -> str:
    scheme, wild, labels, port = spec
    return f"{scheme}://{'*.' if wild else ''}{'.'.join(labels)}" + (f":{port}" if port else "")


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else {"http": 80, "https": 443}[scheme]


def _oracle(
    spec: tuple[str, bool, list[str], int | None], scheme: str, labels: list[str], port: int | None
) -> bool:
    """Membership from label lists alone: equal scheme and port, and exact or proper suffix."""
    r_scheme, wild, r_labels, r_port = spec
    if (r_scheme, _port(r_scheme, r_port)) != (scheme, _port(scheme, port)):
        return False
    if wild:
        return len(labels) > len(r_labels) and labels[-len(r_labels) :] == r_labels
    return labels == r_labels


@given(
    st.lists(rule_specs(), max_size=4),
    st.sampled_from(["http", "https"]),
    label_lists,
    st.sampled_from([None, 80, 443, 8080]),
)
@settings(max_examples=400)
def test_allowed_iff_some_rule_covers(
    specs: list[tuple[str, bool, list[str], int | None]],
    scheme: str,
    labels: list[str],
    port: int | None,
) -> None:
    rules = [NetRule.parse(_rule_text(s)) for s in specs]
    url = f"{scheme}://{'.'.join(labels)}" + (f":{port}" if port else "") + "/p"
    expected = any(_oracle(s, scheme, labels, port) for s in specs)
    assert (first_match(rules, url) is not None) == expected


@given(
    rule_specs(),
    rule_specs(),
    st.sampled_from(["http", "https"]),
    label_lists,
    st.sampled_from([None, 80, 443, 8080]),
)
@settings(max_examples=400)
def test_covers_is_consistent_with_matches(
    a_spec: tuple[str, bool, list[str], int | None],
    b_spec: tuple[str, bool, list[str], int | None],
    scheme: str,
    labels: list[str],
    port: int | None,
) -> None:
    a, b = NetRule.parse(_rule_text(a_spec)), NetRule.parse(_rule_text(b_spec))
    url = f"{scheme}://{'.'.join(labels)}" + (f":{port}" if port else "")
    if a.covers(b) and b.matches(url):
        assert a.matches(url)
    # A witness URL of b ("q" is no label of the alphabet): a covers b iff a matches it.
    witness = f"{b.scheme}://{'q.' if b.wildcard else ''}{b.host}:{b.port}/"
    assert b.matches(witness)
    assert a.covers(b) == a.matches(witness)
    assert a.covers(a)


def _variant(labels: list[str], data: st.DataObject) -> str:
    out = []
    for label in labels:
        if label in PUNY and data.draw(st.booleans()):
            label = PUNY[label]
        flips = data.draw(st.lists(st.booleans(), min_size=len(label), max_size=len(label)))
        out.append("".join(c.upper() if f else c for c, f in zip(label, flips, strict=True)))
    return ".".join(out) + ("." if data.draw(st.booleans()) else "")


@given(
    st.lists(rule_specs(), max_size=4), st.sampled_from(["http", "https"]), label_lists, st.data()
)
@settings(max_examples=300)
def test_normalisation_variants_get_the_same_decision(
    specs: list[tuple[str, bool, list[str], int | None]],
    scheme: str,
    labels: list[str],
    data: st.DataObject,
) -> None:
    rules = [NetRule.parse(_rule_text(s)) for s in specs]
    plain = f"{scheme}://{'.'.join(labels)}/x"
    variant = (
        f"{scheme.upper() if data.draw(st.booleans()) else scheme}://{_variant(labels, data)}/x"
    )
    assert parse_url(variant) == parse_url(plain)
    assert first_match(rules, variant) == first_match(rules, plain)
    # Rules written in another spelling are the same rules.
    respelled = [
        NetRule.parse(
            f"{s[0]}://{'*.' if s[1] else ''}{_variant(s[2], data)}" + (f":{s[3]}" if s[3] else "")
        )
        for s in specs
    ]
    assert respelled == rules


ipv6 = st.ip_addresses(v=6).map(lambda ip: f"[{ip.compressed}]")
ipv4 = st.ip_addresses(v=4).map(str)


@given(
    st.sampled_from(["http", "https", "HTTPS"]),
    st.one_of(
        label_lists.map(".".join), label_lists.map(lambda ls: "*." + ".".join(ls)), ipv4, ipv6
    ),
    st.one_of(st.none(), st.integers(1, 65535)),
)
@settings(max_examples=300)
def test_parse_of_str_round_trips(scheme: str, host: str, port: int | None) -> None:
    rule = NetRule.parse(f"{scheme}://{host}" + (f":{port}" if port is not None else ""))
    again = NetRule.parse(str(rule))
    assert again == rule
    assert str(again) == str(rule)
    assume(not rule.wildcard)
    assert rule.matches(str(rule) + "/")
