"""Shared fixtures: policies written to real files, fake site folders, kernels with audit logs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.sitebuilder import SiteBuilder

# No per-example deadline (a loaded 2-core CI machine is not a property failure); on CI the
# examples are derived from the test itself, so a run there is reproducible.
settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

os.environ.setdefault("BASTION_CACHE_DIR", str(Path.home() / ".cache" / "bastion-tests"))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SiteBuilder]:
    """A site-packages-like folder on sys.path, holding only what the test builds."""
    root = tmp_path / "site"
    builder = SiteBuilder(root)
    monkeypatch.syspath_prepend(str(root))
    # Only the test's own distributions: the first-party packs installed in the venv stay out.
    yield builder
    for name in list(sys.modules):
        mod = sys.modules[name]
        if getattr(mod, "__file__", None) and str(root) in str(mod.__file__):
            del sys.modules[name]


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[[str], Path]:
    """Write a bastion.toml (with an audit log under tmp_path unless it sets one)."""

    def write(text: str) -> Path:
        path = tmp_path / "bastion.toml"
        if "[audit]" not in text:
            text += f'\n[audit]\npath = "{(tmp_path / "audit.jsonl").as_posix()}"\n'
        path.write_text(text)
        return path

    return write
