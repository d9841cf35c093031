"""A hypothesis fuzz of the CLI: junk ``--input``, junk policy files and junk manifests end every
case in exit 0, 1 or 2 with no traceback.

Most cases run ``bastion.cli.main()`` in this process (the same code a process runs, minus the
interpreter start); stdout and stderr are captured at the file-descriptor level so a traceback
printed by any logger is seen. A few cases of each kind run the real ``bastion`` process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.cli import main

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

POLICY_LINES = [
    "[skills.hello]",
    "[skills.x]",
    "enabled = false",
    "optional = true",
    'network = ["https://example.com"]',
    'network = ["ftp://x"]',
    'secrets = ["HOME"]',
    "[secrets]",
    'allow = ["A", 1]',
    "[[guardrails]]",
    'action = "block"',
    'action = "nope"',
    'reason = "r"',
    'skills = ["*", "hel?o", "[", "Z"]',
    'args = { name = "re:(" }',
    "[[mounts]]",
    'guest = "/d"',
    'host = "/nonexistent"',
    "[limits]",
    "timeout_ms = -1",
    "timeout_ms = 99999999999999999999999",
    "[rate_limits.skills.hello]",
    "rate = 1",
    "burst = 0",
    "[breaker]",
    'codes = ["DENIED"]',
    "[tenants.a]",
    "[roles.r]",
    'presets = ["lethal-trifecta"]',
    "a = [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]",
    "x = '''",
    "\x00\x1b[2J",
    "[audit]",
]

MANIFEST_LINES = [
    'name = "hello"',
    'name = "Bad Name"',
    'version = "0.1.0"',
    'version = "one"',
    'description = "d"',
    'runtime = "python"',
    'runtime = "cobol"',
    'entry = "skill.py"',
    'entry = "../../etc/passwd"',
    "[input_schema]",
    'type = "object"',
    '"$ref" = "file:///etc/passwd"',
    "[permissions]",
    'network = ["http://169.254.169.254"]',
    "[limits]",
    "timeout_ms = 0",
    "\udcff",
    "[[examples]]",
]


def lines(pool: list[str]) -> st.SearchStrategy[str]:
    fragment = st.one_of(st.sampled_from(pool), st.text(max_size=30))
    return st.lists(fragment, max_size=14).map("\n".join)


def junk_file(pool: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        lines(pool).map(lambda t: t.encode("utf-8", "surrogateescape")),
        st.binary(max_size=200),
    )


def check(capfd: pytest.CaptureFixture[str], argv: list[str]) -> int:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code if isinstance(exc.code, int) else 2
    out, err = capfd.readouterr()
    assert rc in (0, 1, 2), (rc, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    return rc


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    root = tmp_path / "pack"
    (root / "hello").mkdir(parents=True)
    (root / "bastion-pack.toml").write_text('name = "f"\nversion = "0.1.0"\nskills = ["hello"]\n')
    (root / "hello" / "skill.toml").write_text(
        'name = "hello"\nversion = "0.1.0"\ndescription = "Greet."\nruntime = "python"\n'
        'entry = "skill.py"\n'
    )
    (root / "hello" / "skill.py").write_text(
        'def run(name: str) -> str:\n    """Greet."""\n    return "hi " + name\n'
    )
    return root


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    pol = tmp_path / "bastion.toml"
    pol.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    return pol


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@FUZZ
@given(
    junk=st.one_of(
        st.text(max_size=80),
        JSONISH.map(lambda v: __import__("json").dumps(v)),
        st.sampled_from(["@/dev/zero", "@/", "@", "-", "[" * 3000, '{"name": "\\ud800"}']),
    )
)
def test_junk_input_in_process(
    capfd: pytest.CaptureFixture[str], policy: Path, pack: Path, junk: str
) -> None:
    check(capfd, ["--policy", str(policy), "--pack", str(pack), "run", "hello", "--input", junk])


@FUZZ
@given(content=junk_file(POLICY_LINES))
def test_junk_policy_in_process(
    capfd: pytest.CaptureFixture[str], tmp_path: Path, content: bytes
) -> None:
    pol = tmp_path / "junk.toml"
    pol.write_bytes(content + f'\n[audit]\npath = "{tmp_path / "a.jsonl"}"\n'.encode())
    check(capfd, ["--policy", str(pol), "policy", "check"])
    pol.write_bytes(content)  # also without the audit section (the default audit path)
    check(capfd, ["--policy", str(pol), "skills", "--json"])


@FUZZ
@given(content=junk_file(MANIFEST_LINES))
def test_junk_manifest_in_process(
    capfd: pytest.CaptureFixture[str], policy: Path, pack: Path, content: bytes
) -> None:
    (pack / "hello" / "skill.toml").write_bytes(content)
    check(capfd, ["--policy", str(policy), "--pack", str(pack), "skills"])
    check(capfd, ["--policy", str(policy), "--pack", str(pack), "doctor"])


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    junk=st.text(st.characters(blacklist_characters="\x00"), max_size=40),
    policy_junk=junk_file(POLICY_LINES),
    manifest_junk=junk_file(MANIFEST_LINES),
)
def test_junk_in_a_real_process(
    tmp_path: Path,
    policy: Path,
    pack: Path,
    junk: str,
    policy_junk: bytes,
    manifest_junk: bytes,
) -> None:
    pol = tmp_path / "junk.toml"
    pol.write_bytes(policy_junk)
    (pack / "hello" / "skill.toml").write_bytes(manifest_junk)
    for argv in (
        ["--policy", str(pol), "policy", "check"],
        ["--policy", str(policy), "--pack", str(pack), "run", "hello", "--input", junk],
    ):
        p = subprocess.run(
            [sys.executable, "-m", "bastion.cli", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
        assert p.returncode in (0, 1, 2), p.stderr[-2000:]
        assert "Traceback" not in p.stderr, p.stderr[-3000:]
