"""The worker's OS layer, tested by attack: a test-only hook inside a real worker tries what a
guest that escaped WebAssembly would try, after the limits are in force; the OS refuses."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bastion.cachedir import default_cache_root
from bastion.sandbox.workers.pool import WorkerPool
from tests.workers.conftest import ATTACK_ENTRY, MakePool, MakeRequest


def _attack(pool: WorkerPool, request_for: MakeRequest, what: str) -> dict[str, Any]:
    out = pool.run(request_for(ATTACK_ENTRY, {"do": what}, runtime="attack"))
    result: dict[str, Any] = json.loads(out)
    return result


def _limits(pool: WorkerPool) -> dict[str, Any]:
    reports = pool.reports()
    assert reports, "the worker never reported ready"
    limits: dict[str, Any] = reports[0]["limits"]
    return limits


@pytest.fixture
def attack_pool(make_pool: MakePool, request_for: MakeRequest) -> WorkerPool:
    pool = make_pool(attack=True, max_open_files=64)
    _attack(pool, request_for, "state")  # started and ready
    return pool


class TestLandlock:
    def test_reading_etc_passwd_is_refused(
        self, attack_pool: WorkerPool, request_for: MakeRequest
    ) -> None:
        if not _limits(attack_pool)["landlock"]:
            pytest.skip(f"Landlock unavailable: {_limits(attack_pool)['landlock_error']}")
        assert _attack(attack_pool, request_for, "read_passwd") == {
            "refused": True,
            "errno": errno.EACCES,
        }

    def test_writing_outside_the_mounts_is_refused(
        self, attack_pool: WorkerPool, request_for: MakeRequest
    ) -> None:
        if not _limits(attack_pool)["landlock"]:
            pytest.skip("Landlock unavailable")
        assert _attack(attack_pool, request_for, "write_tmp")["refused"] is True

    def test_without_landlock_the_same_read_succeeds(
        self, make_pool: MakePool, request_for: MakeRequest
    ) -> None:
        # The control: the refusal above is Landlock's, not a missing file or a test quirk.
        pool = make_pool(attack=True, landlock=False)
        assert _attack(pool, request_for, "read_passwd") == {"refused": False}


class TestSeccomp:
    def test_exec_is_refused(self, attack_pool: WorkerPool, request_for: MakeRequest) -> None:
        assert _limits(attack_pool)["seccomp"], _limits(attack_pool)["seccomp_error"]
        assert _attack(attack_pool, request_for, "exec") == {"refused": True, "errno": errno.EPERM}

    def test_spawning_a_program_is_refused(
        self, attack_pool: WorkerPool, request_for: MakeRequest
    ) -> None:
        result = _attack(attack_pool, request_for, "fork_exec")
        assert result["refused"] is True

    def test_without_seccomp_exec_would_work(
        self, make_pool: MakePool, request_for: MakeRequest
    ) -> None:
        pool = make_pool(attack=True, seccomp=False, landlock=False)
        assert _attack(pool, request_for, "fork_exec") == {"refused": False}


class TestOpenFiles:
    def test_opening_many_files_stops_at_the_limit(
        self, attack_pool: WorkerPool, request_for: MakeRequest
    ) -> None:
        result = _attack(attack_pool, request_for, "open_many")
        assert result["refused"] is True
        assert result["errno"] == errno.EMFILE
        assert result["opened"] < 64
        assert _limits(attack_pool)["max_open_files"] == 64

    def test_the_worker_serves_the_next_call_after_hitting_it(
        self, attack_pool: WorkerPool, request_for: MakeRequest
    ) -> None:
        _attack(attack_pool, request_for, "open_many")
        assert "fds" in _attack(attack_pool, request_for, "state")


class TestInheritance:
    def test_environment_is_empty_but_for_the_cache_location(
        self, attack_pool: WorkerPool, request_for: MakeRequest
    ) -> None:
        assert _attack(attack_pool, request_for, "state")["env"] == ["BASTION_CACHE_DIR"]

    def test_no_descriptor_inherited_but_stdio_and_the_socket(
        self, make_pool: MakePool, request_for: MakeRequest, tmp_path: Path
    ) -> None:
        # An inheritable descriptor open in the kernel must not reach the worker. Landlock is
        # off here only so the worker may read /proc/self/fd to say what each descriptor is.
        bait = tmp_path / "kernel-secret.txt"
        bait.write_text("x")
        fd = os.open(bait, os.O_RDONLY)
        os.set_inheritable(fd, True)
        try:
            pool = make_pool(attack=True, landlock=False)
            fds = _attack(pool, request_for, "state")["fds"]
        finally:
            os.close(fd)
        assert [fds[k] for k in ("0", "1")] == ["/dev/null"] * 2
        assert fds["2"].startswith("pipe:")  # stderr: read by the kernel for crash reports
        others = [v for k, v in fds.items() if int(k) > 2]
        assert str(bait) not in others
        sockets = [v for v in others if v.startswith("socket:")]
        assert len(sockets) == 1, fds
        # Anything else the worker opened itself: compiled code mapped from the cache,
        # wasmtime's memfd images or epoll, and the page warmer's view of its own memory (its
        # map, its page map and its pidfd); never another path.
        own = ("socket:", "/memfd:", "anon_inode:", str(default_cache_root()) + "/")
        mine = {f"/proc/{pid}/{name}" for pid in pool.pids() for name in ("maps", "pagemap")}
        assert all(v.startswith(own) or v in mine for v in others), fds

    def test_core_dumps_off_and_no_new_privs(self, attack_pool: WorkerPool) -> None:
        limits = _limits(attack_pool)
        assert limits["core"] == 0
        assert limits["no_new_privs"] is True
