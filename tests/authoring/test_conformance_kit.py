"""The conformance kit on first-party packs (all green) and on badpack (exactly its faults)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.testing import (
    CHECKS,
    STUB_ORIGIN,
    ConformanceError,
    conformance_report,
    run_conformance,
)
from tests.authoring.conftest import BADPACK, PACKS, ROOT

pytestmark = pytest.mark.slow

BROKEN = {
    "undeclared_host": {"permissions"},
    "wrong_schema": {"output_schema"},
    "crashy": {"fuzz"},
    "leaky": {"secrets"},
    "flaky": {"deterministic"},
    "twin": {"unique_names"},
}


@pytest.mark.parametrize("pack", sorted(PACKS))
def test_first_party_packs_pass_every_check(pack: str, runner_ready: None) -> None:
    report = conformance_report(PACKS[pack])
    assert report.ok, report.render()
    ran = {r.check for r in report.results if not r.skipped}
    assert {"manifest", "examples", "output_schema", "fuzz", "permissions", "limits"} <= ran


def test_web_examples_touch_only_the_fixture_origin(runner_ready: None) -> None:
    # Offline, the stub answers {{fixtures_url}} from fixtures/http; live, a local server does.
    report = conformance_report(PACKS["web"])
    assert report.hosts["fetch_page"] == [STUB_ORIGIN]
    assert {r["fixture"] for r in report.requests["fetch_page"]} == {"answered"}
    live = conformance_report(PACKS["web"], fuzz_examples=3, live=True)
    assert live.ok, live.render()
    assert [h.startswith("http://127.0.0.1:") for h in live.hosts["fetch_page"]] == [True]


def test_badpack_fails_exactly_the_checks_each_skill_breaks(runner_ready: None) -> None:
    report = conformance_report(BADPACK)
    failed: dict[str, set[str]] = {}
    for r in report.failures():
        failed.setdefault(r.skill or "pack", set()).add(r.check)
    assert failed == BROKEN, report.render()
    assert report.failed_checks() == set().union(*BROKEN.values())
    assert report.passed("manifest") and report.passed("examples") and report.passed("limits")


@pytest.mark.parametrize(
    ("check", "phrases"),
    [
        (
            "permissions",
            [
                "requested https://undeclared.example, which it did not declare",
                "NETWORK_DENIED",
                "Fix: declare every host in [permissions] network",
            ],
        ),
        (
            "output_schema",
            [
                "output.count: '3' is not of type 'integer'",
                "Fix: return what [output_schema] describes",
            ],
        ),
        ("fuzz", ['{"n": 0} raised ZeroDivisionError', "raise ValueError"]),
        ("secrets", ["returned secret BADPACK_TOKEN", "Fix: never put a secret"]),
        ("deterministic", ["example 2 gave", "set deterministic = false in skill.toml"]),
        (
            "unique_names",
            [
                "'twin' is used by the folders 'twin_a', 'twin_b'",
                "Fix: give each skill.toml its own name",
            ],
        ),
    ],
)
def test_badpack_messages_say_what_to_change(
    check: str, phrases: list[str], runner_ready: None
) -> None:
    report = conformance_report(BADPACK)
    with pytest.raises(ConformanceError) as info:
        report.assert_passed(check)
    for phrase in phrases:
        assert phrase in str(info.value)


def test_the_undeclared_host_is_listed_from_the_audit(runner_ready: None) -> None:
    assert conformance_report(BADPACK).hosts["undeclared_host"] == ["https://undeclared.example"]


def test_run_conformance_prints_and_writes_a_json_report(
    tmp_path: Path, runner_ready: None
) -> None:
    out = io.StringIO()
    rc = run_conformance(BADPACK, json_report=tmp_path / "r.json", stream=out)
    assert rc == 1
    assert "FAIL  permissions" in out.getvalue()
    assert "conformance: FAILED" in out.getvalue()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["ok"] is False
    assert [c["check"] for c in data["checks"]] == list(CHECKS)
    status = {c["check"]: c["passed"] for c in data["checks"]}
    assert status["examples"] is True and status["secrets"] is False


def test_run_conformance_on_a_folder_without_a_pack(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_conformance(tmp_path, stream=out) == 2
    assert "no bastion-pack.toml" in out.getvalue()
    with pytest.raises(ConfigError):
        conformance_report(tmp_path)


def _plugin_args() -> list[str]:
    """``-p bastion.testing`` unless the pytest11 entry point already loads it."""
    from importlib.metadata import entry_points

    loaded = any(ep.value == "bastion.testing" for ep in entry_points(group="pytest11"))
    return [] if loaded else ["-p", "bastion.testing"]


def test_pytest_option_runs_the_checks_as_tests(tmp_path: Path, runner_ready: None) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *_plugin_args(),
        "-p",
        "no:cacheprovider",
        "-q",
        "--rootdir",
        str(tmp_path),
        str(tmp_path),
        "--bastion-pack",
        str(BADPACK),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "6 failed, 4 passed" in proc.stdout
    assert "'twin' is used by the folders" in proc.stdout


def test_pytest_plugin_is_inert_without_the_option(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *_plugin_args(),
        "-p",
        "no:cacheprovider",
        "-q",
        "--rootdir",
        str(tmp_path),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
