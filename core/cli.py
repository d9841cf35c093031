"""The ``bastion`` command: list, inspect, check and run skills; chat; author tools.

Output is for people (tables, one-line fixes on stderr) unless ``--json`` is given. Exit status:
0 ok, 1 the skill failed or was refused, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import ConfigError
from .progress import progress_after
from .table import render_table

if TYPE_CHECKING:
    from .guard import ApprovalRequest

__all__ = ["TerminalApprover", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits with status 2 and a one-line fix on usage errors."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"bastion: error: {message}\nFix: see '{self.prog} --help'\n")
        raise SystemExit(EXIT_USAGE)


class TerminalApprover:
    """Asks the person at the terminal; answers no when there is no terminal to ask."""

    def __init__(self, stdin: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self._in = stdin or sys.stdin
        self._err = stderr or sys.stderr

    def approve(self, request: ApprovalRequest) -> bool:
        if not self._in.isatty():
            self._err.write(
                f"approval needed for {request.skill} ({request.reason}); "
                "no terminal to ask, so it is refused\n"
            )
            return False
        args = json.dumps(dict(request.arguments), ensure_ascii=False)
        if len(args) > 500:
            args = args[:497] + "..."
        self._err.write(
            f"\nApproval needed: {request.skill} {request.version}\n  why: {request.reason}\n"
            f"  arguments: {args}\n"
            f"  network: {', '.join(request.network) or '-'}\n"
            f"  mounts: {', '.join(request.mounts) or '-'}\n"
            f"  secrets: {', '.join(request.secrets) or '-'}\nApprove? [y/N] "
        )
        self._err.flush()
        answer = self._in.readline().strip().lower()
        return answer in ("y", "yes")


@contextlib.contextmanager
def _startup() -> Iterator[None]:
    """Start-up work (imports, policy, discovery, runner load) without the cyclic GC, then
    ``gc.freeze()`` what it built.

    Start-up allocates a few hundred thousand objects that live until exit (modules, pydantic
    and jsonschema structures); collecting them repeatedly while importing, and once more at
    exit, cost ~60 ms of a ~300 ms ``bastion run``. Frozen, later collections skip them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _kernel(args: argparse.Namespace, **kw: Any) -> Any:
    with _startup():
        from .kernel import Kernel

        return Kernel.from_policy(args.policy, pack_paths=args.pack or (), **kw)


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=None, default=str) + "\n")


def _skill_dict(st: Any) -> dict[str, Any]:
    s, g = st.skill, st.grant
    return {
        "name": s.name,
        "version": s.version,
        "pack": s.pack,
        "runtime": s.runtime,
        "title": s.title,
        "description": s.description,
        "granted": g.granted,
        "available": st.available,
        "reasons": list(g.reasons),
        "notes": list(g.notes),
        "permissions": {
            "network": list(s.manifest.permissions.network),
            "filesystem": [f.model_dump() for f in s.manifest.permissions.filesystem],
            "secrets": list(s.manifest.permissions.secrets),
        },
        "limits": {
            "timeout_ms": g.limits.timeout_ms,
            "memory_mb": g.limits.memory_mb,
            "output_kb": g.limits.output_kb,
        },
        "input_schema": s.input_schema,
        "cleaned": [c.to_dict() for c in s.cleaned],
    }


def _summary(text: str, width: int = 60) -> str:
    """The first sentence of a description, cut to ``width`` characters."""
    first = " ".join(text.split()).split(". ")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 3] + "..."


def _decision(st: Any) -> str:
    if not st.grant.enabled:
        return "disabled"
    if not st.grant.granted:
        return "DENIED"
    return "granted" if st.available else "no executor"


def cmd_skills(args: argparse.Namespace) -> int:
    with _kernel(args) as k:
        if args.show:
            st = k.skill(args.show)
            if st is None:
                sys.stderr.write(
                    f"bastion: no skill named {args.show!r}\n"
                    "Fix: run 'bastion skills' to list the skills\n"
                )
                return EXIT_FAILED
            if args.json:
                _emit_json(_skill_dict(st))
                return EXIT_OK
            d = _skill_dict(st)
            lines = [
                f"{d['name']} {d['version']}  ({d['runtime']}, pack {d['pack']})",
                f"  title: {d['title']}",
                f"  {d['description']}",
                f"  decision: {_decision(st)}",
            ]
            lines += [f"    - {r}" for r in d["reasons"]]
            lines += [f"    note: {n}" for n in d["notes"]]
            p = d["permissions"]
            lines.append(f"  network: {', '.join(p['network']) or '-'}")
            lines.append(
                "  filesystem: "
                + (", ".join(f"{f['path']} ({f['access']})" for f in p["filesystem"]) or "-")
            )
            lines.append(f"  secrets: {', '.join(p['secrets']) or '-'}")
            lim = d["limits"]
            lines.append(
                f"  limits: {lim['timeout_ms']} ms, {lim['memory_mb']} MiB, "
                f"{lim['output_kb']} KiB output"
            )
            lines.append(
                "  input schema: " + json.dumps(d["input_schema"], indent=2).replace("\n", "\n  ")
            )
            if st.skill.cleaned:
                lines.append(
                    "  cleaned: control, escape or invisible characters were removed from the "
                    "pack's text:"
                )
                lines += [f"    - {c.describe()}" for c in st.skill.cleaned]
            sys.stdout.write("\n".join(lines) + "\n")
            return EXIT_OK
        if args.json:
            _emit_json(
                {
                    "skills": [_skill_dict(st) for st in k.skills()],
                    "problems": [
                        {"pack": p.pack, "code": p.code, "message": p.message} for p in k.problems
                    ],
                }
            )
            return EXIT_OK
        rows = [
            [
                st.name,
                st.skill.version,
                st.skill.pack,
                st.skill.runtime,
                _decision(st),
                _summary(st.skill.description),
            ]
            for st in k.skills()
        ]
        if rows:
            sys.stdout.write(
                render_table(
                    ["SKILL", "VERSION", "PACK", "RUNTIME", "DECISION", "DESCRIPTION"],
                    rows,
                    max_width=50,
                )
                + "\n"
            )
        else:
            sys.stdout.write(
                "No skills found. Install a skill pack (pip install ...) or pass --pack PATH.\n"
            )
        _print_problems(k.problems)
        return EXIT_OK


def _print_problems(problems: Sequence[Any], out: TextIO | None = None) -> None:
    out = out or sys.stderr
    if problems:
        out.write(f"\n{len(problems)} problem(s) while loading:\n")
        for p in problems:
            out.write(f"  - [{p.pack}] {p.message}\n")


def _read_input(text: str) -> Any:
    """The ``--input`` value: JSON text, ``@FILE``, or ``-`` / ``@-`` for stdin, read with the
    kernel's size cap before decoding; anything bad is a ``ConfigError`` (exit 2)."""
    from .inputfile import read_input

    return read_input(text)


def _run_kernel(args: argparse.Namespace) -> Any:
    """The kernel of ``bastion run``; ``--isolation`` overrides the policy's for this run. It
    discovers only the skill it runs (``Kernel(only_skills=...)``: the same skill, grant and
    errors as a full discovery, without reading every other installed skill)."""
    only = frozenset({args.name})
    if args.isolation is None:
        return _kernel(args, approver=TerminalApprover(), only_skills=only)
    with _startup():
        from .kernel import Kernel
        from .policy import load_policy
        from .runmode import with_isolation

        policy = with_isolation(load_policy(args.policy), args.isolation)
        return Kernel(
            policy, pack_paths=args.pack or (), approver=TerminalApprover(), only_skills=only
        )


def cmd_run(args: argparse.Namespace) -> int:
    from .runmode import peek_isolation

    if peek_isolation(args.policy, args.isolation) == "process":
        # The one worker starts now: its start overlaps the kernel's imports and discovery.
        from .sandbox.workers.prespawn import prespawn

        prespawn()
    value = _read_input(args.input)
    from .result import InvocationContext

    with _run_kernel(args) as k:
        st = k.skill(args.name)
        if st is not None and st.usable and st.skill.runtime != "native":
            stop = progress_after(
                0.4,
                f"preparing {args.name}: building and compiling the sandbox (first run only)",
                sys.stderr,
            )
            try:
                with _startup():
                    k.prepare([args.name])
            finally:
                stop()
        result = k.invoke(args.name, value, context=InvocationContext(caller="cli"))
        unaudited = _unaudited(k)
    if unaudited:
        sys.stderr.write(f"bastion: {unaudited}\n")
    if args.json:
        _emit_json(result.to_dict())
    elif result.ok:
        out = result.output
        sys.stdout.write(
            (out if isinstance(out, str) else json.dumps(out, indent=2, ensure_ascii=False)) + "\n"
        )
    else:
        err = result.error
        assert err is not None
        sys.stderr.write(f"{err.code}: {err.message}\n")
        if err.retryable:
            sys.stderr.write("(retryable: the same call may succeed later)\n")
    if unaudited:
        return EXIT_USAGE
    return EXIT_OK if result.ok else EXIT_FAILED


def _unaudited(k: Any) -> str | None:
    """Why this run's audit record could not be written (one-shot runs cannot wait for the
    disk), or None when it was."""
    k.audit.flush(timeout=10)
    status = getattr(k.audit, "status", None)
    if not callable(status):
        return None
    info = status()
    if not info["failing"]:
        return None
    return (
        f"AUDIT_UNAVAILABLE: the audit record of this run could not be written to "
        f"{str(k.audit.path)!r} ({info['last_error']}). Fix: free space or correct [audit] path"
    )


def cmd_policy_check(args: argparse.Namespace) -> int:
    with _kernel(args) as k:
        problems = [p for p in k.problems if p.pack == "policy"]
        if args.json:
            _emit_json(
                {
                    "policy": k.policy.source,
                    "skills": [
                        {
                            "name": st.name,
                            "decision": _decision(st),
                            "granted": st.grant.granted,
                            "reasons": list(st.grant.reasons),
                            "notes": list(st.grant.notes),
                        }
                        for st in k.skills()
                    ],
                    "problems": [p.message for p in problems],
                }
            )
        else:
            sys.stdout.write(f"policy: {k.policy.source}\n\n")
            rows = []
            for st in k.skills():
                detail = "; ".join(list(st.grant.reasons) + list(st.grant.notes)) or "-"
                rows.append([st.name, _decision(st), detail])
            if rows:
                sys.stdout.write(
                    render_table(["SKILL", "DECISION", "WHY"], rows, max_width=90) + "\n"
                )
            if problems:
                sys.stdout.write(f"\n{len(problems)} policy problem(s):\n")
                for p in problems:
                    sys.stdout.write(f"  - {p.message}\n")
        return EXIT_USAGE if problems else EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    import platform

    if args.modules:
        return _doctor_modules(args)

    from . import __version__

    checks: list[tuple[str, bool, str]] = []
    checks.append(("python", sys.version_info >= (3, 11), platform.python_version()))
    checks.append(("bastion", True, __version__))
    try:
        from importlib.metadata import version

        import wasmtime  # noqa: F401  (the check is that it imports)

        checks.append(("wasmtime", True, version("wasmtime")))
    except Exception as exc:
        checks.append(("wasmtime", False, f"cannot import: {exc}"))
    with _kernel(args) as k:
        checks.append(("policy", not k.policy.problems, k.policy.source))
        info = k.health()
        sandbox = info["sandbox"]
        checks.append(
            (
                "sandbox",
                bool(sandbox["ready"]),
                "ready" if sandbox["ready"] else str(sandbox["detail"]),
            )
        )
        checks.append(("python runner", True, _runner_state()))
        from .sandbox.workers.doctor import worker_checks

        checks += worker_checks(k.policy)
        audit = info["audit"]
        if audit["enabled"]:
            checks.append(("audit log", *_audit_check(audit)))
        else:
            checks.append(("audit log", True, "disabled by [audit] enabled = false"))
        packs = k.packs
        bad = [p for p in packs if not p.loaded or p.problems]
        checks.append(("packs", not bad, f"{len(packs)} found, {len(bad)} with problems"))
        sk = info["skills"]
        checks.append(
            (
                "skills",
                True,
                f"{len(k.skills())} found, {len(sk['usable'])} usable, "
                f"{len(sk['denied'])} denied, {len(sk['unavailable'])} without executor",
            )
        )
        checks.append(
            (
                "circuit breakers",
                not info["open_breakers"],
                "open: " + ", ".join(info["open_breakers"])
                if info["open_breakers"]
                else "all closed",
            )
        )
        from .state.handle import describe_status

        checks.append(
            ("state store", bool(info["state"]["available"]), describe_status(info["state"]))
        )
        problems = k.problems
    if args.json:
        _emit_json(
            {
                "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in checks],
                "problems": [{"pack": p.pack, "message": p.message} for p in problems],
                "health": info,
            }
        )
    else:
        sys.stdout.write(
            render_table(
                ["CHECK", "OK", "DETAIL"],
                [[n, "yes" if ok else "NO", d] for n, ok, d in checks],
                max_width=80,
            )
            + "\n"
        )
        _print_problems(problems, sys.stdout)
    return EXIT_OK if all(ok for _, ok, _ in checks) and not problems else EXIT_FAILED


def _audit_check(audit: dict[str, Any]) -> tuple[bool, str]:
    """The doctor's audit row: writable or why not, failed writes, dropped and waiting records."""
    ok = bool(audit["writable"]) and not audit["failed_writes"] and not audit.get("dropped")
    state = "writable" if audit["writable"] else "NOT writable"
    if audit.get("last_error") and not audit["writable"]:
        state += f": {audit['last_error']}"
    return ok, (
        f"{audit['path']} ({state}, {audit['failed_writes']} failed writes, "
        f"{audit.get('dropped', 0)} dropped records, {audit.get('refused_calls', 0)} refused calls)"
    )


def _runner_state() -> str:
    try:
        from .sandbox.runner_build import built_runner

        path = built_runner()
    except Exception as exc:  # doctor reports, it never crashes
        return f"cannot check ({type(exc).__name__}: {exc})"
    if path is None:
        return "not built yet: the first Python skill run builds it (~15 s, once)"
    return f"built ({path.stat().st_size // (1024 * 1024)} MiB, cached)"


def _doctor_modules(args: argparse.Namespace) -> int:
    """The modules a Python skill may import, as the built runner reports them."""
    from .sandbox.python_skill import runner_modules

    def progress(msg: str) -> None:
        sys.stderr.write(f"bastion: {msg}\n")

    names = runner_modules(progress)
    if args.json:
        _emit_json({"modules": names})
    else:
        sys.stdout.write("\n".join(names) + "\n")
    return EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    from .scaffold import add_skill

    folder = add_skill(args.name, Path(args.to) if args.to else None)
    sys.stdout.write(f"Added {folder} (and its line in bastion-pack.toml)\n")
    return EXIT_OK


def cmd_new(args: argparse.Namespace) -> int:
    from .scaffold import create_pack

    folder = create_pack(args.name, Path(args.dir) if args.dir else None, skill=args.skill)
    sys.stdout.write(
        f"Created {folder}\n\nNext steps:\n"
        f"  cd {folder}\n"
        "  pip install -e .                 # install the pack (entry point group 'bastion')\n"
        "  pytest                           # its own tests, with the conformance kit\n"
        "  bastion test .                   # the conformance report\n"
        f"  bastion run {args.skill or args.name} --input '{{...}}'   # once installed\n"
    )
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    from .testing import run_conformance

    report = Path(args.json_report) if args.json_report else None
    return run_conformance(
        Path(args.path), json_report=report, stream=sys.stdout, live=bool(args.live)
    )


def _audit_path(args: argparse.Namespace) -> Path | None:
    if args.file:
        return Path(args.file)
    from .kernel import default_audit_path
    from .policy import load_policy

    policy = load_policy(args.policy)
    if not policy.doc.audit.enabled:
        return None
    if policy.doc.audit.path is None:
        return default_audit_path()
    path = Path(policy.doc.audit.path).expanduser()
    return path if path.is_absolute() else policy.base_dir / path


_AUDIT_COLUMNS = ["TIME", "EVENT", "SKILL", "TENANT", "OUTCOME", "MS", "DETAIL"]


def _audit_row(rec: dict[str, Any]) -> list[str]:
    """One audit record as table cells."""
    what = rec.get("outcome") or rec.get("status") or rec.get("denied") or ""
    if rec.get("event") == "approval":
        what = "approved" if rec.get("approved") else "refused"
    ms = rec.get("duration_ms")
    return [
        str(rec.get("ts", ""))[:23],
        str(rec.get("event", "")),
        str(rec.get("skill", "")),
        str(rec.get("tenant", "")),
        str(what),
        f"{ms:.1f}" if isinstance(ms, (int, float)) else "",
        str(rec.get("url", rec.get("invocation_id", ""))),
    ]


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import read_audit

    path = _audit_path(args)
    if args.action == "verify" and path is not None:
        from .auditchain import verify_command

        return verify_command(path, as_json=args.json)
    if path is None:
        sys.stderr.write("bastion: the audit log is disabled ([audit] enabled = false)\n")
        return EXIT_USAGE
    if not path.exists() and not args.follow:
        sys.stdout.write(f"No audit records yet ({path}).\n")
        return EXIT_OK
    try:
        reader = read_audit(path, skill=args.skill, since=args.since, event=args.event)
    except ValueError as exc:
        raise ConfigError(str(exc), fix="write --since as e.g. 2026-11-22T10:00:00Z") from None
    records = list(reader)
    # The follower resumes exactly where reading stopped (AuditReader.follow), so a record
    # appended in between is neither missed nor printed twice.
    stream = reader.follow() if args.follow else None
    if args.tail:
        records = records[-args.tail :]
    if args.json:
        for rec in records:
            _emit_json(rec)
    else:
        table = render_table(_AUDIT_COLUMNS, [_audit_row(r) for r in records], max_width=60)
        sys.stdout.write(table + "\n")
    sys.stdout.flush()
    skipped = reader.torn + reader.corrupt
    if skipped:
        sys.stderr.write(f"({skipped} torn or corrupt line(s) skipped in {path})\n")
    if args.follow:
        try:
            for rec in stream or ():
                if args.json:
                    _emit_json(rec)
                else:
                    sys.stdout.write("  ".join(_audit_row(rec)) + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    import functools

    from .chat import run_chat

    return run_chat(args, functools.partial(_kernel, args), TerminalApprover())


def cmd_pack_vendor(args: argparse.Namespace) -> int:
    """Vendor the pure-Python dependencies of every skill in a pack folder (``bastion.vendor``)."""
    from .vendor import vendor_pack

    pip_args: list[str] = []
    if args.no_index:
        pip_args.append("--no-index")
    for link in args.find_links or ():
        pip_args += ["--find-links", link]
    if args.index_url:
        pip_args += ["--index-url", args.index_url]
    done = vendor_pack(Path(args.path).expanduser().resolve(), pip_args)
    if args.json:
        print(
            json.dumps([{"skill": d.skill, "packages": d.packages, "files": d.files} for d in done])
        )
        return EXIT_OK
    if not done:
        print("no skill in this pack declares dependencies")
    for d in done:
        names = ", ".join(f"{p['name']} {p['version']}" for p in d.packages)
        print(f"{d.skill}: vendored {names} ({d.files} files, locked in vendor.lock.json)")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .logs import configure_logging

    # The demo shows refusals on purpose; their warnings would only clutter its tables.
    configure_logging(level="error", json=args.log_json)
    return run_demo(sys.stdout)


def cmd_mcp(args: argparse.Namespace) -> int:
    with _startup():
        from .serve.commands import cmd_mcp as run
    return run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    with _startup():
        from .serve.commands import cmd_serve as run
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bastion", description="Run third-party LLM skills safely.")
    p.add_argument(
        "--policy",
        metavar="PATH",
        help="policy file (default: $BASTION_POLICY, "
        "then ./bastion.toml, then the built-in policy that grants nothing)",
    )
    p.add_argument(
        "--pack",
        metavar="PATH",
        action="append",
        type=Path,
        help="load a pack folder that is not installed (repeatable)",
    )
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-json", action="store_true", help="structured logs as JSON on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("skills", help="list skills and their permission decisions")
    s.add_argument("--json", action="store_true")
    s_sub = s.add_subparsers(dest="skills_command", parser_class=_Parser)
    show = s_sub.add_parser("show", help="one skill in detail")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", dest="show_json")
    s.set_defaults(func=cmd_skills)

    r = sub.add_parser("run", help="run one skill")
    r.add_argument("name")
    r.add_argument("--input", required=True, metavar="JSON|@FILE")
    r.add_argument("--json", action="store_true", help="print exactly one JSON envelope")
    r.add_argument(
        "--isolation",
        choices=("process", "thread"),
        default=None,
        help="run the call in a worker process or in this one (default: [workers] isolation)",
    )
    r.set_defaults(func=cmd_run)

    pol = sub.add_parser("policy", help="policy commands")
    pol_sub = pol.add_subparsers(dest="policy_command", parser_class=_Parser, required=True)
    chk = pol_sub.add_parser("check", help="what each skill is granted or denied, and why")
    chk.add_argument("--json", action="store_true")
    chk.set_defaults(func=cmd_policy_check)

    d = sub.add_parser("doctor", help="check the installation, policy and packs")
    d.add_argument("--json", action="store_true")
    d.add_argument(
        "--modules", action="store_true", help="list the modules a Python skill may import"
    )
    d.set_defaults(func=cmd_doctor)

    pk = sub.add_parser("pack", help="pack commands")
    pk_sub = pk.add_subparsers(dest="pack_command", parser_class=_Parser, required=True)
    ven = pk_sub.add_parser("vendor", help="vendor skills' pure-Python dependencies")
    ven.add_argument("path", metavar="PACK", help="the pack folder")
    ven.add_argument("--find-links", action="append", metavar="DIR", help="passed to pip")
    ven.add_argument("--no-index", action="store_true", help="passed to pip")
    ven.add_argument("--index-url", metavar="URL", help="passed to pip")
    ven.add_argument("--json", action="store_true")
    ven.set_defaults(func=cmd_pack_vendor)

    c = sub.add_parser("chat", help="talk to a model that can use the granted skills")
    c.add_argument("prompt", nargs="*", help="one-shot prompt (default: interactive)")
    c.add_argument(
        "--model",
        help="model name (default $BASTION_MODEL or claude-sonnet-4-5; 'test' runs offline)",
    )
    c.add_argument("--base-url", help="Messages API base URL (default $ANTHROPIC_BASE_URL)")
    c.add_argument("--max-steps", type=int, default=16, help="model calls per prompt")
    c.add_argument("--budget", type=float, metavar="USD", help="stop when the cost passes this")
    c.add_argument("--session", metavar="NAME", help="persist and resume this conversation")
    c.add_argument("--list", action="store_true", help="list saved sessions")
    c.add_argument("--json", action="store_true", help="with --list: JSON")
    c.set_defaults(func=cmd_chat)

    n = sub.add_parser("new", help="create a skill pack from the template")
    n.add_argument("name", help="the pack's name (also its first skill's, unless --skill)")
    n.add_argument("--skill", metavar="NAME", help="the first skill's name")
    n.add_argument("--dir", metavar="D", help="folder to create (default ./bastion-pack-NAME)")
    n.set_defaults(func=cmd_new)

    ad = sub.add_parser("add", help="add a skill (from the template) to an existing pack")
    ad.add_argument("name", help="the new skill's name")
    ad.add_argument("--to", metavar="PACK", help="the pack's folder (default: the current one)")
    ad.set_defaults(func=cmd_add)

    t = sub.add_parser("test", help="run the conformance kit on a pack folder or installed pack")
    t.add_argument("path", help="a pack folder, or the name of an installed pack")
    t.add_argument("--json-report", metavar="FILE", help="also write a JSON report for CI")
    t.add_argument(
        "--live",
        action="store_true",
        help="let skills reach the real network (policy rules apply); by default every "
        "request is answered from the pack's HTTP fixtures and recorded",
    )
    t.set_defaults(func=cmd_test)

    a = sub.add_parser("audit", help="read the audit log (`audit verify`: check its hash chain)")
    a.add_argument("action", nargs="?", choices=["verify"], help="verify: check every chain")
    a.add_argument(
        "--tail",
        type=int,
        nargs="?",
        const=20,
        metavar="N",
        help="only the last N records (default 20)",
    )
    a.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="then keep printing new records as they arrive (Ctrl-C to stop)",
    )
    a.add_argument("--skill", help="only this skill")
    a.add_argument("--event", help="only this event kind (invoke, http, approval, decision)")
    a.add_argument("--since", metavar="T", help="RFC 3339 time, e.g. 2026-11-22T10:00:00Z")
    a.add_argument("--file", help="read this log file instead of the policy's")
    a.add_argument("--json", action="store_true", help="one JSON record per line")
    a.set_defaults(func=cmd_audit)

    demo = sub.add_parser("demo", help="a tour on an embedded policy and a local web server")
    demo.set_defaults(func=cmd_demo)

    mcp = sub.add_parser("mcp", help="serve the granted skills as MCP tools on stdin/stdout")
    mcp.set_defaults(func=cmd_mcp)
    srv = sub.add_parser("serve", help="serve the granted skills as MCP tools over HTTP (/mcp)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    srv.set_defaults(func=cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with _startup():
        from .logs import configure_logging

        configure_logging(level=args.log_level, json=args.log_json)
    if getattr(args, "command", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "skills":
        args.show = args.name if getattr(args, "skills_command", None) == "show" else None
        if args.show:
            args.json = args.json or args.show_json
    try:
        rc: int = args.func(args)
        return rc
    except ConfigError as exc:
        sys.stderr.write(f"bastion: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("bastion: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
