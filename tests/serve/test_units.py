"""The serving pieces on their own: the frame scan against a real parser, annotations from real
grants, policy tokens, and ``Kernel.ainvoke`` cancellation stopping a real guest."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion import Kernel, load_policy
from bastion.audit import read_audit
from bastion.errors import PolicyError
from bastion.serve import (
    LOCAL_CALLER,
    PolicyTokenVerifier,
    ToolCatalog,
    annotations_for,
    frame_problem,
)
from bastion.serve.auth import caller_from_token
from tests.sandbox.guestbuild import GUESTS, build_c, build_wat

json_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=40,
)


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


class TestFrameScan:
    @given(json_values, st.integers(min_value=1, max_value=8))
    def test_depth_verdict_matches_the_parsed_depth(self, value: Any, limit: int) -> None:
        """Brackets inside strings (with escaped quotes) never count; real nesting always does."""
        data = json.dumps(value).encode()
        problem = frame_problem(data, max_bytes=10**9, max_depth=limit)
        assert (problem is not None) == (_depth(value) > limit), (data, problem)

    def test_size_is_checked_first(self) -> None:
        assert frame_problem(b"[]" * 10, max_bytes=5) == (
            "message of 20 bytes is over the 5-byte limit"
        )


def _pack(root: Path) -> Path:
    echo = build_c(GUESTS / "echo.c")
    specs = {
        "plain": "",
        "reader": '[[permissions.filesystem]]\npath = "/data"\naccess = "read"\n',
        "writer": '[[permissions.filesystem]]\npath = "/data"\naccess = "write"\n',
        "net": '[permissions]\nnetwork = ["https://api.example.com"]\n',
    }
    for name, perms in specs.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "skill.wasm").write_bytes(echo)
        (d / "skill.toml").write_text(
            f'name = "{name}"\nversion = "1.0.0"\ndescription = "{name}"\nruntime = "wasm"\n'
            f'entry = "skill.wasm"\ninput_schema = {{ type = "object" }}\n{perms}'
        )
    (root / "loop").mkdir()
    (root / "loop" / "skill.wasm").write_bytes(build_wat(GUESTS / "loop.wat"))
    (root / "loop" / "skill.toml").write_text(
        'name = "loop"\nversion = "1.0.0"\ndescription = "loop"\nruntime = "wasm"\n'
        'entry = "skill.wasm"\ninput_schema = { type = "object" }\n[limits]\ntimeout_ms = 30000\n'
    )
    (root / "sly").mkdir()
    (root / "sly" / "skill.wasm").write_bytes(echo)
    (root / "sly" / "skill.toml").write_text(
        'name = "sly"\nversion = "1.0.0"\nruntime = "wasm"\nentry = "skill.wasm"\n'
        'description = "Safe\\u001b[2J tool\\u202e\\U000E0049\\U000E0047\\u200b."\n'
        'input_schema = { type = "object" }\n'
    )
    (root / "bastion-pack.toml").write_text(
        'name = "units"\nversion = "1.0.0"\n'
        'skills = ["plain", "reader", "writer", "net", "loop", "sly"]\n'
    )
    return root


@pytest.fixture
def kernel(tmp_path: Path) -> Any:
    data = tmp_path / "data"
    data.mkdir()
    pol = load_policy(
        text=f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
        f'[[mounts]]\nguest = "/data"\nhost = "{data}"\naccess = "write"\n'
        '[network]\nallow = ["https://api.example.com"]\n'
    )
    k = Kernel(pol, pack_paths=[_pack(tmp_path / "pack")], entry_points=False)
    yield k
    k.close()


def test_annotations_follow_the_enforced_grant(kernel: Kernel) -> None:
    got = {}
    for name in ("plain", "reader", "writer", "net"):
        status = kernel.skill(name)
        assert status is not None and status.usable, name
        a = annotations_for(status)
        got[name] = (a.read_only_hint, a.destructive_hint, a.open_world_hint)
    assert got == {
        "plain": (True, False, False),
        "reader": (True, False, False),  # the policy mount is writable, the grant is not
        "writer": (False, True, False),
        "net": (True, False, True),
    }
    assert {t.name for t in ToolCatalog(kernel).tools(LOCAL_CALLER)} >= set(got)


class TestPolicyTokens:
    def test_hashed_and_env_tokens_map_to_their_callers(self) -> None:
        digest = hashlib.sha256(b"first-token-0123456789").hexdigest()
        pol = load_policy(
            text="[serve]\n"
            f'[[serve.tokens]]\nname = "a"\ntenant = "t1"\nroles = ["r"]\nsha256 = "{digest}"\n'
            '[[serve.tokens]]\nname = "b"\ntenant = "t2"\nenv = "TOK_B"\n'
            '[[serve.tokens]]\nname = "c"\nenv = "TOK_UNSET"\n'
        )
        v = PolicyTokenVerifier.from_policy(pol, environ={"TOK_B": "second-token-abcdefgh"})
        assert v.problems and "TOK_UNSET" in v.problems[0]

        async def check() -> None:
            a = await v.verify_token("first-token-0123456789")
            b = await v.verify_token("second-token-abcdefgh")
            assert a is not None and b is not None
            assert caller_from_token(a).tenant == "t1" and caller_from_token(a).roles == ("r",)
            assert caller_from_token(b).name == "b" and caller_from_token(b).tenant == "t2"
            assert "first-token" not in a.token  # the token itself is not carried on
            assert await v.verify_token("first-token-012345678") is None
            assert await v.verify_token("") is None

        anyio.run(check)

    def test_a_short_env_token_is_refused(self) -> None:
        pol = load_policy(text='[serve]\n[[serve.tokens]]\nname = "a"\nenv = "T"\n')
        with pytest.raises(PolicyError, match="shorter than 16"):
            PolicyTokenVerifier.from_policy(pol, environ={"T": "short"})

    @pytest.mark.parametrize(
        ("entry", "message"),
        [
            ('token = "plain-secret-value"', "plain 'token' is never stored"),
            ("", "needs exactly one of"),
            ('env = "A"\nsha256 = "' + "0" * 64 + '"', "needs exactly one of"),
            ('sha256 = "NOTHEX"', "sha256"),
        ],
    )
    def test_bad_token_entries_are_refused_without_echoing_secrets(
        self, entry: str, message: str
    ) -> None:
        with pytest.raises(PolicyError) as err:
            load_policy(text=f'[serve]\n[[serve.tokens]]\nname = "a"\n{entry}\n')
        assert message in str(err.value)
        assert "plain-secret-value" not in str(err.value)


def test_cancelling_ainvoke_stops_the_guest(kernel: Kernel, tmp_path: Path) -> None:
    """Thread mode: the epoch callback sees the cancel event and traps; the audit says
    CANCELLED long before the 30 s limit, and closing the kernel finds no call still running."""

    async def body() -> None:
        task = asyncio.ensure_future(kernel.ainvoke("loop", {}))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    anyio.run(body)
    kernel.audit.close()
    recs = [r for r in read_audit(tmp_path / "audit.jsonl") if r.get("skill") == "loop"]
    assert recs and recs[-1]["outcome"] == "CANCELLED"
    assert recs[-1]["duration_ms"] < 10_000
    t0 = time.monotonic()
    kernel.close()  # waits for the pool: returns at once because no guest is left running
    assert time.monotonic() - t0 < 10


def test_descriptions_reach_clients_cleaned(kernel: Kernel) -> None:
    """A pack's description with a terminal escape, a bidi override, tag characters and a
    zero-width space reaches the client as plain text (cleaned once, at discovery)."""
    status = kernel.skill("sly")
    assert status is not None and status.skill.cleaned  # discovery saw and removed them
    (tool,) = [t for t in ToolCatalog(kernel).tools(LOCAL_CALLER) if t.name == "sly"]
    assert tool.description == "Safe tool."


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_log_swapped_for_a_device_or_fifo_before_its_first_record_never_hangs(
    tmp_path: Path, kind: str
) -> None:
    """Found serving: the hash chain reads the log's tail at the first record; a path another
    process swapped for ``/dev/full`` (endless reads) or a FIFO (a blocking open) hung the
    event loop that wrote the record. Now the write returns and the log reports failing."""
    import os
    import threading

    from bastion.audit import AuditLog

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, retry_s=0.05)
    swapped = tmp_path / "swap"
    if kind == "device":
        swapped.symlink_to("/dev/full")
    else:
        os.mkfifo(swapped)
    os.replace(swapped, path)
    writer = threading.Thread(target=log.write, args=("decision",), kwargs={"action": "x"})
    writer.start()
    writer.join(10)
    assert not writer.is_alive()
    log.flush(timeout=10)
    status = log.status()
    assert status["failing"] is True or status["writable"] is False
    path.unlink()
    deadline = time.monotonic() + 10
    while log.status()["failing"] and time.monotonic() < deadline:
        log.flush(timeout=1)
    assert not log.status()["failing"]
    log.close()
    assert [r["action"] for r in read_audit(path)] == ["x"]  # kept, then written


def test_the_sdk_tracing_layer_stays_only_when_a_tracer_provider_is_installed(
    tmp_path: Path,
) -> None:
    """No provider (OpenTelemetry's placeholder): the SDK's no-op span middleware is dropped;
    a real provider keeps it, so an operator's traces still see every request."""
    from mcp.server._otel import OpenTelemetryMiddleware
    from opentelemetry import trace

    from bastion.serve.holder import KernelHolder
    from bastion.serve.server import BastionServer, tracing_installed

    class Provider(trace.TracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
            return trace.NoOpTracer()

    assert not tracing_installed(trace.get_tracer_provider())  # nothing installed in tests
    assert not tracing_installed(trace.NoOpTracerProvider())
    assert tracing_installed(Provider())
    policy = tmp_path / "bastion.toml"
    policy.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    holder = KernelHolder.from_args(str(policy), [_pack(tmp_path / "pack")])
    try:
        chain = BastionServer(holder).server.middleware
        assert not any(isinstance(m, OpenTelemetryMiddleware) for m in chain)
        assert len(chain) == 2  # Bastion's request-id binding and the request-state boundary
    finally:
        holder.close()
