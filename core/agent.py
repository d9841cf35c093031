"""The LLM tool loop: a model, the tools a host grants, limits, and a clean stop reason.

Each step calls the model with exactly the host's tools, runs every ``tool_use`` block through
``host.ainvoke`` (in parallel, bounded by a semaphore, results kept in the model's order) and
sends back ``tool_result`` blocks: the output as JSON text, or ``is_error`` with the error code
and a scrubbed message. Tool output is data in tool_result blocks, never part of the system
prompt. The loop stops at ``end_turn`` or at a limit (steps, tool calls, tokens, cost, context);
every stop returns an ``AgentRun`` with the reason and the transcript so far, never a crash.

A ``ToolHost`` is anything with ``tools()`` and ``ainvoke(...)``; ``bastion.Kernel`` is one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, final, runtime_checkable

from .content import content_blocks, has_content
from .conversations import ConversationStore, ToolCallRecord, args_hash
from .errors import ErrorCode
from .logs import ensure_logging, get_logger
from .models import Model, ModelError, ModelRequest, ModelResponse, TextChunk, Usage, resolve_model
from .pricing import DEFAULT_PRICES, Cost, PriceTable
from .result import InvocationContext, ToolError, ToolResult
from .tokens import TokenCounter, compact_history

if TYPE_CHECKING:
    from .guard import Approver

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentRun",
    "RunFinished",
    "RunUsage",
    "StepFinished",
    "StepRecord",
    "StopReason",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolHost",
    "ToolSpecLike",
]

log = get_logger("bastion.agent")

NOT_RUN: Final = "NOT_RUN"
"""Code of a tool_result for a call the loop did not make (budget reached, answer cut off)."""
MAX_ERROR_CHARS: Final = 1000


class StopReason:
    """Why a run ended (stable strings)."""

    END_TURN: Final = "end_turn"
    STOP_SEQUENCE: Final = "stop_sequence"
    MAX_STEPS: Final = "max_steps"
    MAX_TOOL_CALLS: Final = "max_tool_calls"
    TOKEN_BUDGET: Final = "token_budget"
    COST_BUDGET: Final = "cost_budget"
    CONTEXT_BUDGET: Final = "context_budget"
    MODEL_ERROR: Final = "model_error"
    REFUSAL: Final = "refusal"
    MAX_TOKENS: Final = "max_tokens"


# -- the host -----------------------------------------------------------------------------


class ToolSpecLike(Protocol):
    """A tool offered to the model (``bastion.ToolSpec`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def input_schema(self) -> dict[str, Any]: ...


@runtime_checkable
class ToolHost(Protocol):
    """What the loop needs from a kernel: the granted tools and a call that never raises."""

    def tools(self) -> Sequence[ToolSpecLike]: ...

    async def ainvoke(
        self,
        name: str,
        arguments: Any,
        *,
        context: InvocationContext | None = None,
        approver: Approver | None = None,
    ) -> ToolResult: ...


# -- results and events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunUsage:
    """Tokens (as the provider reported them) and cost of a run."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    """False when a model had no price in the table (its calls were counted as free)."""


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One model call: its stop reason, usage, cost and how many tools it ran."""

    step: int
    model: str
    stop_reason: str
    usage: Usage
    cost_usd: float
    tool_calls: int


@dataclass(frozen=True, slots=True)
class AgentRun:
    """The outcome of a run: why it stopped, the final text, transcript, usage and steps."""

    stop_reason: str
    text: str
    messages: list[dict[str, Any]]
    """The whole transcript (earlier turns of the session included)."""
    usage: RunUsage
    steps: list[StepRecord]
    tool_calls: int
    error: ModelError | None = None
    session: str | None = None
    new_messages: int = 0
    """How many of ``messages`` this run added (they are the last ones)."""

    @property
    def ok(self) -> bool:
        return self.stop_reason in (StopReason.END_TURN, StopReason.STOP_SEQUENCE)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Assistant text as it streams in."""

    text: str
    step: int


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """A tool call is about to run."""

    step: int
    id: str
    name: str
    arguments: Any


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    """A tool call finished (events arrive in completion order; results keep call order)."""

    step: int
    id: str
    name: str
    result: ToolResult
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class StepFinished:
    """A model call and its tool calls are done."""

    record: StepRecord


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The last event of every run."""

    run: AgentRun


AgentEvent = TextDelta | ToolCallStarted | ToolCallFinished | StepFinished | RunFinished

# -- helpers ------------------------------------------------------------------------------

_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _scrub(message: str) -> str:
    """Control characters and ANSI escapes out, length bounded (the kernel scrubs more)."""
    text = _CONTROL.sub("", message)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _not_run(reason: str) -> ToolResult:
    return ToolResult(False, None, ToolError(NOT_RUN, reason, False))


def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if b.get("type") == "text")


class _SizeCache:
    """Token estimates per message object (messages are never mutated once appended)."""

    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter
        self._sizes: dict[int, tuple[Mapping[str, Any], int]] = {}

    def count_message(self, message: Mapping[str, Any]) -> int:
        hit = self._sizes.get(id(message))
        if hit is not None and hit[0] is message:
            return hit[1]
        n = self._counter.count_message(message)
        self._sizes[id(message)] = (message, n)
        return n

    def forget_except(self, keep: Sequence[Mapping[str, Any]]) -> None:
        ids = {id(m) for m in keep}
        self._sizes = {k: v for k, v in self._sizes.items() if k in ids}


@dataclass(slots=True)
class _RunState:
    history: list[dict[str, Any]]
    start: int
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)
    steps: list[StepRecord] = field(default_factory=list)
    tool_calls: int = 0
    records: list[ToolCallRecord] = field(default_factory=list)
    stop: str | None = None
    error: ModelError | None = None


# -- the agent ----------------------------------------------------------------------------


@final
class Agent:
    """Runs prompts through a model with a host's tools, within limits. Keeps the conversation.

    Successive runs continue the same conversation; with ``store`` and ``session`` the
    conversation is loaded from and saved to SQLite, so a later process can resume it.
    ``on_event`` receives every ``AgentEvent`` (streamed text, tool calls, steps, the end);
    ``approver`` is passed to the host for skills that need a person's approval.
    """

    def __init__(
        self,
        host: ToolHost,
        *,
        model: str | Model,
        system: str | None = None,
        max_steps: int = 16,
        max_tool_calls: int = 64,
        max_input_tokens: int | None = None,
        max_output_tokens_total: int | None = None,
        max_cost_usd: float | None = None,
        context_budget_tokens: int = 150_000,
        max_tool_result_tokens: int = 8_000,
        parallel_tools: int = 4,
        max_tokens: int = 4096,
        on_event: Callable[[AgentEvent], None] | None = None,
        store: ConversationStore | None = None,
        session: str | None = None,
        approver: Approver | None = None,
        context: InvocationContext | None = None,
        prices: PriceTable | None = None,
        token_counter: TokenCounter | None = None,
    ) -> None:
        if max_steps < 1 or parallel_tools < 1 or max_tokens < 1 or max_tool_calls < 0:
            raise ValueError(
                "max_steps, parallel_tools and max_tokens must be at least 1 and max_tool_calls "
                f"at least 0; got {max_steps!r}, {parallel_tools!r}, {max_tokens!r}, "
                f"{max_tool_calls!r}"
            )
        ensure_logging()
        if store is not None and not session:
            raise ValueError("a store needs a session name: Agent(..., store=s, session='name')")
        self.host = host
        self.model = resolve_model(model)
        self.system = system
        self.max_steps = max_steps
        self.max_tool_calls = max_tool_calls
        self.max_input_tokens = max_input_tokens
        self.max_output_tokens_total = max_output_tokens_total
        self.max_cost_usd = max_cost_usd
        self.context_budget_tokens = context_budget_tokens
        self.max_tool_result_tokens = max_tool_result_tokens
        self.parallel_tools = parallel_tools
        self.max_tokens = max_tokens
        self.on_event = on_event
        self.store = store
        self.session = session
        self.approver = approver
        ctx = context or InvocationContext(session=session)
        if not session and ctx.session is None:
            # A conversation without a named session is a session of its own, so that
            # session-scoped guardrails (``trifecta_session``) see all of its calls.
            ctx = dataclasses.replace(ctx, session=f"run-{uuid.uuid4().hex[:16]}")
        self.context = ctx
        self.prices = prices or DEFAULT_PRICES
        self.counter = token_counter or TokenCounter()
        self._sizes = _SizeCache(self.counter)
        self._history: list[dict[str, Any]] | None = None
        self._running = False
        self._fixed: tuple[str, int] | None = None

    # -- conversation ---------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation so far (loaded from the store on first use)."""
        return list(self._load())

    def reset(self) -> None:
        """Forget the in-memory conversation (the store is left as it is)."""
        self._history = []

    def _load(self) -> list[dict[str, Any]]:
        if self._history is None:
            self._history = []
            if self.store is not None and self.session and self.store.exists(self.session):
                self._history = self.store.load(self.session).messages
        return self._history

    # -- entry points ---------------------------------------------------------------------

    def run(self, prompt: str | list[dict[str, Any]]) -> AgentRun:
        """``arun`` for synchronous callers (not from inside a running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(prompt))
        raise RuntimeError("Agent.run() was called inside an event loop; use await agent.arun()")

    async def arun(self, prompt: str | list[dict[str, Any]]) -> AgentRun:
        """Run one prompt to a stop; events go to ``on_event``."""
        result: AgentRun | None = None
        async for event in self.astream(prompt):
            if isinstance(event, RunFinished):
                result = event.run
        assert result is not None
        return result

    async def astream(self, prompt: str | list[dict[str, Any]]) -> AsyncIterator[AgentEvent]:
        """Run one prompt, yielding every event; the last is ``RunFinished``."""
        if self._running:
            raise RuntimeError("this Agent is already running; one run at a time")
        self._running = True
        try:
            async for event in self._loop(prompt):
                if self.on_event is not None:
                    try:
                        self.on_event(event)
                    except Exception:
                        log.exception("on_event_failed", event_type=type(event).__name__)
                yield event
        finally:
            self._running = False

    # -- the loop -------------------------------------------------------------------------

    def _tool_params(self) -> tuple[list[dict[str, Any]], set[str]]:
        specs = list(self.host.tools())
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in specs
        ]
        return tools, {t.name for t in specs}

    def _fixed_tokens(self, tools: list[dict[str, Any]]) -> int:
        """Estimated tokens of the tool definitions and system prompt (cached while unchanged)."""
        key = json.dumps([self.system, tools], sort_keys=True, default=str)
        if self._fixed is None or self._fixed[0] != key:
            n = self.counter.count_tools(tools) + self.counter.count_text(self.system or "")
            self._fixed = (key, n)
        return self._fixed[1]

    def _over_budget(self, st: _RunState) -> str | None:
        if self.max_input_tokens is not None and st.usage.input_tokens >= self.max_input_tokens:
            return StopReason.TOKEN_BUDGET
        if (
            self.max_output_tokens_total is not None
            and st.usage.output_tokens >= self.max_output_tokens_total
        ):
            return StopReason.TOKEN_BUDGET
        if self.max_cost_usd is not None and st.cost.usd >= self.max_cost_usd:
            return StopReason.COST_BUDGET
        return None

    async def _loop(self, prompt: str | list[dict[str, Any]]) -> AsyncIterator[AgentEvent]:
        history = self._load()
        st = _RunState(history, len(history))
        history.append({"role": "user", "content": prompt})
        tools, names = self._tool_params()
        fixed = self._fixed_tokens(tools)
        try:
            while st.stop is None:
                step = len(st.steps) + 1
                if step > self.max_steps:
                    st.stop = StopReason.MAX_STEPS
                    break
                request = self._request(st, tools, fixed)
                if request is None:
                    break
                response: ModelResponse | None = None
                try:
                    async for ev in self.model.stream(request):
                        if isinstance(ev, TextChunk):
                            yield TextDelta(ev.text, step)
                        else:
                            response = ev
                    if response is None:
                        raise ModelError(
                            "MODEL_INVALID_RESPONSE",
                            f"model {self.model.name!r} ended without a message",
                        )
                except ModelError as err:
                    st.stop, st.error = StopReason.MODEL_ERROR, err
                    log.warning("agent_model_error", code=err.code, step=step)
                    break
                except Exception as exc:
                    st.stop = StopReason.MODEL_ERROR
                    st.error = ModelError("MODEL_ERROR", f"{type(exc).__name__}: {exc}"[:500])
                    log.exception("agent_model_failed", step=step)
                    break
                async for ev2 in self._step(st, step, response, names):
                    yield ev2
        finally:
            self._sizes.forget_except(history)
            run = self._finish(st)
        yield RunFinished(run)

    def _request(
        self, st: _RunState, tools: list[dict[str, Any]], fixed: int
    ) -> ModelRequest | None:
        """The next request, or None (with ``st.stop`` set) when a budget forbids the call."""
        reserve = fixed + self.max_tokens
        view = compact_history(
            st.history, self.context_budget_tokens, self._sizes, reserve_tokens=reserve
        )
        if not view.fits:
            st.stop = StopReason.CONTEXT_BUDGET
            return None
        # the next call's input is at least the last one's (the history only grows)
        last_input = st.steps[-1].usage.input_tokens if st.steps else 0
        estimate = max(view.tokens + fixed, last_input)
        if (
            self.max_input_tokens is not None
            and st.usage.input_tokens + estimate > self.max_input_tokens
        ):
            st.stop = StopReason.TOKEN_BUDGET
            return None
        max_tokens = self.max_tokens
        if self.max_output_tokens_total is not None:
            max_tokens = min(max_tokens, self.max_output_tokens_total - st.usage.output_tokens)
            if max_tokens < 1:
                st.stop = StopReason.TOKEN_BUDGET
                return None
        if self.max_cost_usd is not None:
            price = self.prices.lookup(self.model.name)
            if price is not None and st.cost.usd + estimate * price.input / 1e6 > self.max_cost_usd:
                st.stop = StopReason.COST_BUDGET
                return None
        return ModelRequest(view.messages, self.system, tools, max_tokens)

    async def _step(
        self, st: _RunState, step: int, response: ModelResponse, names: set[str]
    ) -> AsyncIterator[AgentEvent]:
        st.usage = st.usage + response.usage
        cost = self.prices.cost(response.model or self.model.name, response.usage)
        st.cost = st.cost + cost
        if response.content:
            st.history.append({"role": "assistant", "content": response.content})
        uses = [b for b in response.content if b.get("type") == "tool_use"]
        ran = 0
        if uses:
            remaining = max(0, self.max_tool_calls - st.tool_calls)
            cut = response.stop_reason == StopReason.MAX_TOKENS
            todo = [] if cut else uses[:remaining]
            why = (
                "the answer was cut off at max_tokens, so the call was not made"
                if cut
                else f"the run's tool-call budget ({self.max_tool_calls}) is used up"
            )
            blocks: list[dict[str, Any]] = []
            async for item in self._run_tools(st, todo, step, names):
                if isinstance(item, list):
                    blocks = item
                else:
                    yield item
            for block in uses[len(todo) :]:
                yield ToolCallStarted(
                    step, str(block["id"]), str(block["name"]), block.get("input")
                )
                skipped = _not_run(why)
                yield ToolCallFinished(step, str(block["id"]), str(block["name"]), skipped)
                blocks.append(self._result_block(block, skipped)[0])
            ran = len(todo)
            st.tool_calls += ran
            st.history.append({"role": "user", "content": blocks})
            if len(todo) < len(uses):
                st.stop = StopReason.MAX_TOKENS if cut else StopReason.MAX_TOOL_CALLS
        record = StepRecord(
            step,
            response.model or self.model.name,
            response.stop_reason,
            response.usage,
            cost.usd,
            ran,
        )
        st.steps.append(record)
        yield StepFinished(record)
        if st.stop is not None:
            return
        if uses or response.stop_reason == "pause_turn":
            st.stop = self._over_budget(st)
        elif response.stop_reason in (
            StopReason.END_TURN,
            StopReason.STOP_SEQUENCE,
            StopReason.MAX_TOKENS,
            StopReason.REFUSAL,
        ):
            st.stop = response.stop_reason
        else:
            st.stop = response.stop_reason or StopReason.END_TURN

    async def _run_tools(
        self, st: _RunState, blocks: list[dict[str, Any]], step: int, names: set[str]
    ) -> AsyncIterator[ToolCallStarted | ToolCallFinished | list[dict[str, Any]]]:
        """Start every call (bounded), yield events as they happen, then the ordered
        tool_result blocks."""
        if not blocks:
            yield []
            return
        sem = asyncio.Semaphore(self.parallel_tools)
        queue: asyncio.Queue[ToolCallFinished] = asyncio.Queue()

        async def one(block: dict[str, Any]) -> dict[str, Any]:
            try:
                async with sem:
                    result = await self._invoke(block, names)
            except Exception:
                # _invoke turns a failing host into INTERNAL; should even that fail (a log sink
                # that raises), the call still ends here, or the loop below would wait forever.
                result = ToolResult.failure(
                    ErrorCode.INTERNAL, f"the tool host failed while running {block['name']!r}"
                )
            out, truncated = self._result_block(block, result)
            st.records.append(
                ToolCallRecord(
                    str(block["id"]),
                    str(block["name"]),
                    args_hash(block.get("input")),
                    "ok" if result.ok else (result.error.code if result.error else "INTERNAL"),
                    round(result.duration_ms, 3),
                )
            )
            queue.put_nowait(
                ToolCallFinished(step, str(block["id"]), str(block["name"]), result, truncated)
            )
            return out

        for block in blocks:
            yield ToolCallStarted(step, str(block["id"]), str(block["name"]), block.get("input"))
        tasks = [asyncio.ensure_future(one(b)) for b in blocks]
        try:
            for _ in blocks:
                yield await queue.get()
            results = [t.result() for t in tasks]
        finally:
            for t in tasks:
                t.cancel()
        yield results

    async def _invoke(self, block: dict[str, Any], names: set[str]) -> ToolResult:
        name = str(block.get("name", ""))
        args = block.get("input")
        if name not in names:
            return ToolResult.failure(
                ErrorCode.NOT_FOUND, f"no tool named {name[:64]!r} is offered"
            )
        ctx = dataclasses.replace(
            self.context,
            invocation_id=uuid.uuid4().hex[:16],
            session=self.session or self.context.session,
        )
        start = time.perf_counter()
        try:
            result = await self.host.ainvoke(
                name, args if isinstance(args, dict) else {}, context=ctx, approver=self.approver
            )
        except Exception:
            log.exception("tool_host_failed", tool=name, invocation_id=ctx.invocation_id)
            result = ToolResult.failure(
                ErrorCode.INTERNAL,
                f"the tool host failed while running {name!r}",
                duration_ms=(time.perf_counter() - start) * 1000,
                invocation_id=ctx.invocation_id,
            )
        return result

    def _result_block(
        self, block: Mapping[str, Any], result: ToolResult
    ) -> tuple[dict[str, Any], bool]:
        """The tool_result block (output as JSON text, or is_error with code and message) and
        whether the text was truncated to ``max_tool_result_tokens``."""
        if result.ok and has_content(result.output):  # files and images as content blocks
            blocks = content_blocks(result.output)
            cut = False
            for b in blocks:
                if b["type"] == "text":
                    b["text"], was_cut = self.counter.truncate(
                        b["text"], self.max_tool_result_tokens
                    )
                    cut = cut or was_cut
            return {"type": "tool_result", "tool_use_id": block["id"], "content": blocks}, cut
        if result.ok:
            text = json.dumps(result.output, ensure_ascii=False, default=str)
            text, truncated = self.counter.truncate(text, self.max_tool_result_tokens)
            return {"type": "tool_result", "tool_use_id": block["id"], "content": text}, truncated
        err = result.error
        code = err.code if err else ErrorCode.INTERNAL.value
        message = _scrub(err.message) if err else "the tool failed"
        return {
            "type": "tool_result",
            "tool_use_id": block["id"],
            "content": f"{code}: {message}",
            "is_error": True,
        }, False

    def _finish(self, st: _RunState) -> AgentRun:
        new = st.history[st.start :]
        last_assistant = next((m for m in reversed(new) if m.get("role") == "assistant"), None)
        usage = RunUsage(
            st.usage.input_tokens,
            st.usage.output_tokens,
            st.usage.cache_read_tokens,
            st.usage.cache_write_tokens,
            round(st.cost.usd, 10),
            st.cost.known,
        )
        run = AgentRun(
            stop_reason=st.stop or StopReason.MODEL_ERROR,
            text=_text_of(last_assistant) if last_assistant else "",
            messages=list(st.history),
            usage=usage,
            steps=list(st.steps),
            tool_calls=st.tool_calls,
            error=st.error,
            session=self.session,
            new_messages=len(new),
        )
        if self.store is not None and self.session:
            try:
                self.store.save(
                    self.session,
                    new,
                    model=self.model.name,
                    tool_calls=st.records,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cost_usd=usage.cost_usd,
                )
            except Exception:
                log.exception("conversation_save_failed", session=self.session)
        log.info(
            "agent_run",
            stop_reason=run.stop_reason,
            steps=len(run.steps),
            tool_calls=run.tool_calls,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
        )
        return run
