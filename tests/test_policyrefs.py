"""A policy says exactly what it means: every name that matches nothing is an error with the key,
the value and the closest valid name; ``optional = true`` marks a skill that may come later;
``kernel.reload_policy`` is atomic (a bad policy leaves the old one serving)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion import Kernel, PolicyError, hookimpl, load_policy, native_skill
from bastion.policyrefs import glob_problem

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}, "url": {}}}


@native_skill(
    name="fetch_url",
    version="1.0.0",
    description="Fetch.",
    input_schema=SCHEMA,
    permissions={"secrets": ["API_TOKEN"]},
)
def fetch_url(**kw: Any) -> str:
    return "page"


@native_skill(name="read_file", version="1.0.0", description="Read.", input_schema=SCHEMA)
def read_file(**kw: Any) -> str:
    return "text"


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [fetch_url, read_file]


Make = Callable[[str], Kernel]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    kernels: list[Kernel] = []

    def build(text: str) -> Kernel:
        text += f'\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
        k = Kernel(
            load_policy(text=text),
            plugins=[Skills()],
            entry_points=False,
            environ={"API_TOKEN": "t-1"},
        )
        kernels.append(k)
        return k

    yield build
    for k in kernels:
        k.close()


def messages(k: Kernel) -> list[str]:
    return [p.message for p in k.problems if p.pack == "policy"]


@pytest.mark.parametrize(
    "text, where, value, closest",
    [
        ("[skills.fetch_ur]\n", "skills.fetch_ur", "fetch_ur", "fetch_url"),
        (
            '[[guardrails]]\naction = "block"\nreason = "r"\nskills = ["fetch_urll"]\n',
            "guardrails[0].skills",
            "fetch_urll",
            "fetch_url",
        ),
        (
            '[[guardrails]]\naction = "block"\nreason = "r"\nskills = ["fetch_*"]\n'
            'packs = ["Skillz"]\n',
            "guardrails[0].packs",
            "Skillz",
            "Skills",
        ),
        (
            '[[guardrails]]\naction = "block"\nreason = "r"\nskills = ["read_file"]\n'
            'args = { pth = "re:^/etc" }\n',
            "guardrails[0].args.pth",
            "pth",
            "path",
        ),
        ('[tenants.acme]\nskills = ["read_fiel*"]\n', "tenants.acme.skills", "read_fiel*", None),
        ('[roles.ops]\nskills = ["raed_file"]\n', "roles.ops.skills", "raed_file", "read_file"),
        (
            "[rate_limits.skills.fetch_uri]\nrate = 1\nburst = 1\n",
            "rate_limits.skills.fetch_uri",
            "fetch_uri",
            "fetch_url",
        ),
        (
            "[tenants.acme]\n[rate_limits.tenants.acem]\nrate = 1\nburst = 1\n",
            "rate_limits.tenants.acem",
            "acem",
            "acme",
        ),
        ('[secrets]\nallow = ["API_TOKN"]\n', "secrets.allow", "API_TOKN", "API_TOKEN"),
        (
            '[skills.fetch_url]\nsecrets = ["API_TOKEM"]\n',
            "skills.fetch_url.secrets",
            "API_TOKEM",
            "API_TOKEN",
        ),
    ],
)
def test_a_name_that_matches_nothing_is_an_error(
    make: Make, text: str, where: str, value: str, closest: str | None
) -> None:
    (msg,) = messages(make(text))
    assert f"[{where}]" in msg and repr(value) in msg
    if closest is not None:
        assert f"closest valid name: {closest!r}" in msg


@pytest.mark.parametrize(
    "pattern, why",
    [("Fetch_*", "'F'"), ("fetch-url.py", "'.'"), ("fetch_[ab", "never closed"), ("a b", "' '")],
)
def test_a_malformed_glob_is_an_error(make: Make, pattern: str, why: str) -> None:
    (msg,) = messages(make(f'[roles.r]\nskills = ["{pattern}"]\n'))
    assert "[roles.r.skills]" in msg and why in msg


def test_a_clean_policy_has_no_problems(make: Make) -> None:
    k = make(
        '[secrets]\nallow = ["API_TOKEN"]\n[skills.fetch_url]\nsecrets = ["API_TOKEN"]\n'
        '[[guardrails]]\naction = "warn"\nreason = "r"\nskills = ["*_url", "read_[f]ile"]\n'
        'args = { url = "re:evil" }\n[roles.ops]\nskills = ["*"]\n'
    )
    assert messages(k) == []


def test_optional_marks_a_skill_that_may_come_later(make: Make) -> None:
    k = make(
        "[skills.later_skill]\noptional = true\n"
        '[[guardrails]]\naction = "block"\nreason = "r"\nskills = ["later_*"]\n'
        "args = { anything = 1 }\n"
    )
    assert messages(k) == []
    assert messages(make("[skills.later_skill]\n")) != []  # without the marker: an error


@given(st.text(alphabet="abc_*?[]!-", min_size=1, max_size=12))
def test_well_formed_globs_are_those_fnmatch_reads_as_written(pattern: str) -> None:
    from fnmatch import translate

    if glob_problem(pattern) is None:
        translate(pattern)  # never raises for a pattern the checker passed
        assert pattern.count("[") <= pattern.count("]") or "[" not in pattern


def test_policy_check_exits_2_on_any_name_error(tmp_path: Path) -> None:
    pol = tmp_path / "bastion.toml"
    pol.write_text(
        f'[audit]\npath = "{tmp_path / "a.jsonl"}"\n'
        '[[guardrails]]\naction = "block"\nreason = "no"\nskills = ["no_such_skill"]\n'
    )
    p = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "--policy", str(pol), "policy", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 2 and "'no_such_skill' matches no skill" in p.stdout


# -- reload ------------------------------------------------------------------------------------


def test_reload_replaces_grants_guardrails_and_limits(make: Make, tmp_path: Path) -> None:
    k = make("")
    assert k.invoke("read_file", {}).ok
    new = tmp_path / "new.toml"
    new.write_text(
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
        '[[guardrails]]\naction = "block"\nreason = "frozen"\nskills = ["read_file"]\n'
        "[skills.fetch_url]\nenabled = false\n"
    )
    k.reload_policy(new)
    res = k.invoke("read_file", {})
    assert res.error is not None and res.error.code == "DENIED" and "frozen" in res.error.message
    assert k.skill("fetch_url").grant.granted is False  # type: ignore[union-attr]
    assert k.policy.source == str(new.resolve())
    k.reload_policy()  # None: the same file, re-read
    assert k.invoke("read_file", {}).error is not None


@pytest.mark.parametrize(
    "bad, why",
    [
        ("[skills.read_file]\nenabled = maybe\n", "TOML syntax error"),
        ('[[guardrails]]\naction = "block"\nreason = "r"\nskills = ["read_fiel"]\n', "read_fiel"),
        ("[kernel]\nmax_workers = 3\n", "restart"),
    ],
)
def test_a_bad_reload_leaves_the_old_policy_serving(
    make: Make, tmp_path: Path, bad: str, why: str
) -> None:
    k = make('[[guardrails]]\naction = "block"\nreason = "old rule"\nskills = ["read_file"]\n')
    old = k.policy
    new = tmp_path / "bad.toml"
    new.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n' + bad)
    with pytest.raises(PolicyError, match=why):
        k.reload_policy(new)
    assert k.policy is old
    res = k.invoke("read_file", {})
    assert res.error is not None and "old rule" in res.error.message


def test_reload_of_an_in_memory_policy_needs_an_argument(make: Make) -> None:
    with pytest.raises(PolicyError, match="not a file"):
        make("").reload_policy()
