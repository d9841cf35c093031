"""Guardrails written in the policy (``[[guardrails]]`` and ``presets``), as a built-in plugin.

A rule matches a call when every condition it sets holds: the skill name (``skills``) and pack
(``packs``) match one of their fnmatch patterns, the skill's grant has every permission kind in
``when``, each ``args`` entry matches the argument of that name (``"re:..."`` searches a string
value, anything else must be equal; a path or URL value is tried in every equivalent spelling,
``spellings.spellings``, so ``//a/./b`` cannot slip past a rule on ``/a/b``), and the operator's
``[skills.NAME] cost_usd`` estimate is above ``max_cost``. The strictest matching rule
decides; the kernel combines it with the embedders' ``bastion_guard`` hooks (strictest wins).
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

from .guard import GuardAction, GuardDecision, strongest
from .hookspecs import hookimpl
from .policy import GuardrailEntry, Policy
from .spellings import same_spelling, spellings
from .tenants import matches_any

if TYPE_CHECKING:
    from .grant import Grant
    from .result import InvocationContext
    from .skill import Skill

__all__ = ["PolicyGuardrails", "grant_kinds", "policy_rules", "presets"]


def _rule(action: str, reason: str, **kw: Any) -> GuardrailEntry:
    return GuardrailEntry.model_validate({"action": action, "reason": reason, **kw})


@functools.cache
def presets() -> dict[str, tuple[GuardrailEntry, ...]]:
    """What each ``presets = [...]`` name expands to (documented in docs/policy.md): built at
    first use, so a process whose policy names no preset never builds GuardrailEntry's
    validator."""
    return {
        "production-safety": (
            _rule("approve", "writes to a mounted folder", when="write_mount"),
            _rule("warn", "reaches the network", when="network"),
            _rule("warn", "uses a secret", when="secret"),
        ),
        "cost-limits": (
            _rule("approve", "estimated cost over $0.10 per call", max_cost=0.10),
            _rule("block", "estimated cost over $1.00 per call", max_cost=1.00),
        ),
        "lethal-trifecta": (
            _rule(
                "approve",
                "network access together with a mounted folder (lethal trifecta)",
                when=["network", "mount"],
            ),
            _rule(
                "approve",
                "network access together with a secret (lethal trifecta)",
                when=["network", "secret"],
            ),
            _rule(
                "approve",
                "this session already read private data and untrusted content; "
                "a network call could send the data out (lethal trifecta)",
                when="trifecta_session",
            ),
        ),
    }


def policy_rules(policy: Policy) -> list[tuple[str, GuardrailEntry]]:
    """The policy's rules with their ids: presets first (``preset:NAME[i]``), then
    ``guardrails[i]``."""
    out: list[tuple[str, GuardrailEntry]] = []
    for name in policy.doc.presets:
        out += [(f"preset:{name}[{i}]", e) for i, e in enumerate(presets()[name])]
    out += [(f"guardrails[{i}]", e) for i, e in enumerate(policy.doc.guardrails)]
    return out


def grant_kinds(grant: Grant) -> frozenset[str]:
    """The permission kinds a grant holds (``network_write``: any network grant, since the
    HTTP method a skill will use cannot be known before it runs)."""
    caps = grant.caps
    kinds: set[str] = set()
    if caps.network:
        kinds |= {"network", "network_write"}
    if caps.mounts:
        kinds.add("mount")
    if any(m.writable for m in caps.mounts):
        kinds.add("write_mount")
    if caps.secrets:
        kinds.add("secret")
    return frozenset(kinds)


_PRIVATE: Final = frozenset({"mount", "secret"})


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule_id: str
    decision: GuardDecision
    skills: tuple[str, ...]
    packs: tuple[str, ...] | None
    kinds: frozenset[str]
    session: bool
    args: tuple[tuple[str, re.Pattern[str] | None, Any], ...]
    max_cost: float | None


def _compile(rule_id: str, e: GuardrailEntry) -> _Compiled:
    args = tuple(
        (k, re.compile(v[3:]), None) if isinstance(v, str) and v.startswith("re:") else (k, None, v)
        for k, v in e.args.items()
    )
    return _Compiled(
        rule_id=rule_id,
        decision=GuardDecision(GuardAction(e.action), e.reason, rule=rule_id),
        skills=e.skills,
        packs=e.packs,
        kinds=frozenset(k for k in e.when if k != "trifecta_session"),
        session="trifecta_session" in e.when,
        args=args,
        max_cost=e.max_cost,
    )


@final
class PolicyGuardrails:
    """The built-in ``bastion_guard`` plugin the kernel registers when the policy has rules.

    For ``trifecta_session`` it remembers, per ``InvocationContext.session`` (the last
    ``max_sessions``), whether an ``ok`` call of a skill with mounts or secrets and of a skill
    with network access happened, by observing ``invoke`` audit events.
    """

    def __init__(
        self,
        rules: Sequence[tuple[str, GuardrailEntry]],
        *,
        costs: Mapping[str, float] | None = None,
        kinds: Mapping[str, frozenset[str]] | None = None,
        max_sessions: int = 10_000,
    ) -> None:
        self._rules = [_compile(rid, e) for rid, e in rules]
        self._costs = dict(costs or {})
        self._kinds = dict(kinds or {})
        self._tracks_sessions = any(r.session for r in self._rules)
        self._sessions: OrderedDict[str, set[str]] = OrderedDict()
        self._max_sessions = max_sessions
        self._lock = threading.Lock()

    @classmethod
    def from_policy(
        cls, policy: Policy, kinds: Mapping[str, frozenset[str]] | None = None
    ) -> PolicyGuardrails | None:
        """The plugin for ``policy``, or None when it writes no guardrails and no presets."""
        rules = policy_rules(policy)
        if not rules:
            return None
        costs = {n: sp.cost_usd for n, sp in policy.doc.skills.items() if sp.cost_usd is not None}
        return cls(rules, costs=costs, kinds=kinds)

    def _session_tainted(self, session: str | None) -> bool:
        if session is None:
            return False
        with self._lock:
            seen = self._sessions.get(session)
            return seen is not None and {"private", "untrusted"} <= seen

    def _matches(
        self,
        r: _Compiled,
        skill: Skill,
        arguments: Mapping[str, Any],
        kinds: frozenset[str],
        context: InvocationContext,
    ) -> bool:
        if not matches_any(skill.name, r.skills):
            return False
        if r.packs is not None and not matches_any(skill.pack, r.packs):
            return False
        if not r.kinds <= kinds:
            return False
        if r.session and ("network" not in kinds or not self._session_tainted(context.session)):
            return False
        for key, pattern, expected in r.args:
            if key not in arguments:
                return False
            value = arguments[key]
            if pattern is not None:
                # Every spelling of a path or URL is tried: "//a/./b" is "/a/b" to the sandbox.
                if not isinstance(value, str) or not any(
                    pattern.search(v) is not None for v in spellings(value)
                ):
                    return False
            elif isinstance(value, str) and isinstance(expected, str):
                if not same_spelling(value, expected):
                    return False
            elif value != expected or isinstance(value, bool) != isinstance(expected, bool):
                return False
        if r.max_cost is not None:
            cost = self._costs.get(skill.name)
            if cost is None or cost <= r.max_cost:
                return False
        return True

    @hookimpl
    def bastion_guard(
        self,
        skill: Skill,
        arguments: Mapping[str, Any],
        grant: Grant,
        context: InvocationContext,
    ) -> GuardDecision | None:
        kinds = self._kinds.get(skill.name) or grant_kinds(grant)
        hits: list[GuardDecision | None] = [
            r.decision for r in self._rules if self._matches(r, skill, arguments, kinds, context)
        ]
        return strongest(hits) if hits else None

    @hookimpl
    def bastion_audit_event(self, event: str, fields: Mapping[str, Any]) -> None:
        if not self._tracks_sessions or event != "invoke" or fields.get("outcome") != "ok":
            return
        session = fields.get("session")
        kinds = self._kinds.get(str(fields.get("skill")), frozenset())
        if not isinstance(session, str) or not kinds:
            return
        marks = set()
        if kinds & _PRIVATE:
            marks.add("private")
        if "network" in kinds:
            marks.add("untrusted")
        if not marks:
            return
        with self._lock:
            seen = self._sessions.setdefault(session, set())
            seen |= marks
            self._sessions.move_to_end(session)
            while len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
