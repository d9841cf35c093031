"""Python skills in the runner component: results, typed inputs, errors that point at the skill."""

from __future__ import annotations

import json

import pytest

from bastion.errors import ErrorCode, ExecutionError
from bastion.sandbox.python_exec import PythonExecutor, runner_error
from bastion.sandbox.runner_build import allowed_modules
from tests.python_skills.conftest import MakeSkill

pytestmark = pytest.mark.slow


def _fail(ex: PythonExecutor, req: object) -> ExecutionError:
    with pytest.raises(ExecutionError) as info:
        ex.execute(req)  # type: ignore[arg-type]
    return info.value


def test_hello_world(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    src = 'def run(name: str = "world"):\n    return {"greeting": f"hello {name}"}\n'
    out = python_executor.execute(skill(src, {"name": "Ada"}))
    assert json.loads(out) == {"greeting": "hello Ada"}


def test_typed_code_idioms_work(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    """``from __future__ import annotations``, ``ast`` and ``posixpath`` are common in typed
    code; a skill written the usual way must not trip over the sandbox's module list."""
    src = (
        "from __future__ import annotations\n"
        "import ast, posixpath\n"
        "def run(expression: str) -> dict[str, str]:\n"
        "    node = ast.parse(expression, mode='eval').body\n"
        "    return {'node': type(node).__name__, 'path': posixpath.join('/files', 'a')}\n"
    )
    out = python_executor.execute(skill(src, {"expression": "1 + 2"}))
    assert json.loads(out) == {"node": "BinOp", "path": "/files/a"}


def test_typed_inputs_and_allowed_stdlib(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    src = (
        "import datetime, decimal, hashlib, re, statistics, urllib.parse\n"
        "from collections import Counter\n"
        "def run(n: int, xs: list[float], flag: bool, tags: dict, when: str):\n"
        "    d = datetime.datetime.strptime(when, '%Y-%m-%d')\n"
        "    return {'n': n * 2, 'mean': statistics.mean(xs), 'flag': not flag,\n"
        "            'tags': sorted(tags), 'weekday': d.weekday(),\n"
        "            'sum': str(decimal.Decimal('0.1') + decimal.Decimal('0.2')),\n"
        "            'sha': hashlib.sha256(b'x').hexdigest()[:8],\n"
        "            'q': urllib.parse.quote('a b'), 'c': Counter('aab').most_common(1),\n"
        "            'utf16': 'é'.encode('utf-16').hex()}\n"
    )
    inp = {
        "n": 21,
        "xs": [1.0, 2.0, 3.0],
        "flag": False,
        "tags": {"b": 1, "a": 2},
        "when": "2024-01-01",
    }
    assert json.loads(python_executor.execute(skill(src, inp))) == {
        "n": 42,
        "mean": 2.0,
        "flag": True,
        "tags": ["a", "b"],
        "weekday": 0,
        "sum": "0.3",
        "sha": "2d711642",
        "q": "a%20b",
        "c": [["a", 2]],
        "utf16": "fffee900",
    }


def test_sdk_importable_both_ways(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    src = (
        "import bastion_sdk\nfrom bastion import sdk\n"
        "def run():\n    return sdk.http is bastion_sdk.http\n"
    )
    assert json.loads(python_executor.execute(skill(src))) is True


def test_exception_is_skill_error_with_own_traceback_only(
    python_executor: PythonExecutor, skill: MakeSkill
) -> None:
    src = (
        "import json\n\ndef helper(x):\n    return json.loads(x)\n\n"
        "def run():\n    return helper('{')\n"
    )
    err = _fail(python_executor, skill(src))
    assert err.error_code is ErrorCode.SKILL_ERROR
    assert err.message.startswith("JSONDecodeError: ")
    assert "(skill.py, line 4, in helper)" in err.message
    assert err.detail is not None
    frames = [ln for ln in err.detail.splitlines() if ln.lstrip().startswith("File ")]
    assert frames == ['  File "skill.py", line 7, in run', '  File "skill.py", line 4, in helper']
    assert "bastion_runner" not in err.detail and "json/" not in err.detail
    assert "/tmp" not in err.message + err.detail


def test_syntax_error_points_to_the_line(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    err = _fail(python_executor, skill("x = 1\n\ndef run(:\n    return 1\n"))
    assert err.error_code is ErrorCode.SKILL_ERROR
    assert err.message.startswith("SyntaxError:")
    assert "(skill.py, line 3)" in err.message
    assert err.detail is not None and "def run(:" in err.detail


def test_missing_module_names_what_is_offered(
    python_executor: PythonExecutor, skill: MakeSkill
) -> None:
    err = _fail(python_executor, skill("import yaml_like_thing\ndef run():\n    return 1\n"))
    assert err.error_code is ErrorCode.SKILL_ERROR
    assert "module 'yaml_like_thing' is not available in the Bastion sandbox" in err.message
    assert "json" in err.message and "zoneinfo" in err.message


@pytest.mark.parametrize(
    ("module", "instead"),
    [
        ("requests", "bastion_sdk.http"),
        ("socket", "bastion_sdk.http"),
        ("threading", "asyncio"),
        ("subprocess", "cannot start processes"),
        ("numpy", "pure-Python"),
    ],
)
def test_absent_module_says_what_to_use_instead(
    python_executor: PythonExecutor, skill: MakeSkill, module: str, instead: str
) -> None:
    err = _fail(python_executor, skill(f"import {module}\ndef run():\n    return 1\n"))
    assert f"module {module!r} is not available in the Bastion sandbox" in err.message
    assert instead in err.message


def test_every_allowed_module_imports(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    mods = [m for m in allowed_modules() if m != "bastion"]
    src = "".join(f"import {m}\n" for m in mods) + "def run():\n    return 'ok'\n"
    assert json.loads(python_executor.execute(skill(src))) == "ok"


def test_bad_input_names_the_argument(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    err = _fail(python_executor, skill("def run(a: int):\n    return a\n", {"b": 1}))
    assert err.error_code is ErrorCode.INVALID_INPUT
    assert "'b'" in err.message or "'a'" in err.message


def test_unserializable_result_is_invalid_output(
    python_executor: PythonExecutor, skill: MakeSkill
) -> None:
    err = _fail(python_executor, skill("def run():\n    return {'x': object()}\n"))
    assert err.error_code is ErrorCode.INVALID_OUTPUT
    assert "object" in err.message


def test_no_run_function(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    err = _fail(python_executor, skill("def main():\n    return 1\n"))
    assert err.error_code is ErrorCode.SKILL_ERROR
    assert "defines no run() function" in err.message


def test_runner_error_never_trusts_unknown_codes() -> None:
    forged = json.dumps({"code": "INTERNAL", "type": "X", "message": "m", "traceback": []})
    assert runner_error(forged).error_code is ErrorCode.SKILL_ERROR
    assert runner_error("not json").error_code is ErrorCode.SKILL_ERROR


def test_prepare_warms_the_runner(python_executor: PythonExecutor, skill: MakeSkill) -> None:
    req = skill("def run():\n    return 1\n")
    python_executor.prepare(req.entry)
    assert python_executor.execute(req) == b"1"
