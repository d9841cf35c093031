"""Files and images in a skill's result: checked bytes, handed to the model as content blocks.

A Python skill returns ``bastion_sdk.Image(data, mime)`` or ``bastion_sdk.File(data, mime,
name)`` (alone, or inside lists and objects); the runner writes each as a marker object under
the reserved key ``"$bastion"``. The kernel takes the markers out before the sanitizer sees the
rest, checks each: the base64 decodes, the bytes are what the MIME type claims (magic numbers:
PNG, JPEG, GIF, WebP, PDF; an SVG or HTML is text, never an image), and text types are UTF-8
(then cleaned like any other text). Checked items go back into the output as
``{"$bastion": "image"|"file"|"text", "mime_type", "name"?, "data" | "text", "bytes"}``; a
``"$bastion"`` key anywhere else in a result is refused, so a skill cannot forge a checked item.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any, Final

from .errors import ErrorCode, ExecutionError

__all__ = [
    "CONTENT_KEY",
    "IMAGE_TYPES",
    "content_blocks",
    "extract_content",
    "has_content",
    "pull_content",
    "restore_content",
]

CONTENT_KEY: Final[str] = "$bastion"
IMAGE_TYPES: Final[dict[str, Callable[[bytes], bool]]] = {
    "image/png": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": lambda b: b.startswith(b"\xff\xd8\xff"),
    "image/gif": lambda b: b.startswith((b"GIF87a", b"GIF89a")),
    "image/webp": lambda b: len(b) >= 12 and b[:4] == b"RIFF" and b[8:12] == b"WEBP",
}
"""The image types a model accepts, each with its magic-number check."""
_BINARY_FILES: Final[dict[str, Callable[[bytes], bool]]] = {
    "application/pdf": lambda b: b.startswith(b"%PDF-"),
}
_TEXT_TYPES: Final = frozenset(
    {"image/svg+xml", "application/json", "application/xml", "application/xhtml+xml"}
)
_REF: Final[str] = "$bastion-ref"


def _refuse(message: str) -> ExecutionError:
    return ExecutionError(ErrorCode.INVALID_OUTPUT, message)


def _is_text(mime: str) -> bool:
    return mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml"))


def _marker(node: dict[str, Any]) -> dict[str, Any]:
    kind = node.get(CONTENT_KEY)
    mime = node.get("mime")
    data = node.get("data_b64")
    name = node.get("name")
    if (
        kind not in ("image", "file")
        or not isinstance(mime, str)
        or not isinstance(data, str)
        or not (name is None or isinstance(name, str))
        or set(node) - {CONTENT_KEY, "mime", "data_b64", "name"}
    ):
        raise _refuse(
            f"the result uses the reserved key {CONTENT_KEY!r}; return files and images with "
            "bastion_sdk.Image(...) or bastion_sdk.File(...)"
        )
    return node


def has_content(value: Any) -> bool:
    """Whether a (cleaned) result holds checked files or images."""
    if isinstance(value, dict):
        return CONTENT_KEY in value or any(has_content(v) for v in value.values())
    if isinstance(value, list):
        return any(has_content(v) for v in value)
    return False


def extract_content(value: Any) -> tuple[Any, list[dict[str, Any]]]:
    """``value`` with each marker replaced by a reference, and the markers (unchecked)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if CONTENT_KEY in node:
                found.append(_marker(node))
                return {_REF: len(found) - 1}
            if _REF in node:
                raise _refuse(f"the result uses the reserved key {_REF!r}")
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out = walk(value)
    return out, found


def _check(
    marker: dict[str, Any], max_bytes: int, clean_text: Callable[[str], str]
) -> dict[str, Any]:
    mime = marker["mime"].strip().lower()
    try:
        data = binascii.a2b_base64(marker["data_b64"], strict_mode=True)
    except (binascii.Error, ValueError):
        raise _refuse(f"the {marker[CONTENT_KEY]} result's data is not valid base64") from None
    if len(data) > max_bytes:
        raise ExecutionError(
            ErrorCode.OUTPUT_LIMIT,
            f"the {marker[CONTENT_KEY]} result is {len(data)} bytes; the skill's output limit "
            f"is {max_bytes} bytes",
        )
    name = marker.get("name")
    if _is_text(mime):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _refuse(f"the {mime} result is not UTF-8 text (byte {exc.start})") from None
        out: dict[str, Any] = {
            CONTENT_KEY: "text",
            "mime_type": mime,
            "text": clean_text(text),
            "bytes": len(data),
        }
        if name is not None:
            out["name"] = clean_text(name)[:255]
        return out
    if marker[CONTENT_KEY] == "image":
        check = IMAGE_TYPES.get(mime)
        if check is None:
            raise _refuse(
                f"image type {mime!r} is not one a model accepts; use one of "
                f"{', '.join(IMAGE_TYPES)} (an SVG is text: return File(svg, 'image/svg+xml'))"
            )
        if not check(data):
            raise _refuse(f"the image claims {mime!r} but its bytes are not {mime} ({data[:8]!r})")
        return {
            CONTENT_KEY: "image",
            "mime_type": mime,
            "data": marker["data_b64"],
            "bytes": len(data),
        }
    check = _BINARY_FILES.get(mime)
    if check is None:
        raise _refuse(
            f"file type {mime!r} cannot be shown to a model; return text (text/*, JSON, SVG, "
            "HTML) or a PDF"
        )
    if not check(data):
        raise _refuse(f"the file claims {mime!r} but its bytes are not {mime} ({data[:8]!r})")
    out = {
        CONTENT_KEY: "file",
        "mime_type": mime,
        "data": marker["data_b64"],
        "bytes": len(data),
    }
    if name is not None:
        out["name"] = clean_text(name)[:255]
    return out


def restore_content(
    value: Any,
    markers: list[dict[str, Any]],
    *,
    max_bytes: int,
    clean_text: Callable[[str], str],
) -> Any:
    """Check every marker and put the checked items back where their references are."""
    checked = [_check(m, max_bytes, clean_text) for m in markers]

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_REF} and isinstance(node[_REF], int):
                return checked[node[_REF]]
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(value)


def content_blocks(output: Any) -> list[dict[str, Any]]:
    """Anthropic content blocks for a result holding files or images: one block per item of
    a top-level list (JSON parts as text), or the single item, or the JSON with the items
    pulled out after it."""
    import json

    def block(node: Any) -> dict[str, Any]:
        if isinstance(node, dict) and node.get(CONTENT_KEY) == "image":
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": node["mime_type"], "data": node["data"]},
            }
        if isinstance(node, dict) and node.get(CONTENT_KEY) == "file":
            doc: dict[str, Any] = {
                "type": "document",
                "source": {"type": "base64", "media_type": node["mime_type"], "data": node["data"]},
            }
            if node.get("name"):
                doc["title"] = node["name"]
            return doc
        if isinstance(node, dict) and node.get(CONTENT_KEY) == "text":
            head = f"[{node.get('name') or 'file'} ({node['mime_type']})]\n"
            return {"type": "text", "text": head + node["text"]}
        return {"type": "text", "text": json.dumps(node, ensure_ascii=False, default=str)}

    if isinstance(output, list):
        return [block(v) for v in output]
    if isinstance(output, dict) and CONTENT_KEY in output:
        return [block(output)]
    rest, items = pull_content(output, lambda item, n: f"<{item[CONTENT_KEY]} {n} below>")
    return [block(rest)] + [block(i) for i in items]


def pull_content(
    output: Any, placeholder: Callable[[dict[str, Any], int], str]
) -> tuple[Any, list[dict[str, Any]]]:
    """``output`` with each content item (found anywhere, in order) replaced by
    ``placeholder(item, n)`` (n from 1), and the items: how each sink lists JSON then files."""
    items: list[dict[str, Any]] = []

    def pull(node: Any) -> Any:
        if isinstance(node, dict):
            if CONTENT_KEY in node:
                items.append(node)
                return placeholder(node, len(items))
            return {k: pull(v) for k, v in node.items()}
        if isinstance(node, list):
            return [pull(v) for v in node]
        return node

    return pull(output), items
