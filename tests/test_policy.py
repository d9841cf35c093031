"""Policy loading: search order, validation errors, resolved mounts and non-fatal problems."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import PolicyError
from bastion.policy import Policy, load_policy


def test_default_policy_grants_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_POLICY", raising=False)
    p = load_policy()
    assert p.source == "<built-in default>"
    assert p.rules == () and p.mounts == () and p.doc.secrets.allow == ()


def test_default_policy_is_the_validated_empty_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built-in policy is constructed, not validated (no validator is built for it): it
    must equal what validating an empty policy gives, section by section."""
    from bastion.manifest import SkillManifest
    from bastion.policy import PolicyDocument, SkillPolicy
    from bastion.state.settings import StateSection

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_POLICY", raising=False)
    built, validated = load_policy().doc, PolicyDocument.model_validate({})
    assert built == validated == load_policy(text="").doc
    for name in PolicyDocument.model_fields:
        assert getattr(built, name) == getattr(validated, name), name
    assert built.model_dump() == validated.model_dump()
    assert SkillPolicy().limits == SkillPolicy.model_validate({"limits": {}}).limits
    assert (
        StateSection().on_unavailable
        == StateSection.model_validate({"on_unavailable": {}}).on_unavailable
    )
    m = SkillManifest.model_validate(
        {"name": "a", "version": "1.0.0", "runtime": "python", "entry": "skill.py"}
    )
    assert m.permissions == type(m.permissions).model_validate({})
    assert m.limits == type(m.limits).model_validate({})


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bastion.toml").write_text('[network]\nallow = ["https://a.test"]\n')
    other = tmp_path / "other.toml"
    other.write_text('[network]\nallow = ["https://b.test"]\n')
    monkeypatch.delenv("BASTION_POLICY", raising=False)
    assert str(load_policy().rules[0]) == "https://a.test"
    monkeypatch.setenv("BASTION_POLICY", str(other))
    assert str(load_policy().rules[0]) == "https://b.test"
    assert str(load_policy(tmp_path / "bastion.toml").rules[0]) == "https://a.test"


def test_missing_policy_files_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "nope.toml")
    monkeypatch.setenv("BASTION_POLICY", str(tmp_path / "gone.toml"))
    with pytest.raises(PolicyError, match="BASTION_POLICY"):
        load_policy()


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ('[network]\nallow = ["https://x.test/path"]\n', "network.allow", "x.test/path"),
        ('[network]\nallow = ["*.x.test"]\n', "network.allow", "*.x.test"),
        ('[network]\nallow_private = ["localhost"]\n', "network.allow_private", "localhost"),
        ('[[mounts]]\nguest = "data"\nhost = "."\n', "mounts[0].guest", "absolute"),
        ('[[mounts]]\nguest = "/d"\nhost = "."\naccess = "rw"\n', "mounts[0].access", "'rw'"),
        ("[limits]\ntimeout_ms = 0\n", "limits.timeout_ms", "greater"),
        ("[skills.Bad-Name]\nenabled = true\n", "skills", "Bad-Name"),
        ("[skills.x]\nenabld = false\n", "skills.x.enabld", "Extra"),
        ("[netwrk]\nallow = []\n", "netwrk", "Extra"),
        ('[plugins]\ntrusted = "one"\n', "plugins.trusted", "tuple"),
    ],
)
def test_bad_policies(write_policy, text: str, where: str, words: str) -> None:  # type: ignore[no-untyped-def]
    path = write_policy(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.where is not None and info.value.where.startswith(where)
    assert words in str(info.value)
    assert str(path) in str(info.value)


def test_mounts_resolve_relative_to_the_policy_file(tmp_path: Path, write_policy) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "data").mkdir()
    path = write_policy(
        '[[mounts]]\nguest = "/data"\nhost = "data"\naccess = "write"\n'
        '[[mounts]]\nguest = "/gone"\nhost = "missing"\n'
    )
    p = load_policy(path)
    good, bad = p.mounts
    assert good.host == (tmp_path / "data").resolve() and good.writable and good.problem is None
    assert bad.problem is not None and "'missing'" in bad.problem
    assert len(p.problems) == 1 and "does not exist" in str(p.problems[0])


def test_same_guest_path_twice_is_an_error(write_policy) -> None:  # type: ignore[no-untyped-def]
    path = write_policy(
        '[[mounts]]\nguest = "/d"\nhost = "."\n[[mounts]]\nguest = "/d/"\nhost = "."\n'
    )
    with pytest.raises(PolicyError, match="mounted twice"):
        load_policy(path)


def test_trusted_distribution_names_are_normalised() -> None:
    p = load_policy(text='[plugins]\ntrusted = ["My_Plugin.Dist"]\n')
    assert p.trusts("my-plugin-dist") and p.trusts("MY_PLUGIN_DIST")
    assert not p.trusts("my-plugin") and not p.trusts(None)


@given(
    st.dictionaries(
        st.sampled_from(["network", "secrets", "limits", "mounts", "weird", "skills"]),
        st.one_of(
            st.integers(),
            st.text(max_size=5),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
        ),
        max_size=4,
    )
)
def test_any_document_either_loads_or_raises_policy_error(doc: dict) -> None:  # type: ignore[type-arg]
    import tomli_w

    try:
        text = tomli_w.dumps(doc)
    except Exception:
        return
    try:
        result = load_policy(text=text)
    except PolicyError as exc:
        assert exc.source == "<policy text>" and str(exc)
    else:
        assert isinstance(result, Policy)
