"""Guardrails match paths and URLs in every spelling the sandbox treats as the same.

Every ``[[guardrails]]`` example with ``args`` in docs/policy.md is parsed from the doc itself and
run through a real Kernel against hypothesis-generated equivalent spellings of a value it is
written to catch (``//``, ``/./``, ``/x/../``, relative paths, host case, default ports, percent-
encoded unreserved characters, ...): the rule must still fire. Before the fix ``re.search`` saw
the raw string, and ``//files/./private/x`` walked past ``^/files/private/``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion import Kernel, hookimpl, load_policy, native_skill
from bastion.spellings import canonical_path, same_spelling, spellings

DOC = Path(__file__).resolve().parent.parent / "docs" / "policy.md"
_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)


def _doc_examples() -> list[tuple[str, str]]:
    """(argument name, regex) of every documented guardrail ``args`` pattern."""
    out: list[tuple[str, str]] = []
    for block in _BLOCK.findall(DOC.read_text(encoding="utf-8")):
        try:
            data = tomllib.loads(block)
        except tomllib.TOMLDecodeError:
            continue  # a fragment, not a whole document
        for rule in data.get("guardrails", []):
            for key, value in rule.get("args", {}).items():
                if isinstance(value, str) and value.startswith("re:"):
                    out.append((key, value[3:]))
    return out


EXAMPLES = _doc_examples()


def _literal_prefix(pattern: str) -> str:
    """The text a ``^literal...`` pattern requires at the start (parsed with ``re``'s parser)."""
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    items = list(_parser.parse(pattern))
    assert items and items[0] == (c.AT, c.AT_BEGINNING), f"doc example {pattern!r} is not ^..."
    chars = []
    for op, av in items[1:]:
        if op is not c.LITERAL:
            break
        chars.append(chr(av))
    return "".join(chars)


def test_the_doc_shows_a_path_and_a_url_example() -> None:
    prefixes = [_literal_prefix(p) for _, p in EXAMPLES]
    assert any(p.startswith("/") for p in prefixes), prefixes
    assert any(p.startswith("https://") for p in prefixes), prefixes


# -- spellings ---------------------------------------------------------------------------------

_SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=6)


@st.composite
def path_spelling(draw: st.DrawFn, canonical: str) -> str:
    """A path WASI resolves to ``canonical`` (an absolute path without ``.``/``..``/``//``)."""
    segments = [s for s in canonical.split("/") if s]
    out = draw(st.sampled_from(["/", "//", "///", "/../", "/./"]))
    if draw(st.booleans()) and out == "/":
        # relative: resolved against "/", the guest's working directory (a bare name without
        # any "/" is matched as written: it is not taken for a path)
        out = "" if len(segments) > 1 else "./"
    for i, seg in enumerate(segments):
        out += seg
        if i < len(segments) - 1 or canonical.endswith("/"):
            sep = draw(st.sampled_from(["/", "//", "/./", "/././/"]))
            if draw(st.booleans()):
                detour = draw(_SEGMENT)
                sep = sep + detour + draw(st.sampled_from(["/../", "//..//", "/./../"]))
            out += sep
    return out


def _case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(ch.upper() if f else ch for ch, f in zip(text, flips, strict=True))


@st.composite
def url_spelling(draw: st.DrawFn, canonical: str) -> str:
    """A URL the host HTTP layer parses to the same request as ``canonical``."""
    m = re.match(r"^(https?)://([^/]+)(/.*)$", canonical)
    assert m, canonical
    scheme, host, path = m.groups()
    out = _case(draw, scheme) + "://" + _case(draw, host)
    if draw(st.booleans()):
        out += "."
    if draw(st.booleans()):
        out += ":443" if scheme == "https" else ":80"
    spelled = draw(path_spelling(path))
    if not spelled.startswith("/") or spelled.startswith("/../"):
        spelled = "/" + spelled.lstrip("/")
    chars = []
    for ch in spelled:
        if ch.isalnum() and draw(st.booleans()):
            hx = f"{ord(ch):02x}"
            chars.append("%" + (hx.upper() if draw(st.booleans()) else hx))
        else:
            chars.append(ch)
    out += "".join(chars)
    if draw(st.booleans()):
        out += "#" + draw(_SEGMENT)
    return out


# -- through the kernel -------------------------------------------------------------------------

OBJ = {"type": "object"}


@native_skill(name="tool", version="1.0.0", description="Takes anything.", input_schema=OBJ)
def tool(**kw: Any) -> str:
    return "ran"


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [tool]


_KERNELS: dict[tuple[str, str], Kernel] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_kernels() -> Iterator[None]:
    yield
    for k in _KERNELS.values():
        k.close()
    _KERNELS.clear()


def _kernel(key: str, pattern: str) -> Kernel:
    k = _KERNELS.get((key, pattern))
    if k is None:
        # The documented args, alone (the other conditions of the doc's rule are not under test).
        escaped = pattern.replace("\\", "\\\\").replace('"', '\\"')
        text = (
            '[audit]\nenabled = false\n[[guardrails]]\naction = "block"\n'
            f'reason = "documented example"\nargs = {{ {key} = "re:{escaped}" }}\n'
        )
        k = Kernel(load_policy(text=text), plugins=[Skills()], entry_points=False)
        _KERNELS[(key, pattern)] = k
    return k


@pytest.fixture(autouse=True)
def _no_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")


@pytest.mark.parametrize(("key", "pattern"), EXAMPLES)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_documented_rules_fire_for_every_spelling(key: str, pattern: str, data: Any) -> None:
    prefix = _literal_prefix(pattern)
    tail = data.draw(st.lists(_SEGMENT, min_size=1, max_size=3), label="tail")
    canonical = prefix + ("" if prefix.endswith("/") else "/") + "/".join(tail)
    kernel = _kernel(key, pattern)
    first = kernel.invoke("tool", {key: canonical})
    assert first.error is not None and first.error.code == "DENIED", "the canonical value"
    is_url = bool(re.match(r"^https?://", prefix))
    spelled = data.draw(url_spelling(canonical) if is_url else path_spelling(canonical))
    r = kernel.invoke("tool", {key: spelled})
    assert r.error is not None and r.error.code == "DENIED", (spelled, r)
    assert "documented example" in r.error.message


def test_unrelated_values_still_pass() -> None:
    for key, pattern in EXAMPLES:
        k = _kernel(key, pattern)
        for value in ("/files/public/a.txt", "https://example.com/admin/", "plain words"):
            assert k.invoke("tool", {key: value}).ok


# -- the normaliser itself -----------------------------------------------------------------------


@given(segments=st.lists(_SEGMENT, min_size=1, max_size=5), data=st.data())
def test_every_generated_path_spelling_normalises_back(segments: list[str], data: Any) -> None:
    canonical = "/" + "/".join(segments)
    assert canonical in spellings(data.draw(path_spelling(canonical)))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("/files/a.txt", "//files/./a.txt"),
        ("/files/a.txt", "files/x/../a.txt"),
        ("https://h.example/a", "HTTPS://H.EXAMPLE.:443/./%61"),
        ("https://h.example/a/b", "https://h.example/a%2Fb"),
        ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
        ("http://127.0.0.1/x", "http://2130706433/x"),
    ],
)
def test_equality_conditions_compare_spellings(a: str, b: str) -> None:
    assert same_spelling(a, b)


def test_different_things_stay_different() -> None:
    assert not same_spelling("/files/a.txt", "/files/b.txt")
    assert not same_spelling("https://h.example/a", "https://h.example:8443/a")
    assert canonical_path("//a//b/") == "/a/b"
