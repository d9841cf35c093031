"""Per-skill settings: ``[config]`` in skill.toml, values in the policy, ``bastion_sdk.config``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.kernel import Kernel
from bastion.policy import load_policy

pytestmark = pytest.mark.slow

TOML = """name = "greeter"
version = "1.0.0"
runtime = "python"
entry = "skill.py"

[config.api_base]
description = "where the service lives"

[config.greeting]
default = "hello"

[config.retries]
type = "integer"
default = 2
"""
SRC = '''import bastion_sdk
def run(name: str) -> dict:
    """Greet."""
    try:
        missing = bastion_sdk.config("undeclared")
    except bastion_sdk.ConfigMissing as exc:
        missing = str(exc)
    return {"api": bastion_sdk.config("api_base"), "text": f"{bastion_sdk.config('greeting')} "
            f"{name}", "retries": bastion_sdk.config("retries"), "missing": missing}
'''


def _kernel(tmp_path: Path, policy: str) -> Kernel:
    pack = tmp_path / "pack"
    (pack / "greeter").mkdir(parents=True, exist_ok=True)
    (pack / "bastion-pack.toml").write_text('name = "g"\nversion = "1.0.0"\nskills = ["greeter"]\n')
    (pack / "greeter" / "skill.toml").write_text(TOML)
    (pack / "greeter" / "skill.py").write_text(SRC)
    text = policy + f'\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
    return Kernel(load_policy(text=text), pack_paths=[pack], entry_points=False, environ={})


def test_values_come_from_the_policy_and_defaults(tmp_path: Path) -> None:
    k = _kernel(
        tmp_path, '[skills.greeter.config]\napi_base = "https://api.example"\nretries = 5\n'
    )
    try:
        out = k.invoke("greeter", {"name": "Ada"}).output
        assert out["api"] == "https://api.example"
        assert out["text"] == "hello Ada"
        assert out["retries"] == 5
        assert "config key 'undeclared' has no value" in out["missing"]
    finally:
        k.close()


def test_a_missing_required_key_denies_the_skill_naming_it(tmp_path: Path) -> None:
    k = _kernel(tmp_path, "")
    try:
        st = k.skill("greeter")
        assert st is not None and not st.grant.granted
        assert any("config 'api_base' is required" in r for r in st.grant.reasons)
        assert any("where the service lives" in r for r in st.grant.reasons)
        result = k.invoke("greeter", {"name": "Ada"})
        assert not result.ok and result.error is not None and result.error.code == "DENIED"
    finally:
        k.close()


def test_a_value_of_the_wrong_type_denies_the_skill(tmp_path: Path) -> None:
    k = _kernel(tmp_path, '[skills.greeter.config]\napi_base = "x"\nretries = "many"\n')
    try:
        st = k.skill("greeter")
        assert st is not None and not st.grant.granted
        assert any("config 'retries': 'many' is not an integer" in r for r in st.grant.reasons)
    finally:
        k.close()
