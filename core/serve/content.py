"""Files and images in a tool result as MCP content: ``ImageContent`` and ``EmbeddedResource``.

Serving step ``kernel result -> MCP result``. The kernel has already checked every item a
Python skill returned with ``bastion_sdk.Image`` or ``bastion_sdk.File`` (``bastion.content``:
base64 decodes, magic number matches the MIME type, text is UTF-8 and cleaned), so this only
changes the form: an image becomes ``ImageContent`` (base64 data, ``mimeType``), a file an
``EmbeddedResource`` (a blob, or text for text types) whose URI names the invocation and the
item (``bastion://invocation/<id>/<n>[/<name>]``), never a host path. The JSON text block
stays first, with each item replaced by a short placeholder, so a client that shows only text
still sees the whole result.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import quote

import mcp_types as types

from bastion.content import CONTENT_KEY, has_content, pull_content

__all__ = ["URI_SCHEME", "content_uri", "mcp_content"]

URI_SCHEME: Final[str] = "bastion"


def content_uri(invocation_id: str, index: int, name: str | None) -> str:
    """``bastion://invocation/<id>/<n>[/<name>]``: the item's place, percent-encoded (a name
    cannot add path segments)."""
    base = f"{URI_SCHEME}://invocation/{quote(invocation_id or '-', safe='')}/{index}"
    return base + (f"/{quote(name, safe='')}" if name else "")


def _block(item: dict[str, Any], invocation_id: str, index: int) -> types.ContentBlock:
    kind = item[CONTENT_KEY]
    mime = str(item["mime_type"])
    if kind == "image":
        return types.ImageContent(type="image", data=str(item["data"]), mime_type=mime)
    uri = content_uri(invocation_id, index, item.get("name"))
    resource: types.TextResourceContents | types.BlobResourceContents
    if kind == "text":
        resource = types.TextResourceContents(uri=uri, mime_type=mime, text=str(item["text"]))
    else:
        resource = types.BlobResourceContents(uri=uri, mime_type=mime, blob=str(item["data"]))
    return types.EmbeddedResource(type="resource", resource=resource)


def mcp_content(output: Any, invocation_id: str) -> list[types.ContentBlock]:
    """The content blocks of a successful result: its JSON as text, then one block per checked
    file or image in it (found anywhere, in order)."""
    if not has_content(output):
        text = json.dumps(output, ensure_ascii=False, separators=(",", ":"))
        return [types.TextContent(type="text", text=text)]
    rest, items = pull_content(
        output, lambda item, n: f"<{item[CONTENT_KEY]} {n}: {item.get('mime_type')}>"
    )
    text = json.dumps(rest, ensure_ascii=False, separators=(",", ":"))
    blocks: list[types.ContentBlock] = [types.TextContent(type="text", text=text)]
    blocks += [_block(item, invocation_id, i + 1) for i, item in enumerate(items)]
    return blocks
