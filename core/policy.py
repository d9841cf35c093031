"""The operator's policy (``bastion.toml``): what skills may reach, deny by default.

Found through ``--policy PATH``, then ``BASTION_POLICY``, then ``./bastion.toml``; with none of
these the built-in default grants nothing. A malformed policy is refused whole with the file,
key and fix; a policy line that cannot take effect (a missing host folder) is kept as a
*problem* that ``bastion policy check`` and ``bastion doctor`` show, and grants nothing.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .configfile import config_error_from_validation, read_toml, read_toml_text
from .errors import ErrorCode, PolicyError
from .executor import IPNetwork, Limits
from .manifest import NAME_PATTERN, check_rules, normalize_guest_path
from .netrule import NetRule
from .state.settings import StateSection

__all__ = [
    "BREAKER_CODES",
    "GUARD_KINDS",
    "POLICY_ENV",
    "PRESET_NAMES",
    "BreakerSection",
    "CacheSection",
    "GuardrailEntry",
    "LimitCaps",
    "MountEntry",
    "Policy",
    "PolicyDocument",
    "RateEntry",
    "RateLimitsSection",
    "ResolvedMount",
    "RoleSection",
    "ServeSection",
    "ServeToken",
    "SkillPolicy",
    "TenantSection",
    "find_policy_path",
    "load_policy",
]

POLICY_ENV = "BASTION_POLICY"


class _Model(BaseModel):
    """A policy section. Validators are built at the first validation (``defer_build``): with
    no policy file, ``bastion run`` validates nothing and builds none. Defaults are therefore
    written as ``Section.model_construct()``: the same values pydantic would use (defaults are
    never validated), without building the section's validator at import."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class MountEntry(_Model):
    """``[[mounts]]``: a guest path mapped to a host folder, read-only unless ``write``."""

    guest: str
    host: str
    access: Literal["read", "write"] = "read"

    @field_validator("guest")
    @classmethod
    def _guest(cls, v: str) -> str:
        return normalize_guest_path(v)


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
        return check_rules(v)

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
    optional: bool = False
    """The skill may not be installed yet: naming it is deliberate, not a typo."""
    network: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    mounts: tuple[MountEntry, ...] = ()
    limits: SkillCaps = SkillCaps.model_construct()
    cost_usd: Annotated[float, Field(ge=0)] | None = None
    """The operator's estimate of what one call costs (guardrails ``max_cost``)."""
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """``[skills.NAME.config]``: values of the settings the skill declares in ``[config]``."""

    @field_validator("network")
    @classmethod
    def _rules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_rules(v)


class PluginsSection(_Model):
    """``[plugins]``: distributions whose Python may be imported on the host (trusted code)."""

    trusted: tuple[str, ...] = ()


class AuditSection(_Model):
    """``[audit]``: where the append-only audit log goes."""

    enabled: bool = True
    path: str | None = None
    on_failure: Literal["refuse", "continue"] = "refuse"
    """When records cannot be written and ``buffer`` of them wait: refuse to run skills
    (``AUDIT_UNAVAILABLE``, the default) or run on and count the dropped records."""
    buffer: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    """Records held in memory while the audit file cannot be written."""
    rotate_mb: Annotated[int, Field(ge=1, le=1_000_000)] = 50
    keep: Annotated[int, Field(ge=1, le=1000)] = 5


class KernelSection(_Model):
    """``[kernel]``: the size of the invocation thread pool."""

    max_workers: Annotated[int, Field(ge=1, le=256)] = 8


class WorkersSection(_Model):
    """``[workers]``: where sandboxed calls run (docs/sandbox.md, "Execution workers")."""

    isolation: Literal["process", "thread"] = "process"
    """``process``: a pool of worker processes with OS limits and hard deadlines (default);
    ``thread``: in the kernel's own process, on its threads."""
    count: Annotated[int, Field(ge=0, le=256)] = 0
    """Most worker processes at once; 0 means one per CPU."""
    grace_ms: Annotated[int, Field(ge=1, le=10_000)] = 25
    """How long after a call's deadline a worker still running guest code may take to answer
    before it is killed (a worker blocked in a sleep or host call is killed at the deadline)."""
    max_open_files: Annotated[int, Field(ge=32, le=65_536)] = 256
    """``RLIMIT_NOFILE`` of each worker (the guest's files, sockets and the worker's own)."""
    landlock: bool = True
    seccomp: bool = True


GuardKind = Literal[
    "network", "network_write", "mount", "write_mount", "secret", "trifecta_session"
]
GUARD_KINDS: Final[tuple[str, ...]] = get_args(GuardKind)
PresetName = Literal["production-safety", "cost-limits", "lethal-trifecta"]
PRESET_NAMES: Final[tuple[str, ...]] = get_args(PresetName)


def _check_patterns(v: tuple[str, ...], what: str) -> tuple[str, ...]:
    for pat in v:
        if not pat or len(pat) > 200:
            raise ValueError(f"{what} pattern {pat!r} must be 1-200 characters")
    return v


class GuardrailEntry(_Model):
    """``[[guardrails]]``: block, require approval for, or warn about matching calls."""

    action: Literal["block", "approve", "warn"]
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    skills: tuple[str, ...] = ("*",)
    packs: tuple[str, ...] | None = None
    when: tuple[GuardKind, ...] = ()
    args: dict[str, Any] = {}
    max_cost: Annotated[float, Field(ge=0)] | None = None

    @field_validator("when", mode="before")
    @classmethod
    def _one_kind(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("skills", "packs")
    @classmethod
    def _patterns(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if v is None else _check_patterns(v, "skill or pack")

    @field_validator("args")
    @classmethod
    def _arg_patterns(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, pat in v.items():
            if isinstance(pat, str) and pat.startswith("re:"):
                try:
                    re.compile(pat[3:])
                except re.error as exc:
                    raise ValueError(
                        f"args.{key} = {pat!r} is not a valid regular expression ({exc}); "
                        "write 're:' followed by a Python regex"
                    ) from None
        return v


class RateEntry(_Model):
    """A token bucket: ``rate`` calls per second on average, ``burst`` at once."""

    rate: Annotated[float, Field(gt=0, le=1_000_000)]
    burst: Annotated[int, Field(ge=1, le=1_000_000)]


class RateLimitsSection(_Model):
    """``[rate_limits]``: a bucket per skill and per tenant (absent: unlimited)."""

    default: RateEntry | None = None
    """The bucket of every skill without its own ``[rate_limits.skills.NAME]``."""
    tenant_default: RateEntry | None = None
    """The bucket of every tenant without its own ``[rate_limits.tenants.NAME]``."""
    skills: dict[str, RateEntry] = {}
    tenants: dict[str, RateEntry] = {}


_NEVER_COUNTED: Final = frozenset(
    {
        ErrorCode.NOT_FOUND,
        ErrorCode.DENIED,
        ErrorCode.INVALID_INPUT,
        ErrorCode.APPROVAL_REQUIRED,
        ErrorCode.RATE_LIMITED,
        ErrorCode.CIRCUIT_OPEN,
        ErrorCode.NOT_READY,
        ErrorCode.CANCELLED,
        ErrorCode.AUDIT_UNAVAILABLE,
    }
)
BREAKER_CODES: Final[tuple[str, ...]] = ("SKILL_CRASHED", "TIMEOUT", "MEMORY_LIMIT", "INTERNAL")


class BreakerSection(_Model):
    """``[breaker]``: per-skill circuit breaker (present: on)."""

    failures: Annotated[int, Field(ge=1, le=100_000)] = 5
    window_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    cooldown_s: Annotated[float, Field(ge=0, le=86_400)] = 30.0
    codes: tuple[str, ...] = BREAKER_CODES

    @field_validator("codes")
    @classmethod
    def _codes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for code in v:
            if code not in ErrorCode.__members__:
                raise ValueError(
                    f"{code!r} is not an error code; use one of {', '.join(BREAKER_CODES)}, "
                    "SKILL_ERROR, OUTPUT_LIMIT, INVALID_OUTPUT, NETWORK_DENIED or FS_DENIED"
                )
            if ErrorCode(code) in _NEVER_COUNTED:
                raise ValueError(
                    f"{code!r} says nothing about the skill's health and cannot open a breaker; "
                    "remove it"
                )
        return v


class CacheSection(_Model):
    """``[cache]``: results of ``deterministic = true`` skills (present: on)."""

    ttl_s: Annotated[float, Field(gt=0, le=30 * 86_400)] = 300.0
    max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000


class TenantSection(_Model):
    """``[tenants.NAME]`` (``[tenants."*"]``: any tenant without its own section)."""

    skills: tuple[str, ...] | None = None
    """Skill names or fnmatch patterns this tenant may call; absent: any granted skill."""
    invocations_per_day: Annotated[int, Field(ge=1)] | None = None
    max_concurrent: Annotated[int, Field(ge=1, le=100_000)] | None = None

    @field_validator("skills")
    @classmethod
    def _patterns(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if v is None else _check_patterns(v, "skill")


class RoleSection(_Model):
    """``[roles.NAME]``: skills a caller holding this role may call."""

    skills: tuple[str, ...]

    @field_validator("skills")
    @classmethod
    def _patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_patterns(v, "skill")


_ENV_NAME: Final = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class ServeToken(_Model):
    """``[[serve.tokens]]``: one bearer token (its sha256, or the environment variable that
    holds it; never the token itself) mapped to a caller name, a tenant and roles."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
    tenant: Annotated[str, Field(min_length=1, max_length=64)] = "default"
    roles: tuple[str, ...] = ()
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None
    token: str | None = Field(default=None, exclude=True)
    """Never accepted: present only so its refusal can say what to write instead."""

    @field_validator("token")
    @classmethod
    def _no_plain_token(cls, v: str | None) -> None:
        if v is not None:
            raise ValueError(
                "a plain 'token' is never stored in the policy; write sha256 = \"<hex digest of "
                'the token>" or env = "VAR" naming the environment variable that holds it'
            )

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, v: Any) -> Any:
        if isinstance(v, dict) and "token" in v:
            return {**v, "token": "<not shown>"}  # the refusal never echoes the secret
        if isinstance(v, dict) and (v.get("sha256") is None) == (v.get("env") is None):
            raise ValueError(
                f'token {v.get("name")!r} needs exactly one of sha256 = "<hex digest>" or '
                'env = "VAR"'
            )
        return v


class ServeSection(_Model):
    """``[serve]``: the MCP server's callers (bearer tokens), request-state key and queue."""

    tokens: tuple[ServeToken, ...] = ()
    state_key_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None
    """Environment variable holding the key that seals approval request state (shared by
    replicas); absent: a random key per process."""
    approval_ttl_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    max_queue: Annotated[int, Field(ge=0, le=100_000)] = 64
    """Calls allowed to wait for a kernel worker; beyond them a call is refused at once."""
    allowed_hosts: tuple[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9.\[\]:-]+:(\d{1,5}|\*)$")], ...
    ] = ()
    """Extra ``Host`` values accepted (``name:port`` or ``name:*``), e.g. the public name a
    load balancer forwards; the bound address is always accepted."""


class PolicyDocument(_Model):
    """The policy file as written (validated, not yet resolved against the host)."""

    network: NetworkSection = NetworkSection.model_construct()
    secrets: SecretsSection = SecretsSection.model_construct()
    mounts: tuple[MountEntry, ...] = ()
    limits: LimitCaps = LimitCaps.model_construct()
    defaults: DefaultLimits = DefaultLimits.model_construct()
    plugins: PluginsSection = PluginsSection.model_construct()
    audit: AuditSection = AuditSection.model_construct()
    kernel: KernelSection = KernelSection.model_construct()
    workers: WorkersSection = WorkersSection.model_construct()
    skills: dict[str, SkillPolicy] = {}
    guardrails: tuple[GuardrailEntry, ...] = ()
    presets: tuple[PresetName, ...] = ()
    rate_limits: RateLimitsSection | None = None
    breaker: BreakerSection | None = None
    cache: CacheSection | None = None
    tenants: dict[str, TenantSection] = {}
    roles: dict[str, RoleSection] = {}
    state: StateSection = StateSection.model_construct()
    serve: ServeSection = ServeSection.model_construct()

    @field_validator("skills")
    @classmethod
    def _skill_names(cls, v: dict[str, SkillPolicy]) -> dict[str, SkillPolicy]:
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
        """The built-in policy: grants nothing; skills that ask for nothing may run.

        Every field keeps its default and defaults are never validated, so the document is
        constructed, not validated: equal to ``PolicyDocument()`` without building its
        validator (tests/test_policy.py holds the two equal)."""
        return _resolve(PolicyDocument.model_construct(), "<built-in default>", Path.cwd())


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
                f"policy file {str(path)!r} "
                + ("is a folder, not a file" if p.is_dir() else "does not exist"),
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
