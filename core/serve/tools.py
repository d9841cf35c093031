"""The tool list a caller sees: its usable skills as MCP tools, annotated from enforced grants.

Serving step ``MCP dispatch -> tools``: a skill is listed (and callable) only when it is granted,
enabled, has an executor, and the caller's tenant and roles allow it; anything else is absent,
exactly like a name no pack provides. Annotations describe what the kernel *enforces* (the
grant), never what the author claims: ``readOnlyHint`` no writable mount, ``openWorldHint`` any
network rule, ``destructiveHint`` false only when nothing writable, ``idempotentHint`` from
``deterministic``. Titles and descriptions are cleaned like skill output before a client sees
them (a pack is untrusted: no terminal escapes, bidi tricks or invisible "tag" text).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import mcp_types as types

from bastion.kernel import Kernel, SkillStatus
from bastion.sanitize import SanitizeConfig, Sanitizer
from bastion.tenants import TenantGate

from .auth import Caller

__all__ = ["ToolCatalog", "annotations_for", "tool_for"]


def annotations_for(st: SkillStatus) -> types.ToolAnnotations:
    """Hints derived from the grant the kernel enforces for this skill."""
    caps = st.grant.caps
    writable = any(m.writable for m in caps.mounts)
    return types.ToolAnnotations(
        title=_title(st),
        read_only_hint=not writable,
        destructive_hint=writable,
        idempotent_hint=bool(st.skill.manifest.deterministic),
        open_world_hint=bool(caps.network),
    )


_TEXT = Sanitizer(SanitizeConfig(max_output_bytes=8192, credential_shapes=False))
"""Cleans what a pack wrote for people and models (escapes, controls, bidi, invisibles)."""


def _clean(text: str) -> str:
    return _TEXT.clean_text(text).text


def _title(st: SkillStatus) -> str | None:
    title = getattr(st.skill.manifest, "title", None)
    return _clean(title) if isinstance(title, str) and title else None


def _object_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """A schema usable as ``outputSchema`` on every protocol era (an object at the root)."""
    if schema is not None and schema.get("type") == "object":
        return schema
    return None


def tool_for(st: SkillStatus) -> types.Tool:
    """The MCP tool for one usable skill."""
    schema = dict(st.skill.input_schema)
    schema.setdefault("type", "object")
    return types.Tool(
        name=st.name,
        title=_title(st),
        description=_clean(st.skill.description),
        input_schema=schema,
        output_schema=_object_schema(st.skill.output_schema),
        annotations=annotations_for(st),
    )


class ToolCatalog:
    """The tools of one kernel, and which of them a caller may see and call."""

    def __init__(self, kernel: Kernel) -> None:
        doc = kernel.policy.doc
        self._gate = TenantGate(doc.tenants, doc.roles) if doc.tenants or doc.roles else None
        self._usable = {st.name: st for st in kernel.skills() if st.usable}
        self._tools = {name: tool_for(st) for name, st in self._usable.items()}
        text = json.dumps(
            [t.model_dump(mode="json", by_alias=True) for t in self._tools.values()],
            sort_keys=True,
        )
        self.fingerprint = hashlib.sha256(
            text.encode() + json.dumps(self._access_rules(kernel), sort_keys=True).encode()
        ).hexdigest()
        """Changes whenever any caller's tool list could change."""

    @staticmethod
    def _access_rules(kernel: Kernel) -> Any:
        doc = kernel.policy.doc
        return {
            "tenants": {k: v.model_dump(mode="json") for k, v in doc.tenants.items()},
            "roles": {k: v.model_dump(mode="json") for k, v in doc.roles.items()},
        }

    def allows(self, name: str, caller: Caller) -> bool:
        """Whether ``caller`` may see and call the tool ``name``."""
        if name not in self._usable:
            return False
        gate = self._gate
        return gate is None or gate.refusal(name, caller.tenant, caller.roles) is None

    def tools_output(self, name: str) -> bool:
        """Whether the tool declares an ``outputSchema`` (results then carry structured content)."""
        tool = self._tools.get(name)
        return tool is not None and tool.output_schema is not None

    def names(self) -> list[str]:
        """Every usable tool's name (whoever may call it)."""
        return list(self._usable)

    def status(self, name: str) -> SkillStatus | None:
        return self._usable.get(name)

    def tools(self, caller: Caller) -> Sequence[types.Tool]:
        """The caller's tools, sorted by name."""
        return [t for name, t in self._tools.items() if self.allows(name, caller)]
