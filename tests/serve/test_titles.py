"""Skill titles: declared in ``skill.toml`` (cleaned like the description, size-capped) or
derived from the name, shown by ``bastion skills show`` and carried by MCP ``tools/list``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion import Kernel, load_policy
from bastion.manifest import MAX_TITLE_CHARS, default_title
from bastion.serve import LOCAL_CALLER, ToolCatalog
from bastion.textclean import is_removed


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _pack(root: Path, titles: dict[str, str | None]) -> Path:
    root.mkdir()
    for name, title in titles.items():
        d = root / name
        d.mkdir()
        (d / "skill.wasm").write_bytes(b"\0asm\1\0\0\0")
        line = "" if title is None else f"title = {_q(title)}\n"
        (d / "skill.toml").write_text(
            f'name = "{name}"\nversion = "1.0.0"\ndescription = "Does {name}."\n{line}'
            'runtime = "wasm"\nentry = "skill.wasm"\ninput_schema = { type = "object" }\n',
            encoding="utf-8",
        )
    (root / "bastion-pack.toml").write_text(
        'name = "titles"\nversion = "1.0.0"\nskills = [' + ", ".join(_q(n) for n in titles) + "]\n"
    )
    return root


SLY = "Fetch\x1b[31m page\u202e\U000e0041\u200b\nnow"


@pytest.fixture
def kernel(tmp_path: Path) -> Kernel:
    pack = _pack(
        tmp_path / "pack",
        {
            "plain": "Plain Echo",
            "web_fetch": None,
            "sly": SLY,
            "blank": "\u200b\u2066",
            "long": "x" * (MAX_TITLE_CHARS + 1),
        },
    )
    pol = load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    return Kernel(pol, pack_paths=[pack], entry_points=False)


def test_default_title_is_the_name_in_words() -> None:
    assert default_title("web_fetch") == "Web fetch"
    assert default_title("x") == "X"


def test_declared_derived_and_cleaned_titles(kernel: Kernel) -> None:
    with kernel as k:
        titles = {st.name: st.skill.title for st in k.skills()}
        assert titles["plain"] == "Plain Echo"
        assert titles["web_fetch"] == "Web fetch"
        assert titles["sly"] == "Fetch page now"  # escape, bidi, tag, zero-width gone; \n a space
        assert not any(is_removed(c) for c in titles["sly"])
        sly = k.skill("sly")
        assert sly is not None and "title" in {c.field for c in sly.skill.cleaned}


def test_invisible_or_oversized_titles_refuse_the_skill(kernel: Kernel) -> None:
    with kernel as k:
        names = {st.name for st in k.skills()}
        assert "blank" not in names and "long" not in names
        messages = " | ".join(p.message for p in k.problems)
        assert "title is empty once invisible and control characters are removed" in messages
        assert "title" in messages and str(MAX_TITLE_CHARS) in messages


def test_tools_list_carries_the_title(kernel: Kernel) -> None:
    with kernel as k:
        tools = {t.name: t for t in ToolCatalog(k).tools(LOCAL_CALLER)}
        assert tools["plain"].title == "Plain Echo"
        assert tools["web_fetch"].title == "Web fetch"
        assert tools["sly"].title == "Fetch page now"
        annotations = tools["plain"].annotations
        assert annotations is not None and annotations.title == "Plain Echo"


def test_skills_show_prints_the_title(tmp_path: Path) -> None:
    pack = _pack(tmp_path / "pack", {"plain": "Plain Echo", "web_fetch": None, "sly": SLY})
    policy = tmp_path / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    env = {**os.environ, "BASTION_LOAD_PLUGINS": "none"}
    base = [sys.executable, "-m", "bastion.cli", "--policy", str(policy), "--pack", str(pack)]
    for name, title in (("plain", "Plain Echo"), ("web_fetch", "Web fetch")):
        show = subprocess.run(
            [*base, "skills", "show", name], capture_output=True, text=True, env=env
        )
        assert show.returncode == 0, show.stderr
        assert f"  title: {title}\n" in show.stdout
    js = subprocess.run(
        [*base, "skills", "show", "sly", "--json"], capture_output=True, text=True, env=env
    )
    assert json.loads(js.stdout)["title"] == "Fetch page now"
