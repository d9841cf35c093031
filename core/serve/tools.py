"""The tool list a caller sees: its usable skills as MCP tools, annotated from enforced grants.

Serving step ``MCP dispatch -> tools``: a skill is listed (and callable) only when it is granted,
enabled, has an executor, and the caller's tenant and roles allow it; anything else is absent,
exactly like a name no pack provides. Annotations describe what the kernel *enforces* (the
grant), never what the author claims: ``readOnlyHint`` no writable mount, ``openWorldHint`` any
network rule, ``destructiveHint`` false only when nothing writable, ``idempotentHint`` from
``deterministic``. Titles and descriptions arrive cleaned by discovery (``bastion.textclean``:
no terminal escapes, bidi tricks or invisible "tag" text).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Final

import mcp_types as types

from bastion.kernel import Kernel, SkillStatus
from bastion.tenants import TenantGate

from .auth import Caller

__all__ = ["ToolCatalog", "annotations_for", "tool_for"]

_MAX_CACHED_CALLERS: Final[int] = 256
"""Distinct (tenant, roles) tool sets a catalog keeps; more start the cache over."""


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


def _title(st: SkillStatus) -> str:
    """The manifest's title (cleaned at discovery), or one derived from the skill's name."""
    return st.skill.title


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
        description=st.skill.description,  # cleaned once, at discovery
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
        self._visible: dict[tuple[str, tuple[str, ...]], frozenset[str]] = {}
        self._lists: dict[frozenset[str], list[types.Tool]] = {}
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

    def visible(self, caller: Caller) -> frozenset[str]:
        """The names ``caller``'s tenant and roles may see and call, computed once per
        (tenant, roles) for this kernel: a policy or pack change builds a new catalog."""
        key = (caller.tenant, caller.roles)
        names = self._visible.get(key)
        if names is None:
            gate = self._gate
            names = frozenset(
                n
                for n in self._usable
                if gate is None or gate.refusal(n, caller.tenant, caller.roles) is None
            )
            if len(self._visible) >= _MAX_CACHED_CALLERS:
                self._visible.clear()  # many distinct role sets: start over, stay bounded
            self._visible[key] = names
        return names

    def allows(self, name: str, caller: Caller) -> bool:
        """Whether ``caller`` may see and call the tool ``name``."""
        return name in self.visible(caller)

    def tools_output(self, name: str) -> bool:
        """Whether the tool declares an ``outputSchema`` (results then carry structured content)."""
        tool = self._tools.get(name)
        return tool is not None and tool.output_schema is not None

    def names(self) -> list[str]:
        """Every usable tool's name (whoever may call it)."""
        return list(self._usable)

    def input_schema(self, name: str, caller: Caller) -> dict[str, Any] | None:
        """The ``inputSchema`` of ``name`` when ``caller`` may use it, else None (the SDK then
        checks ``Mcp-Param-*`` headers against it without listing every tool per call)."""
        tool = self._tools.get(name)
        return tool.input_schema if tool is not None and self.allows(name, caller) else None

    def status(self, name: str) -> SkillStatus | None:
        return self._usable.get(name)

    def tools(self, caller: Caller) -> Sequence[types.Tool]:
        """The caller's tools, in catalog order (built once per set of visible names)."""
        names = self.visible(caller)
        listed = self._lists.get(names)
        if listed is None:
            listed = [t for name, t in self._tools.items() if name in names]
            if len(self._lists) >= _MAX_CACHED_CALLERS:
                self._lists.clear()
            self._lists[names] = listed
        return listed
