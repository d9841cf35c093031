"""The conformance kit: checks that a skill pack does what its manifests promise.

Runs a pack folder through the real kernel and sandbox under a policy that grants each skill
exactly what it declared, then checks (each a named check with a message that says what to
change): ``manifest``, ``unique_names``, ``examples``, ``output_schema``, ``fuzz``,
``deterministic``, ``permissions``, ``limits`` and ``secrets``.

No check touches a real host unless ``live``: every HTTP request a skill makes is answered by
the recording stub of ``bastion.sandbox.hostnet`` from the pack's fixtures
(``bastion.httpfixtures``), and the report lists each recorded request.

Three ways in: ``bastion test PATH`` (``run_conformance``), the pack's own tests
(``conformance_report(PACK).assert_passed(check)``), and pytest's ``--bastion-pack PATH``
option when this module is loaded as a pytest plugin. Importing it is cheap: the kernel, the
sandbox and hypothesis load only when a check runs.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import re
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from .errors import ConfigError
from .localserver import serve_local

if TYPE_CHECKING:
    from .kernel import Kernel
    from .manifest import SkillManifest
    from .result import ToolResult

__all__ = [
    "CHECKS",
    "FIXTURES_PLACEHOLDER",
    "STUB_ORIGIN",
    "CheckResult",
    "ConformanceError",
    "ConformanceReport",
    "check_pack",
    "conformance_report",
    "find_pack_folder",
    "run_conformance",
]

CHECKS: Final[tuple[str, ...]] = (
    "manifest",
    "unique_names",
    "examples",
    "output_schema",
    "fuzz",
    "deterministic",
    "permissions",
    "limits",
    "secrets",
)
"""Every check the kit runs, in report order."""

FIXTURES_PLACEHOLDER: Final = "{{fixtures_url}}"
"""In example inputs and outputs: the origin under which the pack's ``fixtures/http`` files are
answered (by the stub; with ``live``, by a local server on 127.0.0.1)."""
STUB_ORIGIN: Final = "http://fixtures.bastion.test"
"""``{{fixtures_url}}`` when the stub answers (``.test`` is reserved: it never resolves)."""
MAX_LISTED_REQUESTS: Final = 200
"""Recorded requests kept per skill in the report."""

DEFAULT_FUZZ_EXAMPLES: Final = 25
_CRASH_CODES: Final = frozenset({"SKILL_CRASHED", "INTERNAL"})
_LIMIT_CODES: Final = frozenset({"TIMEOUT", "MEMORY_LIMIT", "OUTPUT_LIMIT"})
_ACCESS_CODES: Final = frozenset({"NETWORK_DENIED", "FS_DENIED"})
_BUG_TYPES: Final = frozenset(
    {
        "TypeError",
        "KeyError",
        "IndexError",
        "AttributeError",
        "NameError",
        "UnboundLocalError",
        "ZeroDivisionError",
        "AssertionError",
        "RecursionError",
        "NotImplementedError",
        "UnicodeDecodeError",
        "UnicodeEncodeError",
        "StopIteration",
        "ImportError",
        "ModuleNotFoundError",
    }
)
"""Exception types that mean the skill has a bug, not that the input was refused."""
_EXC_TYPE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::|$)")
"""The exception type that opens a SKILL_ERROR message (``"KeyError: 'x' (skill.py, ...)"``)."""


class ConformanceError(AssertionError):
    """A conformance check failed; the message lists each problem and its fix."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check on one skill (``skill`` is None for the pack as a whole)."""

    check: str
    skill: str | None
    passed: bool
    message: str = ""
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "skill": self.skill,
            "passed": self.passed,
            "skipped": self.skipped,
            "message": self.message,
        }


@dataclass
class ConformanceReport:
    """Everything the kit found for one pack."""

    pack: str
    folder: Path
    results: list[CheckResult] = field(default_factory=list)
    hosts: dict[str, list[str]] = field(default_factory=dict)
    """Skill -> every ``scheme://host[:port]`` its examples made requests to (from the audit)."""
    requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Skill -> every HTTP request it made during the run (examples and generated inputs):
    ``call``, ``method``, ``url``, ``status`` or ``error``, and with the stub ``fixture``
    (``answered``/``missing``), ``headers`` (credentials redacted) and ``request_bytes``."""
    live: bool = False
    """True when skills reached the real network (``--live``) instead of the stub."""

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self, check: str | None = None) -> list[CheckResult]:
        return [r for r in self.results if not r.passed and (check is None or r.check == check)]

    def passed(self, check: str) -> bool:
        return not self.failures(check)

    def failed_checks(self) -> set[str]:
        return {r.check for r in self.failures()}

    def assert_passed(self, check: str) -> None:
        """Raise ``ConformanceError`` listing every failure of ``check``."""
        if check not in CHECKS:
            raise ValueError(f"unknown check {check!r}; checks are {', '.join(CHECKS)}")
        bad = self.failures(check)
        if bad:
            lines = [f"{check}: {len(bad)} problem(s) in pack {self.pack!r}:"]
            lines += [f"  - [{r.skill or 'pack'}] {r.message}" for r in bad]
            raise ConformanceError("\n".join(lines))

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: ok, pack, folder, per-check status and every result."""
        checks = []
        for name in CHECKS:
            mine = [r for r in self.results if r.check == name]
            checks.append(
                {
                    "check": name,
                    "passed": all(r.passed for r in mine),
                    "results": [r.to_dict() for r in mine],
                }
            )
        return {
            "ok": self.ok,
            "pack": self.pack,
            "folder": str(self.folder),
            "checks": checks,
            "hosts": self.hosts,
            "live": self.live,
            "requests": self.requests,
        }

    def render(self) -> str:
        """A short text report for people."""
        out = [f"bastion test: pack {self.pack!r} ({self.folder})"]
        for name in CHECKS:
            mine = [r for r in self.results if r.check == name]
            bad = [r for r in mine if not r.passed]
            ran = [r for r in mine if not r.skipped]
            status = "FAIL" if bad else ("PASS" if ran else "SKIP")
            who = ", ".join(sorted({r.skill for r in ran if r.skill})) or "-"
            out.append(f"  {status}  {name:<14} {who if not bad else ''}".rstrip())
            for r in bad:
                out.append(f"        [{r.skill or 'pack'}] {r.message}")
        out += self._render_requests()
        failed = [c for c in CHECKS if c in self.failed_checks()]
        out.append(
            f"conformance: FAILED ({', '.join(failed)})"
            if failed
            else f"conformance: OK ({len(CHECKS)} checks)"
        )
        return "\n".join(out)

    def _render_requests(self, per_skill: int = 8) -> list[str]:
        made = {k: v for k, v in self.requests.items() if v}
        if not made:
            return []
        how = "live network" if self.live else "recording stub, no request left the host"
        out = [f"  HTTP requests ({how}):"]
        for skill, reqs in sorted(made.items()):
            for r in reqs[:per_skill]:
                if r.get("fixture") == "missing":
                    outcome = "no fixture"
                elif r.get("status") is not None:
                    outcome = str(r["status"])
                else:
                    outcome = str(r.get("denied") or r.get("error") or "-")
                out.append(
                    f"        [{skill}] {r.get('call', '')}: {r.get('method')} "
                    f"{_short_url(str(r.get('url', '')))} -> {outcome}"
                )
            if len(reqs) > per_skill:
                out.append(f"        [{skill}] (and {len(reqs) - per_skill} more in --json-report)")
        return out


def _short_url(url: str, limit: int = 90) -> str:
    return url if len(url) <= limit else url[: limit - 3] + "..."


# -- finding the pack -----------------------------------------------------------------------


def _installed_pack(name: str) -> Path | None:
    """The folder of the installed pack whose entry point or distribution is ``name``."""
    import importlib.metadata
    import importlib.util

    from .manifest import PACK_MANIFEST

    want = name.lower().replace("_", "-")
    for ep in importlib.metadata.entry_points(group="bastion"):
        dist = (ep.dist.name if ep.dist else "").lower().replace("_", "-")
        if want not in (ep.name.lower().replace("_", "-"), dist) or not ep.value.isidentifier():
            continue
        spec = importlib.util.find_spec(ep.value)
        for loc in (spec.submodule_search_locations or []) if spec else []:
            if (Path(loc) / PACK_MANIFEST).is_file():
                return Path(loc)
    return None


def find_pack_folder(path: Path) -> Path:
    """The folder holding ``bastion-pack.toml``: ``path`` itself, its one sub-folder that does,
    or (when ``path`` is not a folder) the installed pack of that entry point or distribution."""
    from .manifest import PACK_MANIFEST

    raw = str(path)
    path = Path(path).expanduser().resolve()
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", raw):
        installed = _installed_pack(raw)
        if installed is not None:
            return installed
    if (path / PACK_MANIFEST).is_file():
        return path
    if path.is_dir():
        found = sorted(p.parent for p in path.glob(f"*/{PACK_MANIFEST}"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ConfigError(
                f"{str(path)!r} holds several packs ({', '.join(p.name for p in found)})",
                fix="pass the folder of one pack, the one holding bastion-pack.toml",
            )
    raise ConfigError(
        f"no {PACK_MANIFEST} in {str(path)!r} or its sub-folders, and no installed pack "
        f"is called {raw!r}",
        fix="pass a pack folder (the package folder holding bastion-pack.toml), the "
        "project folder above it, or the name of an installed pack",
    )


# -- helpers --------------------------------------------------------------------------------


def _substitute(value: Any, url: str) -> Any:
    if isinstance(value, str):
        return value.replace(FIXTURES_PLACEHOLDER, url)
    if isinstance(value, list):
        return [_substitute(v, url) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, url) for k, v in value.items()}
    return value


def _uses_fixtures(manifest: SkillManifest) -> bool:
    return any(FIXTURES_PLACEHOLDER in json.dumps([e.input, e.output]) for e in manifest.examples)


def _difference(expected: Any, got: Any, where: str = "output") -> str | None:
    """Where ``got`` first differs from ``expected`` (bool is never a number), or None."""
    if isinstance(expected, bool) or isinstance(got, bool):
        same = type(expected) is type(got) and expected == got
        return None if same else f"{where}: expected {_short(expected)}, got {_short(got)}"
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        return (
            None
            if expected == got
            else (f"{where}: expected {_short(expected)}, got {_short(got)}")
        )
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in expected:
            if key not in got:
                return f"{where}: key {key!r} is missing"
            diff = _difference(expected[key], got[key], f"{where}.{key}")
            if diff:
                return diff
        extra = [k for k in got if k not in expected]
        return f"{where}: unexpected key {extra[0]!r}" if extra else None
    if isinstance(expected, list) and isinstance(got, list):
        for i, (e, g) in enumerate(zip(expected, got, strict=False)):
            diff = _difference(e, g, f"{where}[{i}]")
            if diff:
                return diff
        if len(expected) != len(got):
            return f"{where}: expected {len(expected)} items, got {len(got)}"
        return None
    return (
        None
        if type(expected) is type(got) and expected == got
        else (f"{where}: expected {_short(expected)}, got {_short(got)}")
    )


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _canary_forms(value: str) -> list[str]:
    raw = value.encode()
    return [
        value,
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]


def _result_text(result: ToolResult) -> str:
    parts = [json.dumps(result.output, ensure_ascii=False, default=str)]
    if result.error is not None:
        parts.append(result.error.message)
    return "\n".join(parts)


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        return f"{u.scheme}://{u.netloc.rpartition('@')[2]}"
    except ValueError:
        return url[:100]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def _fixture_server(folder: Path) -> contextlib.AbstractContextManager[str]:
    """Serve the pack's ``fixtures/http`` folder on 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    return serve_local(handler, name="bastion-fixtures")


# -- the run --------------------------------------------------------------------------------


@dataclass
class _Call:
    kind: str
    """``example``, ``fuzz`` or ``repeat``."""
    label: str
    arguments: dict[str, Any]
    result: ToolResult
    invocation_id: str


@dataclass
class _SkillRun:
    manifest: SkillManifest
    calls: list[_Call] = field(default_factory=list)
    canaries: dict[str, str] = field(default_factory=dict)
    fixture_origin: str | None = None
    fuzz_note: str | None = None
    output_schema: dict[str, Any] | None = None
    """The effective output schema: skill.toml's, else derived from run()'s return type."""


def _toml_str(value: str) -> str:
    return json.dumps(value)


def _policy_text(
    runs: Mapping[str, _SkillRun],
    mounts: Mapping[str, dict[str, Path]],
    audit_path: Path,
    private: bool,
) -> str:
    lines = [
        "[audit]",
        f"path = {_toml_str(str(audit_path))}",
        "",
        "[limits]",
        "timeout_ms = 3600000",
        "memory_mb = 16384",
        "output_kb = 1048576",
        "",
    ]
    if private:
        lines += ["[network]", 'allow_private = ["127.0.0.1/32"]', ""]
    for name, run in runs.items():
        perms = run.manifest.permissions
        rules = list(perms.network)
        if run.fixture_origin:
            rules.append(run.fixture_origin)
        lines.append(f"[skills.{name}]")
        lines.append("network = [" + ", ".join(_toml_str(r) for r in rules) + "]")
        lines.append("secrets = [" + ", ".join(_toml_str(s) for s in perms.secrets) + "]")
        entries = [
            f"{{ guest = {_toml_str(fs.path)}, host = {_toml_str(str(mounts[name][fs.path]))}, "
            f"access = {_toml_str(fs.access)} }}"
            for fs in perms.filesystem
        ]
        lines.append("mounts = [" + ", ".join(entries) + "]")
        lines.append("")
    return "\n".join(lines)


def _prepare_mounts(folder: Path, manifest: SkillManifest, work: Path) -> dict[str, Path]:
    """A fresh copy of ``fixtures/<guest path>`` (or an empty folder) per declared mount."""
    out: dict[str, Path] = {}
    for fs in manifest.permissions.filesystem:
        rel = fs.path.strip("/")
        host = work / "mounts" / manifest.name / rel
        source = folder / "fixtures" / rel
        if source.is_dir():
            shutil.copytree(source, host, symlinks=True)
        else:
            host.mkdir(parents=True)
        out[fs.path] = host
    return out


def _read_audit(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return events
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            events.append(record)
    return events


def _event_kind(record: Mapping[str, Any]) -> str:
    for key in ("event", "kind", "type"):
        value = record.get(key)
        if isinstance(value, str):
            return value
    return ""


def _strategy(schema: Any, root: dict[str, Any], depth: int = 0) -> Any:
    """A hypothesis strategy for ``schema``; objects, arrays and unions are built here.

    hypothesis-jsonschema's own object strategy fails with recent hypothesis releases
    (``'many' object has no attribute 'more'``), so containers are composed from hypothesis's
    own strategies and only leaf schemas go to ``from_schema``.
    """
    from hypothesis import strategies as st
    from hypothesis_jsonschema import from_schema

    if depth > 8 or not isinstance(schema, dict):
        return st.none()
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _strategy(target, root, depth + 1)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return st.one_of([_strategy(s, root, depth + 1) for s in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([_strategy({**schema, "type": k}, root, depth + 1) for k in kind])
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        strategy = st.fixed_dictionaries(
            {k: _strategy(v, root, depth + 1) for k, v in props.items() if k in required},
            optional={
                k: _strategy(v, root, depth + 1) for k, v in props.items() if k not in required
            },
        )
        extra = schema.get("additionalProperties")
        if not props and isinstance(extra, dict):
            strategy = st.dictionaries(
                st.text(max_size=12), _strategy(extra, root, depth + 1), max_size=4
            )
        return strategy
    if kind == "array":
        items = schema.get("items", {})
        return st.lists(
            _strategy(items, root, depth + 1),
            min_size=int(schema.get("minItems", 0)),
            max_size=max(int(schema.get("minItems", 0)), min(int(schema.get("maxItems", 6)), 6)),
        )
    leaf = {k: v for k, v in schema.items() if k not in ("description", "title", "default")}
    return from_schema(leaf or {})


def _fuzz_inputs(schema: dict[str, Any], count: int) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``count`` inputs drawn from ``schema`` (reproducibly), or a note why not."""
    if count < 1:
        return [], "no generated inputs (fuzz_examples = 0)"
    try:
        from hypothesis import HealthCheck, Phase, given, settings
    except ImportError:
        return [], "hypothesis-jsonschema is not installed (pip install hypothesis-jsonschema)"
    try:
        strategy = _strategy(schema, schema)
    except ImportError:
        return [], "hypothesis-jsonschema is not installed (pip install hypothesis-jsonschema)"
    except Exception as exc:  # an unsupported schema construct
        return [], f"cannot generate inputs from the input schema ({type(exc).__name__}: {exc})"
    drawn: list[dict[str, Any]] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        if isinstance(value, dict) and len(drawn) < count:
            drawn.append(value)

    try:
        collect()
    except Exception as exc:
        return drawn, f"input generation stopped early ({type(exc).__name__}: {exc})"
    return drawn, None


def _invoke(
    kernel: Kernel, run: _SkillRun, kind: str, label: str, arguments: dict[str, Any]
) -> _Call:
    from .result import InvocationContext

    ctx = InvocationContext(caller="conformance")
    result = kernel.invoke(run.manifest.name, arguments, context=ctx)
    call = _Call(kind, label, arguments, result, ctx.invocation_id)
    run.calls.append(call)
    return call


def check_pack(
    path: Path, *, fuzz_examples: int = DEFAULT_FUZZ_EXAMPLES, live: bool = False
) -> ConformanceReport:
    """Run every check on the pack at ``path`` and return the report (never raises for the
    pack's faults; raises ConfigError only when ``path`` holds no pack). Skills' HTTP is
    answered from fixtures by the recording stub unless ``live``."""
    from .manifest import load_pack_manifest

    folder = find_pack_folder(path)
    try:
        pack = load_pack_manifest(folder)
    except ConfigError as exc:
        report = ConformanceReport(pack=folder.name, folder=folder)
        report.results.append(CheckResult("manifest", None, False, str(exc)))
        for name in CHECKS[1:]:
            report.results.append(
                CheckResult(name, None, True, "not run: fix the pack manifest first", skipped=True)
            )
        return report
    report = ConformanceReport(pack=pack.name, folder=folder, live=live)
    with tempfile.TemporaryDirectory(prefix="bastion-conformance-") as tmp:
        _run_checks(report, folder, pack.skills, Path(tmp), fuzz_examples, live)
    return report


def _load_manifests(
    report: ConformanceReport,
    folder: Path,
    skill_dirs: tuple[str, ...],
    folders: dict[str, Path] | None = None,
) -> dict[str, SkillManifest]:
    """Each skill folder's manifest (and, into ``folders``, its folder); manifest and
    unique_names results are recorded."""
    from .configfile import read_toml
    from .manifest import SKILL_MANIFEST, load_skill_manifest

    manifests: dict[str, SkillManifest] = {}
    owners: dict[str, list[str]] = {}
    for rel in skill_dirs:
        try:  # the bounded, depth-checked reader: a hostile file must not crash the kit
            raw = read_toml(folder / rel / SKILL_MANIFEST, ConfigError)
            name = raw.get("name")
            if isinstance(name, str):
                owners.setdefault(name, []).append(rel)
        except ConfigError:
            pass
        try:
            m = load_skill_manifest(folder / rel)
        except ConfigError as exc:
            report.results.append(CheckResult("manifest", rel, False, str(exc)))
            continue
        if m.name not in manifests:
            manifests[m.name] = m
            if folders is not None:
                folders[m.name] = folder / rel
    dupes = {n: dirs for n, dirs in owners.items() if len(dirs) > 1}
    for name, dirs in sorted(dupes.items()):
        report.results.append(
            CheckResult(
                "unique_names",
                name,
                False,
                f"skill name {name!r} is used by the folders {', '.join(map(repr, dirs))}; "
                "only the first is loaded. Fix: give each skill.toml its own name",
            )
        )
    if not dupes:
        report.results.append(CheckResult("unique_names", None, True))
    return manifests


def _manifest_problems(
    m: SkillManifest, description: str, output_schema: dict[str, Any] | None = None
) -> list[str]:
    """Problems a model would have with the skill as declared; ``description`` is the one it
    reads (``skill.toml``'s, or the docstring's for a Python skill)."""
    out = []
    if len(description.split()) < 4:
        out.append(
            f"description {description!r} is too short for a model to know when to "
            "call the skill. Fix: say in a sentence or two what it does and returns"
        )
    if not m.examples:
        out.append(
            "no [[examples]]. Fix: add at least one [[examples]] with input and output "
            "to skill.toml"
        )
    elif all(e.output is None for e in m.examples):
        out.append(
            "no example has an expected output. Fix: add output = {...} to an [[examples]] entry"
        )
    if m.output_schema is None and output_schema is None:
        out.append(
            "no output_schema. Fix: describe the output as a JSON Schema in "
            "[output_schema] so callers (and this kit) can rely on it"
        )
    return out


def _run_checks(
    report: ConformanceReport,
    folder: Path,
    skill_dirs: tuple[str, ...],
    work: Path,
    fuzz_examples: int,
    live: bool = False,
) -> None:
    from .kernel import Kernel
    from .policy import load_policy

    skill_folders: dict[str, Path] = {}
    manifests = _load_manifests(report, folder, skill_dirs, skill_folders)
    runs = {name: _SkillRun(m) for name, m in manifests.items()}
    mounts = {name: _prepare_mounts(folder, m, work) for name, m in manifests.items()}
    fixtures = folder / "fixtures" / "http"
    need_server = any(_uses_fixtures(m) for m in manifests.values())
    environ: dict[str, str] = {}
    for run in runs.values():
        for sname in run.manifest.permissions.secrets:
            value = environ.setdefault(sname, "canary-" + secrets.token_hex(12))
            run.canaries[sname] = value
    audit_path = work / "audit.jsonl"
    with contextlib.ExitStack() as stack:
        origin = None
        if need_server and fixtures.is_dir():
            # Live, a real server on 127.0.0.1; else the stub answers for that origin.
            origin = stack.enter_context(_fixture_server(fixtures)) if live else STUB_ORIGIN
        for run in runs.values():
            if _uses_fixtures(run.manifest):
                run.fixture_origin = origin
        stubs = None if live else _http_stubs(report, folder, skill_folders)
        policy = load_policy(
            text=_policy_text(runs, mounts, audit_path, live and origin is not None)
        )
        kernel = stack.enter_context(
            Kernel(
                policy,
                pack_paths=[folder],
                entry_points=False,
                environ=environ,
                http_stubs=stubs,
            )
        )
        statuses = {st.name: st for st in kernel.skills()}
        dupes = {r.skill for r in report.failures("unique_names")}
        for problem in kernel.problems:
            if problem.pack == "policy" or any(
                f"{d!r} appears twice" in problem.message for d in dupes
            ):
                continue  # consequences of problems reported elsewhere
            report.results.append(CheckResult("manifest", None, False, problem.message))
        for name, run in runs.items():
            m = run.manifest
            st = statuses.get(name)
            run.output_schema = st.skill.output_schema if st is not None else m.output_schema
            problems = _manifest_problems(
                m,
                st.skill.description if st is not None else m.description or "",
                run.output_schema,
            )
            if _uses_fixtures(m) and not fixtures.is_dir():
                problems.append(
                    f"examples use {FIXTURES_PLACEHOLDER} but {fixtures} does not "
                    "exist. Fix: add the files the examples fetch to fixtures/http"
                )
            if st is not None and not st.usable:
                why = "; ".join(st.grant.reasons) or "no executor serves runtime " + m.runtime
                problems.append(f"cannot run under a policy granting what it declares: {why}")
            for p in problems:
                report.results.append(CheckResult("manifest", name, False, p))
            if not problems:
                report.results.append(CheckResult("manifest", name, True))
            if st is None or not st.usable:
                continue
            kernel.prepare([name])
            base = origin or ""
            for i, ex in enumerate(m.examples, start=1):
                label = f"example {i}" + (f" ({ex.description})" if ex.description else "")
                _invoke(kernel, run, "example", label, _substitute(ex.input, base))
            inputs, run.fuzz_note = _fuzz_inputs(st.skill.input_schema, fuzz_examples)
            for j, args in enumerate(inputs, start=1):
                _invoke(kernel, run, "fuzz", f"generated input {j}", args)
            if m.deterministic:
                again = [c for c in run.calls if c.kind == "example"]
                again += [c for c in run.calls if c.kind == "fuzz"][:5]
                for c in again:
                    _invoke(kernel, run, "repeat", c.label, c.arguments)
    events = _read_audit(audit_path)
    for name, run in runs.items():
        if statuses.get(name) is None or not statuses[name].usable:
            for check in CHECKS[2:]:
                report.results.append(
                    CheckResult(check, name, True, "not run: the skill did not load", skipped=True)
                )
            continue
        _judge(report, run, events, origin if run.fixture_origin else None)


def _http_stubs(
    report: ConformanceReport, folder: Path, skill_folders: Mapping[str, Path]
) -> dict[str, Any]:
    """Each skill's HTTP fixtures for the recording stub; a malformed fixtures file is a
    ``manifest`` failure of that skill (which then gets none: still nothing leaves the host)."""
    from .httpfixtures import HttpFixtures, load_http_fixtures

    stubs: dict[str, Any] = {}
    for name, skill_folder in skill_folders.items():
        try:
            stubs[name] = load_http_fixtures(skill_folder, folder, files_origin=STUB_ORIGIN)
        except ConfigError as exc:
            report.results.append(CheckResult("manifest", name, False, str(exc)))
            stubs[name] = HttpFixtures()
    return stubs


def _requests(run: _SkillRun, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The HTTP requests the skill made during the run, from the audit, in order."""
    calls = {c.invocation_id: c for c in run.calls}
    keys = ("method", "url", "status", "denied", "error", "fixture", "headers", "request_bytes")
    out: list[dict[str, Any]] = []
    for e in events:
        call = calls.get(str(e.get("invocation_id")))
        if _event_kind(e) != "http" or call is None:
            continue
        record: dict[str, Any] = {"call": call.label}
        record.update({k: e[k] for k in keys if e.get(k) is not None})
        record["example"] = call.kind == "example"
        out.append(record)
    return out


def _judge(
    report: ConformanceReport,
    run: _SkillRun,
    events: list[dict[str, Any]],
    fixture_origin: str | None,
) -> None:
    name = run.manifest.name
    m = run.manifest
    add = report.results.append
    examples = [c for c in run.calls if c.kind == "example"]
    fuzz = [c for c in run.calls if c.kind == "fuzz"]

    def problems_for(
        check: str, found: list[str], fix: str = "", skipped: str | None = None
    ) -> None:
        found = sorted(set(found), key=found.index)
        if skipped is not None and not found:
            add(CheckResult(check, name, True, skipped, skipped=True))
        elif found:
            more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
            add(
                CheckResult(
                    check,
                    name,
                    False,
                    "; ".join(found[:3]) + more + (f". Fix: {fix}" if fix else ""),
                )
            )
        else:
            add(CheckResult(check, name, True))

    base = fixture_origin or ""
    requests = _requests(run, events)
    report.requests[name] = [
        {k: v for k, v in r.items() if k != "example"} for r in requests[:MAX_LISTED_REQUESTS]
    ]
    unfixtured: dict[str, list[str]] = {}
    for r in requests:
        if r["example"] and r.get("fixture") == "missing":
            unfixtured.setdefault(r["call"], []).append(f"{r.get('method')} {r.get('url')}")
    # examples: each produces its expected output
    found = []
    for c, ex in zip(examples, m.examples, strict=True):
        err = c.result.error
        if c.label in unfixtured:
            found.append(
                f"{c.label} requested {', '.join(unfixtured[c.label][:3])}, which has no "
                f"fixture. Fix: add a [[response]] with that url to "
                f"{run.manifest.name}/fixtures/http.toml (or run `bastion test --live`)"
            )
            continue
        if err is not None and err.code in _LIMIT_CODES | _ACCESS_CODES | {"INVALID_OUTPUT"}:
            continue  # reported by limits, permissions or output_schema
        if err is not None:
            found.append(f"{c.label} failed with {err.code}: {err.message[:300]}")
        elif ex.output is not None:
            diff = _difference(_substitute(ex.output, base), c.result.output)
            if diff:
                found.append(f"{c.label}: {diff}")
    problems_for(
        "examples",
        found,
        "correct the skill, or the example's input or output in skill.toml",
        None if m.examples else "no examples to run",
    )

    # output_schema: nothing came back INVALID_OUTPUT
    found = [
        f"{c.label} {_short(c.arguments, 120)}: {c.result.error.message[:300]}"
        for c in examples + fuzz
        if c.result.error is not None and c.result.error.code == "INVALID_OUTPUT"
    ]
    problems_for(
        "output_schema",
        found,
        "return what [output_schema] describes, or correct the schema",
        None if run.output_schema is not None else "no output_schema",
    )

    # fuzz: generated inputs never crash the skill
    found = []
    for c in fuzz:
        err = c.result.error
        if err is None:
            continue
        if err.code in _CRASH_CODES:
            found.append(
                f"{c.label} {_short(c.arguments, 200)} crashed the skill: {err.code}: "
                f"{err.message[:200]}"
            )
        elif err.code == "SKILL_ERROR":
            head = _EXC_TYPE.match(err.message)
            bug = head.group(1) if head and head.group(1) in _BUG_TYPES else None
            if bug:
                found.append(f"{c.label} {_short(c.arguments, 200)} raised {err.message[:200]}")
    problems_for(
        "fuzz",
        found,
        "handle every input the input schema allows: check it and "
        "raise ValueError with a message that says what is wrong",
        run.fuzz_note if not fuzz else None,
    )

    # deterministic: the same input twice gives the same result
    if m.deterministic:
        firsts = {json.dumps(c.arguments, sort_keys=True): c for c in examples + fuzz}
        found = []
        for c in (c for c in run.calls if c.kind == "repeat"):
            first = firsts.get(json.dumps(c.arguments, sort_keys=True))
            if first is None:
                continue
            a, b = first.result, c.result
            if (a.ok, a.error.code if a.error else None) != (
                b.ok,
                b.error.code if b.error else None,
            ) or (a.ok and _difference(a.output, b.output) is not None):
                found.append(
                    f"{c.label} gave {_short(a.to_dict()['output'], 100)} then "
                    f"{_short(b.to_dict()['output'], 100)}"
                )
        problems_for(
            "deterministic",
            found,
            "remove randomness and clock reads, or set deterministic = false in skill.toml",
        )
    else:
        add(CheckResult("deterministic", name, True, "deterministic = false", skipped=True))

    # permissions: examples touch only what was declared
    from .netrule import NetRule

    declared = list(m.permissions.rules)
    if fixture_origin:
        declared.append(NetRule.parse(fixture_origin))
    example_ids = {c.invocation_id for c in examples}
    hosts: list[str] = []
    found = []
    for e in events:
        if _event_kind(e) != "http" or e.get("invocation_id") not in example_ids:
            continue
        url = str(e.get("url", ""))
        origin = _origin(url)
        if origin not in hosts:
            hosts.append(origin)
        if not any(_covers(rule, url) for rule in declared):
            found.append(f"requested {origin}, which it did not declare")
    for c in examples:
        err = c.result.error
        if err is not None and err.code in _ACCESS_CODES:
            found.append(f"{c.label} was refused {err.code}: {err.message[:200]}")
    report.hosts[name] = hosts
    problems_for(
        "permissions",
        found,
        "declare every host in [permissions] network and every "
        "path in [[permissions.filesystem]] in skill.toml, or stop using it",
    )

    # limits: examples run within the declared limits
    found = [
        f"{c.label} hit {c.result.error.code}: {c.result.error.message[:200]}"
        for c in examples
        if c.result.error is not None and c.result.error.code in _LIMIT_CODES
    ]
    problems_for(
        "limits",
        found,
        "raise [limits] timeout_ms, memory_mb or output_kb in "
        "skill.toml, or make the skill lighter",
    )

    # secrets: no granted secret comes back, raw or encoded
    if run.canaries:
        found = []
        for c in run.calls:
            text = _result_text(c.result)
            for sname, value in run.canaries.items():
                if any(form in text for form in _canary_forms(value)):
                    found.append(f"{c.label} returned the value of secret {sname}")
                elif f"[REDACTED:{sname}]" in text:
                    found.append(
                        f"{c.label} returned secret {sname} (raw or encoded), which "
                        "Bastion redacted"
                    )
        problems_for(
            "secrets",
            found,
            "never put a secret, or an encoding of it, in the output or an error message",
        )
    else:
        add(CheckResult("secrets", name, True, "declares no secrets", skipped=True))


def _covers(rule: Any, url: str) -> bool:
    try:
        return bool(rule.matches(url))
    except Exception:
        return False


# -- entry points ---------------------------------------------------------------------------

_CACHE: dict[tuple[Path, int, bool], ConformanceReport] = {}
_CACHE_LOCK = threading.Lock()


def conformance_report(
    path: Path, *, fuzz_examples: int = DEFAULT_FUZZ_EXAMPLES, live: bool = False
) -> ConformanceReport:
    """``check_pack`` once per pack folder per process (pytest tests share one run)."""
    key = (find_pack_folder(path), fuzz_examples, live)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = check_pack(key[0], fuzz_examples=fuzz_examples, live=live)
        return _CACHE[key]


def run_conformance(
    path: Path,
    *,
    json_report: Path | None = None,
    stream: TextIO = sys.stdout,
    live: bool = False,
) -> int:
    """``bastion test PATH``: print the report; 0 all passed, 1 a check failed, 2 no pack.
    Skills' HTTP is answered from fixtures and recorded unless ``live``."""
    try:
        report = check_pack(path, live=live)
    except ConfigError as exc:
        stream.write(f"bastion test: {exc}\n")
        return 2
    stream.write(report.render() + "\n")
    if json_report is not None:
        Path(json_report).write_text(
            json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
    return 0 if report.ok else 1


# -- pytest plugin (``-p bastion.testing`` or the ``pytest11`` entry point) ------------------


def pytest_addoption(parser: Any) -> None:
    """``--bastion-pack PATH``: run the conformance checks of that pack as tests."""
    group = parser.getgroup("bastion", "Bastion conformance kit")
    group.addoption(
        "--bastion-pack",
        action="append",
        default=[],
        metavar="PATH",
        help="run Bastion's conformance checks on the pack at PATH (repeatable)",
    )
    group.addoption(
        "--bastion-live",
        action="store_true",
        default=False,
        help="let the packs' skills reach the real network (default: HTTP fixtures only)",
    )


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    """Add one test per check and pack given with ``--bastion-pack``; inert otherwise."""
    packs = config.getoption("bastion_pack", default=None) or []
    if not packs:
        return
    live = bool(config.getoption("bastion_live", default=False))
    for raw in packs:
        folder = find_pack_folder(Path(raw))
        for check in CHECKS:
            items.append(_pytest_item(session, folder, check, live))


def _pytest_item(session: Any, folder: Path, check: str, live: bool = False) -> Any:
    import pytest

    class ConformanceItem(pytest.Item):
        def runtest(self) -> None:
            conformance_report(folder, live=live).assert_passed(check)

        def repr_failure(self, excinfo: Any, style: Any = None) -> str:
            if isinstance(excinfo.value, ConformanceError):
                return str(excinfo.value)
            return str(super().repr_failure(excinfo))

        def reportinfo(self) -> tuple[Path, None, str]:
            return folder, None, f"bastion conformance: {check}"

    return ConformanceItem.from_parent(session, name=f"bastion[{folder.name}]::{check}")
