"""The kernel: discovered skills, their grants, and the invocation pipeline.

``discover -> review -> grant -> validate input -> guard -> execute -> sanitize -> audit``.
``invoke`` never raises for anything a skill, its input or its output does: every outcome is a
``ToolResult`` with a stable code; the full detail of failures goes to the audit and debug logs.

``_run`` in order: lookup, grant, tenant/role allow-lists, input validation, result cache
lookup, guard (policy guardrails + hooks, approvals), rate limits (skill, tenant), tenant
quotas, circuit breaker, execute, sanitize, breaker record, cache store. ``invoke`` records
metrics and writes the audit record. Each optional step costs nothing unless configured.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

from .audit import AuditLog, NullAudit
from .breaker import Breaker, CircuitBreaker, SharedBreaker
from .cachedir import CacheDirError
from .closing import Closeable
from .content import extract_content, restore_content
from .discovery import Discovery, PackReport, Problem, discover
from .errors import ConfigError, ErrorCode, ExecutionError, PolicyError
from .executor import Capabilities, ExecutionRequest, Executor
from .grant import Grant, review
from .guard import (
    ApprovalRequest,
    Approver,
    GuardAction,
    approval_binding,
    arguments_hash,
    strongest,
)
from .guardrails import PolicyGuardrails, grant_kinds
from .inputfile import MAX_INPUT_BYTES, MAX_INPUT_DEPTH
from .jsonsafe import check_value, dumps_strict, loads_bounded
from .logs import CallLoggers, InvocationLog, ensure_logging, get_logger
from .metrics import Metrics, prometheus_text
from .plugins import make_plugin_manager
from .policy import Policy, load_policy
from .ratelimit import RateLimiter, RateSpec
from .result import InvocationContext, ToolResult
from .resultcache import ResultCache
from .sanitize import SanitizeConfig, Sanitizer
from .schemas import SchemaValidator
from .scrub import scrub_message
from .skill import Skill
from .state.admission import FALLBACK, Refusal, SharedAdmission, Ticket
from .state.handle import StateHandle, check_state
from .tenants import TenantGate

if TYPE_CHECKING:
    from .httpfixtures import HttpFixtures

__all__ = ["Kernel", "SkillStatus", "ToolSpec", "default_audit_path"]

_NO_VERDICT = frozenset({"NOT_READY", "CANCELLED", "AUDIT_UNAVAILABLE"})
"""Outcomes that are not the skill's doing: a breaker neither counts nor clears on them."""
log = get_logger("bastion.kernel")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What a model is offered for one granted skill."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SkillStatus:
    """A discovered skill with the policy's decision about it."""

    skill: Skill
    grant: Grant
    available: bool
    """False when no executor serves the skill's runtime."""

    @property
    def name(self) -> str:
        return self.skill.name

    @property
    def usable(self) -> bool:
        return self.grant.granted and self.available


def default_audit_path() -> Path:
    """Where the audit log goes when the policy does not say: the user data folder."""
    import platformdirs

    return Path(platformdirs.user_data_dir("bastion")) / "audit.jsonl"


def _open_audit(path: Path, policy: Policy) -> AuditLog:
    """The audit log the policy's ``[audit]`` section describes."""
    a = policy.doc.audit
    return AuditLog(path, buffer=a.buffer, rotate_bytes=a.rotate_mb * 1024 * 1024, keep=a.keep)


def _sandbox_health() -> dict[str, Any]:
    """Whether the sandbox executors import and the wasmtime engine can be configured."""
    import importlib

    try:
        for mod in (
            "bastion.sandbox.wasi_module",
            "bastion.sandbox.component_exec",
            "bastion.sandbox.python_exec",
        ):
            importlib.import_module(mod)
        from .sandbox import engine

        # Build the engine's Config without creating the engine (configure_engine stays open).
        engine._make_config(engine.engine_settings())
        return {"ready": True, "detail": engine.engine_fingerprint()}
    except Exception as exc:
        return {"ready": False, "detail": f"{type(exc).__name__}: {str(exc)[:300]}"}


def _then_flush(call: Callable[[], ToolResult], audit: Any) -> ToolResult:
    """``call()``, then wait until the audit records written so far are on disk."""
    result = call()
    audit.flush()
    return result


@final
class Kernel(Closeable):
    """Loads packs under a policy and runs skills through the invocation pipeline."""

    def __init__(
        self,
        policy: Policy,
        *,
        pack_paths: Sequence[Path | str] = (),
        entry_points: bool = True,
        plugins: Sequence[object] = (),
        audit: AuditLog | NullAudit | None = None,
        approver: Approver | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        http_stubs: Mapping[str, HttpFixtures] | None = None,
        only_skills: Collection[str] | None = None,
    ) -> None:
        """``clock`` drives rate limits, breakers and the cache; ``wall_clock`` (epoch seconds)
        the UTC day of daily quotas. Both are injectable so tests never sleep. ``http_stubs``
        (the conformance kit) answers every skill's HTTP from fixtures, skill name -> fixtures
        (none for a skill not named): no request leaves the host (``bastion.httpfixtures``).
        ``only_skills`` (``bastion run``): discover just the skills of these names (each the
        same skill a full discovery picks); if one is not found, everything is discovered, so
        an unknown name is answered as before (with its "did you mean")."""
        ensure_logging()
        self.policy = policy
        self._http_stubs = http_stubs
        self._approver = approver
        self._pm = make_plugin_manager(list(plugins))
        paths = [Path(p) for p in pack_paths]
        derive: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if policy.doc.workers.isolation == "process":  # schemas derived in a worker process
            from .sandbox.workers.derive import derivation_workers

            derive = derivation_workers(policy, roots=paths, entry_points=entry_points)

        def find(only: Collection[str] | None) -> Discovery:
            return discover(policy, self._pm, pack_paths=paths, entry_points=entry_points,
                            embedded=plugins, only=only)  # fmt: skip

        with derive:
            self._discovery: Discovery = find(only_skills)
            if only_skills is not None and not set(only_skills) <= self._discovery.skills.keys():
                self._discovery = find(None)  # a name not found: answered as a full kernel would
        for providers in self._pm.hook.bastion_model_providers():
            if providers:
                from .models import register_provider

                for prefix, factory in providers.items():
                    register_provider(prefix, factory)
        self._executors: dict[str, Executor] = {}
        for group in self._pm.hook.bastion_executors():
            for ex in group or []:
                self._executors.setdefault(ex.runtime, ex)
        self.workers: Any = None
        """The ``WorkerPool`` of sandboxed calls (``[workers] isolation = "process"``)."""
        if policy.doc.workers.isolation == "process":
            from .sandbox.packshared import shared_folder
            from .sandbox.workers import pool_for_kernel

            folders = [s.folder for s in self._discovery.skills.values() if s.folder is not None]
            # A pack's _shared/ modules are mapped into its Python skills: readable too.
            folders += {f for f in map(shared_folder, folders) if f is not None}
            self.workers = pool_for_kernel(self._executors, policy, skill_folders=folders)
        env = os.environ if environ is None else environ
        self._environ = env
        self._retired_states: list[StateHandle] = []
        self._status: dict[str, SkillStatus] = {}
        for name, skill in sorted(self._discovery.skills.items()):
            grant = review(skill.manifest, policy, environ=env)
            self._status[name] = SkillStatus(skill, grant, skill.runtime in self._executors)
        # Entry and folder paths once per skill (``Skill.entry_path`` joins a new Path per use).
        self._paths: dict[str, tuple[Path, Path]] = {
            n: (st.skill.entry_path or Path(), st.skill.folder or Path())
            for n, st in self._status.items()
        }
        self._validators: dict[str, SchemaValidator] = {}
        self._sanitizers: dict[str, Sanitizer] = {}
        self._audit_sanitizers: dict[str, Sanitizer] = {}
        self._loggers = CallLoggers(log)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            policy.doc.kernel.max_workers, thread_name_prefix="bastion-invoke"
        )
        if audit is None:
            if policy.doc.audit.enabled:
                path = (
                    Path(policy.doc.audit.path).expanduser()
                    if policy.doc.audit.path
                    else default_audit_path()
                )
                if not path.is_absolute():
                    path = policy.base_dir / path
                try:
                    audit = _open_audit(path, policy)
                except (OSError, ConfigError) as exc:
                    # Fail closed: a kernel that cannot keep its audit trail does not start.
                    self._pool.shutdown(wait=False)
                    why = exc.message if isinstance(exc, ConfigError) else exc.strerror or exc
                    raise PolicyError(
                        f"cannot open the audit log {str(path)!r} ({why})",
                        source=policy.source,
                        where="audit.path",
                        fix="point [audit] path at a writable file, or set [audit] enabled = "
                        "false to run without an audit log",
                    ) from None
            else:
                audit = NullAudit()
        self.audit = audit
        self._closed = False
        self._clock, self._wall_clock, self._environ = clock, wall_clock, env
        self._audit_refused = 0
        self._reload_lock = threading.Lock()
        self._refused_lock = threading.Lock()
        self._setup_runtime(clock, wall_clock)

    def _setup_runtime(self, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        """Guardrails, tenants, rate limits, breakers, cache and metrics from the policy."""
        doc = self.policy.doc
        self._open_state()
        kinds = {n: grant_kinds(st.grant) for n, st in self._status.items()}
        guardrails = PolicyGuardrails.from_policy(self.policy, kinds)
        if guardrails is not None:
            self._pm.register(guardrails, name="bastion.guardrails")
        self._tenants = (
            TenantGate(doc.tenants, doc.roles, wall_clock=wall_clock, state=self._state)
            if doc.tenants or doc.roles
            else None
        )
        rl = doc.rate_limits
        self._limiter: RateLimiter | None = None
        if rl is not None and (rl.default or rl.tenant_default or rl.skills or rl.tenants):

            def spec(e: Any) -> RateSpec | None:
                return None if e is None else RateSpec(e.rate, e.burst)

            self._limiter = RateLimiter(
                default=spec(rl.default),
                skills={n: RateSpec(e.rate, e.burst) for n, e in rl.skills.items()},
                tenant_default=spec(rl.tenant_default),
                tenants={n: RateSpec(e.rate, e.burst) for n, e in rl.tenants.items()},
                clock=clock,
                state=self._state,
            )
        self._breakers: dict[str, Breaker] = {}
        self._breaker_codes: frozenset[str] = frozenset()
        if doc.breaker is not None:
            b = doc.breaker
            self._breaker_codes = frozenset(b.codes)
            self._breakers = {
                n: SharedBreaker(
                    self._state, n, b.failures, b.cooldown_s, window_s=b.window_s, clock=clock
                )
                if self._state.store is not None
                else CircuitBreaker(b.failures, b.cooldown_s, window_s=b.window_s, clock=clock)
                for n in self._status
            }
        self._cache = (
            ResultCache(doc.cache.ttl_s, doc.cache.max_entries, clock=clock, state=self._state)
            if doc.cache is not None
            else None
        )
        self.metrics = Metrics()
        self._admission: SharedAdmission | None = (
            SharedAdmission(self._state, self._limiter, self._tenants, self._breakers)
            if self._state.store is not None
            else None
        )

    def _open_state(self) -> None:
        """The state backend of ``[state]`` (in-process, or Redis shared by replicas)."""
        from .auditchain import set_node_id
        from .state import open_state
        from .state.approvals import ApprovalMemory

        old: StateHandle | None = getattr(self, "_state", None)
        if old is not None and old.section == self.policy.doc.state:
            return  # a policy reload that leaves [state] alone keeps its connections and leases
        try:
            state = open_state(self.policy.doc.state, self._environ, source=self.policy.source)
        except ConfigError:
            if old is None:  # start-up (a reload checked [state] before it swapped)
                self._pool.shutdown(wait=False)
                self.audit.close()
            raise
        if old is not None:
            self._retired_states.append(old)  # its leases may still be renewed: closed last
        self._state = state
        set_node_id(self._state.node_id)
        self._approvals = ApprovalMemory(self._state)

    @property
    def state(self) -> StateHandle:
        """The state backend (``backend``, ``node_id``, ``sealer`` for request state)."""
        return self._state

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_policy(cls, policy: str | Path | Policy | None = None, **kwargs: Any) -> Kernel:
        """Build a kernel from a policy object, a policy file, or the usual search order."""
        loaded = policy if isinstance(policy, Policy) else load_policy(policy)
        return cls(loaded, **kwargs)

    # -- inspection -----------------------------------------------------------------------

    def skills(self) -> list[SkillStatus]:
        """Every discovered skill with its grant decision, sorted by name."""
        return list(self._status.values())

    def skill(self, name: str) -> SkillStatus | None:
        return self._status.get(name)

    def tools(self) -> list[ToolSpec]:
        """The skills a model may be offered: granted, enabled and with an executor."""
        return [
            ToolSpec(s.name, s.skill.description, s.skill.input_schema)
            for s in self._status.values()
            if s.usable
        ]

    @property
    def packs(self) -> list[PackReport]:
        return list(self._discovery.packs)

    @property
    def problems(self) -> list[Problem]:
        """Pack problems and policy lines that cannot take effect."""
        out = list(self._discovery.problems)
        for perr in self._policy_errors(self.policy, self._status):
            out.append(Problem("policy", str(perr), perr.code))
        return out

    @staticmethod
    def _policy_errors(policy: Policy, status: Mapping[str, SkillStatus]) -> list[PolicyError]:
        """The policy's own problems and every name in it that matches nothing."""
        from .policyrefs import SkillRef, check_references

        refs = {}
        for name, st in status.items():
            props = st.skill.input_schema.get("properties")
            refs[name] = SkillRef(
                st.skill.pack,
                frozenset(st.skill.manifest.permissions.secrets),
                frozenset(props) if isinstance(props, dict) else None,
            )
        return list(policy.problems) + check_references(policy, refs)

    def reload_policy(self, policy: Policy | str | Path | None = None) -> None:
        """Replace the policy: the new one is loaded and checked whole (grants, guardrails and
        every name, as ``bastion policy check``) before it replaces the old; a bad one raises
        ``PolicyError`` and the old one keeps serving. ``None`` re-reads the current file.

        Calls that already started finish under the policy they started with; discovered packs,
        ``[plugins]``, ``[audit]`` and ``[kernel]`` need a restart (a change there is refused)."""
        with self._reload_lock:
            try:
                new = self._replacement(policy)
                status = {
                    n: SkillStatus(
                        st.skill,
                        review(st.skill.manifest, new, environ=self._environ),
                        st.available,
                    )
                    for n, st in self._status.items()
                }
                PolicyGuardrails.from_policy(
                    new, {n: grant_kinds(st.grant) for n, st in status.items()}
                )
                check_state(new.doc.state, self._environ, source=new.source)
                errors = self._policy_errors(new, status)
                if errors:
                    raise PolicyError(
                        f"{len(errors)} problem(s): " + " | ".join(str(e) for e in errors[:5]),
                        source=new.source,
                        fix="run 'bastion policy check' on the file and correct it",
                    )
            except ConfigError as exc:
                log.error("policy_reload_refused", reason=str(exc)[:2000])
                if isinstance(exc, PolicyError):
                    raise
                raise PolicyError(str(exc)) from None
            metrics = self.metrics
            if self._pm.get_plugin("bastion.guardrails") is not None:
                self._pm.unregister(name="bastion.guardrails")
            self.policy, self._status, self._sanitizers = new, status, {}
            self._setup_runtime(self._clock, self._wall_clock)
            self.metrics = metrics
            log.info("policy_reloaded", source=new.source)

    def _replacement(self, policy: Policy | str | Path | None) -> Policy:
        if isinstance(policy, Policy):
            new = policy
        elif policy is not None:
            new = load_policy(policy)
        elif self.policy.source.startswith("<"):
            raise PolicyError(
                f"the current policy is {self.policy.source}, not a file that can be re-read",
                fix="pass the new policy (a Policy or a path) to reload_policy",
            )
        else:
            new = load_policy(self.policy.source)
        old = self.policy.doc
        for section in ("plugins", "audit", "kernel"):
            if getattr(new.doc, section) != getattr(old, section):
                raise PolicyError(
                    f"[{section}] changed; it takes effect only when the process restarts",
                    source=new.source,
                    where=section,
                    fix="restart the process, or keep the section as it was",
                )
        return new

    @property
    def executors(self) -> dict[str, Executor]:
        return dict(self._executors)

    def prepare(
        self, names: Sequence[str] | None = None, progress: Callable[[str], None] | None = None
    ) -> list[Problem]:
        """Compile and cache what the given (default: all usable) skills need ahead of time."""
        problems: list[Problem] = []
        for st in self._status.values():
            if names is not None and st.name not in names:
                continue
            if not st.usable or st.skill.entry_path is None:
                continue
            if progress:
                progress(f"preparing {st.name} ({st.skill.runtime})")
            try:
                self._executors[st.skill.runtime].prepare(st.skill.entry_path)
            except CacheDirError:
                raise  # an unsafe cache folder is the operator's to fix: exit 2, not a problem row
            except (ExecutionError, ConfigError) as exc:
                problems.append(Problem(st.skill.pack, f"{st.name}: {exc}"))
        return problems

    # -- health and metrics ---------------------------------------------------------------

    def breaker_states(self) -> dict[str, str]:
        """Each skill's circuit breaker state (``closed``, ``open``, ``half_open``); empty
        when the policy has no ``[breaker]``."""
        return {n: b.state for n, b in self._breakers.items()}

    def metrics_text(self) -> str:
        """Per-skill calls by outcome, latency histograms, cache hits and breaker states in the
        Prometheus text format; raises ``ConfigError`` without ``prometheus-client``."""
        text = prometheus_text(self.metrics.snapshot(), self.breaker_states())
        if self.workers is not None:
            from .sandbox.workers.metrics import worker_metrics_text

            text += worker_metrics_text(self.workers.stats)
        return text

    def health(self) -> dict[str, Any]:
        """A JSON-able report for embedders and ``bastion doctor``: packs, skills, sandbox,
        audit log, breakers, cache; ``ok`` is False when something needs the operator."""
        packs = self._discovery.packs
        failed = [
            {"name": p.name, "problems": [pr.message for pr in p.problems]}
            for p in packs
            if not p.loaded or p.problems
        ]
        statuses = list(self._status.values())
        sandbox = _sandbox_health()
        audit = self._audit_health()
        breakers = self.breaker_states()
        cache = self._cache
        state = self._state_health()
        return {
            "ok": not failed
            and sandbox["ready"]
            and (audit["writable"] or not audit["enabled"])
            and state["available"],
            "ready": self.readiness(sandbox=sandbox["ready"]),
            "packs": {"loaded": [p.name for p in packs if p.loaded], "failed": failed},
            "skills": {
                "usable": [s.name for s in statuses if s.usable],
                "denied": [s.name for s in statuses if not s.grant.granted],
                "unavailable": [s.name for s in statuses if s.grant.granted and not s.available],
            },
            "sandbox": sandbox,
            "audit": audit,
            "breakers": breakers,
            "open_breakers": sorted(n for n, st in breakers.items() if st != "closed"),
            "cache": None
            if cache is None
            else {"entries": len(cache), "hits": cache.hits, "misses": cache.misses},
            "state": state,
        }

    def _state_health(self) -> dict[str, Any]:
        store = self._state.store
        if store is not None:
            store.ping()  # an outage (or a recovery) is seen now, not at the next call
        return self._state.status()

    def _audit_health(self) -> dict[str, Any]:
        path: Path | None = getattr(self.audit, "path", None)
        enabled = not isinstance(self.audit, NullAudit)
        writable = False
        if enabled and path is not None:
            target = path if path.exists() else path.parent
            writable = os.access(target, os.W_OK)
        elif enabled:
            writable = True  # a custom audit sink without a file
        failed = getattr(self.audit, "failed", 0)
        info: dict[str, Any] = {
            "enabled": enabled,
            "path": str(path) if path is not None else None,
            "writable": writable,
            "failed_writes": failed if isinstance(failed, int) else 0,
        }
        status = getattr(self.audit, "status", None)
        if callable(status):
            info.update(status())
            info["writable"] = bool(info["writable"]) and writable
        info["refused_calls"] = self._audit_refused
        info["on_failure"] = self.policy.doc.audit.on_failure
        return info

    def readiness(self, *, sandbox: bool | None = None) -> dict[str, bool]:
        """Whether each component can serve a call now (for ``/readyz``): ``audit`` (records
        can be kept, or ``[audit] on_failure = "continue"``) and ``sandbox`` (the engine can be
        configured); the kernel is ready when every value is True."""
        if sandbox is None:
            sandbox = self._sandbox_ready
            if sandbox is None:
                sandbox = self._sandbox_ready = bool(_sandbox_health()["ready"])
        return {"audit": self._audit_accepting(), "sandbox": sandbox}

    _sandbox_ready: bool | None = None

    def _audit_accepting(self) -> bool:
        if self.policy.doc.audit.on_failure == "continue":
            return True
        accepting = getattr(self.audit, "accepting", True)
        return accepting is not False

    # -- invocation -----------------------------------------------------------------------

    def invoke(
        self,
        name: str,
        arguments: Any,
        *,
        context: InvocationContext | None = None,
        approver: Approver | None = None,
        cancel: threading.Event | None = None,
    ) -> ToolResult:
        """Run one skill through the whole pipeline; never raises for skill-side failures.

        ``cancel``, once set, stops the call: before it starts, or (through the executor) while
        the guest runs; the result is then ``CANCELLED``."""
        ctx = context or InvocationContext()
        start = time.perf_counter()
        fields: dict[str, Any] = {
            "invocation_id": ctx.invocation_id,
            "tenant": ctx.tenant,
            "caller": ctx.caller,
            "skill": name,
        }
        if ctx.session is not None:
            fields["session"] = ctx.session
        if not self._audit_accepting():
            # Fail closed: no skill runs while its record could not be kept.
            return self._audit_refusal(name, ctx, start)
        try:
            result, extra = self._run(name, arguments, ctx, approver, start, cancel)
            fields.update(extra)
        except CacheDirError as exc:
            # The host's own configuration (an unsafe cache folder), not the skill's doing: the
            # embedder gets the typed error (code CACHE_UNSAFE) and the CLI exits 2.
            fields.update(outcome=exc.code, detail=str(exc)[:2000])
            self._audit("invoke", fields)
            raise
        except Exception as exc:  # the kernel survives anything
            log.exception("invoke_internal_error", skill=name, invocation_id=ctx.invocation_id)
            fields["detail"] = f"{type(exc).__name__}: {exc}"
            result = ToolResult.failure(
                ErrorCode.INTERNAL,
                f"internal error in the kernel (invocation {ctx.invocation_id}); "
                "the operator can find the detail in the audit log",
                duration_ms=(time.perf_counter() - start) * 1000,
                invocation_id=ctx.invocation_id,
            )
        outcome = "ok" if result.ok else result.error.code  # type: ignore[union-attr]
        fields["outcome"] = outcome
        fields["duration_ms"] = round(result.duration_ms, 3)
        self.metrics.record(
            name if isinstance(name, str) and name in self._status else "_unknown",
            outcome,
            result.duration_ms / 1000,
            cache_hit=fields.get("cache") == "hit",
        )
        self._audit("invoke", fields)
        return result

    async def ainvoke(
        self,
        name: str,
        arguments: Any,
        *,
        context: InvocationContext | None = None,
        approver: Approver | None = None,
        durable: bool = False,
    ) -> ToolResult:
        """``invoke`` on the kernel's bounded thread pool, without blocking the event loop.

        Cancelling the awaiting task cancels the call itself: the executor stops the guest, the
        audit record says ``CANCELLED``, and the task's ``CancelledError`` is raised only once
        the call has stopped, so no skill runs on after its caller gave up. ``durable``: return
        only once the call's audit record is on disk (flushed in the same pool thread)."""
        import asyncio  # here, not at the top: a CLI run never needs the event loop machinery

        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        call = functools.partial(
            self.invoke, name, arguments, context=context, approver=approver, cancel=cancel
        )
        if durable:
            call = functools.partial(_then_flush, call, self.audit)
        future = loop.run_in_executor(self._pool, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            # Wait for the call to stop (it is bounded by the skill's deadline in any case).
            with contextlib.suppress(Exception):
                await future
            raise

    async def ainvoke_recorded(
        self,
        name: str,
        arguments: Any,
        *,
        context: InvocationContext | None = None,
        approver: Approver | None = None,
    ) -> tuple[ToolResult, Awaitable[None]]:
        """``ainvoke`` whose result comes back once the call's audit record is written (before
        its fsync, in the same pool thread), with an awaitable that completes once the record
        is on disk. A server builds its answer while the record is fsynced and sends it only
        once the awaitable is done: ``durable=True`` without waiting for the disk in series.

        Cancelled before the result: as ``ainvoke`` (the guest is stopped first)."""
        import asyncio

        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        ready: asyncio.Future[ToolResult] = loop.create_future()

        def settle(result: ToolResult | None, exc: BaseException | None) -> None:
            if ready.done():
                return
            if exc is not None:
                ready.set_exception(exc)
            else:
                ready.set_result(result)  # type: ignore[arg-type]

        def call() -> None:
            try:
                result = self.invoke(
                    name, arguments, context=context, approver=approver, cancel=cancel
                )
            except BaseException as exc:  # invoke raises only the host's own config errors
                loop.call_soon_threadsafe(settle, None, exc)
                return
            # The result goes to the loop once the record is written and only its fsync is
            # left: the flush's own steps do not wait for the interpreter behind the loop.
            self.audit.flush(
                on_written=functools.partial(loop.call_soon_threadsafe, settle, result, None)
            )

        recorded = loop.run_in_executor(self._pool, call)
        try:
            return await asyncio.shield(ready), recorded
        except asyncio.CancelledError:
            cancel.set()
            with contextlib.suppress(Exception):
                await recorded
            raise

    def _audit_refusal(self, name: Any, ctx: InvocationContext, start: float) -> ToolResult:
        with self._refused_lock:
            self._audit_refused += 1
            n = self._audit_refused
        if n & (n - 1) == 0 or n % 1000 == 0:  # 1, 2, 4, ... then every 1000th: no log flood
            log.error("audit_unavailable_refused", refused_calls=n, skill=str(name)[:64])
        result = self._fail(
            ErrorCode.AUDIT_UNAVAILABLE,
            "the audit log cannot be written, so no skill runs until it can; "
            "the operator sees the cause in 'bastion doctor'",
            start,
            ctx,
            retry_after_s=1.0,
        )
        self.metrics.record(
            name if isinstance(name, str) and name in self._status else "_unknown",
            ErrorCode.AUDIT_UNAVAILABLE.value,
            result.duration_ms / 1000,
            cache_hit=False,
        )
        return result

    def _audit(self, event: str, fields: Mapping[str, Any]) -> None:
        try:
            fields = self._audit_redacted(fields)
            self.audit.write(event, **fields)
            hook = self._pm.hook.bastion_audit_event
            if hook.get_hookimpls():  # calling a hook nobody implements costs more than this
                hook(event=event, fields=fields)
        except Exception:
            log.exception("audit_failed", audit_event=event)

    def _fail(
        self,
        code: ErrorCode,
        message: str,
        start: float,
        ctx: InvocationContext,
        **kw: Any,
    ) -> ToolResult:
        return ToolResult.failure(
            code,
            message,
            duration_ms=(time.perf_counter() - start) * 1000,
            invocation_id=ctx.invocation_id,
            **kw,
        )

    def _run(
        self,
        name: str,
        arguments: Any,
        ctx: InvocationContext,
        approver: Approver | None,
        start: float,
        cancel: threading.Event | None = None,
    ) -> tuple[ToolResult, dict[str, Any]]:
        extra: dict[str, Any] = {}
        st = self._status.get(name) if isinstance(name, str) else None
        if st is None:
            import difflib

            close = difflib.get_close_matches(str(name), list(self._status), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            return self._fail(
                ErrorCode.NOT_FOUND, f"no skill named {str(name)[:80]!r}{hint}", start, ctx
            ), extra
        skill, grant = st.skill, st.grant
        extra.update(version=skill.version, pack=skill.pack, runtime=skill.runtime)
        if not grant.granted:
            extra["reasons"] = list(grant.reasons)
            return self._fail(
                ErrorCode.DENIED,
                f"skill {name!r} is not permitted: " + "; ".join(grant.public_reasons),
                start,
                ctx,
            ), extra
        executor = self._executors.get(skill.runtime)
        if executor is None:
            return self._fail(
                ErrorCode.INTERNAL,
                f"no executor for runtime {skill.runtime!r} is installed",
                start,
                ctx,
            ), extra
        if self._tenants is not None:
            refusal = self._tenants.refusal(name, ctx.tenant, ctx.roles)
            if refusal is not None:
                extra["reasons"] = [refusal]
                return self._fail(ErrorCode.DENIED, refusal, start, ctx), extra

        # Validate input.
        try:
            if isinstance(arguments, (bytes, str)):
                arguments = loads_bounded(
                    arguments,
                    max_bytes=MAX_INPUT_BYTES,
                    max_depth=MAX_INPUT_DEPTH,
                    code=ErrorCode.INVALID_INPUT,
                    strict=True,
                )
            check_value(
                arguments,
                max_depth=MAX_INPUT_DEPTH,
                max_items=100_000,
                code=ErrorCode.INVALID_INPUT,
            )
            if not isinstance(arguments, dict):
                raise ExecutionError(
                    ErrorCode.INVALID_INPUT,
                    f"input must be a JSON object, got {type(arguments).__name__}",
                )
            input_json = dumps_strict(arguments, code=ErrorCode.INVALID_INPUT)
            if len(input_json) > MAX_INPUT_BYTES:
                raise ExecutionError(
                    ErrorCode.INVALID_INPUT, f"input is over the {MAX_INPUT_BYTES}-byte limit"
                )
        except ExecutionError as exc:
            return self._fail(exc.error_code, exc.message, start, ctx), extra
        extra["args_sha256"] = arguments_hash(arguments)
        problem = self._validate(skill, arguments)
        if problem:
            return self._fail(ErrorCode.INVALID_INPUT, problem, start, ctx), extra

        # Guard.
        guard = self._pm.hook.bastion_guard
        decisions = (
            guard(skill=skill, arguments=arguments, grant=grant, context=ctx)
            if guard.get_hookimpls()
            else []
        )
        decision = strongest(list(decisions))
        if decision.action is not GuardAction.ALLOW:
            extra["guard"] = {
                "action": decision.action.value,
                "rule": decision.rule,
                "reason": decision.reason,
            }
        if decision.action is GuardAction.WARN:
            log.warning(
                "guardrail_warning",
                skill=name,
                rule=decision.rule,
                reason=decision.reason,
                invocation_id=ctx.invocation_id,
                tenant=ctx.tenant,
                caller=ctx.caller,
            )
            self._audit(
                "decision",
                {
                    "invocation_id": ctx.invocation_id,
                    "tenant": ctx.tenant,
                    "caller": ctx.caller,
                    "skill": name,
                    "action": "warn",
                    "rule": decision.rule,
                    "reason": decision.reason,
                },
            )
        if decision.action is GuardAction.BLOCK:
            self._audit(
                "decision",
                {
                    "invocation_id": ctx.invocation_id,
                    "tenant": ctx.tenant,
                    "caller": ctx.caller,
                    "skill": name,
                    "action": "block",
                    "rule": decision.rule,
                },
            )
            return self._fail(
                ErrorCode.DENIED, f"blocked by a guardrail: {decision.reason}", start, ctx
            ), extra
        if decision.action is GuardAction.APPROVE:
            ok, who = self._ask_approval(
                skill, arguments, grant, decision.reason, approver or self._approver, ctx.tenant
            )
            extra["approval"] = {"approved": ok, "approver": who}
            self._audit(
                "approval",
                {
                    "invocation_id": ctx.invocation_id,
                    "skill": name,
                    "approved": ok,
                    "approver": who,
                    "rule": decision.rule,
                    "args_sha256": extra["args_sha256"],
                },
            )
            if not ok:
                return self._fail(
                    ErrorCode.APPROVAL_REQUIRED,
                    f"this call needs approval ({decision.reason}) and was not approved",
                    start,
                    ctx,
                ), extra

        # Result cache (deterministic skills; the key never crosses tenants). After the guard,
        # so a guardrail or hook (per caller, per role) applies to cached answers too.
        cache_key = None
        if self._cache is not None and skill.manifest.deterministic:
            cache_key = ResultCache.key(ctx.tenant, name, skill.version, extra["args_sha256"])
            cached = self._cache.get(cache_key)
            if cached is not ResultCache.MISS:
                extra["cache"] = "hit"
                return ToolResult.success(
                    cached,
                    duration_ms=(time.perf_counter() - start) * 1000,
                    invocation_id=ctx.invocation_id,
                ), extra
            extra["cache"] = "miss"

        # Rate limits, tenant quotas, circuit breaker: each undoes the earlier ones on refusal.
        ticket = (
            self._admission.admit(name, ctx.tenant, ctx.invocation_id)
            if self._admission is not None
            else FALLBACK
        )
        try:
            if isinstance(ticket, Refusal):  # one round trip to the shared store said no
                extra["limit"] = ticket.rule
                refused: ToolResult | None = self._fail(
                    ticket.code, ticket.message, start, ctx, retry_after_s=ticket.retry_after_s
                )
            else:
                refused = (
                    None if isinstance(ticket, Ticket) else self._admit(name, ctx, start, extra)
                )
        except ExecutionError as exc:  # STATE_UNAVAILABLE: a kind of state that fails closed
            extra["limit"] = "[state]"
            extra["state_unavailable"] = exc.detail
            refused = self._fail(
                exc.error_code, exc.message, start, ctx, retry_after_s=exc.retry_after_s
            )
        if refused is not None:
            return refused, extra
        breaker = self._breakers.get(name)
        verdict: str | None = None
        held = time.time()
        try:
            if cancel is not None and cancel.is_set():
                result = self._fail(
                    ErrorCode.CANCELLED, "the caller cancelled the call before it ran", start, ctx
                )
            else:
                result = self._execute(
                    st, executor, arguments, input_json, ctx, start, extra, cancel
                )
            verdict = "ok" if result.ok else result.error.code  # type: ignore[union-attr]
        finally:
            if isinstance(ticket, Ticket):
                assert self._admission is not None
                if self._tenants is not None:
                    extra["slot"] = [round(held, 6), round(time.time(), 6)]
                failed = (
                    None
                    if verdict in _NO_VERDICT
                    else verdict is None or verdict in self._breaker_codes
                )
                self._admission.finish(ticket, failed)
                breaker = None
            elif self._tenants is not None:
                # Inside the slot's lease (admitted before, released after): concurrency
                # measured from the audit never over-counts.
                extra["slot"] = [round(held, 6), round(time.time(), 6)]
                self._tenants.release(ctx.tenant, ctx.invocation_id)
            if breaker is not None:
                if verdict in _NO_VERDICT:
                    breaker.release()  # says nothing about the skill's health
                elif verdict is None or verdict in self._breaker_codes:
                    breaker.record_failure()
                else:
                    breaker.record_success()
        if cache_key is not None and result.ok and self._cache is not None:
            self._cache.put(cache_key, result.output)
        return result, extra

    def _admit(
        self, name: str, ctx: InvocationContext, start: float, extra: dict[str, Any]
    ) -> ToolResult | None:
        """Take rate-limit tokens, a quota slot and the breaker's permission, or refuse."""
        limiter, tenants = self._limiter, self._tenants
        if limiter is not None:
            hit = limiter.acquire(name, ctx.tenant)
            if hit is not None:
                which, wait = hit
                rule = (
                    f"[rate_limits] for skill {name!r}"
                    if which == "skill"
                    else f"[rate_limits] for tenant {ctx.tenant!r}"
                )
                extra["limit"] = rule
                return self._fail(
                    ErrorCode.RATE_LIMITED,
                    f"rate limit reached ({rule}); retry in {wait:.2f} s",
                    start,
                    ctx,
                    retry_after_s=round(wait, 3),
                )
        if tenants is not None:
            try:
                quota = tenants.admit(ctx.tenant, ctx.invocation_id)
            except ExecutionError:
                if limiter is not None:
                    limiter.refund(name, ctx.tenant)
                raise
            if quota is not None:
                if limiter is not None:
                    limiter.refund(name, ctx.tenant)
                extra["limit"] = quota.rule
                return self._fail(
                    ErrorCode.RATE_LIMITED,
                    f"{quota.message}; retry in {quota.retry_after_s:.0f} s",
                    start,
                    ctx,
                    retry_after_s=round(quota.retry_after_s, 3),
                )
        breaker = self._breakers.get(name)
        unavailable: ExecutionError | None = None
        try:
            allowed = breaker is None or breaker.allow()
        except ExecutionError as exc:
            allowed, unavailable = False, exc
        if breaker is not None and not allowed:
            if limiter is not None:
                limiter.refund(name, ctx.tenant)
            if tenants is not None:
                tenants.unadmit(ctx.tenant, ctx.invocation_id)
            if unavailable is not None:
                raise unavailable
            wait = breaker.retry_after_s()
            extra["limit"] = "[breaker]"
            return self._fail(
                ErrorCode.CIRCUIT_OPEN,
                f"skill {name!r} is paused after repeated failures; retry in {wait:.1f} s",
                start,
                ctx,
                retry_after_s=round(wait, 3),
            )
        return None

    def _execute(
        self,
        st: SkillStatus,
        executor: Executor,
        arguments: dict[str, Any],
        input_json: str,
        ctx: InvocationContext,
        start: float,
        extra: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> ToolResult:
        """Run the skill and clean what comes back."""
        skill, grant, name = st.skill, st.grant, st.name
        entry, folder = self._paths[name]
        # Lines the skill causes are redacted and capped per kind; summaries at the end.
        logger = InvocationLog(
            self._loggers.bind(
                name, skill.pack, invocation_id=ctx.invocation_id, tenant=ctx.tenant
            ),
            self._sanitizer(st),
        )
        request = ExecutionRequest(
            skill=name,
            version=skill.version,
            runtime=skill.runtime,
            entry=entry,
            folder=folder,
            input=arguments,
            input_json=input_json,
            caps=grant.caps if self._http_stubs is None else self._stubbed_caps(name, grant.caps),
            limits=grant.limits,
            deadline=time.monotonic() + grant.limits.timeout_ms / 1000,
            invocation_id=ctx.invocation_id,
            logger=logger,
            audit=functools.partial(self._network_audit, ctx, name),
            native=skill.native,
            cancel=cancel,
        )
        sanitizer = self._sanitizer(st)
        try:
            raw = executor.execute(request)
            output = self._clean_output(raw, st, sanitizer)
        except ExecutionError as exc:
            if exc.detail:
                # The audit keeps host facts (paths) for the operator, never secret values.
                secrets_only = Sanitizer(
                    SanitizeConfig(max_output_bytes=16384, redact_secrets=dict(grant.caps.secrets))
                )
                extra["detail"] = secrets_only.clean_text(exc.detail[:8000]).text
            message = scrub_message(
                exc.message,
                secrets=dict(grant.caps.secrets),
                paths=self._host_paths(st),
                keep_prefixes=[m.guest for m in grant.caps.mounts],
            )
            return ToolResult.failure(
                exc.error_code,
                message,
                duration_ms=(time.perf_counter() - start) * 1000,
                invocation_id=ctx.invocation_id,
                retryable=exc.retryable,
                retry_after_s=exc.retry_after_s,
            )
        finally:
            logger.finish()
        return ToolResult.success(
            output,
            duration_ms=(time.perf_counter() - start) * 1000,
            invocation_id=ctx.invocation_id,
        )

    def _audit_redacted(self, fields: Mapping[str, Any]) -> Mapping[str, Any]:
        """``fields`` with the granted secrets of the record's skill redacted in every spelling
        (the audit writer itself knows no grant); records of other skills pass unchanged."""
        name = fields.get("skill")
        if not isinstance(name, str):
            return fields
        st = self._status.get(name)
        if st is None or not st.grant.caps.secrets:
            return fields
        san = self._audit_sanitizers.get(name)
        if san is None:
            san = Sanitizer(
                SanitizeConfig(
                    max_output_bytes=64 * 1024, redact_secrets=dict(st.grant.caps.secrets)
                )
            )
            self._audit_sanitizers[name] = san
        cleaned = san.clean_value(dict(fields)).value
        if isinstance(cleaned, dict):
            return cleaned
        return {"skill": name, "redacted_record": cleaned}  # over the cap: cut, still redacted

    def _stubbed_caps(self, name: str, caps: Capabilities) -> Capabilities:
        """``caps`` with the skill's HTTP fixtures: the recording stub answers its requests."""
        from .httpfixtures import HttpFixtures

        stubs = self._http_stubs or {}
        return dataclasses.replace(caps, http_stub=stubs.get(name) or HttpFixtures())

    def _network_audit(
        self, ctx: InvocationContext, skill: str, event: str, fields: Mapping[str, Any]
    ) -> None:
        self._audit(
            event,
            {"invocation_id": ctx.invocation_id, "tenant": ctx.tenant, "skill": skill, **fields},
        )

    def _validate(self, skill: Skill, arguments: dict[str, Any]) -> str | None:
        validator = self._validators.get(skill.name)
        if validator is None:
            validator = SchemaValidator(skill.input_schema)
            self._validators[skill.name] = validator
        errors = list(validator.iter_errors(arguments))
        if not errors:
            return None
        errors.sort(key=lambda e: (len(e.path), e.path))
        err = errors[0]
        where = "input" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.path)
        msg = err.message if len(err.message) <= 200 else err.message[:197] + "..."
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        return f"{where}: {msg}{more}"

    def _host_paths(self, st: SkillStatus) -> list[str]:
        paths = [str(m.host) for m in st.grant.caps.mounts]
        if st.skill.folder is not None:
            paths.append(str(st.skill.folder))
        paths += [str(self.policy.base_dir), str(Path.home()), sys.prefix, os.getcwd()]
        return [p for p in paths if p and p != "/"]

    def _sanitizer(self, st: SkillStatus) -> Sanitizer:
        san = self._sanitizers.get(st.name)
        if san is None:
            san = Sanitizer(
                SanitizeConfig(
                    max_output_bytes=st.grant.limits.output_bytes,
                    redact_secrets=dict(st.grant.caps.secrets),
                    redact_paths=tuple(self._host_paths(st)),
                )
            )
            self._sanitizers[st.name] = san
        return san

    def _clean_output(self, raw: Any, st: SkillStatus, sanitizer: Sanitizer) -> Any:
        limits = st.grant.limits
        if isinstance(raw, (bytes, bytearray, memoryview)):
            value = loads_bounded(
                bytes(raw),
                max_bytes=limits.output_bytes,
                max_depth=MAX_INPUT_DEPTH,
                code=ErrorCode.INVALID_OUTPUT,
            )
        else:
            check_value(
                raw, max_depth=MAX_INPUT_DEPTH, max_items=1_000_000, code=ErrorCode.INVALID_OUTPUT
            )
            value = raw
        value, parts = extract_content(value)  # files and images: checked, not text-cleaned
        cleaned = sanitizer.clean_value(value).value
        if parts:
            cleaned = restore_content(
                cleaned,
                parts,
                max_bytes=limits.output_bytes,
                clean_text=lambda t: sanitizer.clean_text(t).text,
            )
        schema = st.skill.output_schema
        if schema is not None:
            key = "out:" + st.name
            validator = self._validators.get(key)
            if validator is None:
                validator = SchemaValidator(schema)
                self._validators[key] = validator
            err = next(iter(validator.iter_errors(cleaned)), None)
            if err is not None:
                where = "output" + "".join(
                    f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.path
                )
                raise ExecutionError(
                    ErrorCode.INVALID_OUTPUT,
                    f"the skill's output does not match its output_schema: {where}: "
                    f"{err.message[:200]}",
                )
        return cleaned

    def _ask_approval(
        self,
        skill: Skill,
        arguments: dict[str, Any],
        grant: Grant,
        reason: str,
        approver: Approver | None,
        tenant: str,
    ) -> tuple[bool, str | None]:
        binding = approval_binding(skill.name, skill.version, arguments, grant, tenant)
        if self._approvals.remembered(tenant, binding):
            return True, "remembered"
        if approver is None:
            return False, None
        request = ApprovalRequest(
            skill=skill.name,
            version=skill.version,
            arguments=arguments,
            reason=reason,
            binding=binding,
            network=tuple(str(r) for r in grant.caps.network),
            mounts=tuple(
                f"{m.guest} ({'write' if m.writable else 'read'})" for m in grant.caps.mounts
            ),
            secrets=tuple(grant.caps.secrets),
        )
        try:
            ok = bool(approver.approve(request))
        except Exception:
            log.exception("approver_failed", skill=skill.name)
            ok = False
        if ok:
            self._approvals.remember(tenant, binding, type(approver).__name__)
        return ok, type(approver).__name__

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the thread pool, close executors and flush the audit log."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for ex in self._executors.values():
            try:
                ex.close()
            except Exception:
                log.exception("executor_close_failed", runtime=ex.runtime)
        for state in [self._state, *self._retired_states]:
            state.close()
        self.audit.close()
