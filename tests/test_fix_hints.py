"""Fix hints never widen the attack surface, and name the policy line that is really missing.

The attacks: a server redirects a skill to the cloud metadata address (or any loopback,
private, link-local address, in any notation) and the NETWORK_DENIED hint tells the operator
to allow it; a skill asks for an origin the policy's ``[network] allow`` already lists and the
hint names ``[network] allow`` although a per-skill grant is what is missing.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion import Kernel, hookimpl, load_policy, native_skill
from bastion.sandbox.netguard import METADATA_ADDRESSES, is_special, special_target
from tests.httpservers import LocalServer
from tests.test_hostnet import LOCAL, Make, denied, make, srv  # noqa: F401 (fixtures)

SPECIAL_NETS = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
]


@st.composite
def special_ip_url(draw: st.DrawFn) -> tuple[str, str]:
    """(URL with a special IP literal in some notation, the address)."""
    if draw(st.booleans()):
        ip = draw(st.sampled_from(sorted(METADATA_ADDRESSES, key=str)))
    else:
        net = ipaddress.ip_network(draw(st.sampled_from(SPECIAL_NETS)))
        ip = net[draw(st.integers(0, min(net.num_addresses - 1, 2**32)))]
    if ip.version == 6:
        host = f"[{ip}]"
    else:
        n = int(ip)
        host = draw(
            st.sampled_from(
                [
                    str(ip),
                    str(n),
                    hex(n),
                    f"[::ffff:{ip}]",
                    ".".join(f"0{int(o):o}" for o in str(ip).split(".")),
                ]
            )
        )
    scheme = draw(st.sampled_from(["http", "https"]))
    port = draw(st.sampled_from(["", ":8080", ":80"]))
    return f"{scheme}://{host}{port}/latest/meta-data/", str(ip)


@settings(max_examples=150, deadline=None)
@given(case=special_ip_url())
def test_a_special_address_is_never_suggested(case: tuple[str, str]) -> None:
    from bastion.sandbox.hostnet import HostHttp

    url, _address = case
    http = HostHttp([], (), deadline=10**12, skill="fetch")
    try:
        err = denied(http, url)
    finally:
        http.close()
    msg = err.message
    assert "will not suggest allowing" in msg, msg
    assert "add " not in msg and "[network] allow" not in msg and "allow_private" not in msg


@pytest.mark.parametrize(
    "host", ["localhost", "metadata.google.internal", "db.internal", "printer.local", "intranet"]
)
def test_local_names_are_never_suggested(make: Make, host: str) -> None:  # noqa: F811
    err = denied(make(rules=()), f"http://{host}/x")
    assert "will not suggest allowing" in err.message and "add " not in err.message


@pytest.mark.parametrize(
    "location",
    ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:22/", "http://[::1]/"],
)
def test_a_redirect_to_a_special_address_gets_no_allow_hint(
    srv: LocalServer,  # noqa: F811
    make: Make,  # noqa: F811
    location: str,
) -> None:
    srv.redirect("/r", location)
    err = denied(make(), srv.url("/r", host="api.test"))
    assert "redirected from" in err.message
    assert "will not suggest allowing" in err.message and "add " not in err.message


def test_names_resolving_to_special_addresses_suggest_nothing(make: Make) -> None:  # noqa: F811
    http = make(
        rules=("http://api.test",), private_allow=(), names={"api.test": ["169.254.169.254"]}
    )
    err = denied(http, "http://api.test/")
    assert "metadata" in err.message and "will not suggest allowing" in err.message
    assert "allow_private" not in err.message and "allow_private" not in (err.detail or "")


def test_a_public_redirect_target_is_named_as_a_redirect(srv: LocalServer, make: Make) -> None:  # noqa: F811
    srv.redirect("/r", "https://elsewhere.example/page")
    err = denied(make(skill="fetch"), srv.url("/r", host="api.test"))
    assert "redirected there; only if that is expected" in err.message
    assert 'add "https://elsewhere.example" to [skills.fetch] network' in err.message


def test_special_target_agrees_with_is_special_on_literals() -> None:
    for text in ["127.0.0.1", "169.254.169.254", "10.1.2.3", "8.8.8.8", "::1", "2606:4700::1111"]:
        ip = ipaddress.ip_address(text)
        assert special_target(str(ip), ip) == is_special(ip)
    assert special_target("example.com", None) is None


# -- the missing line is the per-skill grant, through the real kernel -----------------------

OBJ = {"type": "object"}


@native_skill(
    name="fetch",
    version="1.0.0",
    description="Fetches one origin.",
    input_schema=OBJ,
    permissions={"network": ["https://api.example.com"]},
)
def fetch() -> str:
    return "ok"


def test_the_hint_names_the_per_skill_grant_even_when_network_allow_has_the_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``[network] allow`` already lists the origin; the skill did not request it, so the
    line that is missing is ``[skills.NAME] network``."""
    from bastion.executor import Capabilities
    from bastion.sandbox.hostnet import HostHttp

    class Skills:
        @hookimpl
        def bastion_skills(self) -> list[object]:
            return [fetch]

    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    text = '[audit]\nenabled = false\n[network]\nallow = ["https://api.example.com", "https://cdn.example.com"]\n'
    with Kernel(load_policy(text=text), plugins=[Skills()], entry_points=False) as k:
        st_ = k.skill("fetch")
        assert st_ is not None and st_.grant.granted
        caps: Capabilities = st_.grant.caps
        http = HostHttp(caps.network, caps.private_allow, deadline=10**12, skill="fetch")
        try:
            err = denied(http, "https://cdn.example.com/lib.js")
        finally:
            http.close()
    assert 'add "https://cdn.example.com" to [skills.fetch] network in bastion.toml' in err.message
    assert "[network] allow only covers what a manifest requests" in err.message
