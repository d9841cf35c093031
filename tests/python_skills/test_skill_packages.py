"""A skill as a package: sibling modules, subpackages, relative imports, the standard library a
skill expects, and a folder that is read-only and never imported on the host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import ExecutionError
from bastion.executor import Capabilities, Mount
from bastion.sandbox.python_exec import PythonExecutor
from tests.python_skills.conftest import folder_request

pytestmark = pytest.mark.slow


def _folder(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _run(ex: PythonExecutor, folder: Path, inp: Any = None, entry: str = "skill.py") -> Any:
    return json.loads(ex.execute(folder_request(folder, inp or {}, entry=entry)))


def test_a_skill_imports_its_sibling_modules_and_subpackages(
    python_executor: PythonExecutor, tmp_path: Path
) -> None:
    folder = _folder(
        tmp_path / "sk",
        {
            "skill.py": (
                "import helpers\nfrom text import clean\nfrom text.words import count\n"
                "def run(s: str) -> dict:\n"
                "    return {'h': helpers.twice(s), 'c': clean.strip(s), 'n': count(s),\n"
                "            'file': helpers.__file__.rsplit('/', 1)[-1]}\n"
            ),
            "helpers.py": "def twice(s):\n    return s * 2\n",
            "text/__init__.py": "",
            "text/clean.py": "def strip(s):\n    return s.strip()\n",
            "text/words.py": (
                "from .clean import strip\ndef count(s):\n    return len(strip(s).split())\n"
            ),
        },
    )
    out = _run(python_executor, folder, {"s": " a b "})
    assert out == {"h": " a b  a b ", "c": "a b", "n": 2, "file": "helpers.py"}


def test_the_entry_may_be_a_package_with_relative_imports(
    python_executor: PythonExecutor, tmp_path: Path
) -> None:
    folder = _folder(
        tmp_path / "sk",
        {
            "weather/__init__.py": "from .core import run\n",
            "weather/core.py": (
                "from . import units\ndef run(c: float) -> float:\n    return units.to_f(c)\n"
            ),
            "weather/units.py": "def to_f(c):\n    return c * 9 / 5 + 32\n",
        },
    )
    assert _run(python_executor, folder, {"c": 100}, entry="weather/__init__.py") == 212.0


def test_a_traceback_names_the_skill_file_relative_to_its_folder(
    python_executor: PythonExecutor, tmp_path: Path
) -> None:
    folder = _folder(
        tmp_path / "sk",
        {
            "skill.py": "import helpers\ndef run() -> int:\n    return helpers.boom()\n",
            "helpers.py": "def boom():\n    raise ValueError('bad thing')\n",
        },
    )
    with pytest.raises(ExecutionError) as info:
        python_executor.execute(folder_request(folder, {}))
    err = info.value
    assert err.message == "ValueError: bad thing (helpers.py, line 2, in boom)"
    assert err.detail is not None and str(tmp_path) not in err.detail
    assert 'File "skill.py", line 3' in err.detail


def test_the_skill_folder_is_read_only_and_its_path_reserved(
    python_executor: PythonExecutor, tmp_path: Path
) -> None:
    folder = _folder(
        tmp_path / "sk",
        {
            "skill.py": (
                "def run() -> str:\n"
                "    try:\n"
                "        open('/_bastion/skill/helpers.py', 'w').write('x = 1')\n"
                "    except OSError as e:\n"
                "        return type(e).__name__\n"
                "    return 'wrote'\n"
            ),
            "helpers.py": "",
        },
    )
    assert _run(python_executor, folder) != "wrote"
    assert (folder / "helpers.py").read_text() == ""
    req = folder_request(folder, {})
    bad = Capabilities(mounts=(Mount("/_bastion/skill", tmp_path, writable=True),))
    from dataclasses import replace

    with pytest.raises(ExecutionError, match="reserved guest path"):
        python_executor.execute(replace(req, caps=bad))


def test_a_module_cannot_shadow_the_standard_library_or_reach_past_the_folder(
    python_executor: PythonExecutor, tmp_path: Path
) -> None:
    folder = _folder(
        tmp_path / "sk",
        {
            "skill.py": (
                "import json\n"
                "def run() -> dict:\n"
                "    out = {'json_is_stdlib': hasattr(json, 'dumps')}\n"
                "    try:\n"
                "        import secret_sibling\n"
                "        out['outside'] = 'imported'\n"
                "    except ImportError as e:\n"
                "        out['outside'] = type(e).__name__\n"
                "    return out\n"
            ),
            "json.py": "raise RuntimeError('shadowed')\n",
        },
    )
    (tmp_path / "secret_sibling.py").write_text("X = 1\n")  # beside the folder, not in it
    assert _run(python_executor, folder) == {
        "json_is_stdlib": True,
        "outside": "ModuleNotFoundError",
    }


STDLIB_SKILL = '''
import asyncio, csv, dataclasses, decimal, email.message, email.utils, enum, html, io, json
import sqlite3, statistics, string, textwrap, typing, urllib.parse, xml.dom.minidom
import xml.etree.ElementTree as ET
import datetime, zoneinfo
from email.mime.text import MIMEText


async def _twice(x):
    await asyncio.sleep(0.001)
    return 2 * x


async def run(zone: str = "America/New_York") -> dict:
    """Touch the standard library a skill expects."""
    when = datetime.datetime(2024, 1, 15, 12, tzinfo=zoneinfo.ZoneInfo(zone))
    summer = datetime.datetime(2024, 7, 15, 12, tzinfo=zoneinfo.ZoneInfo(zone))
    msg = email.message.EmailMessage()
    msg["Subject"] = "Report"
    msg.set_content("hello")
    db = sqlite3.connect(":memory:")
    db.execute("create table t (x integer)")
    db.executemany("insert into t values (?)", [(1,), (2,), (3,)])
    total = db.execute("select sum(x) from t").fetchone()[0]
    rows = list(csv.reader(io.StringIO("a,b\\n1,2\\n")))
    doubled = await asyncio.gather(*(_twice(i) for i in range(3)))
    return {
        "winter": str(when.utcoffset()),
        "summer": str(summer.utcoffset()),
        "zones": len(zoneinfo.available_timezones()) > 300,
        "subject": msg["Subject"],
        "mime": MIMEText("x").get_content_type(),
        "addr": email.utils.parseaddr("Ada <ada@example.org>")[1],
        "sqlite": total,
        "csv": rows,
        "decimal": str(decimal.Decimal("1.10") + decimal.Decimal("2.20")),
        "mean": statistics.mean([1, 2, 3, 4]),
        "template": string.Template("$x!").substitute(x="hi"),
        "wrap": textwrap.wrap("aaa bbb", 3),
        "quote": urllib.parse.quote("a b"),
        "html": html.escape("<b>"),
        "xml": ET.fromstring("<a><b/></a>")[0].tag,
        "minidom": xml.dom.minidom.parseString("<r/>").documentElement.tagName,
        "async": doubled,
    }
'''


def test_zoneinfo_asyncio_email_sqlite_and_the_rest_work_in_a_skill(
    python_executor: PythonExecutor, tmp_path: Path
) -> None:
    folder = _folder(tmp_path / "sk", {"skill.py": STDLIB_SKILL})
    out = _run(python_executor, folder)
    assert out == {
        "winter": "-1 day, 19:00:00",
        "summer": "-1 day, 20:00:00",
        "zones": True,
        "subject": "Report",
        "mime": "text/plain",
        "addr": "ada@example.org",
        "sqlite": 6,
        "csv": [["a", "b"], ["1", "2"]],
        "decimal": "3.30",
        "mean": 2.5,
        "template": "hi!",
        "wrap": ["aaa", "bbb"],
        "quote": "a%20b",
        "html": "&lt;b&gt;",
        "xml": "b",
        "minidom": "r",
        "async": [0, 2, 4],
    }


def test_asyncio_run_works_in_a_plain_run(python_executor: PythonExecutor, tmp_path: Path) -> None:
    src = (
        "import asyncio\n"
        "async def work(n):\n"
        "    await asyncio.sleep(0.001)\n"
        "    return [i * n for i in range(3)]\n"
        "def run(n: int) -> list[int]:\n"
        "    return asyncio.run(asyncio.wait_for(work(n), timeout=1))\n"
    )
    folder = _folder(tmp_path / "sk", {"skill.py": src})
    assert _run(python_executor, folder, {"n": 5}) == [0, 5, 10]


def test_an_unknown_zone_is_the_skills_error(
    python_executor: PythonExecutor, tmp_path: Path
) -> None:
    folder = _folder(tmp_path / "sk", {"skill.py": STDLIB_SKILL})
    with pytest.raises(ExecutionError, match="No time zone found with key Mars/Olympus"):
        python_executor.execute(folder_request(folder, {"zone": "Mars/Olympus"}))


def test_the_runner_lists_its_modules() -> None:
    from bastion.sandbox.python_skill import runner_modules
    from bastion.sandbox.runner_build import allowed_modules

    listed = runner_modules()
    assert {"zoneinfo", "asyncio", "email", "json", "bastion_sdk"} <= set(listed)
    assert "socket" not in listed and "threading" not in listed
    assert set(listed) <= set(allowed_modules()) | {"sqlite3", "bz2", "lzma"} | {
        "string.templatelib",
        "annotationlib",
    }


def test_the_host_never_imports_the_skill(tmp_path: Path, python_executor: PythonExecutor) -> None:
    """The skill's top level tries to leave a mark on the host; discovery and a call run it
    only in the guest, where the host path does not exist."""
    marker = tmp_path / "host-marker"
    src = (
        f"try:\n    open({str(marker)!r}, 'w').write('ran on the host')\n"
        "except OSError:\n    pass\n"
        "def run() -> int:\n    '''Mark.'''\n    return 1\n"
    )
    pack = tmp_path / "pack"
    _folder(
        pack,
        {
            "bastion-pack.toml": 'name = "m"\nversion = "1.0.0"\nskills = ["mark"]\n',
            "mark/skill.toml": (
                'name = "mark"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
            ),
            "mark/skill.py": src,
        },
    )
    from bastion.kernel import Kernel
    from bastion.policy import load_policy

    kernel = Kernel(
        load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'),
        pack_paths=[pack],
        entry_points=False,
        environ={},
    )
    try:
        assert not kernel.problems, kernel.problems
        assert kernel.invoke("mark", {}).output == 1
    finally:
        kernel.close()
    assert not marker.exists()


def test_a_packs_shared_modules_are_importable_and_part_of_the_schema_key(
    tmp_path: Path,
) -> None:
    """``_shared/`` beside bastion-pack.toml is importable by every skill of the pack, shows in
    tracebacks as ``_shared/...``, and an edit there derives the schema afresh."""
    from bastion.kernel import Kernel
    from bastion.policy import load_policy

    pack = _folder(
        tmp_path / "pack",
        {
            "bastion-pack.toml": 'name = "s"\nversion = "1.0.0"\nskills = ["one"]\n',
            "_shared/common.py": "Unit = str\ndef boom():\n    raise ValueError('shared boom')\n",
            "one/skill.toml": (
                'name = "one"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
            ),
            "one/skill.py": (
                "import common\ndef run(x: common.Unit, fail: bool = False) -> str:\n"
                "    '''Echo.'''\n    if fail:\n        common.boom()\n    return x\n"
            ),
        },
    )

    def kernel() -> Kernel:
        return Kernel(
            load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'),
            pack_paths=[pack],
            entry_points=False,
            environ={},
        )

    k = kernel()
    try:
        st = k.skill("one")
        assert st is not None, k.problems
        assert st.skill.input_schema["properties"]["x"] == {"type": "string"}
        assert k.invoke("one", {"x": "hi"}).output == "hi"
        failed = k.invoke("one", {"x": "hi", "fail": True})
        assert failed.error is not None
        assert (
            failed.error.message == "ValueError: shared boom (_shared/common.py, line 3, in boom)"
        )
    finally:
        k.close()
    (pack / "_shared" / "common.py").write_text("Unit = int\n")
    k = kernel()
    try:
        st = k.skill("one")
        assert st is not None and st.skill.input_schema["properties"]["x"] == {"type": "integer"}
    finally:
        k.close()


def test_links_in_the_skill_folder_are_never_read_on_the_host(tmp_path: Path) -> None:
    """A ``.py`` link to /dev/zero or to a host file is skipped when the folder is hashed for
    the schema memo, and the guest cannot follow it out of the folder."""
    from bastion.kernel import Kernel
    from bastion.policy import load_policy

    secret = tmp_path / "host-secret.py"
    secret.write_text("TOKEN = 'host only'\n")
    pack = _folder(
        tmp_path / "pack",
        {
            "bastion-pack.toml": 'name = "l"\nversion = "1.0.0"\nskills = ["linky"]\n',
            "linky/skill.toml": (
                'name = "linky"\nversion = "1.0.0"\nruntime = "python"\nentry = "skill.py"\n'
            ),
            "linky/skill.py": (
                "def run() -> str:\n    '''Try the links.'''\n    out = []\n"
                "    for mod in ('zeros', 'leak'):\n"
                "        try:\n            __import__(mod)\n            out.append(mod + ':read')\n"
                "        except Exception as e:\n"
                "            out.append(mod + ':' + type(e).__name__)\n"
                "    return ','.join(out)\n"
            ),
        },
    )
    (pack / "linky" / "zeros.py").symlink_to("/dev/zero")
    (pack / "linky" / "leak.py").symlink_to(secret)
    kernel = Kernel(
        load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'),
        pack_paths=[pack],
        entry_points=False,
        environ={},
    )
    try:
        assert not kernel.problems, kernel.problems
        out = kernel.invoke("linky", {}).output
        assert "zeros:read" not in out and "leak:read" not in out, out
    finally:
        kernel.close()
