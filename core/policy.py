"""The operator's policy (``bastion.toml``): what skills may reach, deny by default.

Found through ``--policy PATH``, then ``BASTION_POLICY``, then ``./bastion.toml``; with none of
these the built-in default grants nothing. A malformed policy is refused whole with the file,
key and fix; a policy line that cannot take effect (a missing host folder) is kept as a
*problem* that ``bastion policy check`` and ``bastion doctor`` show, and grants nothing.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .configfile import config_error_from_validation, read_toml, read_toml_text
from .errors import PolicyError, RuleError
from .executor import IPNetwork, Limits
from .manifest import NAME_PATTERN, normalize_guest_path
from .netrule import NetRule

__all__ = [
    "POLICY_ENV",
    "LimitCaps",
    "MountEntry",
    "Policy",
    "PolicyDocument",
    "ResolvedMount",
    "SkillPolicy",
    "find_policy_path",
    "load_policy",
]

POLICY_ENV = "BASTION_POLICY"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MountEntry(_Model):
    """``[[mounts]]``: a guest path mapped to a host folder, read-only unless ``write``."""

    guest: str
    host: str
    access: Literal["read", "write"] = "read"

    @field_validator("guest")
    @classmethod
    def _guest(cls, v: str) -> str:
        return normalize_guest_path(v)


def _check_rules(v: tuple[str, ...]) -> tuple[str, ...]:
    for text in v:
        try:
            NetRule.parse(text)
        except RuleError as exc:
            raise ValueError(exc.message) from None
    return v


def _check_networks(v: tuple[str, ...]) -> tuple[str, ...]:
    for text in v:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(
                f"{text!r} is not an IP address or network; write e.g. '127.0.0.1' or '10.0.0.0/8'"
            ) from None
    return v


class NetworkSection(_Model):
    """``[network]``: URL rules every skill may be granted, and private-address exceptions."""

    allow: tuple[str, ...] = ()
    allow_private: tuple[str, ...] = ()

    @field_validator("allow")
    @classmethod
    def _rules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_rules(v)

    @field_validator("allow_private")
    @classmethod
    def _nets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_networks(v)


class SecretsSection(_Model):
    """``[secrets]``: environment variable names whose values skills may be granted."""

    allow: tuple[str, ...] = ()


class LimitCaps(_Model):
    """Upper bounds on what a skill may ask for; requests above are lowered to the cap."""

    timeout_ms: Annotated[int, Field(ge=1, le=3_600_000)] = 60_000
    memory_mb: Annotated[int, Field(ge=1, le=16_384)] = 512
    output_kb: Annotated[int, Field(ge=1, le=1_048_576)] = 4096


class SkillCaps(_Model):
    """Per-skill caps; unset keys fall back to the global ``[limits]``."""

    timeout_ms: Annotated[int, Field(ge=1, le=3_600_000)] | None = None
    memory_mb: Annotated[int, Field(ge=1, le=16_384)] | None = None
    output_kb: Annotated[int, Field(ge=1, le=1_048_576)] | None = None


class DefaultLimits(_Model):
    """Limits a skill gets when its manifest does not ask for any."""

    timeout_ms: Annotated[int, Field(ge=1, le=3_600_000)] = 10_000
    memory_mb: Annotated[int, Field(ge=1, le=16_384)] = 128
    output_kb: Annotated[int, Field(ge=1, le=1_048_576)] = 256


class SkillPolicy(_Model):
    """``[skills.NAME]``: enable/disable one skill and grant it more than the global sections."""

    enabled: bool = True
    network: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    mounts: tuple[MountEntry, ...] = ()
    limits: SkillCaps = SkillCaps()

    @field_validator("network")
    @classmethod
    def _rules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_rules(v)


class PluginsSection(_Model):
    """``[plugins]``: distributions whose Python may be imported on the host (trusted code)."""

    trusted: tuple[str, ...] = ()


class AuditSection(_Model):
    """``[audit]``: where the append-only audit log goes."""

    enabled: bool = True
    path: str | None = None


class KernelSection(_Model):
    """``[kernel]``: the size of the invocation thread pool."""

    max_workers: Annotated[int, Field(ge=1, le=256)] = 8


class PolicyDocument(_Model):
    """The policy file as written (validated, not yet resolved against the host)."""

    network: NetworkSection = NetworkSection()
    secrets: SecretsSection = SecretsSection()
    mounts: tuple[MountEntry, ...] = ()
    limits: LimitCaps = LimitCaps()
    defaults: DefaultLimits = DefaultLimits()
    plugins: PluginsSection = PluginsSection()
    audit: AuditSection = AuditSection()
    kernel: KernelSection = KernelSection()
    skills: dict[str, SkillPolicy] = {}

    @field_validator("skills")
    @classmethod
    def _skill_names(cls, v: dict[str, SkillPolicy]) -> dict[str, SkillPolicy]:
        import re

        for name in v:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"[skills.{name}] is not a valid skill name ({NAME_PATTERN})")
        return v


@dataclass(frozen=True, slots=True)
class ResolvedMount:
    """A mount with its host folder resolved against the policy file's folder."""

    guest: str
    host: Path
    writable: bool
    line: str
    """Where it was written, e.g. ``[[mounts]] guest = "/data"`` or ``[skills.x] mounts``."""
    problem: str | None = None


@dataclass(frozen=True)
class Policy:
    """A loaded policy: the document, parsed rules, resolved mounts and non-fatal problems."""

    doc: PolicyDocument
    source: str
    """The file it came from, or ``<built-in default>``."""
    base_dir: Path
    rules: tuple[NetRule, ...] = ()
    private_allow: tuple[IPNetwork, ...] = ()
    mounts: tuple[ResolvedMount, ...] = ()
    skill_rules: dict[str, tuple[NetRule, ...]] = field(default_factory=dict)
    skill_mounts: dict[str, tuple[ResolvedMount, ...]] = field(default_factory=dict)
    problems: tuple[PolicyError, ...] = ()

    @property
    def default_limits(self) -> Limits:
        d = self.doc.defaults
        return Limits(d.timeout_ms, d.memory_mb, d.output_kb)

    def skill(self, name: str) -> SkillPolicy | None:
        return self.doc.skills.get(name)

    def trusts(self, distribution: str | None) -> bool:
        if not distribution:
            return False
        want = _canon(distribution)
        return any(_canon(d) == want for d in self.doc.plugins.trusted)

    @classmethod
    def default(cls) -> Policy:
        """The built-in policy: grants nothing; skills that ask for nothing may run."""
        return _resolve(PolicyDocument(), "<built-in default>", Path.cwd())


def _canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _resolve_mount(entry: MountEntry, base: Path, line: str, source: str) -> ResolvedMount:
    host = Path(os.path.expanduser(entry.host))
    if not host.is_absolute():
        host = base / host
    problem = None
    try:
        host = host.resolve(strict=True)
        if not host.is_dir():
            problem = f"host path {entry.host!r} of {line} is not a folder"
    except (OSError, RuntimeError):
        problem = f"host folder {entry.host!r} of {line} does not exist"
    return ResolvedMount(entry.guest, host, entry.access == "write", line, problem)


def _resolve(doc: PolicyDocument, source: str, base: Path) -> Policy:
    problems: list[PolicyError] = []
    mounts: list[ResolvedMount] = []
    seen: set[str] = set()
    for entry in doc.mounts:
        if entry.guest in seen:
            raise PolicyError(
                f"guest path {entry.guest!r} is mounted twice",
                source=source,
                where="mounts",
                fix="keep one [[mounts]] entry per guest path",
            )
        seen.add(entry.guest)
        m = _resolve_mount(entry, base, f'[[mounts]] guest = "{entry.guest}"', source)
        mounts.append(m)
        if m.problem:
            problems.append(
                PolicyError(
                    m.problem,
                    source=source,
                    where="mounts",
                    fix="create the folder or correct 'host'",
                )
            )
    skill_rules: dict[str, tuple[NetRule, ...]] = {}
    skill_mounts: dict[str, tuple[ResolvedMount, ...]] = {}
    for name, sp in doc.skills.items():
        skill_rules[name] = tuple(NetRule.parse(t) for t in sp.network)
        sm = []
        for entry in sp.mounts:
            m = _resolve_mount(
                entry, base, f'[skills.{name}] mounts guest = "{entry.guest}"', source
            )
            sm.append(m)
            if m.problem:
                problems.append(
                    PolicyError(
                        m.problem,
                        source=source,
                        where=f"skills.{name}.mounts",
                        fix="create the folder or correct 'host'",
                    )
                )
        skill_mounts[name] = tuple(sm)
    return Policy(
        doc=doc,
        source=source,
        base_dir=base,
        rules=tuple(NetRule.parse(t) for t in doc.network.allow),
        private_allow=tuple(
            ipaddress.ip_network(t, strict=False) for t in doc.network.allow_private
        ),
        mounts=tuple(mounts),
        skill_rules=skill_rules,
        skill_mounts=skill_mounts,
        problems=tuple(problems),
    )


def _from_data(data: dict[str, Any], source: str, base: Path) -> Policy:
    try:
        doc = PolicyDocument.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, PolicyError, source=source) from None
    return _resolve(doc, source, base)


def load_policy(path: str | Path | None = None, *, text: str | None = None) -> Policy:
    """Load the policy from ``path``, ``text``, ``$BASTION_POLICY`` or ``./bastion.toml``."""
    if text is not None:
        data = read_toml_text(text, PolicyError, source="<policy text>")
        return _from_data(data, "<policy text>", Path.cwd())
    found = find_policy_path(path)
    if found is None:
        return Policy.default()
    data = read_toml(found, PolicyError)
    return _from_data(data, str(found), found.parent)


def find_policy_path(path: str | Path | None = None) -> Path | None:
    """The policy file to use: explicit path, then ``$BASTION_POLICY``, then ``./bastion.toml``."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise PolicyError(
                f"policy file {str(path)!r} does not exist",
                fix="pass an existing --policy PATH",
            )
        return p.resolve()
    env = os.environ.get(POLICY_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise PolicyError(
                f"{POLICY_ENV}={env!r} names no file",
                fix=f"unset {POLICY_ENV} or correct it",
            )
        return p.resolve()
    local = Path.cwd() / "bastion.toml"
    return local.resolve() if local.is_file() else None
