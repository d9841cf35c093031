"""Every name a policy writes must match something: skills, packs, secrets, tenants, arguments.

A policy is checked against the skills the kernel discovered: a ``[skills.NAME]`` section, a
guardrail, tenant, role or rate-limit entry naming a skill or pack that matches nothing, a
secret no skill requests, or a malformed glob is a ``PolicyError`` with the key, the value and
the closest valid name. A skill that may appear later is named on purpose with
``[skills.NAME] optional = true``; patterns may then match it too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final

from .errors import PolicyError
from .policy import Policy

__all__ = ["SkillRef", "check_references", "glob_problem"]

_GLOB_CHARS: Final = re.compile(r"^[a-z0-9_*?\[\]!-]+$")
_OPTIONAL_FIX: Final = "or mark a skill that may appear later with [skills.NAME] optional = true"


@dataclass(frozen=True, slots=True)
class SkillRef:
    """What the policy may refer to about one discovered skill."""

    pack: str
    secrets: frozenset[str] = frozenset()
    arguments: frozenset[str] | None = None
    """Top-level input property names; None when the schema does not list them."""


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` can never be a skill-name glob (None when it is well-formed)."""
    if pattern == "*":
        return None
    if not _GLOB_CHARS.match(pattern):
        bad = sorted({c for c in pattern if not re.match(r"[a-z0-9_*?\[\]!-]", c)})
        return (
            f"holds {', '.join(repr(c) for c in bad[:5])}, which no skill name contains "
            "(names are lower-case letters, digits and '_')"
        )
    depth = 0
    for c in pattern:
        if c == "[":
            if depth:
                return "opens a '[' inside another '['"
            depth = 1
        elif c == "]" and depth:
            depth = 0
    if depth:
        return "opens a '[' that is never closed"
    return None


def _closest(value: str, candidates: Iterable[str]) -> str:
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(value, pool, n=1, cutoff=0.5)
    if close:
        return f"closest valid name: {close[0]!r}"
    if not pool:
        return "nothing of that kind is loaded"
    shown = ", ".join(repr(c) for c in pool[:6]) + (", ..." if len(pool) > 6 else "")
    return f"valid names: {shown}"


class _Checker:
    def __init__(self, policy: Policy, skills: Mapping[str, SkillRef]) -> None:
        self.policy = policy
        self.skills = skills
        optional = {n for n, sp in policy.doc.skills.items() if sp.optional}
        self.names = set(skills) | optional
        self.packs = {ref.pack for ref in skills.values()}
        self.errors: list[PolicyError] = []

    def error(self, where: str, message: str, fix: str) -> None:
        self.errors.append(PolicyError(message, source=self.policy.source, where=where, fix=fix))

    def patterns(self, where: str, patterns: Iterable[str], *, packs: bool = False) -> set[str]:
        """Check skill (or pack) globs; return the skill names they match."""
        matched: set[str] = set()
        pool = self.packs if packs else self.names
        what = "pack" if packs else "skill"
        for pat in patterns:
            why = None if packs else glob_problem(pat)
            if why is not None:
                self.error(where, f"the pattern {pat!r} {why}", "write a skill name or a glob")
                continue
            hits = {n for n in pool if pat == "*" or pat == n or fnmatchcase(n, pat)}
            if not hits and pat != "*":
                self.error(
                    where,
                    f"{pat!r} matches no {what}",
                    f"correct it ({_closest(pat, pool)}), {_OPTIONAL_FIX}",
                )
            if packs:
                hits = {n for n, ref in self.skills.items() if ref.pack in hits}
            matched |= hits
        return matched

    def skill_name(self, where: str, name: str) -> None:
        if name not in self.names:
            self.error(
                where,
                f"[{where}] names a skill no loaded pack provides ({name!r})",
                f"install the pack, correct the name ({_closest(name, self.names)}), "
                f"{_OPTIONAL_FIX}",
            )

    def run(self) -> list[PolicyError]:
        doc = self.policy.doc
        requested: set[str] = set()
        for skill_ref in self.skills.values():
            requested |= skill_ref.secrets
        for name, sp in doc.skills.items():
            if sp.optional:
                continue
            self.skill_name(f"skills.{name}", name)
            ref = self.skills.get(name)
            for secret in sp.secrets:
                if ref is not None and secret not in ref.secrets:
                    self.error(
                        f"skills.{name}.secrets",
                        f"secret {secret!r} is not requested by skill {name!r}",
                        f"remove it or correct it ({_closest(secret, ref.secrets)})",
                    )
        for secret in doc.secrets.allow:
            if secret not in requested:
                self.error(
                    "secrets.allow",
                    f"secret {secret!r} is requested by no loaded skill",
                    f"remove it or correct it ({_closest(secret, requested)}); a secret for a "
                    "skill not installed yet goes in its [skills.NAME] secrets",
                )
        for i, g in enumerate(doc.guardrails):
            where = f"guardrails[{i}]"
            hit = self.patterns(f"{where}.skills", g.skills)
            if g.packs is not None:
                hit &= self.patterns(f"{where}.packs", g.packs, packs=True)
            self._arguments(f"{where}.args", g.args, hit)
        for tenant, sec in doc.tenants.items():
            if sec.skills is not None:
                self.patterns(f"tenants.{tenant}.skills", sec.skills)
        for role, rsec in doc.roles.items():
            self.patterns(f"roles.{role}.skills", rsec.skills)
        rl = doc.rate_limits
        if rl is not None:
            for name in rl.skills:
                self.skill_name(f"rate_limits.skills.{name}", name)
            named = set(doc.tenants)
            if named and "*" not in named:
                for tenant in rl.tenants:
                    if tenant not in named:
                        self.error(
                            f"rate_limits.tenants.{tenant}",
                            f"{tenant!r} is not a tenant of [tenants]",
                            f"correct it ({_closest(tenant, named)}) or add [tenants.{tenant}]",
                        )
        return self.errors

    def _arguments(self, where: str, args: Mapping[str, object], skills: set[str]) -> None:
        known: set[str] = set()
        for name in skills:
            ref = self.skills.get(name)
            if ref is None or ref.arguments is None:
                return  # an optional or open-schema skill may take any argument
            known |= ref.arguments
        if not skills:
            return
        for key in args:
            if key not in known:
                self.error(
                    f"{where}.{key}",
                    f"argument {key!r} is taken by none of the skills the rule matches",
                    f"correct it ({_closest(key, known)})",
                )


def check_references(policy: Policy, skills: Mapping[str, SkillRef]) -> list[PolicyError]:
    """Every name in ``policy`` that matches nothing among ``skills``, as errors."""
    return _Checker(policy, skills).run()
