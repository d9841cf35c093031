"""Models: the Anthropic SDK against the local server, retries, errors, breaker, fallback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bastion.errors import ConfigError
from bastion.models import (
    AnthropicModel,
    BreakerState,
    CircuitBreaker,
    FallbackModel,
    ModelError,
    ModelRequest,
    ModelResponse,
    ScriptedModel,
    ScriptedTurn,
    TestModel,
    TextChunk,
    complete,
    register_provider,
    resolve_model,
)
from tests.llm.fake_anthropic import ErrorReply, FakeAnthropic, Reply, StreamError, text, tool_use

REQ = ModelRequest(
    [{"role": "user", "content": "hi"}],
    system="be brief",
    tools=[{"name": "add", "description": "adds", "input_schema": {"type": "object"}}],
    max_tokens=100,
)


def model_for(fake: FakeAnthropic, **kw: Any) -> AnthropicModel:
    return AnthropicModel("claude-sonnet-5-5", api_key="test-key", base_url=fake.base_url, **kw)


async def collect(model: Any, request: ModelRequest = REQ) -> list[Any]:
    return [ev async for ev in model.stream(request)]


def test_streams_text_and_tool_use(fake: FakeAnthropic) -> None:
    fake.script(
        Reply(
            [text("Let me add those."), tool_use("add", {"a": 1, "b": [2, 3]}, "t1")],
            input_tokens=42,
            output_tokens=17,
        )
    )
    events = asyncio.run(collect(model_for(fake)))
    chunks = [e.text for e in events if isinstance(e, TextChunk)]
    assert len(chunks) > 1 and "".join(chunks) == "Let me add those."
    final = events[-1]
    assert isinstance(final, ModelResponse)
    assert final.content == [
        {"type": "text", "text": "Let me add those."},
        {"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 1, "b": [2, 3]}},
    ]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (42, 17)
    (req,) = fake.requests
    assert req.path == "/v1/messages"
    assert req.headers["authorization"] == "Bearer test-key"
    assert req.body["stream"] is True
    assert req.body["system"] == "be brief"
    assert req.body["tools"] == list(REQ.tools)
    assert req.body["max_tokens"] == 100


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limit_error"), (529, "overloaded_error")])
def test_sdk_retries_honour_retry_after_ms(fake: FakeAnthropic, status: int, kind: str) -> None:
    fake.script(ErrorReply(status, kind, retry_after_ms=10), Reply([text("fine")]))
    final = asyncio.run(complete(model_for(fake), REQ))
    assert final.content == [{"type": "text", "text": "fine"}]
    assert len(fake.requests) == 2
    assert fake.requests[1].headers.get("x-stainless-retry-count") == "1"


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (429, "rate_limit_error", "MODEL_RATE_LIMITED"),
        (529, "overloaded_error", "MODEL_OVERLOADED"),
        (500, "api_error", "MODEL_UNAVAILABLE"),
    ],
)
def test_persistent_failure_is_retryable_model_error(
    fake: FakeAnthropic, status: int, kind: str, code: str
) -> None:
    fake.script(*[ErrorReply(status, kind, "busy", retry_after_ms=10)] * 2)
    with pytest.raises(ModelError) as info:
        asyncio.run(complete(model_for(fake, max_retries=1), REQ))
    assert info.value.code == code and info.value.retryable
    assert info.value.status == status
    assert "busy" in info.value.message
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, "invalid_request_error", "MODEL_BAD_REQUEST"),
        (401, "authentication_error", "MODEL_AUTH"),
        (404, "not_found_error", "MODEL_NOT_FOUND"),
    ],
)
def test_client_errors_are_not_retried(
    fake: FakeAnthropic, status: int, kind: str, code: str
) -> None:
    fake.script(ErrorReply(status, kind, "nope"))
    with pytest.raises(ModelError) as info:
        asyncio.run(complete(model_for(fake), REQ))
    assert info.value.code == code and not info.value.retryable
    assert len(fake.requests) == 1


def test_mid_stream_error(fake: FakeAnthropic) -> None:
    fake.script(StreamError(partial="Half an ans", type="overloaded_error"))
    seen: list[Any] = []

    async def go() -> None:
        async for ev in model_for(fake).stream(REQ):
            seen.append(ev)

    with pytest.raises(ModelError) as info:
        asyncio.run(go())
    assert info.value.code == "MODEL_OVERLOADED" and info.value.retryable
    assert seen and all(isinstance(e, TextChunk) for e in seen)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_half_opens_and_closes(fake: FakeAnthropic) -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, cooldown_s=30, clock=clock)
    model = model_for(fake, max_retries=0, breaker=breaker)
    fake.script(ErrorReply(529, "overloaded_error"), ErrorReply(529, "overloaded_error"))
    for _ in range(2):
        with pytest.raises(ModelError):
            asyncio.run(complete(model, REQ))
    assert breaker.state == BreakerState.OPEN
    with pytest.raises(ModelError) as info:
        asyncio.run(complete(model, REQ))
    assert info.value.code == "MODEL_CIRCUIT_OPEN" and info.value.retryable
    assert len(fake.requests) == 2  # the open breaker made no request
    clock.now += 30
    assert breaker.state == BreakerState.HALF_OPEN
    fake.script(ErrorReply(529, "overloaded_error"))
    with pytest.raises(ModelError) as info:
        asyncio.run(complete(model, REQ))
    assert info.value.code == "MODEL_OVERLOADED"
    assert breaker.state == BreakerState.OPEN  # the failed probe re-opened it
    clock.now += 30
    fake.script(Reply([text("back")]))
    assert asyncio.run(complete(model, REQ)).content == [{"type": "text", "text": "back"}]
    assert breaker.state == BreakerState.CLOSED


def test_breaker_half_open_admits_one_probe() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=1, cooldown_s=5, clock=clock)
    b.record_failure()
    assert not b.allow()
    assert b.retry_after_s() == 5
    clock.now += 5
    assert b.allow() and not b.allow()
    b.record_success()
    assert b.allow() and b.state == BreakerState.CLOSED


def test_client_errors_do_not_trip_the_breaker(fake: FakeAnthropic) -> None:
    breaker = CircuitBreaker(threshold=1, clock=Clock())
    fake.script(ErrorReply(400, "invalid_request_error"))
    with pytest.raises(ModelError):
        asyncio.run(complete(model_for(fake, breaker=breaker), REQ))
    assert breaker.state == BreakerState.CLOSED


def test_fallback_chain_moves_on_after_persistent_failure() -> None:
    with FakeAnthropic() as a, FakeAnthropic() as b:
        a.script(*[ErrorReply(529, "overloaded_error", retry_after_ms=10)] * 2)
        b.script(Reply([text("from b")]))
        chain = FallbackModel([model_for(a, max_retries=1), model_for(b)])
        final = asyncio.run(complete(chain, REQ))
        assert final.content == [{"type": "text", "text": "from b"}]
        assert (len(a.requests), len(b.requests)) == (2, 1)
        assert b.requests[0].body["messages"] == a.requests[0].body["messages"]


def test_fallback_does_not_move_on_for_bad_requests() -> None:
    with FakeAnthropic() as a, FakeAnthropic() as b:
        a.script(ErrorReply(400, "invalid_request_error", "messages: bad"))
        with pytest.raises(ModelError) as info:
            asyncio.run(complete(FallbackModel([model_for(a), model_for(b)]), REQ))
        assert info.value.code == "MODEL_BAD_REQUEST"
        assert b.requests == []


def test_fallback_raises_last_error_when_all_fail() -> None:
    err1 = ModelError("MODEL_OVERLOADED", "one")
    err2 = ModelError("MODEL_RATE_LIMITED", "two")
    chain = FallbackModel(
        [ScriptedModel([ScriptedTurn(error=err1)]), ScriptedModel([ScriptedTurn(error=err2)])]
    )
    with pytest.raises(ModelError) as info:
        asyncio.run(complete(chain, REQ))
    assert info.value is err2


def test_fallback_never_switches_after_text_was_streamed(fake: FakeAnthropic) -> None:
    backup = ScriptedModel(["backup"])
    fake.script(StreamError())
    with pytest.raises(ModelError):
        asyncio.run(collect(FallbackModel([model_for(fake, max_retries=0), backup])))
    assert backup.requests == []


def test_scripted_model_records_and_runs_out() -> None:
    m = ScriptedModel([ScriptedTurn("calling", tool_calls=[("add", {"a": 1})]), "done"])
    first = asyncio.run(complete(m, REQ))
    assert first.stop_reason == "tool_use"
    assert first.content[1]["name"] == "add" and first.content[1]["input"] == {"a": 1}
    assert asyncio.run(complete(m, REQ)).content == [{"type": "text", "text": "done"}]
    with pytest.raises(ModelError) as info:
        asyncio.run(complete(m, REQ))
    assert info.value.code == "MODEL_SCRIPT_EXHAUSTED"
    assert len(m.requests) == 3


def test_test_model_calls_each_tool_then_summarises() -> None:
    m = TestModel()
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 3}, "s": {"type": "string"}},
        "required": ["n", "s"],
    }
    req = ModelRequest(
        [{"role": "user", "content": "go"}],
        tools=[{"name": "f", "description": "", "input_schema": schema}],
    )
    first = asyncio.run(complete(m, req))
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert use["input"] == {"n": 3, "s": "a"}
    follow = ModelRequest(
        [
            *req.messages,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": "7"}],
            },
        ],
        tools=req.tools,
    )
    second = asyncio.run(complete(m, follow))
    assert second.stop_reason == "end_turn"
    assert json.loads(second.content[0]["text"]) == {"f": "7"}


def test_resolve_model() -> None:
    m = ScriptedModel([])
    assert resolve_model(m) is m
    assert isinstance(resolve_model("test"), TestModel)
    assert resolve_model("claude-sonnet-5-5").name == "claude-sonnet-5-5"
    assert resolve_model("anthropic:claude-haiku-5-5").name == "claude-haiku-5-5"
    with pytest.raises(ConfigError, match="'gpt-9'"):
        resolve_model("gpt-9")
    with pytest.raises(ConfigError, match="'nope:x'"):
        resolve_model("nope:x")


def test_register_provider() -> None:
    register_provider("canned", lambda name: ScriptedModel([name], name=f"canned-{name}"))
    model = resolve_model("canned:hello")
    assert model.name == "canned-hello"
    assert asyncio.run(complete(model, REQ)).content == [{"type": "text", "text": "hello"}]
    with pytest.raises(ValueError, match="'a:b'"):
        register_provider("a:b", lambda name: model)


def test_model_error_codes_are_stable() -> None:
    with pytest.raises(ValueError, match="'MADE_UP'"):
        ModelError("MADE_UP", "x")
    assert ModelError("MODEL_AUTH", "x").retryable is False
    assert ModelError("MODEL_OVERLOADED", "x").retryable is True
