"""Hostile pack files: size and nesting are checked before any parser runs, a bad file is that
pack's problem, and every other pack keeps loading and running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion import Kernel, load_policy
from bastion.boundedread import (
    MAX_TOML_NESTING,
    ReadRefused,
    read_capped,
    toml_nesting,
)
from bastion.configfile import MAX_CONFIG_BYTES
from tests.sandbox.guestbuild import GUESTS, build_c

GOOD = (
    'name = "{name}"\nversion = "1.0.0"\ndescription = "Echo."\nruntime = "wasm"\n'
    'entry = "skill.wasm"\ninput_schema = {{ type = "object" }}\n'
)


@pytest.fixture(scope="module")
def echo_wasm() -> bytes:
    return build_c(GUESTS / "echo.c")


def write_pack(folder: Path, name: str, skills: dict[str, dict[str, bytes | str]]) -> Path:
    folder.mkdir(parents=True)
    listed = ", ".join(json.dumps(s) for s in skills)
    (folder / "bastion-pack.toml").write_text(
        f'name = "{name}"\nversion = "1.0.0"\nskills = [{listed}]\n'
    )
    for rel, files in skills.items():
        d = folder / rel
        d.mkdir()
        for fname, content in files.items():
            if isinstance(content, bytes):
                (d / fname).write_bytes(content)
            else:
                (d / fname).write_text(content)
    return folder


def big_source(path: Path, size: int) -> None:
    """A real (not sparse) Python file of ``size`` bytes whose every line parses."""
    line = b"x = 1\n"
    with open(path, "wb") as f:
        chunk = line * (1 << 16)
        written = 0
        while written < size:
            f.write(chunk)
            written += len(chunk)


def deep_array(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


HOSTILE_SKILLS: dict[str, tuple[str, str]] = {
    # name: (skill.toml text or a marker, expected reason)
    "deep-array": (GOOD.format(name="deep") + f"x = {deep_array(5000)}\n", "nest more than"),
    "deep-inline-table": (
        GOOD.format(name="deep2") + "[limits]\n" + "a = " + "{ b = " * 3000 + "1" + " }" * 3000,
        "nest more than",
    ),
    "deep-dotted-keys": (
        GOOD.format(name="deep3") + "[examples." + ".".join(["a"] * 3000) + "]\nx = 1\n",
        "tables nest more than",
    ),
    "huge-manifest": (GOOD.format(name="huge") + "# " + "x" * (MAX_CONFIG_BYTES + 10), "limit"),
    "fifo-manifest": ("FIFO", "has no skill.toml"),  # refused before any open()
    "huge-source": ("SOURCE", "-byte limit for one module"),
    "deep-schema": (
        GOOD.format(name="deepschema").replace('input_schema = { type = "object" }\n', "")
        + '[input_schema]\ntype = "object"\n'
        + "[input_schema"
        + ".properties.a" * 17
        + ']\ntype = "object"\n',
        "nests deeper than",
    ),
}


def build_hostile(folder: Path, echo: bytes, kind: str) -> Path:
    text, _ = HOSTILE_SKILLS[kind]
    skills: dict[str, dict[str, bytes | str]] = {
        "good": {"skill.toml": GOOD.format(name="good_echo"), "skill.wasm": echo},
        "bad": {"skill.wasm": echo},
    }
    if text not in ("FIFO", "SOURCE"):
        skills["bad"]["skill.toml"] = text
    pack = write_pack(folder, "mixed", skills)
    if text == "FIFO":
        os.mkfifo(pack / "bad" / "skill.toml")
    if text == "SOURCE":
        (pack / "bad" / "skill.toml").write_text(
            'name = "big"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
        )
        big_source(pack / "bad" / "skill.py", 50 << 20)
    return pack


@pytest.mark.parametrize("kind", sorted(HOSTILE_SKILLS))
def test_hostile_skill_file_is_its_packs_problem(
    tmp_path: Path, echo_wasm: bytes, kind: str
) -> None:
    pack = build_hostile(tmp_path / "pack", echo_wasm, kind)
    other = write_pack(
        tmp_path / "other",
        "other",
        {"e": {"skill.toml": GOOD.format(name="other_echo"), "skill.wasm": echo_wasm}},
    )
    pol = load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    with Kernel(pol, pack_paths=[pack, other], entry_points=False) as k:
        names = sorted(st.name for st in k.skills())
        assert names == ["good_echo", "other_echo"]
        (problem,) = k.problems
        assert HOSTILE_SKILLS[kind][1] in problem.message, problem.message
        for name in names:
            result = k.invoke(name, {"v": 1})
            assert result.ok and result.output == {"v": 1}, result.to_dict()


def test_deep_pack_manifest_no_longer_takes_discovery_down(
    tmp_path: Path, echo_wasm: bytes
) -> None:
    """Before the fix tomllib's RecursionError on a deep bastion-pack.toml escaped discovery:
    no pack at all loaded."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bastion-pack.toml").write_text(
        f'name = "bad"\nversion = "1.0.0"\nskills = []\nx = {deep_array(20_000)}\n'
    )
    good = write_pack(
        tmp_path / "good",
        "good",
        {"e": {"skill.toml": GOOD.format(name="good_echo"), "skill.wasm": echo_wasm}},
    )
    pol = load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    with Kernel(pol, pack_paths=[bad, good], entry_points=False) as k:
        assert k.invoke("good_echo", {"a": [1]}).output == {"a": [1]}
        (problem,) = k.problems
        assert f"nest more than {MAX_TOML_NESTING} levels" in problem.message


def test_cli_skills_and_doctor_report_the_hostile_pack(tmp_path: Path, echo_wasm: bytes) -> None:
    pack = build_hostile(tmp_path / "pack", echo_wasm, "deep-array")
    policy = tmp_path / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    env = {**os.environ, "BASTION_LOAD_PLUGINS": "none"}
    base = [sys.executable, "-m", "bastion.cli", "--policy", str(policy), "--pack", str(pack)]
    skills = subprocess.run([*base, "skills"], capture_output=True, text=True, env=env)
    assert skills.returncode == 0
    assert "good_echo" in skills.stdout and "nest more than" in skills.stderr
    doctor = subprocess.run([*base, "doctor", "--json"], capture_output=True, text=True, env=env)
    report = json.loads(doctor.stdout)
    assert doctor.returncode == 1
    assert any("nest more than" in p["message"] for p in report["problems"])
    assert "Traceback" not in skills.stderr + doctor.stderr


_RSS_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    def hwm_kib():
        # This process's own peak RSS. Not getrusage: across fork + exec Linux carries the
        # parent's high-water mark into the child's ru_maxrss (a big pytest process shows).
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

    from bastion.discovery import discover
    from bastion.plugins import make_plugin_manager
    from bastion.policy import load_policy
    found = discover(load_policy(text=""), make_plugin_manager(), entry_points=False,
                     pack_paths=[Path(p) for p in sys.argv[1:]])
    print(json.dumps({"skills": sorted(found.skills),
                      "problems": [p.message for p in found.problems],
                      "hwm_kib": hwm_kib()}))
    """
)


def test_discovery_memory_stays_bounded_with_a_50_mib_source(
    tmp_path: Path, echo_wasm: bytes
) -> None:
    """Peak RSS of a child running discovery over a pack with a 50 MiB Python entry file stays
    under 100 MiB; before the fix the whole file was read and handed to ``ast.parse``
    (gigabytes). Schemas are now derived in the sandbox: the file is refused by its size on the
    host before anything reads it or maps it into a guest."""
    pack = build_hostile(tmp_path / "pack", echo_wasm, "huge-source")
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(pack)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["skills"] == ["good_echo"]
    assert len(out["problems"]) == 1 and "-byte limit for one module" in out["problems"][0]
    assert out["hwm_kib"] < 100 * 1024, f"peak RSS {out['hwm_kib'] / 1024:.0f} MiB"


class TestBoundedRead:
    def test_reads_at_most_cap_plus_one_and_refuses_growth(self, tmp_path: Path) -> None:
        p = tmp_path / "f"
        p.write_bytes(b"x" * 100)
        assert read_capped(p, 100) == b"x" * 100
        with pytest.raises(ReadRefused, match="over the 99-byte limit"):
            read_capped(p, 99)

    def test_devices_fifos_and_folders_are_refused(self, tmp_path: Path) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        for path in (fifo, tmp_path, Path("/dev/zero")):
            with pytest.raises(ReadRefused, match="not a regular file"):
                read_capped(path, 1024)


_strings = st.text(alphabet=st.sampled_from(list("[]{}#'\"\\ab\n")), max_size=8)


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(0, 40), leaf=_strings, extra=st.lists(_strings, max_size=4))
def test_toml_nesting_scan_counts_brackets_outside_strings_only(
    depth: int, leaf: str, extra: list[str]
) -> None:
    """Against documents a real TOML writer produced: the scan equals the real nesting, so
    brackets, quotes and ``#`` inside strings neither hide nor invent depth."""
    doc = {"k": _nested(depth, leaf), "s": extra, "t": {"u": leaf}}
    text = tomli_w.dumps(doc, multiline_strings=True)
    assert tomllib.loads(text) == doc
    assert toml_nesting(text) == max(depth, 1)  # the [t] header and the s array are one level


def test_conformance_kit_reports_a_deep_manifest_instead_of_crashing(tmp_path: Path) -> None:
    """``bastion test`` reads each skill.toml itself to find duplicate names; that read goes
    through the same bounded, depth-checked reader (before: tomllib's RecursionError)."""
    from bastion.testing import check_pack

    pack = write_pack(
        tmp_path / "pack",
        "deep",
        {"d": {"skill.toml": GOOD.format(name="deep") + f"x = {deep_array(5000)}\n"}},
    )
    report = check_pack(pack, fuzz_examples=1)
    failed = [r for r in report.results if not r.passed and not r.skipped]
    assert any(r.check == "manifest" and "nest more than" in r.message for r in failed), failed
