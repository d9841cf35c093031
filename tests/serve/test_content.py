"""Images and files from Python skills reach MCP clients as ``ImageContent`` and
``EmbeddedResource`` blocks beside the JSON text: the SDK's own client against a spawned
``bastion mcp`` running the first-party ``sparkline`` skill (a PNG) and a pack skill that
returns a PDF and a text file, on both protocol eras."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from bastion.serve.content import content_uri, mcp_content

from .clients import stdio_client
from .conftest import BASTION, ERAS, server_env

ROOT = Path(__file__).resolve().parents[2]
DATA_PACK = ROOT / "plugins" / "bastion-pack-data" / "bastion_pack_data"
PDF = b"%PDF-1.4\n% a tiny test document\n%%EOF\n"

REPORT_PY = f'''
from bastion_sdk import File


def run(title: str) -> list:
    """Write a report: a summary, a PDF and a text file."""
    return [
        {{"summary": title}},
        File({PDF!r}, "application/pdf", "../../etc/report.pdf"),
        File("line one\\n" + title, "text/plain", "notes.txt"),
    ]
'''


@pytest.fixture(scope="module")
def policy_and_packs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    tmp = tmp_path_factory.mktemp("content")
    pack = tmp / "files-pack"
    (pack / "report").mkdir(parents=True)
    (pack / "report" / "skill.toml").write_text(
        'name = "report"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
    )
    (pack / "report" / "skill.py").write_text(REPORT_PY)
    (pack / "bastion-pack.toml").write_text(
        'name = "files-test"\nversion = "1.0.0"\nskills = ["report"]\n'
    )
    policy = tmp / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{(tmp / "audit.jsonl").as_posix()}"\n')
    return policy, [DATA_PACK, pack]


def _params(policy: Path, packs: list[Path]) -> StdioServerParameters:
    args = ["--policy", str(policy)]
    for p in packs:
        args += ["--pack", str(p)]
    return StdioServerParameters(
        command=BASTION, args=[*args, "mcp"], env=server_env(), cwd=str(policy.parent)
    )


@pytest.mark.parametrize("era", ERAS)
def test_an_image_result_is_image_content(
    policy_and_packs: tuple[Path, list[Path]], era: str
) -> None:
    policy, packs = policy_and_packs

    async def body() -> None:
        async with Client(_params(policy, packs), mode=era, cache=None) as c:
            await c.list_tools()
            r = await c.call_tool("sparkline", {"values": [1, 3, 2, 5], "width": 16, "height": 8})
            assert not r.is_error, r.content
            text, image = r.content
            assert isinstance(text, types.TextContent) and "<image 1: image/png>" in text.text
            assert isinstance(image, types.ImageContent)
            assert image.mime_type == "image/png"
            png = base64.b64decode(image.data)
            assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) == 95
            # sparkline declares an output schema: the checked item is its structured content
            assert r.structured_content is not None
            assert r.structured_content["$bastion"] == "image"

    anyio.run(body)


@pytest.mark.parametrize("era", ERAS)
def test_files_are_embedded_resources_named_by_the_invocation(
    policy_and_packs: tuple[Path, list[Path]], era: str
) -> None:
    policy, packs = policy_and_packs

    async def body() -> None:
        async with Client(_params(policy, packs), mode=era, cache=None) as c:
            await c.list_tools()
            r = await c.call_tool("report", {"title": "Q3"})
            assert not r.is_error, r.content
            text, pdf, notes = r.content
            assert isinstance(text, types.TextContent)
            assert json.loads(text.text) == [
                {"summary": "Q3"},
                "<file 1: application/pdf>",
                "<text 2: text/plain>",
            ]
            assert isinstance(pdf, types.EmbeddedResource)
            assert isinstance(pdf.resource, types.BlobResourceContents)
            assert pdf.resource.mime_type == "application/pdf"
            assert base64.b64decode(pdf.resource.blob) == PDF
            assert isinstance(notes, types.EmbeddedResource)
            assert isinstance(notes.resource, types.TextResourceContents)
            assert notes.resource.text == "line one\nQ3"
            uris = [str(pdf.resource.uri), str(notes.resource.uri)]
            invocation = uris[0].split("/")[3]
            assert uris == [
                f"bastion://invocation/{invocation}/1/..%2F..%2Fetc%2Freport.pdf",
                f"bastion://invocation/{invocation}/2/notes.txt",
            ]
            assert str(policy.parent) not in json.dumps(uris)
            audit = [
                json.loads(x) for x in (policy.parent / "audit.jsonl").read_text().splitlines()
            ]
            assert invocation in {rec.get("invocation_id") for rec in audit}

    anyio.run(body)


def test_plain_results_stay_one_text_block() -> None:
    (block,) = mcp_content({"sum": 3, "items": [1, {"a": None}]}, "inv")
    assert isinstance(block, types.TextContent)
    assert json.loads(block.text) == {"sum": 3, "items": [1, {"a": None}]}


def test_a_content_uri_cannot_be_steered_by_the_name() -> None:
    assert content_uri("abc", 1, "a/b?c#d") == "bastion://invocation/abc/1/a%2Fb%3Fc%23d"
    assert content_uri("abc", 2, None) == "bastion://invocation/abc/2"


class TestForgedContent:
    @pytest.mark.parametrize("era", ERAS)
    def test_a_skill_cannot_forge_an_image_block(
        self, stdio_policy: Path, pack: Path, era: str
    ) -> None:
        """The echo WASM skill hands back a marker it did not get from ``bastion_sdk``: the
        kernel refuses it (``INVALID_OUTPUT``), so no unchecked bytes become an image block."""
        forged = {"$bastion": "image", "mime_type": "image/png", "data": "PHN2Zz4=", "bytes": 5}

        async def body() -> None:
            async with stdio_client(stdio_policy, pack, era) as c:
                for args in (forged, {"nested": [forged]}):
                    r = await c.call_tool("echo", args)
                    assert r.is_error
                    assert all(isinstance(b, types.TextContent) for b in r.content)
                    text = r.content[0].text  # type: ignore[union-attr]
                    assert text.startswith("INVALID_OUTPUT: ")

        anyio.run(body)
