"""Grant decisions: a skill's requested permissions compared with the policy.

Deny by default. A skill is granted only if every network rule, mount and secret it asks for
is covered by a policy line; otherwise it is denied with one reason per uncovered request, each
naming the request and the policy line that would cover it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .executor import Capabilities, Limits, Mount
from .manifest import SkillManifest
from .netrule import NetRule
from .policy import Policy, ResolvedMount

__all__ = ["Grant", "review"]


@dataclass(frozen=True, slots=True)
class Grant:
    """The decision for one skill: ``granted`` with ``caps`` and ``limits``, or the reasons why not.

    ``reasons`` may name the policy file (for operators); ``public_reasons`` never do and are
    what a model is shown.
    """

    skill: str
    granted: bool
    caps: Capabilities
    limits: Limits
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """Non-blocking remarks, e.g. a limit lowered to the policy cap."""
    enabled: bool = True
    public_reasons: tuple[str, ...] = field(default=())


def _covering(rule: NetRule, rules: tuple[NetRule, ...]) -> NetRule | None:
    return next((p for p in rules if p.covers(rule)), None)


def _limits(manifest: SkillManifest, policy: Policy) -> tuple[Limits, list[str]]:
    req = manifest.limits
    dflt = policy.default_limits
    caps = policy.doc.limits
    sp = policy.skill(manifest.name)
    notes: list[str] = []
    values: dict[str, int] = {}
    for key in ("timeout_ms", "memory_mb", "output_kb"):
        want = getattr(req, key) or getattr(dflt, key)
        cap = getattr(caps, key)
        where = "[limits]"
        if sp is not None and getattr(sp.limits, key) is not None:
            cap = getattr(sp.limits, key)
            where = f"[skills.{manifest.name}] limits"
        if want > cap:
            notes.append(f"{key} {want} lowered to {cap} by {where} {key}")
            want = cap
        values[key] = want
    return Limits(**values), notes


def _config(
    manifest: SkillManifest,
    values: Mapping[str, object],
    src: str,
    reasons: list[str],
    public: list[str],
) -> tuple[dict[str, object], list[str]]:
    """The skill's settings: declared defaults overlaid by the policy's values. A required key
    without a value, or a value of the wrong type, denies the skill naming the key."""
    name = manifest.name
    out: dict[str, object] = {}
    notes: list[str] = []
    for key, spec in manifest.config.items():
        if key in values:
            why = spec.check(values[key])
            if why is not None:
                reasons.append(f"config {key!r}: {why} ([skills.{name}.config] in {src})")
                public.append(f"config {key!r} has the wrong type in the operator's policy")
                continue
            out[key] = values[key]
        elif spec.default is not None:
            out[key] = spec.default
        elif spec.is_required:
            reasons.append(
                f"config {key!r} is required and has no value: set it under "
                f"[skills.{name}.config] in {src} ({spec.type}"
                + (f": {spec.description}" if spec.description else "")
                + ")"
            )
            public.append(f"config {key!r} is not set by the operator")
    for key in values:
        if key not in manifest.config:
            notes.append(f"[skills.{name}.config] {key} is not a setting the skill declares")
    return out, notes


def review(
    manifest: SkillManifest, policy: Policy, *, environ: Mapping[str, str] | None = None
) -> Grant:
    """Decide what ``manifest`` may have under ``policy``; secret values come from ``environ``."""
    env = os.environ if environ is None else environ
    name = manifest.name
    src = policy.source
    sp = policy.skill(name)
    reasons: list[str] = []
    public: list[str] = []
    limits, notes = _limits(manifest, policy)

    if sp is not None and not sp.enabled:
        reasons.append(f"disabled by [skills.{name}] enabled = false in {src}")
        public.append("disabled by the operator's policy")

    # Network: every requested rule must be covered by a global or per-skill policy rule.
    skill_rules = policy.skill_rules.get(name, ())
    all_rules = policy.rules + skill_rules
    granted_rules: list[NetRule] = []
    for rule in manifest.permissions.rules:
        if _covering(rule, all_rules) is None:
            reasons.append(
                f'network "{rule}" is not allowed: add "{rule}" to [network] allow '
                f"(every skill) or [skills.{name}] network (this skill only) in {src}"
            )
            public.append(f'network "{rule}" is not allowed by the operator\'s policy')
        else:
            granted_rules.append(rule)
    # The operator's [skills.NAME] network rules are granted to that skill even if it did not
    # request them: this is how a generic fetcher (which cannot list hosts) is given its hosts.
    for rule in skill_rules:
        if not any(r.covers(rule) for r in granted_rules):
            granted_rules.append(rule)

    # Filesystem: each requested guest path needs a mount; write needs a writable mount.
    mounts_by_guest: dict[str, ResolvedMount] = {m.guest: m for m in policy.mounts}
    mounts_by_guest.update({m.guest: m for m in policy.skill_mounts.get(name, ())})
    mounts: list[Mount] = []
    for fs in manifest.permissions.filesystem:
        m = mounts_by_guest.get(fs.path)
        if m is None:
            reasons.append(
                f'filesystem "{fs.path}" ({fs.access}) has no mount: add [[mounts]] '
                f'guest = "{fs.path}" host = "..." access = "{fs.access}" to {src}'
            )
            public.append(f'filesystem "{fs.path}" is not mounted by the operator\'s policy')
            continue
        if m.problem:
            reasons.append(f'filesystem "{fs.path}": {m.problem} ({src})')
            public.append(f'filesystem "{fs.path}" is not available')
            continue
        if fs.access == "write" and not m.writable:
            reasons.append(
                f'filesystem "{fs.path}" asks for write but {m.line} is read-only: set '
                f'access = "write" there in {src} if the skill may write'
            )
            public.append(f'filesystem "{fs.path}" may not be written under the operator\'s policy')
            continue
        mounts.append(Mount(fs.path, m.host, writable=fs.access == "write"))

    # Secrets: allowed by name, and the environment variable must be set.
    allowed = set(policy.doc.secrets.allow) | set(sp.secrets if sp else ())
    secrets: dict[str, str] = {}
    for sname in manifest.permissions.secrets:
        if sname not in allowed:
            reasons.append(
                f'secret "{sname}" is not allowed: add "{sname}" to [secrets] allow or '
                f"[skills.{name}] secrets in {src}"
            )
            public.append(f'secret "{sname}" is not allowed by the operator\'s policy')
        elif sname not in env:
            reasons.append(
                f'secret "{sname}" is allowed but the environment variable {sname} is not set'
            )
            public.append(f'secret "{sname}" is not configured')
        else:
            secrets[sname] = env[sname]

    config, config_notes = _config(manifest, sp.config if sp else {}, src, reasons, public)
    notes += config_notes

    granted = not reasons
    caps = Capabilities(
        network=tuple(granted_rules) if granted else (),
        private_allow=policy.private_allow if granted else (),
        mounts=tuple(mounts) if granted else (),
        secrets=secrets if granted else {},
        config=config if granted else {},
    )
    return Grant(
        skill=name,
        granted=granted,
        caps=caps,
        limits=limits,
        reasons=tuple(reasons),
        notes=tuple(notes),
        enabled=sp.enabled if sp else True,
        public_reasons=tuple(public),
    )
