"""Model providers for the LLM loop: one streaming protocol, Anthropic, fallback, test doubles.

A ``Model`` turns a ``ModelRequest`` (system, messages, tools in Messages API shape) into an
async stream of ``ModelEvent``: zero or more ``TextChunk`` while the answer is written, then
exactly one ``ModelResponse`` (content blocks, stop reason, usage). Failures are raised as
``ModelError`` with a stable ``code`` and ``retryable``, never as a provider SDK exception.

``AnthropicModel`` imports the ``anthropic`` SDK only when it is first used, so that importing
``bastion`` stays light. The SDK retries 429 and 5xx itself (honouring ``retry-after-ms``);
``CircuitBreaker`` stops calling a provider that keeps failing, and ``FallbackModel`` moves on
to the next model when one fails persistently. ``ScriptedModel`` and ``TestModel`` are for
tests (yours and ours): no network, deterministic.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, final, runtime_checkable

from .breaker import BreakerState, CircuitBreaker
from .errors import BastionError, ConfigError
from .logs import get_logger

__all__ = [
    "AnthropicModel",
    "BreakerState",
    "CircuitBreaker",
    "FallbackModel",
    "Model",
    "ModelError",
    "ModelEvent",
    "ModelRequest",
    "ModelResponse",
    "ScriptedModel",
    "ScriptedTurn",
    "TestModel",
    "TextChunk",
    "Usage",
    "classify_anthropic_error",
    "complete",
    "register_provider",
    "resolve_model",
]

log = get_logger("bastion.models")

# -- data ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one model call (or a sum of calls) used, as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One call: Messages API ``messages`` and ``tools`` (plain dicts), system prompt, limits."""

    messages: Sequence[Mapping[str, Any]]
    system: str | None = None
    tools: Sequence[Mapping[str, Any]] = ()
    max_tokens: int = 4096


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of assistant text as it streams in."""

    text: str


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """The finished assistant message: content blocks (plain dicts), stop reason and usage."""

    content: list[dict[str, Any]]
    stop_reason: str
    usage: Usage
    model: str


ModelEvent = TextChunk | ModelResponse


class ModelError(BastionError):
    """A model call failed. ``code`` is stable (``MODEL_RATE_LIMITED``, ...); see ``CODES``."""

    CODES: Final[dict[str, bool]] = {
        "MODEL_RATE_LIMITED": True,
        "MODEL_OVERLOADED": True,
        "MODEL_UNAVAILABLE": True,
        "MODEL_TIMEOUT": True,
        "MODEL_CONNECTION": True,
        "MODEL_CIRCUIT_OPEN": True,
        "MODEL_AUTH": False,
        "MODEL_BAD_REQUEST": False,
        "MODEL_NOT_FOUND": False,
        "MODEL_INVALID_RESPONSE": False,
        "MODEL_SCRIPT_EXHAUSTED": False,
        "MODEL_ERROR": False,
    }

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool | None = None,
        status: int | None = None,
        model: str | None = None,
    ) -> None:
        if code not in self.CODES:
            raise ValueError(f"unknown model error code {code!r}")
        self.code = code
        self.message = message
        self.retryable = self.CODES[code] if retryable is None else retryable
        self.status = status
        self.model = model
        super().__init__(f"{code}: {message}")


@runtime_checkable
class Model(Protocol):
    """A chat model: ``stream`` yields ``TextChunk``s, then exactly one ``ModelResponse``."""

    @property
    def name(self) -> str: ...

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]: ...


async def complete(model: Model, request: ModelRequest) -> ModelResponse:
    """Run ``model.stream`` to the end and return its ``ModelResponse``."""
    final_response: ModelResponse | None = None
    async for event in model.stream(request):
        if isinstance(event, ModelResponse):
            final_response = event
    if final_response is None:
        raise ModelError("MODEL_INVALID_RESPONSE", f"model {model.name!r} ended without a message")
    return final_response


# -- Anthropic ----------------------------------------------------------------------------

_STATUS_CODES: Final[dict[int, str]] = {
    400: "MODEL_BAD_REQUEST",
    401: "MODEL_AUTH",
    403: "MODEL_AUTH",
    404: "MODEL_NOT_FOUND",
    408: "MODEL_TIMEOUT",
    413: "MODEL_BAD_REQUEST",
    429: "MODEL_RATE_LIMITED",
    529: "MODEL_OVERLOADED",
}
_TYPE_CODES: Final[dict[str, str]] = {
    "rate_limit_error": "MODEL_RATE_LIMITED",
    "overloaded_error": "MODEL_OVERLOADED",
    "api_error": "MODEL_UNAVAILABLE",
    "timeout_error": "MODEL_TIMEOUT",
    "authentication_error": "MODEL_AUTH",
    "permission_error": "MODEL_AUTH",
    "invalid_request_error": "MODEL_BAD_REQUEST",
    "not_found_error": "MODEL_NOT_FOUND",
    "request_too_large": "MODEL_BAD_REQUEST",
}


def classify_anthropic_error(exc: BaseException, model: str | None = None) -> ModelError:
    """Map an ``anthropic`` SDK exception (HTTP status or mid-stream error) to a ``ModelError``."""
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return ModelError("MODEL_TIMEOUT", "the model provider did not answer in time", model=model)
    if isinstance(exc, anthropic.APIConnectionError):
        return ModelError("MODEL_CONNECTION", "cannot reach the model provider", model=model)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        err_type = exc.type if isinstance(exc.type, str) else None
        code = None
        if status == 200 or err_type in _TYPE_CODES:  # an ``event: error`` inside a stream
            code = _TYPE_CODES.get(err_type or "")
        if code is None:
            fallback = "MODEL_UNAVAILABLE" if status >= 500 else "MODEL_ERROR"
            code = _STATUS_CODES.get(status, fallback)
        detail = exc.api_message or str(exc)
        return ModelError(code, f"{err_type or status}: {detail}"[:500], status=status, model=model)
    if isinstance(exc, anthropic.AnthropicError):
        return ModelError("MODEL_ERROR", f"{type(exc).__name__}: {exc}"[:500], model=model)
    return ModelError("MODEL_ERROR", f"{type(exc).__name__}: {exc}"[:500], model=model)


def _block_to_dict(block: Any) -> dict[str, Any]:
    """An SDK content block as the plain dict the Messages API accepts back."""
    kind = getattr(block, "type", None)
    if kind == "text":
        return {"type": "text", "text": block.text}
    if kind == "tool_use":
        return {
            "type": "tool_use",
            "id": block.id,
            "name": block.name,
            "input": block.input if isinstance(block.input, dict) else {},
        }
    if kind == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    dumped: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
    return dumped


@final
class AnthropicModel:
    """Claude through the Messages API with streaming (``client.messages.stream``).

    ``api_key`` defaults to ``ANTHROPIC_API_KEY`` and ``base_url`` to ``ANTHROPIC_BASE_URL``
    (both read by the SDK). ``max_retries`` is the SDK's own retry count for 408/409/429/5xx
    and connection errors. A ``CircuitBreaker`` (own one by default) guards the provider.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float = 120.0,
        breaker: CircuitBreaker | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._model = model
        self._api_key = api_key
        self._base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        self.max_retries = max_retries
        self.timeout = timeout
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._headers = dict(default_headers or {})
        self._client: Any = None
        self._client_loop: object = None

    @property
    def name(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"AnthropicModel({self._model!r}, base_url={self._base_url!r})"

    def _get_client(self) -> Any:
        """The SDK client of the running event loop (its connections belong to one loop, and
        ``Agent.run`` starts a new loop each time)."""
        import asyncio

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            import anthropic

            kwargs: dict[str, Any] = {
                "max_retries": self.max_retries,
                "timeout": self.timeout,
                "default_headers": self._headers or None,
            }
            if self._api_key is not None:
                kwargs["api_key"] = self._api_key
            if self._base_url is not None:
                kwargs["base_url"] = self._base_url
            self._client = anthropic.AsyncAnthropic(**kwargs)
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the SDK client's connections (call from the loop that used it)."""
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._client_loop = None

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        if not self.breaker.allow():
            raise ModelError(
                "MODEL_CIRCUIT_OPEN",
                f"model {self._model!r} is paused after repeated failures; retry in "
                f"{self.breaker.retry_after_s():.1f} s",
                model=self._model,
            )
        kwargs: dict[str, Any] = {
            "model": self._model,
            "max_tokens": request.max_tokens,
            "messages": list(request.messages),
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = list(request.tools)
        try:
            client = self._get_client()
            async with client.messages.stream(**kwargs) as stream:
                async for event in stream:
                    if event.type == "text" and event.text:
                        yield TextChunk(event.text)
                message = await stream.get_final_message()
        except ModelError:
            raise
        except Exception as exc:
            err = classify_anthropic_error(exc, self._model)
            if err.retryable:
                self.breaker.record_failure()
            log.warning("model_error", model=self._model, code=err.code, status=err.status)
            raise err from exc
        self.breaker.record_success()
        u = message.usage
        usage = Usage(
            int(u.input_tokens or 0),
            int(u.output_tokens or 0),
            int(getattr(u, "cache_read_input_tokens", 0) or 0),
            int(getattr(u, "cache_creation_input_tokens", 0) or 0),
        )
        yield ModelResponse(
            [_block_to_dict(b) for b in message.content],
            str(message.stop_reason or "end_turn"),
            usage,
            str(message.model or self._model),
        )


# -- fallback -----------------------------------------------------------------------------


def _fallback_default(err: ModelError) -> bool:
    return err.retryable


@final
class FallbackModel:
    """Tries each model in turn; moves on when one fails with a retryable ``ModelError``.

    A model that already streamed text cannot be swapped mid-answer: its error is raised.
    ``fallback_on`` decides which errors move on (default: retryable ones).
    """

    def __init__(
        self,
        models: Sequence[Model],
        *,
        fallback_on: Callable[[ModelError], bool] = _fallback_default,
    ) -> None:
        if not models:
            raise ValueError("FallbackModel needs at least one model")
        self.models = list(models)
        self._fallback_on = fallback_on

    @property
    def name(self) -> str:
        return self.models[0].name

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        last: ModelError | None = None
        for model in self.models:
            started = False
            try:
                async for event in model.stream(request):
                    started = True
                    yield event
                return
            except ModelError as err:
                if started or not self._fallback_on(err):
                    raise
                log.warning("model_fallback", model=model.name, code=err.code)
                last = err
        assert last is not None
        raise last


# -- test doubles -------------------------------------------------------------------------

_ids = itertools.count(1)


def _tool_id() -> str:
    return f"toolu_{next(_ids):08d}"


def _estimate(obj: Any) -> int:
    """A cheap, deterministic token estimate (4 characters a token) for the test doubles."""
    return max(1, len(json.dumps(obj, default=str)) // 4)


@dataclass(frozen=True, slots=True)
class ScriptedTurn:
    """One scripted assistant message: text and/or tool calls, a stop reason, optional usage."""

    text: str = ""
    tool_calls: Sequence[tuple[str, Mapping[str, Any]]] = ()
    stop_reason: str | None = None
    usage: Usage | None = None
    error: ModelError | None = None
    """Raise this instead of answering (for testing the loop's error handling)."""

    def content(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.text:
            blocks.append({"type": "text", "text": self.text})
        for name, args in self.tool_calls:
            blocks.append({"type": "tool_use", "id": _tool_id(), "name": name, "input": dict(args)})
        return blocks


ScriptStep = ScriptedTurn | str | Callable[[ModelRequest], "ScriptedTurn | str"]


@final
class ScriptedModel:
    """Answers each call with the next scripted turn; records every request it was sent.

    A step is a ``ScriptedTurn``, a plain string (a final text answer), or a callable taking
    the ``ModelRequest`` and returning either. Running out of script raises
    ``MODEL_SCRIPT_EXHAUSTED``; ``repeat_last=True`` repeats the last step instead.
    """

    def __init__(
        self,
        script: Iterable[ScriptStep],
        *,
        name: str = "scripted",
        repeat_last: bool = False,
        chunk_size: int = 16,
    ) -> None:
        self._script = list(script)
        self._name = name
        self._repeat_last = repeat_last
        self._chunk = max(1, chunk_size)
        self._pos = 0
        self.requests: list[ModelRequest] = []

    @property
    def name(self) -> str:
        return self._name

    def _next(self, request: ModelRequest) -> ScriptedTurn:
        if self._pos >= len(self._script):
            if not (self._repeat_last and self._script):
                raise ModelError(
                    "MODEL_SCRIPT_EXHAUSTED",
                    f"scripted model {self._name!r} has no step {self._pos + 1}",
                )
            step = self._script[-1]
        else:
            step = self._script[self._pos]
        self._pos += 1
        if callable(step) and not isinstance(step, ScriptedTurn):
            step = step(request)
        return ScriptedTurn(text=step) if isinstance(step, str) else step

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        self.requests.append(request)
        turn = self._next(request)
        if turn.error is not None:
            raise turn.error
        content = turn.content()
        for i in range(0, len(turn.text), self._chunk):
            yield TextChunk(turn.text[i : i + self._chunk])
        stop = turn.stop_reason or ("tool_use" if turn.tool_calls else "end_turn")
        usage = turn.usage or Usage(_estimate(list(request.messages)), _estimate(content))
        yield ModelResponse(content, stop, usage, self._name)


def _example_value(schema: Mapping[str, Any]) -> Any:
    """A small value satisfying simple JSON Schemas (enough for TestModel's tool calls)."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props: Mapping[str, Any] = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {k: _example_value(props.get(k, {})) for k in required}
    if kind == "array":
        n = int(schema.get("minItems", 0))
        return [_example_value(schema.get("items", {})) for _ in range(n)]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "a" * int(schema.get("minLength", 1))


@final
class TestModel:
    """Calls every offered tool once (or those named in ``call_tools``), then summarises.

    Arguments are generated from each tool's input schema. The final answer is
    ``custom_text`` or a JSON object mapping each tool name to its result text.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        call_tools: Sequence[str] | None = None,
        custom_text: str | None = None,
        name: str = "test",
    ) -> None:
        self._call_tools = call_tools
        self._custom_text = custom_text
        self._name = name
        self.requests: list[ModelRequest] = []

    @property
    def name(self) -> str:
        return self._name

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        self.requests.append(request)
        last = request.messages[-1] if request.messages else {}
        content = last.get("content")
        results = (
            [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            if isinstance(content, list)
            else []
        )
        if not results:
            tools = [
                t
                for t in request.tools
                if self._call_tools is None or t["name"] in self._call_tools
            ]
            if tools:
                calls = [(str(t["name"]), _example_value(t.get("input_schema", {}))) for t in tools]
                turn = ScriptedTurn(tool_calls=calls)
                blocks = turn.content()
                yield ModelResponse(
                    blocks,
                    "tool_use",
                    Usage(_estimate(list(request.messages)), _estimate(blocks)),
                    self._name,
                )
                return
        if self._custom_text is not None:
            text = self._custom_text
        else:
            names = {}
            prev = request.messages[-2]["content"] if len(request.messages) >= 2 else []
            for b in prev if isinstance(prev, list) else []:
                if isinstance(b, dict) and b.get("type") == "tool_use":
                    names[b["id"]] = b["name"]
            text = (
                json.dumps(
                    {
                        names.get(r["tool_use_id"], r["tool_use_id"]): r.get("content")
                        for r in results
                    },
                    sort_keys=True,
                )
                if results
                else "success"
            )
        yield TextChunk(text)
        blocks = [{"type": "text", "text": text}]
        yield ModelResponse(
            blocks,
            "end_turn",
            Usage(_estimate(list(request.messages)), _estimate(blocks)),
            self._name,
        )


# -- resolution ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Registry:
    factories: dict[str, Callable[[str], Model]] = field(default_factory=dict)


_REGISTRY = _Registry(
    {
        "anthropic": lambda name: AnthropicModel(name),
        "test": lambda name: TestModel(),
    }
)


def register_provider(prefix: str, factory: Callable[[str], Model]) -> None:
    """Make ``resolve_model("PREFIX:NAME")`` call ``factory("NAME")`` (for provider plugins)."""
    if not prefix or ":" in prefix:
        raise ValueError(f"a provider prefix must be non-empty without ':', got {prefix!r}")
    _REGISTRY.factories[prefix] = factory


def resolve_model(name_or_model: str | Model) -> Model:
    """A ``Model`` from a model object or a name: ``"anthropic:claude-..."``, ``"claude-..."``,
    or ``"test"``. Provider plugins will add prefixes through a hook."""
    if not isinstance(name_or_model, str):
        if isinstance(name_or_model, Model):
            return name_or_model
        raise ConfigError(
            f"{name_or_model!r} is not a model name or Model object",
            fix="pass a name such as 'claude-sonnet-5-5' or a Model",
        )
    name = name_or_model.strip()
    if name == "test":
        return TestModel()
    provider, sep, rest = name.partition(":")
    if sep:
        factory = _REGISTRY.factories.get(provider)
        if factory is None or not rest:
            raise ConfigError(
                f"unknown model {name!r}",
                where="model",
                fix=f"use one of the providers {sorted(_REGISTRY.factories)} as 'provider:model'",
            )
        return factory(rest)
    if name.startswith("claude"):
        return AnthropicModel(name)
    raise ConfigError(
        f"unknown model {name!r}",
        where="model",
        fix="use 'claude-...', 'anthropic:MODEL' or 'test'",
    )
