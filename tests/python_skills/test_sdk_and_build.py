"""The host-side ``bastion.sdk`` stubs and the runner build key (no runner build needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion import sdk
from bastion.sandbox import runner_build


@pytest.mark.parametrize(
    "call",
    [
        lambda: sdk.http.get("https://example.com"),
        lambda: sdk.http.post("https://example.com", body=b"x"),
        lambda: sdk.secret("API_KEY"),
        lambda: sdk.log.info("hello"),
    ],
)
def test_sdk_outside_the_sandbox_says_how_to_run(call: object) -> None:
    with pytest.raises(sdk.SandboxOnlyError, match="bastion run"):
        call()  # type: ignore[operator]


def test_sdk_names_match_the_guest_sdk() -> None:
    guest = (runner_build.GUEST_DIR / "runner" / "bastion_sdk.py").read_text()
    for name in sdk.__all__:
        if name != "SandboxOnlyError":
            assert f'"{name}"' in guest, name


def test_digest_covers_every_guest_file(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "guest"
    shutil.copytree(runner_build.GUEST_DIR, copy)
    before = runner_build.runner_digest(copy)
    assert runner_build.runner_digest(copy) == before
    (copy / "runner" / "bastion_sdk.py").write_text("# changed\n")
    assert runner_build.runner_digest(copy) != before


def test_allowed_modules_is_read_as_data() -> None:
    mods = runner_build.allowed_modules()
    assert "json" in mods and "bastion_sdk" in mods
    assert not {"socket", "subprocess", "ctypes", "_thread"} & set(mods)


def test_runner_digest_is_read_from_its_record_and_rebuilt_when_bad(tmp_path: Path) -> None:
    import hashlib

    runner = tmp_path / "runner-0123.wasm"
    runner.write_bytes(b"\0asm runner bytes")
    want = hashlib.sha256(runner.read_bytes()).hexdigest()
    record = tmp_path / "runner-0123.wasm.sha256"
    assert runner_build.runner_sha256(runner) == want  # no record yet: hashed and recorded
    assert record.read_text() == want
    for bad in ("", "zz" * 32, want[:-1], "not a digest\n"):
        record.write_text(bad)
        assert runner_build.runner_sha256(runner) == want
        assert record.read_text() == want
