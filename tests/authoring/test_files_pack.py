"""The files pack through the real kernel and sandbox: a real mount, escapes refused."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.authoring.conftest import PackRunner

pytestmark = pytest.mark.slow


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    root = tmp_path / "shared"
    (root / "docs").mkdir(parents=True)
    (root / "notes.txt").write_text("alpha\nbeta\nGamma beta\n")
    (root / "docs" / "guide.md").write_text("# Guide\nbeta release\n")
    (root / "bom16.txt").write_bytes("héllo".encode("utf-16"))
    (root / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    outside = tmp_path / "secret.txt"
    outside.write_text("TOP SECRET\n")
    os.symlink(outside, root / "abs_link.txt")
    os.symlink("../secret.txt", root / "rel_link.txt")
    os.symlink("/etc", root / "etc_link")
    return root


@pytest.fixture
def files(pack_runner: Callable[..., PackRunner], shared: Path) -> PackRunner:
    return pack_runner(
        "files", f'[[mounts]]\nguest = "/files"\nhost = "{shared.as_posix()}"\naccess = "read"\n'
    )


def test_without_a_mount_the_skills_are_denied(pack_runner: Callable[..., PackRunner]) -> None:
    runner = pack_runner("files")
    code, message = runner.error("read_file", path="notes.txt")
    assert code == "DENIED"
    assert '"/files"' in message


def test_list_read_search(files: PackRunner) -> None:
    listing = files.ok("list_files")
    kinds = {e["path"]: e["type"] for e in listing["entries"]}
    assert kinds["/files/docs"] == "dir"
    assert kinds["/files/notes.txt"] == "file"
    assert kinds["/files/abs_link.txt"] == "link"
    deep = files.ok("list_files", recursive=True, pattern="*.md")
    assert [e["path"] for e in deep["entries"]] == ["/files/docs/guide.md"]
    assert files.ok("read_file", path="notes.txt")["text"] == "alpha\nbeta\nGamma beta\n"
    page = files.ok("read_file", path="/files/notes.txt", offset=6, max_bytes=4)
    assert (page["text"], page["truncated"]) == ("beta", True)
    assert files.ok("read_file", path="bom16.txt")["text"] == "héllo"
    hits = files.ok("search_text", query="BETA", ignore_case=True)
    assert [(h["path"], h["line"]) for h in hits["matches"]] == [
        ("/files/docs/guide.md", 2),
        ("/files/notes.txt", 2),
        ("/files/notes.txt", 3),
    ]
    assert "TOP SECRET" not in str(files.ok("search_text", query="SECRET"))


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "/files/../etc/passwd",
        "../secret.txt",
        "abs_link.txt",
        "rel_link.txt",
        "etc_link/passwd",
    ],
)
def test_read_file_refuses_paths_outside_the_mount(files: PackRunner, path: str) -> None:
    code, message = files.error("read_file", path=path)
    assert code == "SKILL_ERROR"
    assert "outside /files" in message
    assert "TOP SECRET" not in message


def test_links_inside_the_mount_are_followed(files: PackRunner, shared: Path) -> None:
    os.symlink("docs/guide.md", shared / "guide_link.md")
    os.symlink("../notes.txt", shared / "docs" / "notes_link.txt")
    assert files.ok("read_file", path="guide_link.md")["path"] == "/files/docs/guide.md"
    assert files.ok("read_file", path="docs/notes_link.txt")["text"].startswith("alpha")


def test_listing_and_searching_outside_the_mount_is_refused(files: PackRunner) -> None:
    _, message = files.error("list_files", path="etc_link")
    assert "outside /files" in message
    _, message = files.error("search_text", query="root", path="/etc")
    assert "outside /files" in message


def test_read_file_edges(files: PackRunner) -> None:
    _, message = files.error("read_file", path="blob.bin")
    assert "looks binary" in message
    _, message = files.error("read_file", path="missing.txt")
    assert "does not exist" in message
    _, message = files.error("read_file", path="docs")
    assert "is a folder" in message
    _, message = files.error("read_file", path="notes.txt", max_bytes=10**9)
    assert "max_bytes must be between 1 and 1000000" in message
    _, message = files.error("read_file", path="notes.txt", encoding="klingon")
    assert "unknown encoding 'klingon'" in message
