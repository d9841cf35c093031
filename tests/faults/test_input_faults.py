"""Every input gets a typed answer: what the JSON decoder, the encoder or UTF-8 cannot take is
``INVALID_INPUT`` with the position and the reason, through the embedding API (Python objects,
text and bytes), the Agent's tool calls and the CLI (``--input``, ``@FILE``, stdin)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion import Kernel, hookimpl, load_policy, native_skill
from bastion.agent import Agent
from bastion.models import AnthropicModel
from tests.llm.fake_anthropic import FakeAnthropic, Reply, text, tool_use

OBJ = {"type": "object"}


@native_skill(name="echo", version="1.0.0", description="Echo.", input_schema=OBJ)
def echo(**kw: Any) -> dict[str, Any]:
    return {"keys": sorted(kw)}


class Skills:
    @hookimpl
    def bastion_skills(self) -> list[Any]:
        return [echo]


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(
        load_policy(text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'),
        plugins=[Skills()],
        entry_points=False,
    )
    yield k
    k.close()


def refused(k: Kernel, value: Any) -> str:
    res = k.invoke("echo", value)
    assert res.error is not None, res
    assert res.error.code == "INVALID_INPUT", res.error
    return res.error.message


# -- embedding: Python objects ----------------------------------------------------------------


class TestPythonValues:
    def test_lone_surrogate_in_a_value(self, kernel: Kernel) -> None:
        msg = refused(kernel, {"a": {"b": "ok\ud800"}})
        assert "value['a']['b']" in msg and "lone surrogate" in msg and "character 2" in msg

    def test_lone_surrogate_in_a_key(self, kernel: Kernel) -> None:
        msg = refused(kernel, {"\udcff": 1})
        assert "lone surrogate" in msg and "key" in msg

    def test_a_set(self, kernel: Kernel) -> None:
        assert "set" in refused(kernel, {"a": {1, 2}})

    def test_nan_and_infinity(self, kernel: Kernel) -> None:
        assert "nan" in refused(kernel, {"a": float("nan")})
        assert "inf" in refused(kernel, {"a": [float("-inf")]})

    def test_an_integer_of_thousands_of_digits(self, kernel: Kernel) -> None:
        msg = refused(kernel, {"n": [10**5000]})
        assert "value['n'][0]" in msg and "digits" in msg

    def test_nesting_past_the_limit(self, kernel: Kernel) -> None:
        deep: Any = 1
        for _ in range(200):
            deep = [deep]
        assert "nested" in refused(kernel, {"d": deep})

    def test_a_value_that_refers_to_itself(self, kernel: Kernel) -> None:
        loop: list[Any] = []
        loop.append(loop)
        assert "refers to itself" in refused(kernel, {"l": loop})


# -- embedding: JSON text and bytes -------------------------------------------------------------


class TestJSONText:
    def test_invalid_utf8_names_the_byte(self, kernel: Kernel) -> None:
        msg = refused(kernel, b'{"a": "x\xff"}')
        assert "byte 8" in msg and "UTF-8" in msg

    def test_lone_surrogate_escape_names_the_position(self, kernel: Kernel) -> None:
        msg = refused(kernel, '{"a":\n "\\ud800x"}')
        assert "line 2 column 3" in msg and "surrogate" in msg

    def test_a_whole_surrogate_pair_is_fine(self, kernel: Kernel) -> None:
        assert kernel.invoke("echo", '{"\\ud83d\\ude00": 1}').ok

    def test_a_raw_lone_surrogate_character(self, kernel: Kernel) -> None:
        assert "surrogate" in refused(kernel, '{"a": "\udc80"}')

    def test_a_long_integer_names_its_position(self, kernel: Kernel) -> None:
        msg = refused(kernel, '{"n": ' + "7" * 5000 + "}")
        assert "5000 digits" in msg and "line 1 column 7" in msg

    def test_long_digits_inside_a_string_are_text(self, kernel: Kernel) -> None:
        assert kernel.invoke("echo", json.dumps({"n": "7" * 5000})).ok

    def test_nesting_past_the_decoder_names_the_position(self, kernel: Kernel) -> None:
        msg = refused(kernel, '{"d": ' + "[" * 5000 + "]" * 5000 + "}")
        assert "nested" in msg and "line 1 column" in msg

    @settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
    def test_any_text_or_bytes_is_answered_with_a_type(self, kernel: Kernel, junk: Any) -> None:
        res = kernel.invoke("echo", junk)
        assert res.ok or (res.error is not None and res.error.code == "INVALID_INPUT"), res

    @settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        st.recursive(
            st.one_of(
                st.none(),
                st.booleans(),
                st.floats(),
                st.integers(),
                st.text(st.characters(codec=None), max_size=5),
                st.binary(max_size=3),
            ),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=3), inner, max_size=3)
                | st.frozensets(st.integers(), max_size=2)
            ),
            max_leaves=10,
        )
    )
    def test_any_python_value_is_answered_with_a_type(self, kernel: Kernel, value: Any) -> None:
        res = kernel.invoke("echo", {"v": value})
        assert res.ok or (res.error is not None and res.error.code == "INVALID_INPUT"), res


# -- the Agent's tool calls ---------------------------------------------------------------------

DEEP: Any = 1
for _ in range(80):
    DEEP = [DEEP]


@pytest.mark.parametrize(
    "args, why",
    [({"d": DEEP}, "nested"), ({"d": [DEEP, {"x": DEEP}]}, "nested")],
)
def test_agent_tool_calls_get_typed_answers(kernel: Kernel, args: Any, why: str) -> None:
    with FakeAnthropic() as fake:
        fake.script(Reply([tool_use("echo", args, "c1")]), Reply([text("ok")]))
        model = AnthropicModel("claude-sonnet-5-5", api_key="k", base_url=fake.base_url)
        run = Agent(kernel, model=model).run("go")
        assert run.stop_reason == "end_turn"
        (res,) = fake.requests[1].body["messages"][-1]["content"]
    assert res["is_error"] is True
    assert res["content"].startswith("INVALID_INPUT: ") and why in res["content"]


# -- the CLI ------------------------------------------------------------------------------------


def cli(
    *args: str | bytes, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "bastion.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    pol = tmp_path / "bastion.toml"
    pol.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    return pol


@pytest.mark.parametrize(
    "spec, stdin, why",
    [
        ("@/dev/zero", b"", "over the 1048576-byte input limit"),
        ("-", b'{"a": "\xc3"}', "not valid UTF-8"),
        ("@-", b"[" * 5000, "nested"),
        ("-", b"x" * (2 << 20), "over the 1048576-byte input limit"),
        ('{"n": ' + "1" * 4400 + "}", b"", "4400 digits"),
        ('{"a": "\\udfff"}', b"", "surrogate"),
        ("@/nonexistent/in.json", b"", "cannot read input file"),
        ("@/", b"", "is a directory"),
    ],
)
def test_cli_input_paths_exit_2_with_a_message(
    policy: Path, spec: str, stdin: bytes, why: str
) -> None:
    p = cli("--policy", str(policy), "run", "greet", "--input", spec, stdin=stdin)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert why in p.stderr and "Traceback" not in p.stderr


def test_cli_deep_input_file_exits_2(policy: Path, tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    p = cli("--policy", str(policy), "run", "greet", "--input", f"@{deep}")
    assert p.returncode == 2 and "nested" in p.stderr and "Traceback" not in p.stderr


def test_cli_invalid_utf8_in_argv_exits_2(policy: Path) -> None:
    p = cli("--policy", str(policy), "run", "greet", "--input", b'{"a": "\xff"}')
    assert p.returncode == 2 and "surrogate" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe", b"a = [" * 3000, b"[x]\n" * 70_000, b"a = 1\na = 2\n"],
    ids=["not-utf8", "deep", "huge", "duplicate"],
)
def test_cli_bad_policy_files_exit_2(tmp_path: Path, content: bytes) -> None:
    pol = tmp_path / "bad.toml"
    pol.write_bytes(content)
    p = cli("--policy", str(pol), "policy", "check")
    assert p.returncode == 2 and "bad.toml" in p.stderr and "Traceback" not in p.stderr


def test_cli_policy_that_is_a_device_exits_2() -> None:
    p = cli("--policy", "/dev/zero", "policy", "check")
    assert p.returncode == 2 and "Traceback" not in p.stderr
