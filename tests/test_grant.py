"""Grant decisions: deny by default, every uncovered request named with its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.grant import review
from bastion.manifest import SkillManifest
from bastion.policy import load_policy


def manifest(**perms: Any) -> SkillManifest:
    data: dict[str, Any] = {
        "name": "s",
        "version": "1.0.0",
        "description": "d",
        "runtime": "python",
        "entry": "s.py",
        "permissions": perms,
    }
    return SkillManifest.model_validate(data)


def test_nothing_requested_is_granted_under_the_default_policy() -> None:
    g = review(manifest(), load_policy(text=""))
    assert g.granted and g.reasons == ()
    assert g.limits.timeout_ms == 10_000


def test_uncovered_network_rule_is_denied_with_the_fix() -> None:
    g = review(manifest(network=["https://api.a.test"]), load_policy(text=""))
    assert not g.granted
    (reason,) = g.reasons
    assert '"https://api.a.test"' in reason and "[network] allow" in reason
    assert "[skills.s] network" in reason
    assert g.caps.network == ()
    assert "<policy text>" not in g.public_reasons[0]


def test_wildcard_policy_covers_subdomains_not_the_apex() -> None:
    pol = load_policy(text='[network]\nallow = ["https://*.a.test"]\n')
    assert review(manifest(network=["https://x.a.test"]), pol).granted
    assert review(manifest(network=["https://*.x.a.test"]), pol).granted
    assert not review(manifest(network=["https://a.test"]), pol).granted
    assert not review(manifest(network=["http://x.a.test"]), pol).granted
    assert not review(manifest(network=["https://x.a.test:8443"]), pol).granted


def test_per_skill_rules_apply_only_to_that_skill_and_extend_its_grant() -> None:
    pol = load_policy(text='[skills.s]\nnetwork = ["https://only-s.test"]\n')
    g = review(manifest(network=["https://only-s.test"]), pol)
    assert g.granted and [str(r) for r in g.caps.network] == ["https://only-s.test"]
    other = SkillManifest.model_validate(
        {
            "name": "t",
            "version": "1.0.0",
            "description": "d",
            "runtime": "python",
            "entry": "t.py",
            "permissions": {"network": ["https://only-s.test"]},
        }
    )
    assert not review(other, pol).granted
    # A generic fetcher declares nothing; the operator grants it hosts by name.
    assert [str(r) for r in review(manifest(), pol).caps.network] == ["https://only-s.test"]


def test_filesystem(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "rw").mkdir()
    pol = load_policy(
        text=f'''
[[mounts]]
guest = "/ro"
host = "{tmp_path / "ro"}"
[[mounts]]
guest = "/rw"
host = "{tmp_path / "rw"}"
access = "write"
[[mounts]]
guest = "/gone"
host = "{tmp_path / "gone"}"
'''
    )
    g = review(manifest(filesystem=[{"path": "/ro"}, {"path": "/rw", "access": "read"}]), pol)
    assert g.granted
    assert [(m.guest, m.writable) for m in g.caps.mounts] == [("/ro", False), ("/rw", False)]
    g = review(manifest(filesystem=[{"path": "/rw", "access": "write"}]), pol)
    assert g.granted and g.caps.mounts[0].writable
    g = review(manifest(filesystem=[{"path": "/ro", "access": "write"}]), pol)
    assert not g.granted and "read-only" in g.reasons[0] and 'access = "write"' in g.reasons[0]
    g = review(manifest(filesystem=[{"path": "/elsewhere"}]), pol)
    assert not g.granted and "has no mount" in g.reasons[0]
    g = review(manifest(filesystem=[{"path": "/gone"}]), pol)
    assert not g.granted and "does not exist" in g.reasons[0]


def test_secrets_need_policy_and_environment() -> None:
    pol = load_policy(text='[secrets]\nallow = ["KEY"]\n')
    assert review(manifest(secrets=["KEY"]), pol, environ={"KEY": "v"}).caps.secrets == {"KEY": "v"}
    g = review(manifest(secrets=["KEY"]), pol, environ={})
    assert not g.granted and "not set" in g.reasons[0]
    g = review(manifest(secrets=["OTHER"]), pol, environ={"OTHER": "x"})
    assert not g.granted and "[secrets] allow" in g.reasons[0]
    assert g.caps.secrets == {}


def test_disabled_skill_is_denied() -> None:
    g = review(manifest(), load_policy(text="[skills.s]\nenabled = false\n"))
    assert not g.granted and not g.enabled and "enabled = false" in g.reasons[0]


def test_limits_are_capped_and_noted() -> None:
    m = SkillManifest.model_validate(
        {
            "name": "s",
            "version": "1.0.0",
            "description": "d",
            "runtime": "python",
            "entry": "s.py",
            "limits": {"timeout_ms": 90_000, "memory_mb": 64},
        }
    )
    g = review(
        m, load_policy(text="[limits]\ntimeout_ms = 5000\n[skills.s.limits]\nmemory_mb = 32\n")
    )
    assert g.granted
    assert (g.limits.timeout_ms, g.limits.memory_mb) == (5000, 32)
    assert any("timeout_ms 90000 lowered to 5000" in n for n in g.notes)
    assert any("[skills.s] limits" in n for n in g.notes)


# -- property: granted iff every request is covered ------------------------------------------

labels = st.sampled_from(["a", "b", "api", "cdn"])
hosts = st.lists(labels, min_size=1, max_size=3).map(lambda ls: ".".join([*ls, "test"]))
rules = st.builds(
    lambda scheme, wild, host, port: (
        f"{scheme}://{'*.' if wild else ''}{host}" + (f":{port}" if port else "")
    ),
    st.sampled_from(["http", "https"]),
    st.booleans(),
    hosts,
    st.sampled_from([None, 8080]),
)


def _covers(p: str, r: str) -> bool:
    """Oracle, from the grammar's definition, independent of NetRule.covers."""

    def split(rule: str) -> tuple[str, bool, str, int]:
        scheme, rest = rule.split("://")
        port = int(rest.rsplit(":", 1)[1]) if ":" in rest else (80 if scheme == "http" else 443)
        host = rest.rsplit(":", 1)[0] if ":" in rest else rest
        wild = host.startswith("*.")
        return scheme, wild, host[2:] if wild else host, port

    ps, pw, ph, pp = split(p)
    rs, rw, rh, rp = split(r)
    if (ps, pp) != (rs, rp):
        return False
    if not pw:
        return not rw and ph == rh
    return rh.endswith("." + ph) or (rw and rh == ph)


@given(st.lists(rules, max_size=4), st.lists(rules, max_size=3))
@settings(max_examples=300)
def test_granted_iff_every_requested_rule_is_covered(
    policy_rules: list[str], requested: list[str]
) -> None:
    pol = load_policy(
        text="[network]\nallow = [" + ", ".join(f'"{r}"' for r in policy_rules) + "]\n"
    )
    g = review(manifest(network=requested), pol)
    expected = all(any(_covers(p, r) for p in policy_rules) for r in requested)
    assert g.granted == expected
    assert len(g.reasons) == sum(
        1 for r in requested if not any(_covers(p, r) for p in policy_rules)
    )


@pytest.mark.parametrize("text", ["", "[network]\nallow = []\n"])
def test_deny_by_default(text: str) -> None:
    assert not review(manifest(network=["https://x.test"]), load_policy(text=text)).granted
