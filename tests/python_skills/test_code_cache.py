"""Attacks on the compiled-entry cache (``sandbox/pycode.py``): a cached code object must never
serve another skill, outlive a change of the source, or come from running the skill's code."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import ExecutionError
from bastion.executor import ExecutionRequest
from bastion.sandbox.pycode import CodeCache
from bastion.sandbox.python_exec import PythonExecutor
from bastion.sandbox.runner_build import load_runner
from tests.python_skills.conftest import folder_request


def _skill(folder: Path, source: str, name: str = "skill.py") -> ExecutionRequest:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(source)
    return folder_request(folder, {})


def _run(ex: PythonExecutor, req: ExecutionRequest) -> object:
    return json.loads(ex.execute(dataclasses.replace(req, deadline=req.deadline + 5)))


class TestCompileRunsNoSkillCode:
    def test_a_top_level_that_never_ends_still_compiles(self, tmp_path: Path) -> None:
        # If compile-module ran the module, this would hit the compile deadline and fail.
        req = _skill(tmp_path / "s", "while True:\n    pass\n\ndef run() -> int:\n    return 1\n")
        cache = CodeCache()
        assert cache.fill(req, "skill.py", load_runner())
        assert cache.context_code(req) is not None

    def test_a_top_level_that_raises_still_compiles(self, tmp_path: Path) -> None:
        req = _skill(tmp_path / "s", "raise SystemExit(3)\n")
        assert CodeCache().fill(req, "skill.py", load_runner())

    def test_a_syntax_error_is_not_cached_and_the_call_reports_it(
        self, tmp_path: Path, python_executor: PythonExecutor
    ) -> None:
        req = _skill(tmp_path / "s", "def run(:\n    pass\n")
        cache = CodeCache()
        assert not cache.fill(req, "skill.py", load_runner())
        assert cache.context_code(req) is None
        for _ in range(2):
            with pytest.raises(ExecutionError) as info:
                python_executor.execute(req)
            assert info.value.code == "SKILL_ERROR"
            assert "SyntaxError" in info.value.message


class TestSourceChange:
    def test_the_changed_source_runs_even_with_the_same_size_and_mtime(
        self, tmp_path: Path
    ) -> None:
        ex = PythonExecutor()
        try:
            folder = tmp_path / "s"
            req = _skill(folder, "def run() -> str:\n    return 'one'\n")
            assert _run(ex, req) == "one"  # a miss: compiled in the guest, then cached
            assert ex._code.context_code(req) is not None
            assert _run(ex, req) == "one"  # served from the cache
            entry = folder / "skill.py"
            st_before = entry.stat()
            entry.write_text("def run() -> str:\n    return 'two'\n")
            os.utime(entry, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
            assert entry.stat().st_size == st_before.st_size
            assert ex._code.context_code(req) is None  # the bytes differ: never handed out
            assert _run(ex, req) == "two"
            assert _run(ex, req) == "two"  # and the new bytes are cached
        finally:
            ex.close()

    @settings(
        max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
    def test_any_edit_is_seen(self, tmp_path: Path, word: str) -> None:
        cache = CodeCache()
        folder = tmp_path / "h"
        req = _skill(folder, f"def run() -> str:\n    return {word!r}\n")
        assert cache.fill(req, "skill.py", load_runner())
        (folder / "skill.py").write_text(f"def run() -> str:\n    return {word + 'x'!r}\n")
        assert cache.context_code(req) is None

    def test_a_package_of_the_same_name_wins_as_without_the_cache(self, tmp_path: Path) -> None:
        ex = PythonExecutor()
        try:
            folder = tmp_path / "s"
            req = _skill(folder, "def run() -> str:\n    return 'module'\n")
            assert _run(ex, req) == "module"
            assert _run(ex, req) == "module"
            (folder / "skill").mkdir()
            (folder / "skill" / "__init__.py").write_text("def run() -> str:\n    return 'pkg'\n")
            assert ex._code.context_code(req) is None
            assert _run(ex, req) == "pkg"  # the guest's finder looks for the package first
        finally:
            ex.close()


class TestNeverShared:
    def test_two_skills_with_the_same_file_name_each_run_their_own(self, tmp_path: Path) -> None:
        ex = PythonExecutor()
        try:
            a = _skill(tmp_path / "a", "def run() -> str:\n    return 'a'\n")
            b = dataclasses.replace(
                _skill(tmp_path / "b", "def run() -> str:\n    return 'b'\n"), skill="t"
            )
            assert a.skill == b.skill  # same name, same entry file name: only the folder differs
            for _ in range(3):
                assert _run(ex, a) == "a"
                assert _run(ex, b) == "b"
        finally:
            ex.close()

    def test_a_cached_entry_is_keyed_by_skill_name_too(self, tmp_path: Path) -> None:
        cache = CodeCache()
        req = _skill(tmp_path / "s", "def run() -> int:\n    return 1\n")
        assert cache.fill(req, "skill.py", load_runner())
        other = dataclasses.replace(req, skill="other")
        assert cache.context_code(other) is None


class TestCachedModuleTracebacks:
    def test_the_error_still_quotes_the_source_line(self, tmp_path: Path) -> None:
        ex = PythonExecutor()
        try:
            req = _skill(tmp_path / "s", "def run() -> str:\n    raise ValueError('boom here')\n")
            for _ in range(3):  # the first compiles in the guest, the others use the cache
                with pytest.raises(ExecutionError) as info:
                    ex.execute(dataclasses.replace(req, deadline=req.deadline + 5))
                assert info.value.message.startswith("ValueError: boom here (skill.py, line 2")
                assert "raise ValueError('boom here')" in (info.value.detail or "")
            assert ex._code.context_code(req) is not None
        finally:
            ex.close()
