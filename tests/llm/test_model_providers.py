"""A plugin's model provider (bastion_model_providers) drives the agent loop by its prefix."""

from __future__ import annotations

from typing import Any

import pytest

from bastion import Agent, Kernel, hookimpl, load_policy, native_skill
from bastion.audit import NullAudit
from bastion.errors import ConfigError
from bastion.models import ScriptedModel, ScriptedTurn, resolve_model


@native_skill(
    name="double",
    version="1.0.0",
    description="Double a number.",
    input_schema={"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]},
)
def double(n: float) -> dict[str, float]:
    return {"n": n * 2}


class LocalProvider:
    """A plugin offering a skill and a model provider under the prefix 'local'."""

    def __init__(self) -> None:
        self.made: list[str] = []

    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [double]

    @hookimpl
    def bastion_model_providers(self) -> dict[str, Any]:
        def make(name: str) -> ScriptedModel:
            self.made.append(name)
            return ScriptedModel(
                [ScriptedTurn(tool_calls=[("double", {"n": 21})]), "It is 42."], name=name
            )

        return {"local": make}


def test_provider_prefix_resolves_and_runs_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_LOAD_PLUGINS", "")
    with pytest.raises(ConfigError, match="unknown model 'local:tiny'"):
        resolve_model("local:tiny")
    plugin = LocalProvider()
    with Kernel(load_policy(text=""), plugins=[plugin], audit=NullAudit()) as kernel:
        run = Agent(kernel, model="local:tiny").run("double 21")
    assert plugin.made == ["tiny"]
    assert run.stop_reason == "end_turn" and run.text == "It is 42."
    assert run.tool_calls == 1
