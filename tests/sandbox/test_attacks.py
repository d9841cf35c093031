"""Security by attack: each test runs a hostile guest and checks it is contained."""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.errors import ErrorCode, ExecutionError
from bastion.executor import Capabilities, Mount
from bastion.sandbox.wasi_module import WasiModuleExecutor
from tests.sandbox.conftest import MakeRequest

Guest = Callable[[str], Path]


def _fail(ex: WasiModuleExecutor, req: object) -> ExecutionError:
    with pytest.raises(ExecutionError) as info:
        ex.execute(req)  # type: ignore[arg-type]
    return info.value


def _probe(
    ex: WasiModuleExecutor,
    guest: Guest,
    make_request: MakeRequest,
    cmd: str,
    mounts: tuple[Mount, ...] = (),
) -> dict[str, object]:
    out = ex.execute(make_request(guest("fsprobe.c"), cmd, caps=Capabilities(mounts=mounts)))
    return dict(json.loads(out))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "hello.txt").write_text("hello from the mount")
    (tmp_path / "secret.txt").write_text("host secret")
    return d


def test_sleep_in_host_call_still_times_out(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    err = _fail(executor, make_request(guest("sleep.c"), timeout_ms=150))
    assert err.error_code is ErrorCode.TIMEOUT


def test_stdout_flood_is_capped_and_host_memory_bounded(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest
) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    err = _fail(executor, make_request(guest("flood.c"), output_kb=256, timeout_ms=30_000))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert err.error_code is ErrorCode.OUTPUT_LIMIT
    # 1 GiB was written; the host kept no more than the cap (loose bound: 128 MiB of growth).
    assert after - before < 128 * 1024


def test_etc_passwd_is_not_reachable(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest, data_dir: Path
) -> None:
    for path in ["/etc/passwd", "../etc/passwd", "/data/../../etc/passwd"]:
        res = _probe(executor, guest, make_request, f"r {path}", (Mount("/data", data_dir),))
        assert res["ok"] is False, path


def test_mounted_file_is_readable(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest, data_dir: Path
) -> None:
    res = _probe(executor, guest, make_request, "r /data/hello.txt", (Mount("/data", data_dir),))
    assert res == {"ok": True, "data": "hello from the mount"}


def test_dotdot_escape_fails(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest, data_dir: Path
) -> None:
    res = _probe(
        executor, guest, make_request, "r /data/../secret.txt", (Mount("/data", data_dir),)
    )
    assert res["ok"] is False


@pytest.mark.parametrize("target", ["../secret.txt", "/etc/passwd", "/"])
def test_symlink_escape_fails(
    executor: WasiModuleExecutor,
    guest: Guest,
    make_request: MakeRequest,
    data_dir: Path,
    target: str,
) -> None:
    link = data_dir / "escape"
    link.symlink_to(target if target.startswith("/") else data_dir / target)
    res = _probe(executor, guest, make_request, "r /data/escape", (Mount("/data", data_dir),))
    assert res["ok"] is False
    res = _probe(
        executor, guest, make_request, "r /data/escape/etc/passwd", (Mount("/data", data_dir),)
    )
    assert res["ok"] is False


def test_symlink_inside_mount_works(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest, data_dir: Path
) -> None:
    (data_dir / "alias.txt").symlink_to("hello.txt")
    res = _probe(executor, guest, make_request, "r /data/alias.txt", (Mount("/data", data_dir),))
    assert res["ok"] is True


def test_readonly_mount_refuses_writes(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest, data_dir: Path
) -> None:
    for path in ["/data/new.txt", "/data/hello.txt"]:
        res = _probe(
            executor, guest, make_request, f"w {path}", (Mount("/data", data_dir, writable=False),)
        )
        assert res["ok"] is False, path
    assert not (data_dir / "new.txt").exists()
    assert (data_dir / "hello.txt").read_text() == "hello from the mount"


def test_writable_mount_accepts_writes(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest, data_dir: Path
) -> None:
    res = _probe(
        executor, guest, make_request, "w /data/new.txt", (Mount("/data", data_dir, writable=True),)
    )
    assert res == {"ok": True}
    assert (data_dir / "new.txt").read_text() == "written"


def test_missing_mount_dir_is_fs_denied(
    executor: WasiModuleExecutor, guest: Guest, make_request: MakeRequest, tmp_path: Path
) -> None:
    req = make_request(
        guest("fsprobe.c"),
        "r /data/x",
        caps=Capabilities(mounts=(Mount("/data", tmp_path / "gone"),)),
    )
    err = _fail(executor, req)
    assert err.error_code is ErrorCode.FS_DENIED and str(tmp_path) not in err.message


def test_env_is_empty_and_argv_is_only_the_name(
    executor: WasiModuleExecutor,
    guest: Guest,
    make_request: MakeRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BASTION_TEST_SECRET", "do-not-leak")
    assert os.environ.get("HOME")
    out = executor.execute(make_request(guest("envargs.c"), skill="weather"))
    assert json.loads(out) == {"argc": 1, "argv0": "weather", "envc": 0, "home": False}
