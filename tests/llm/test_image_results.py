"""Files and images from sandboxed Python skills: checked by the kernel, handed to the model as
image/document/text blocks through the real ``anthropic`` SDK against the local Messages server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion import Kernel, load_policy
from bastion.agent import Agent
from bastion.models import AnthropicModel
from tests.llm.fake_anthropic import FakeAnthropic, Reply, text, tool_use

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DATA_PACK = ROOT / "plugins" / "bastion-pack-data" / "bastion_pack_data"
PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)
SKILLS = {
    "svg_as_image": 'from bastion_sdk import Image\ndef run() -> Image:\n    """Bad."""\n'
    "    return Image(b'<svg xmlns=\"http://www.w3.org/2000/svg\"/>', 'image/png')\n",
    "svg_as_file": 'from bastion_sdk import File\ndef run() -> File:\n    """Svg."""\n'
    "    return File(b'<svg><text>hi</text></svg>', 'image/svg+xml', 'pic.svg')\n",
    "forged": 'def run() -> dict:\n    """Forge."""\n'
    "    return {'$bastion': 'image', 'mime_type': 'image/png', 'data': 'AAAA'}\n",
    "mixed": "import base64\nfrom bastion_sdk import Image, File\n"
    'def run() -> list:\n    """Mixed."""\n'
    f"    png = base64.b64decode({PNG_1PX!r})\n"
    "    return [{'rows': 3}, Image(png, 'image/png'), File(b'%PDF-1.4 x', 'application/pdf', "
    "'r.pdf')]\n",
}


def _pack(root: Path) -> Path:
    names = ", ".join(f'"{n}"' for n in SKILLS)
    root.mkdir(parents=True)
    (root / "bastion-pack.toml").write_text(
        f'name = "img"\nversion = "1.0.0"\nskills = [{names}]\n'
    )
    for name, src in SKILLS.items():
        (root / name).mkdir()
        (root / name / "skill.toml").write_text(
            f'name = "{name}"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
        )
        (root / name / "skill.py").write_text(src)
    return root


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kernel]:
    from bastion.sandbox.runner_build import load_runner

    load_runner()
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    k = Kernel(
        load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'),
        pack_paths=[DATA_PACK, _pack(tmp_path / "img")],
        entry_points=False,
        environ={},
    )
    assert not k.problems, k.problems
    yield k
    k.close()


def _last_blocks(fake: FakeAnthropic, request: int) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = fake.requests[request].body["messages"][-1]["content"]
    return content


def test_an_image_result_reaches_the_model_as_an_image_block(
    kernel: Kernel, fake: FakeAnthropic
) -> None:
    fake.script(
        Reply([tool_use("sparkline", {"values": [1, 3, 2, 5], "width": 32, "height": 8}, "c1")]),
        Reply([text("a rising line")]),
    )
    model = AnthropicModel("claude-sonnet-5-5", api_key="k", base_url=fake.base_url)
    run = Agent(kernel, model=model).run("draw it")
    assert run.stop_reason == "end_turn"
    (result,) = _last_blocks(fake, 1)
    assert result["type"] == "tool_result" and result["tool_use_id"] == "c1"
    (image,) = result["content"]
    assert image["type"] == "image"
    assert image["source"]["type"] == "base64" and image["source"]["media_type"] == "image/png"
    png = base64.b64decode(image["source"]["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(png[16:20], "big") == 32 and int.from_bytes(png[20:24], "big") == 8


def test_mixed_results_become_text_image_and_document_blocks(
    kernel: Kernel, fake: FakeAnthropic
) -> None:
    fake.script(Reply([tool_use("mixed", {}, "c1")]), Reply([text("ok")]))
    model = AnthropicModel("claude-sonnet-5-5", api_key="k", base_url=fake.base_url)
    Agent(kernel, model=model).run("go")
    (result,) = _last_blocks(fake, 1)
    kinds = [b["type"] for b in result["content"]]
    assert kinds == ["text", "image", "document"]
    assert result["content"][0]["text"] == '{"rows": 3}'
    assert result["content"][1]["source"]["data"] == PNG_1PX
    assert result["content"][2]["title"] == "r.pdf"


def test_an_svg_is_text_never_an_image(kernel: Kernel) -> None:
    bad = kernel.invoke("svg_as_image", {})
    assert not bad.ok and bad.error is not None
    assert bad.error.code == "INVALID_OUTPUT"
    assert "claims 'image/png' but its bytes are not image/png" in bad.error.message
    good = kernel.invoke("svg_as_file", {})
    assert good.ok, good.error
    assert good.output["$bastion"] == "text" and "<text>hi</text>" in good.output["text"]


def test_a_forged_content_marker_is_refused(kernel: Kernel) -> None:
    result = kernel.invoke("forged", {})
    assert not result.ok and result.error is not None
    assert result.error.code == "INVALID_OUTPUT"
    assert "reserved key '$bastion'" in result.error.message
