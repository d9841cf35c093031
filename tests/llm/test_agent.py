"""The tool loop: tools offered, tool results sent back, parallel calls, errors and limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bastion.agent import (
    Agent,
    AgentEvent,
    RunFinished,
    StepFinished,
    StopReason,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolHost,
)
from bastion.errors import ErrorCode
from bastion.models import AnthropicModel, ModelError, ScriptedModel, ScriptedTurn, Usage
from bastion.pricing import Price, PriceTable
from bastion.result import InvocationContext, ToolResult
from bastion.tokens import tool_pairs_intact
from tests.llm.fake_anthropic import ErrorReply, FakeAnthropic, Reply, StreamError, text, tool_use
from tests.llm.host import FunctionHost

ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}


def claude(fake: FakeAnthropic, **kw: Any) -> AnthropicModel:
    return AnthropicModel("claude-sonnet-5-5", api_key="k", base_url=fake.base_url, **kw)


def results_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    assert message["role"] == "user"
    return [b for b in message["content"] if b["type"] == "tool_result"]


def test_a_kernel_shaped_host_satisfies_the_protocol(host: FunctionHost) -> None:
    assert isinstance(host, ToolHost)


def test_single_tool_use_through_the_sdk(fake: FakeAnthropic, host: FunctionHost) -> None:
    host.add("add", lambda a, b: {"sum": a + b}, description="Add two integers", schema=ADD_SCHEMA)
    host.add("echo", lambda text: text)
    fake.script(
        Reply([text("Adding."), tool_use("add", {"a": 2, "b": 3}, "tu1")]),
        Reply([text("The sum is 5.")], input_tokens=30, output_tokens=7),
    )
    agent = Agent(host, model=claude(fake), system="You are terse.")
    run = agent.run("What is 2+3?")
    assert run.stop_reason == StopReason.END_TURN and run.ok
    assert run.text == "The sum is 5."
    assert (run.usage.input_tokens, run.usage.output_tokens) == (40, 12)
    assert len(run.steps) == 2 and run.tool_calls == 1
    first, second = (r.body for r in fake.requests)
    # exactly the host's tools are offered, as name/description/input_schema
    assert first["tools"] == [
        {"name": "add", "description": "Add two integers", "input_schema": ADD_SCHEMA},
        {
            "name": "echo",
            "description": "the echo tool",
            "input_schema": {"type": "object", "properties": {}},
        },
    ]
    # the tool result comes back as data in a tool_result block; the system prompt is unchanged
    assert second["system"] == first["system"] == "You are terse."
    assert second["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Adding."},
            {"type": "tool_use", "id": "tu1", "name": "add", "input": {"a": 2, "b": 3}},
        ],
    }
    assert second["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": '{"sum": 5}'}],
    }
    assert host.calls[0].name == "add" and host.calls[0].arguments == {"a": 2, "b": 3}
    assert tool_pairs_intact(run.messages)
    assert run.messages == [
        *second["messages"],
        {"role": "assistant", "content": [{"type": "text", "text": "The sum is 5."}]},
    ]


def test_parallel_tools_run_together_and_keep_order(host: FunctionHost) -> None:
    released = asyncio.Event()
    finished: list[str] = []

    async def slow(tag: str) -> str:
        # completes only once 'fast' ran: a sequential loop would never get there
        await asyncio.wait_for(released.wait(), timeout=10)
        finished.append(tag)
        return f"slow:{tag}"

    async def fast(tag: str) -> str:
        finished.append(tag)
        released.set()
        return f"fast:{tag}"

    host.add("slow", slow).add("fast", fast)
    model = ScriptedModel(
        [
            ScriptedTurn(
                tool_calls=[("slow", {"tag": "1"}), ("slow", {"tag": "2"}), ("fast", {"tag": "3"})]
            ),
            "done",
        ]
    )
    events: list[AgentEvent] = []
    run = Agent(host, model=model, parallel_tools=3, on_event=events.append).run("go")
    assert run.stop_reason == "end_turn"
    assert finished[0] == "3"
    contents = [b["content"] for b in results_of(run.messages[2])]
    assert contents == ['"slow:1"', '"slow:2"', '"fast:3"']
    done_order = [e.name for e in events if isinstance(e, ToolCallFinished)]
    assert done_order[0] == "fast"
    # each call got its own invocation id
    ids = {c.context.invocation_id for c in host.calls if c.context}
    assert len(ids) == 3


def test_parallelism_is_bounded(host: FunctionHost) -> None:
    active = 0
    peak = 0

    async def tool(i: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(3):
            await asyncio.sleep(0)
        active -= 1
        return i

    host.add("t", tool)
    model = ScriptedModel([ScriptedTurn(tool_calls=[("t", {"i": i}) for i in range(8)]), "ok"])
    run = Agent(host, model=model, parallel_tools=2).run("go")
    assert peak == 2
    assert [b["content"] for b in results_of(run.messages[2])] == [str(i) for i in range(8)]


def test_failing_tool_gives_is_error_with_scrubbed_message(
    fake: FakeAnthropic, host: FunctionHost
) -> None:
    def boom() -> None:
        raise ValueError("bad \x1b[31mred\x1b[0m value\x00 " + "x" * 5000)

    host.add("boom", boom)
    fake.script(Reply([tool_use("boom", {}, "b1")]), Reply([text("It failed.")]))
    run = Agent(host, model=claude(fake)).run("try it")
    block = results_of(fake.requests[1].body["messages"][2])[0]
    assert block["is_error"] is True
    assert block["content"].startswith("SKILL_ERROR: ValueError: bad red value ")
    assert "\x1b" not in block["content"] and "\x00" not in block["content"]
    assert len(block["content"]) <= 1100
    assert run.stop_reason == "end_turn"


def test_a_host_that_raises_becomes_internal_without_details(host: FunctionHost) -> None:
    class Broken(FunctionHost):
        async def ainvoke(
            self,
            name: str,
            arguments: Any,
            *,
            context: InvocationContext | None = None,
            approver: Any = None,
        ) -> ToolResult:
            raise RuntimeError("/home/secret/path exploded")

    broken = Broken().add("x", lambda: 1)
    model = ScriptedModel([ScriptedTurn(tool_calls=[("x", {})]), "ok"])
    run = Agent(broken, model=model).run("go")
    block = results_of(run.messages[2])[0]
    assert block["is_error"] and block["content"].startswith("INTERNAL: ")
    assert "/home/secret" not in block["content"]


def test_denied_approval_is_reported_to_the_model(host: FunctionHost) -> None:
    class NoApprover:
        def approve(self, request: Any) -> bool:
            return False

    approver = NoApprover()

    def delete_all(path: str) -> ToolResult:
        return ToolResult.failure(
            ErrorCode.APPROVAL_REQUIRED, f"calling 'delete_all' on {path!r} was not approved"
        )

    host.add("delete_all", delete_all)
    model = ScriptedModel(
        [ScriptedTurn(tool_calls=[("delete_all", {"path": "/data"})]), "Understood, not deleting."]
    )
    run = Agent(host, model=model, approver=approver).run("clean up")
    block = results_of(run.messages[2])[0]
    assert block == {
        "type": "tool_result",
        "tool_use_id": block["tool_use_id"],
        "content": "APPROVAL_REQUIRED: calling 'delete_all' on '/data' was not approved",
        "is_error": True,
    }
    assert host.calls[0].approver is approver
    assert run.text == "Understood, not deleting."


def test_unoffered_tool_is_not_called(host: FunctionHost) -> None:
    host.add("ok", lambda: 1)
    host.funcs["hidden"] = lambda: "should never run"
    model = ScriptedModel([ScriptedTurn(tool_calls=[("hidden", {})]), "fine"])
    run = Agent(host, model=model).run("go")
    block = results_of(run.messages[2])[0]
    assert block["is_error"] and block["content"].startswith("NOT_FOUND: ")
    assert host.calls == []


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limit_error"), (529, "overloaded_error")])
def test_rate_limit_and_overload_are_retried(
    fake: FakeAnthropic, host: FunctionHost, status: int, kind: str
) -> None:
    fake.script(ErrorReply(status, kind, retry_after_ms=10), Reply([text("hi")]))
    run = Agent(host, model=claude(fake)).run("hello")
    assert run.stop_reason == "end_turn" and run.text == "hi"
    assert len(fake.requests) == 2


def test_mid_stream_error_ends_the_run_cleanly(fake: FakeAnthropic, host: FunctionHost) -> None:
    host.add("add", lambda a, b: a + b, schema=ADD_SCHEMA)
    fake.script(Reply([tool_use("add", {"a": 1, "b": 1})]), StreamError(partial="The answ"))
    events: list[AgentEvent] = []
    run = Agent(host, model=claude(fake, max_retries=0), on_event=events.append).run("1+1?")
    assert run.stop_reason == StopReason.MODEL_ERROR
    assert run.error is not None and run.error.code == "MODEL_OVERLOADED"
    assert len(run.messages) == 3 and tool_pairs_intact(run.messages)
    assert any(isinstance(e, TextDelta) and e.step == 2 for e in events)
    assert isinstance(events[-1], RunFinished)


def test_events_stream_in_order(host: FunctionHost) -> None:
    host.add("add", lambda a, b: a + b, schema=ADD_SCHEMA)
    model = ScriptedModel(
        [ScriptedTurn("Let me add.", tool_calls=[("add", {"a": 1, "b": 2})]), "It is 3."],
        chunk_size=4,
    )
    seen: list[AgentEvent] = []

    async def go() -> list[AgentEvent]:
        agent = Agent(host, model=model, on_event=seen.append)
        return [e async for e in agent.astream("add")]

    events = asyncio.run(go())
    assert events == seen
    kinds = [type(e).__name__ for e in events]
    assert kinds[-1] == "RunFinished"
    assert (
        kinds.index("ToolCallStarted")
        < kinds.index("ToolCallFinished")
        < kinds.index("StepFinished")
    )
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Let me add.It is 3."
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    assert (started.name, started.arguments) == ("add", {"a": 1, "b": 2})
    finished = next(e for e in events if isinstance(e, ToolCallFinished))
    assert finished.result.ok and finished.result.output == 3
    steps = [e.record for e in events if isinstance(e, StepFinished)]
    assert [s.tool_calls for s in steps] == [1, 0]


def test_a_failing_event_callback_does_not_break_the_run(host: FunctionHost) -> None:
    def bad(event: AgentEvent) -> None:
        raise RuntimeError("ui crashed")

    run = Agent(host, model=ScriptedModel(["hi"]), on_event=bad).run("x")
    assert run.stop_reason == "end_turn"


# -- limits -------------------------------------------------------------------------------


def looping(n_calls: int = 1, usage: Usage | None = None) -> ScriptedModel:
    return ScriptedModel(
        [ScriptedTurn(tool_calls=[("t", {})] * n_calls, usage=usage)], repeat_last=True
    )


def test_max_steps(host: FunctionHost) -> None:
    host.add("t", lambda: "again")
    run = Agent(host, model=looping(), max_steps=3).run("loop")
    assert run.stop_reason == StopReason.MAX_STEPS
    assert len(run.steps) == 3 and run.tool_calls == 3
    assert tool_pairs_intact(run.messages)
    assert run.messages[-1]["role"] == "user"


def test_max_tool_calls_skips_the_rest_and_keeps_pairs(host: FunctionHost) -> None:
    host.add("t", lambda: "ran")
    run = Agent(host, model=looping(3), max_tool_calls=5).run("loop")
    assert run.stop_reason == StopReason.MAX_TOOL_CALLS
    assert run.tool_calls == 5 and len(host.calls) == 5
    last = results_of(run.messages[-1])
    assert [b.get("is_error", False) for b in last] == [False, False, True]
    assert last[2]["content"].startswith("NOT_RUN: ")
    assert tool_pairs_intact(run.messages)


def test_input_token_budget(host: FunctionHost) -> None:
    host.add("t", lambda: 1)
    run = Agent(host, model=looping(usage=Usage(400, 10)), max_input_tokens=1000).run("x")
    assert run.stop_reason == StopReason.TOKEN_BUDGET
    assert run.usage.input_tokens <= 1000
    assert tool_pairs_intact(run.messages)


def test_output_token_budget_caps_max_tokens(host: FunctionHost) -> None:
    host.add("t", lambda: 1)
    model = looping(usage=Usage(10, 300))
    run = Agent(host, model=model, max_output_tokens_total=700, max_tokens=500).run("x")
    assert run.stop_reason == StopReason.TOKEN_BUDGET
    assert [r.max_tokens for r in model.requests] == [500, 400, 100]


def test_cost_budget(host: FunctionHost) -> None:
    host.add("t", lambda: 1)
    prices = PriceTable({"pricey": Price(input=1000.0, output=1000.0)})
    model = ScriptedModel(
        [ScriptedTurn(tool_calls=[("t", {})], usage=Usage(1000, 1000))],
        repeat_last=True,
        name="pricey",
    )
    run = Agent(host, model=model, prices=prices, max_cost_usd=5.0).run("x")
    assert run.stop_reason == StopReason.COST_BUDGET
    assert run.usage.cost_usd == pytest.approx(6.0)  # 3 steps of $2 each
    assert [s.cost_usd for s in run.steps] == pytest.approx([2.0, 2.0, 2.0])
    assert run.usage.cost_known


def test_unknown_price_is_flagged(host: FunctionHost) -> None:
    run = Agent(host, model=ScriptedModel(["hi"], name="mystery-model")).run("x")
    assert run.usage.cost_usd == 0 and not run.usage.cost_known


def test_context_budget_stops_before_calling(host: FunctionHost) -> None:
    model = ScriptedModel(["never"])
    run = Agent(host, model=model, context_budget_tokens=50, max_tokens=10).run("word " * 200)
    assert run.stop_reason == StopReason.CONTEXT_BUDGET
    assert model.requests == []


def test_old_turns_are_compacted_but_transcript_kept(host: FunctionHost) -> None:
    host.add("t", lambda: "word " * 300)
    model = looping()
    run = Agent(host, model=model, max_steps=8, context_budget_tokens=1200, max_tokens=100).run(
        "start"
    )
    assert run.stop_reason == StopReason.MAX_STEPS
    assert len(run.messages) == 17  # the full transcript
    last_sent = model.requests[-1].messages
    assert len(last_sent) < 16 and tool_pairs_intact(list(last_sent))
    assert last_sent[0]["content"][0] == {"type": "text", "text": "start"}
    assert "omitted" in last_sent[0]["content"][-1]["text"]


def test_large_tool_results_are_truncated(host: FunctionHost) -> None:
    host.add("big", lambda: "lorem ipsum " * 5000)
    events: list[AgentEvent] = []
    model = ScriptedModel([ScriptedTurn(tool_calls=[("big", {})]), "ok"])
    run = Agent(host, model=model, max_tool_result_tokens=200, on_event=events.append).run("x")
    content = results_of(run.messages[2])[0]["content"]
    assert "[truncated by Bastion:" in content and len(content) < 2000
    assert any(isinstance(e, ToolCallFinished) and e.truncated for e in events)


def test_max_tokens_with_a_cut_tool_call(host: FunctionHost) -> None:
    host.add("t", lambda: 1)
    model = ScriptedModel([ScriptedTurn(tool_calls=[("t", {})], stop_reason="max_tokens")])
    run = Agent(host, model=model).run("x")
    assert run.stop_reason == StopReason.MAX_TOKENS
    assert host.calls == [] and tool_pairs_intact(run.messages)


def test_refusal(host: FunctionHost) -> None:
    model = ScriptedModel([ScriptedTurn("I can't help with that.", stop_reason="refusal")])
    run = Agent(host, model=model).run("x")
    assert run.stop_reason == StopReason.REFUSAL and not run.ok


def test_model_error_from_script(host: FunctionHost) -> None:
    err = ModelError("MODEL_AUTH", "bad key")
    run = Agent(host, model=ScriptedModel([ScriptedTurn(error=err)])).run("x")
    assert run.stop_reason == "model_error" and run.error is err
    assert run.messages == [{"role": "user", "content": "x"}]


def test_conversation_continues_across_runs(host: FunctionHost) -> None:
    model = ScriptedModel(["first answer", "second answer"])
    agent = Agent(host, model=model)
    agent.run("one")
    run = agent.run("two")
    assert run.new_messages == 2 and len(run.messages) == 4
    assert [m["role"] for m in model.requests[1].messages] == ["user", "assistant", "user"]


def test_run_inside_a_loop_is_refused(host: FunctionHost) -> None:
    async def go() -> None:
        Agent(host, model=ScriptedModel(["x"])).run("x")

    with pytest.raises(RuntimeError, match="arun"):
        asyncio.run(go())


def test_test_model_exercises_every_tool(host: FunctionHost) -> None:
    host.add("add", lambda a, b: a + b, schema=ADD_SCHEMA)
    host.add("echo", lambda: "e")
    run = Agent(host, model="test").run("x")
    assert run.stop_reason == "end_turn"
    assert json.loads(run.text) == {"add": "0", "echo": '"e"'}
