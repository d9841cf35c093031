"""Bastion's conformance kit, run on this pack: pytest runs each check as its own test.

The same checks run from the command line with ``bastion test {{package}}``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.testing import CHECKS, conformance_report

PACK = Path(__file__).resolve().parent.parent / "{{package}}"


@pytest.mark.parametrize("check", CHECKS)
def test_conformance(check: str) -> None:
    conformance_report(PACK).assert_passed(check)
