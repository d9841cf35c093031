"""Discovery of good, broken and malicious packs through real entry points on sys.path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.discovery import discover
from bastion.manifest import written_as
from bastion.plugins import make_plugin_manager
from bastion.policy import load_policy
from tests.sitebuilder import SiteBuilder, skill_toml

PACK = 'name = "{name}"\nversion = "1.0.0"\nskills = [{skills}]\n'


def pack_toml(name: str, *skills: str) -> str:
    return PACK.format(name=name, skills=", ".join(f'"{s}"' for s in skills))


def marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('imported')\n"


@pytest.fixture
def only(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Limit discovery to the named distributions (the first-party packs stay out)."""

    def set_(*dists: str) -> None:
        monkeypatch.setenv("BASTION_LOAD_PLUGINS", ",".join(dists))

    return set_


def run(policy_text: str = "", **kw):  # type: ignore[no-untyped-def]
    return discover(load_policy(text=policy_text), make_plugin_manager(), **kw)


def test_data_pack_is_read_but_never_imported(site: SiteBuilder, tmp_path: Path, only) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "IMPORTED"
    site.data_pack(
        "evil-pack",
        "evil_pack",
        pack_toml("evil", "a"),
        {"a": {"skill.toml": skill_toml("alpha"), "skill.wasm": b"\0asm\1\0\0\0"}},
        init_code=marker_code(marker),
    )
    only("evil-pack")
    found = run()
    assert list(found.skills) == ["alpha"]
    assert found.skills["alpha"].distribution == "evil-pack"
    assert not marker.exists(), "a data pack's Python was imported on the host"
    import sys

    assert "evil_pack" not in sys.modules


def test_untrusted_plugin_is_not_imported_and_says_how_to_trust(
    site: SiteBuilder,
    tmp_path: Path,
    only,  # type: ignore[no-untyped-def]
) -> None:
    marker = tmp_path / "IMPORTED"
    site.plugin("sneaky-plugin", "sneaky_plugin", marker_code(marker))
    only("sneaky-plugin")
    found = run()
    assert not marker.exists()
    (problem,) = found.problems
    assert "not trusted" in problem.message
    assert '"sneaky-plugin" to [plugins] trusted' in problem.message


def test_trusted_plugin_registers_native_skills(site: SiteBuilder, only) -> None:  # type: ignore[no-untyped-def]
    site.plugin(
        "good-plugin",
        "good_plugin",
        """
        from bastion import hookimpl, native_skill

        @native_skill(name="shout", version="1.0.0", description="Upper-case text.",
                      input_schema={"type": "object", "properties": {"text": {"type": "string"}}})
        def shout(text):
            return text.upper()

        @hookimpl
        def bastion_skills():
            return [shout]
    """,
    )
    only("good-plugin")
    found = run('[plugins]\ntrusted = ["good-plugin"]\n')
    assert found.problems == []
    skill = found.skills["shout"]
    assert skill.native is not None and skill.native(text="hi") == "HI"


def test_plugin_that_fails_to_import_is_reported(site: SiteBuilder, only) -> None:  # type: ignore[no-untyped-def]
    site.plugin("broken-plugin", "broken_plugin", "raise RuntimeError('boom at import')\n")
    only("broken-plugin")
    found = run('[plugins]\ntrusted = ["broken-plugin"]\n')
    (problem,) = found.problems
    assert "failed to import" in problem.message and "boom at import" in problem.message


def test_broken_packs_are_reported_and_the_rest_keeps_working(site: SiteBuilder, only) -> None:  # type: ignore[no-untyped-def]
    site.data_pack(
        "good",
        "good_pack",
        pack_toml("good", "a"),
        {"a": {"skill.toml": skill_toml("alpha"), "skill.wasm": b"x"}},
    )
    site.data_pack("bad-manifest", "bad_manifest", 'name = "bad"\nversion = "nope"\n', {})
    site.data_pack(
        "bad-skill",
        "bad_skill",
        pack_toml("badskill", "x", "y", "z", "w"),
        {
            "x": {"skill.toml": skill_toml("Bad Name")},
            "y": {"skill.toml": skill_toml("missing_entry")},
            "z": {"skill.toml": skill_toml("fine"), "skill.wasm": b"x"},
            "w": {"other.txt": "no manifest here"},
        },
    )
    site.data_pack(
        "dupe",
        "dupe_pack",
        pack_toml("dupe", "a", "b"),
        {
            "a": {"skill.toml": skill_toml("alpha"), "skill.wasm": b"x"},
            "b": {"skill.toml": skill_toml("beta"), "skill.wasm": b"x"},
        },
    )
    site.data_pack(
        "escape",
        "escape_pack",
        pack_toml("escape", "a"),
        {
            "a": {"skill.toml": skill_toml("escapee", entry="link.wasm")},
        },
    )
    (site.root / "escape_pack" / "a" / "link.wasm").symlink_to("/etc/passwd")
    only("good", "bad-manifest", "bad-skill", "dupe", "escape")
    found = run()
    assert sorted(found.skills) == ["alpha", "beta", "fine"]
    # Entry points load in distribution-name order, so "dupe" provides alpha before "good".
    assert found.skills["alpha"].pack == "dupe"
    msgs = "\n".join(p.message for p in found.problems)
    assert "semantic version" in msgs
    assert "'Bad Name'" in msgs
    assert "'skill.wasm' does not exist" in msgs
    assert "has no skill.toml" in msgs
    assert "already provided by pack" in msgs
    assert "'link.wasm' does not exist inside the skill folder" in msgs
    reports = {p.name: p for p in found.packs}
    assert reports["dupe"].skills == ["alpha", "beta"]
    assert reports["good"].skills == [] and reports["good"].loaded
    assert not reports["bad_manifest"].loaded


def test_load_plugins_env_limits_what_loads(site: SiteBuilder, only) -> None:  # type: ignore[no-untyped-def]
    site.data_pack(
        "one",
        "one_pack",
        pack_toml("one", "a"),
        {"a": {"skill.toml": skill_toml("one_skill"), "skill.wasm": b"x"}},
    )
    site.data_pack(
        "two",
        "two_pack",
        pack_toml("two", "a"),
        {"a": {"skill.toml": skill_toml("two_skill"), "skill.wasm": b"x"}},
    )
    only("two")
    assert list(run().skills) == ["two_skill"]
    only()
    assert list(run().skills) == []


def test_pack_folder_by_path(tmp_path: Path, only) -> None:  # type: ignore[no-untyped-def]
    only()
    folder = tmp_path / "mypack"
    (folder / "s").mkdir(parents=True)
    (folder / "bastion-pack.toml").write_text(pack_toml("mine", "s"))
    (folder / "s" / "skill.toml").write_text(skill_toml("mine_skill"))
    (folder / "s" / "skill.wasm").write_bytes(b"x")
    found = run(pack_paths=[folder, tmp_path / "nothing-here"])
    assert list(found.skills) == ["mine_skill"]
    (problem,) = found.problems
    assert "has no bastion-pack.toml" in problem.message


def test_native_runtime_cannot_come_from_a_data_pack(tmp_path: Path, only) -> None:  # type: ignore[no-untyped-def]
    only()
    folder = tmp_path / "p"
    (folder / "s").mkdir(parents=True)
    (folder / "bastion-pack.toml").write_text(pack_toml("p", "s"))
    (folder / "s" / "skill.toml").write_text(skill_toml("n", runtime="native", entry=None))
    found = run(pack_paths=[folder])
    assert found.skills == {}
    assert "trusted plugins" in found.problems[0].message


def test_links_out_of_the_pack_are_refused_not_read(tmp_path: Path, only) -> None:  # type: ignore[no-untyped-def]
    """A pack's manifests must be its own files: a link to a host file is never read."""
    only()
    secret = tmp_path / "host-secret.toml"
    secret.write_text('name = "leak"\naws_secret = "hunter2-very-secret"\n')
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "s").mkdir(parents=True)
    (elsewhere / "s" / "skill.toml").write_text(skill_toml("outsider"))
    (elsewhere / "s" / "skill.wasm").write_bytes(b"x")
    folder = tmp_path / "p"
    (folder / "a").mkdir(parents=True)
    (folder / "bastion-pack.toml").write_text(pack_toml("p", "a", "b"))
    (folder / "a" / "skill.toml").symlink_to(secret)
    (folder / "b").symlink_to(elsewhere / "s", target_is_directory=True)
    found = run(pack_paths=[folder])
    assert found.skills == {}
    msgs = [p.message for p in found.problems]
    assert len(msgs) == 2 and all("outside the pack folder" in m for m in msgs)
    assert not any("hunter2" in m for m in msgs)
    linked = tmp_path / "q"
    linked.mkdir()
    (linked / "bastion-pack.toml").symlink_to(secret)
    found = run(pack_paths=[linked])
    assert "outside the pack folder" in found.problems[0].message
    assert "hunter2" not in found.problems[0].message


def _python_pack(folder: Path, toml_extra: str, source: str) -> Path:
    (folder / "s").mkdir(parents=True)
    (folder / "bastion-pack.toml").write_text(pack_toml("p", "s"))
    (folder / "s" / "skill.toml").write_text(
        'name = "py"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n' + toml_extra
    )
    (folder / "s" / "skill.py").write_text(source)
    return folder


DOCUMENTED = (
    'def run(n: int) -> int:\n    """Double a number and return it.\n\n    More.\n    """\n'
    "    return 2 * n\n"
)


def test_python_skill_takes_its_description_from_the_docstring(tmp_path: Path, only) -> None:  # type: ignore[no-untyped-def]
    only()
    found = run(pack_paths=[_python_pack(tmp_path / "p", "", DOCUMENTED)])
    assert found.skills["py"].description == "Double a number and return it."
    # An explicit description wins, and a declared schema does not stop the docstring's use.
    found = run(
        pack_paths=[_python_pack(tmp_path / "q", 'description = "Doubles n."\n', DOCUMENTED)]
    )
    assert found.skills["py"].description == "Doubles n."
    schema = 'input_schema = { type = "object", properties = { n = { type = "integer" } } }\n'
    found = run(pack_paths=[_python_pack(tmp_path / "r", schema, DOCUMENTED)])
    assert found.skills["py"].description == "Double a number and return it."
    assert found.skills["py"].input_schema == {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
    }


def test_no_description_anywhere_is_a_problem_that_says_where_to_add_one(
    tmp_path: Path,
    only,  # type: ignore[no-untyped-def]
) -> None:
    only()
    found = run(
        pack_paths=[_python_pack(tmp_path / "p", "", "def run(n: int) -> int:\n    return n\n")]
    )
    assert found.skills == {}
    (problem,) = found.problems
    assert "no description" in problem.message and "docstring to run()" in problem.message
    assert problem.code == "MANIFEST_INVALID"


def test_wasm_skill_still_needs_a_description(tmp_path: Path, only) -> None:  # type: ignore[no-untyped-def]
    only()
    folder = tmp_path / "w"
    (folder / "s").mkdir(parents=True)
    (folder / "bastion-pack.toml").write_text(pack_toml("w", "s"))
    toml = skill_toml("wsk").replace('description = "The wsk skill."\n', "")
    (folder / "s" / "skill.toml").write_text(toml)
    (folder / "s" / "skill.wasm").write_bytes(b"x")
    found = run(pack_paths=[folder])
    assert found.skills == {}
    assert "description is required" in found.problems[0].message


def test_discovering_one_name_picks_the_skill_a_full_discovery_picks(
    site: SiteBuilder,
    tmp_path: Path,
    only,  # type: ignore[no-untyped-def]
) -> None:
    """``only`` (``bastion run NAME``) reads just the skills written under NAME, and resolves
    NAME as a full discovery does: in pack order, the first skill under it that loads."""
    site.data_pack(
        "a-first",
        "a_first",
        pack_toml("afirst", "x", "y", "z", "w"),
        {
            "x": {"skill.toml": skill_toml("target", entry="missing.wasm")},  # fails to load
            "y": {"skill.toml": 'name = "target"\nversion = '},  # not TOML: fails to load
            "z": {"skill.toml": skill_toml("other"), "skill.wasm": b"x"},
            # The name spelled with a TOML escape: the first under it that loads.
            "w": {"skill.toml": skill_toml("\\u0074arget"), "skill.wasm": b"x"},
        },
    )
    site.data_pack(
        "b-second",
        "b_second",
        pack_toml("bsecond", "t", "u"),
        {
            "t": {"skill.toml": skill_toml("target"), "skill.wasm": b"x"},
            "u": {"skill.toml": skill_toml("Bad Name")},
        },
    )
    folder = tmp_path / "later"
    (folder / "t").mkdir(parents=True)
    (folder / "bastion-pack.toml").write_text(pack_toml("later", "t"))
    (folder / "t" / "skill.toml").write_text(skill_toml("target"))
    (folder / "t" / "skill.wasm").write_bytes(b"x")
    only("a-first", "b-second")
    full = run(pack_paths=[folder])
    one = run(pack_paths=[folder], only={"target"})
    assert sorted(full.skills) == ["other", "target"]
    assert list(one.skills) == ["target"]
    assert one.skills["target"].pack == full.skills["target"].pack == "afirst"
    assert one.skills["target"].folder == full.skills["target"].folder
    # The skills written under the name were loaded and refused as before; the others unread.
    msgs = "\n".join(p.message for p in one.problems)
    assert "'missing.wasm' does not exist" in msgs
    assert msgs.count("already provided by pack") == 2  # bsecond's and the --pack copy
    assert "'Bad Name'" not in msgs and "'Bad Name'" in "\n".join(p.message for p in full.problems)
    assert run(only={"nothing"}).skills == {}


def test_kernel_for_one_skill_answers_unknown_names_as_a_full_kernel(tmp_path: Path, only) -> None:  # type: ignore[no-untyped-def]
    """A kernel that discovers one name falls back to everything when the name is not found,
    so the refusal (and its "did you mean") is the full kernel's."""
    from bastion.kernel import Kernel

    only()
    folder = tmp_path / "p"
    for rel, name in (("a", "alpha"), ("b", "alpine")):
        (folder / rel).mkdir(parents=True)
        (folder / rel / "skill.toml").write_text(skill_toml(name, runtime="wasm"))
        (folder / rel / "skill.wasm").write_bytes(b"x")
    (folder / "bastion-pack.toml").write_text(pack_toml("p", "a", "b"))
    policy = load_policy(text='[workers]\nisolation = "thread"\n[audit]\nenabled = false\n')
    with Kernel(policy, pack_paths=[folder], only_skills={"alpha"}) as k:
        assert [st.name for st in k.skills()] == ["alpha"]
    with (
        Kernel(policy, pack_paths=[folder], only_skills={"alpx"}) as k,
        Kernel(policy, pack_paths=[folder]) as full,
    ):
        missing, full_missing = k.invoke("alpx", {}), full.invoke("alpx", {})
        assert [st.name for st in k.skills()] == ["alpha", "alpine"]
    assert missing.error is not None and full_missing.error is not None
    assert missing.error.message == full_missing.error.message
    assert "did you mean 'alpha'" in missing.error.message


@pytest.mark.parametrize(
    "written",
    ['"target"', "'target'", '"\\u0074arget"', '"""tar\\\n    get"""', "'''target'''"],
)
def test_discovering_one_name_finds_it_however_toml_spells_it(
    tmp_path: Path,
    only,  # type: ignore[no-untyped-def]
    written: str,
) -> None:
    only()
    folder = tmp_path / "p"
    (folder / "s").mkdir(parents=True)
    (folder / "bastion-pack.toml").write_text(pack_toml("p", "s"))
    toml = skill_toml("target").replace('name = "target"', f"name = {written}")
    toml = toml.replace("The target skill.", "A skill.")  # the name is written once
    (folder / "s" / "skill.toml").write_text(toml)
    (folder / "s" / "skill.wasm").write_bytes(b"x")
    assert list(run(pack_paths=[folder]).skills) == ["target"]
    assert list(run(pack_paths=[folder], only={"target"}).skills) == ["target"]


_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


@st.composite
def _spelled(draw: st.DrawFn) -> tuple[str, str]:
    """A valid skill name and one TOML spelling of it: a basic, literal or multi-line string,
    each character literal or (in basic strings) a ``\\u``/``\\U`` escape, and in multi-line
    basic strings line continuations anywhere between characters."""
    name = draw(st.text(_NAME_CHARS[:26], min_size=1, max_size=1)) + draw(
        st.text(_NAME_CHARS, max_size=12)
    )
    kind = draw(st.sampled_from(["basic", "literal", "multi", "multi-literal"]))
    if kind in ("literal", "multi-literal"):
        quote = "'" if kind == "literal" else "'''"
        return name, f"{quote}{name}{quote}"
    parts = []
    for ch in name:
        way = draw(st.sampled_from(["plain", "u", "U"]))
        parts.append(
            ch if way == "plain" else f"\\u{ord(ch):04x}" if way == "u" else f"\\U{ord(ch):08X}"
        )
        if kind == "multi" and draw(st.booleans()):
            parts.append(draw(st.sampled_from(["\\\n", "\\  \n   ", "\\\r\n\t", "\\\n\n  "])))
    quote = '"' if kind == "basic" else '"""'
    return name, f"{quote}{''.join(parts)}{quote}"


@settings(max_examples=150, deadline=None)
@given(_spelled(), st.text(_NAME_CHARS[:26], min_size=1, max_size=8))
def test_the_one_skill_filter_never_skips_a_file_that_writes_the_name(
    spelled: tuple[str, str], other: str
) -> None:
    """``written_as`` (the byte filter before parsing) is True for every TOML spelling of the
    name, and False for another name: the one-skill discovery skips only what cannot load
    under the name."""
    import tempfile

    name, written = spelled
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "skill.toml").write_text(
            skill_toml(name)
            .replace(f'name = "{name}"', f"name = {written}", 1)
            .replace(f"The {name} skill.", "A skill."),
            newline="",
        )
        assert written_as(folder, {name})
        assert written_as(folder, {other}) is (other == name)
