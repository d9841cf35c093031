"""Python skills as folders: discovery with schemas derived in the sandbox, and per-call cost.

    .venv/bin/python bench/bench_pyskills.py [--skills N] [--calls N]

Measures (figures go to bench/README.md, "Python skills as folders"):

- discovery of N (default 50) typed Python skills: cold schema cache (every skill's module
  imported in a no-grant sandbox by ``describe-skill``) against warm (every schema from the
  memo), each in a fresh Kernel; the anchor is discovery of the same pack with TOML schemas
  (nothing to derive);
- per call, p50/p95 of ``PythonExecutor.execute``: a single-file skill against a package skill
  (entry package, a sibling module, a vendored dependency checked against its lock);
- a module whose top level loops forever: its first discovery costs the derivation deadline,
  the next one reads the remembered failure (same reason, no import);
- the kernel's RSS after discovering the first-party packs (nothing memoized), thread against
  process isolation: in process mode the derivations run in a worker, so the kernel never maps
  the runner.

Issue 15 sets no numeric target for these; the output says what each row shows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TYPED = '''
"""Skill {i}: add numbers with options."""
import dataclasses
import enum
from typing import Annotated, Literal, TypedDict

from bastion_sdk import Field


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


class Opts(TypedDict, total=False):
    label: str
    scale: float


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


def run(a: Annotated[int, Field(ge=0)], b: int, mode: Mode = Mode.FAST,
        opts: Opts | None = None, point: Point | None = None,
        kind: Literal["sum", "diff"] = "sum") -> dict[str, int]:
    """Add or subtract two numbers ({salt}).

    Args:
        a: the first number
        b: the second number
    """
    return {{"value": a + b if kind == "sum" else a - b}}
'''


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _pack(root: Path, n: int, salt: str, toml_schema: bool = False) -> Path:
    root.mkdir(parents=True)
    names = [f"s{i:03d}" for i in range(n)]
    (root / "bastion-pack.toml").write_text(
        'name = "bench"\nversion = "1.0.0"\nskills = [' + ", ".join(f'"{s}"' for s in names) + "]\n"
    )
    for i, name in enumerate(names):
        (root / name).mkdir()
        toml = f'name = "{name}"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
        if toml_schema:
            toml += (
                'description = "Add or subtract two numbers."\n'
                '[input_schema]\ntype = "object"\n'
                '[output_schema]\ntype = "object"\n'
            )
        (root / name / "skill.toml").write_text(toml)
        (root / name / "skill.py").write_text(TYPED.format(i=i, salt=f"{salt}-{i}"))
    return root


def _discover(pack: Path, audit: Path, isolation: str = "process", problems: int = 0) -> float:
    from bastion.kernel import Kernel
    from bastion.policy import load_policy

    t0 = time.perf_counter()
    k = Kernel(
        load_policy(text=f'[audit]\npath = "{audit}"\n[workers]\nisolation = "{isolation}"\n'),
        pack_paths=[pack],
        entry_points=False,
        environ={},
    )
    took = time.perf_counter() - t0
    assert len(k.problems) == problems, k.problems
    k.close()
    return took


def bench_discovery(n: int) -> None:
    from bastion.sandbox.runner_build import load_runner

    load_runner()  # built and compiled once; not what this measures
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        salt = uuid.uuid4().hex  # fresh sources: the memo has never seen them
        typed = _pack(base / "typed", n, salt)
        anchor_pack = _pack(base / "toml", n, salt + "-t", toml_schema=True)
        anchor = min(_discover(anchor_pack, base / "a.jsonl") for _ in range(3))
        cold = _discover(typed, base / "a.jsonl")
        warm = min(_discover(typed, base / "a.jsonl") for _ in range(3))
        typed_t = _pack(base / "typed-thread", n, salt + "-thread")
        cold_thread = _discover(typed_t, base / "a.jsonl", "thread")
    print(f"| discovery of {n} Python skills                | time      | per skill | x anchor |")
    print("|---|---|---|---|")
    for label, t in (
        ("TOML schemas (anchor: nothing derived)", anchor),
        ("derived, cold schema cache (in a worker)", cold),
        ("derived, cold, thread isolation (in-kernel)", cold_thread),
        ("derived, warm schema cache", warm),
    ):
        print(f"| {label:<44} | {t * 1e3:7.1f} ms | {t / n * 1e3:6.2f} ms | {t / anchor:6.2f} |")
    print(
        "warm against cold: the memo spares "
        f"{(cold - warm) / n * 1e3:.1f} ms per skill ({cold / warm:.1f}x faster discovery)"
    )


def bench_failed_derivation() -> None:
    """A module that loops at import: the deadline once, then the remembered failure."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        pack = base / "loops"
        (pack / "s").mkdir(parents=True)
        (pack / "bastion-pack.toml").write_text('name = "l"\nversion = "1.0.0"\nskills = ["s"]\n')
        (pack / "s" / "skill.toml").write_text(
            'name = "s"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
        )
        (pack / "s" / "skill.py").write_text(
            f"# {uuid.uuid4().hex}\nwhile True:\n    pass\n\ndef run() -> int:\n    return 1\n"
        )
        first = _discover(pack, base / "a.jsonl", problems=1)
        again = min(_discover(pack, base / "a.jsonl", problems=1) for _ in range(3))
    print("\n| discovery of one module that loops at import | time      |")
    print("|---|---|")
    print(f"| first (the 3 s derivation deadline)          | {first * 1e3:7.1f} ms |")
    print(f"| again (the remembered failure, same reason)  | {again * 1e3:7.1f} ms |")


_RSS_SCRIPT = """
import sys
from bastion.kernel import Kernel
from bastion.policy import load_policy
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) // 1024
before = status("VmRSS")
policy = load_policy(text='[workers]\\nisolation = "%s"\\n' % sys.argv[1])
k = Kernel(policy, pack_paths=sys.argv[2:], entry_points=False, environ={})
assert not k.problems, k.problems
print(before, status("VmRSS"), status("VmHWM"), len(k.skills()))
k.close()
"""


def bench_rss() -> None:
    """Kernel RSS after discovering the first-party packs, nothing memoized, per isolation."""
    import subprocess

    packs = sorted(str(p.parent) for p in (ROOT / "plugins").glob("*/bastion_pack_*/*.toml"))
    env = {**os.environ, "BASTION_NO_MEMO": "1", "BASTION_LOAD_PLUGINS": ""}
    print("\n| kernel RSS, first-party packs discovered, no memo | before | after | peak |")
    print("|---|---|---|---|")
    for mode in ("thread", "process"):
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, mode, *packs],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.split()
        before, after, peak, skills = (int(x) for x in out)
        where = "in the kernel" if mode == "thread" else "in a worker"
        label = f"{mode} isolation ({skills} skills, derived {where})"
        print(f"| {label:<49} | {before:3d} MiB | {after:3d} MiB | {peak:3d} MiB |")


def _request(folder: Path, entry: str, inp: dict[str, Any]) -> Any:
    import structlog

    from bastion.executor import Capabilities, ExecutionRequest, Limits

    return ExecutionRequest(
        skill="bench",
        version="0.1.0",
        runtime="python",
        entry=folder / entry,
        folder=folder,
        input=inp,
        input_json=json.dumps(inp),
        caps=Capabilities(),
        limits=Limits(timeout_ms=10_000),
        deadline=time.monotonic() + 10,
        invocation_id="bench",
        logger=structlog.get_logger("bench"),
        audit=lambda kind, fields: None,
    )


def bench_calls(calls: int) -> None:
    from bastion.sandbox.python_exec import PythonExecutor
    from bastion.sandbox.runner_build import load_runner
    from tests.python_skills.wheels import make_wheel

    load_runner()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        single = base / "single"
        single.mkdir()
        (single / "skill.py").write_text(
            "import re\ndef run(title: str) -> dict[str, str]:\n"
            "    return {'slug': re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')}\n"
        )
        pkg = base / "pkg"
        (pkg / "slugger").mkdir(parents=True)
        (pkg / "slugger" / "__init__.py").write_text("from .main import run\n")
        (pkg / "slugger" / "main.py").write_text(
            "import tinyslug\nfrom . import words\n"
            "def run(title: str) -> dict[str, str]:\n"
            "    return {'slug': tinyslug.slug(words.strip(title))}\n"
        )
        (pkg / "slugger" / "words.py").write_text("def strip(s):\n    return s.strip()\n")
        (pkg / "skill.toml").write_text(
            'name = "slugger"\nversion = "1.0.0"\nruntime = "python"\n'
            'entry = "slugger/__init__.py"\ndependencies = ["tinyslug"]\n'
        )
        links = base / "links"
        make_wheel(
            links,
            "tinyslug",
            "1.0.0",
            {
                "tinyslug/__init__.py": "from tinyslug._impl import slug\n",
                "tinyslug/_impl.py": "import re\ndef slug(s):\n"
                "    return re.sub(r'[^a-z0-9]+', '-', s.lower()).strip('-')\n",
            },
        )
        from bastion.vendor import vendor_skill

        vendor_skill(pkg, ["--no-index", "--find-links", str(links)])
        ex = PythonExecutor()
        rows = []
        for label, folder, entry in (
            ("single-file skill (anchor)", single, "skill.py"),
            ("package skill + vendored dependency", pkg, "slugger/__init__.py"),
        ):
            inp = {"title": "Hello Wasm World"}
            for _ in range(5):
                ex.execute(_request(folder, entry, inp))
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                out = ex.execute(_request(folder, entry, inp))
                times.append(time.perf_counter() - t0)
            assert json.loads(out) == {"slug": "hello-wasm-world"}, out
            rows.append((label, times))
        ex.close()
    anchor = _pct(rows[0][1], 50)
    head = f"per call ({calls} calls, fresh instance each)"
    print(f"\n| {head:<44} | p50       | p95       | x anchor |")
    print("|---|---|---|---|")
    for label, times in rows:
        p50, p95 = _pct(times, 50), _pct(times, 95)
        print(f"| {label:<44} | {p50 * 1e3:6.2f} ms | {p95 * 1e3:6.2f} ms | {p50 / anchor:6.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skills", type=int, default=50)
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args()
    os.environ.setdefault("BASTION_LOAD_PLUGINS", "")
    print(f"nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    bench_discovery(args.skills)
    bench_calls(args.calls)
    bench_failed_derivation()
    bench_rss()


if __name__ == "__main__":
    main()
