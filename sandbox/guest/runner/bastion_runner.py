"""Bastion's generic Python runner: the guest side of the ``python-runner`` world.

Built once into a WASM component by componentize-py, which imports this module at build time and
snapshots the interpreter. Each call gets a *fresh instance* of that snapshot, so nothing a skill
does survives the call. Exports:

- ``describe-skill(entry)``: import the skill from its folder (mapped read-only at
  ``/_bastion/skill`` in a store with no grants) and derive its input and output JSON Schemas
  and description from ``run``'s real type hints and docstring;
- ``call-skill(entry, input, context)``: import the skill, convert the JSON arguments to
  ``run``'s parameter types, call it (an ``async def run`` is run to completion) and convert the
  result back to JSON; ``context`` carries the skill's ``config`` values;
- ``run-skill(source, filename, input)``: the first wave's single-source call, kept for callers
  that pass source text;
- ``compile-module(source, filename)``: compile (never run) one module's source and return its
  marshalled code object, base64; the host calls it in a fresh store with no grants and passes
  the result back to later ``call-skill`` calls of that exact source (``context["code"]``), so
  a call does not read and compile its entry file again;
- ``list-modules()``: the modules a skill may import, as built;
- ``warm()``: nothing (the host calls it on a prewarmed instance: the first export call of an
  instance pays the bindings' one-time set-up, which this moves off the skill's call).

A failure returns a JSON error ``{"code", "type", "message", "traceback": [...]}`` whose
traceback lists only the skill's own files (relative to its folder).

Imports: the allow-list (``bastion_allowed``) is imported here, at build time; then the import
machinery is emptied, so only snapshotted modules and the skill folder (``bastion_loader``)
exist. An import by the skill's own code of anything else fails with a message naming what to
use instead. This is for clear errors, not the security boundary: the boundary is WASI (no
host files except granted mounts, empty environment, no sockets) and the host functions, which
check every grant.
"""

import binascii
import builtins
import gc
import importlib
import inspect
import json
import linecache
import marshal
import sys
import traceback

import wit_world
from componentize_py_types import Err

from bastion_allowed import (
    ALLOWED_MODULES,
    HIDDEN_MODULES,
    INSTEAD,
    INTERNAL_MODULES,
    OPTIONAL_MODULES,
)

for _name in ALLOWED_MODULES + INTERNAL_MODULES:
    importlib.import_module(_name)
for _name in OPTIONAL_MODULES:
    try:
        importlib.import_module(_name)
    except ImportError:
        pass

import bastion_aio  # noqa: E402
import bastion_sdk  # noqa: E402  (after the allow-list, which it relies on)
import bastion_types  # noqa: E402
import bastion_tz  # noqa: E402
from bastion_loader import SKILL_ROOT, SkillFinder  # noqa: E402

MAX_MESSAGE = 2000
MAX_TRACEBACK = 60
SKILL_MODULE = "__skill__"
_CO_VARKEYWORDS = inspect.CO_VARKEYWORDS

_ALLOWED = frozenset(
    ALLOWED_MODULES + INTERNAL_MODULES + tuple(n for n in OPTIONAL_MODULES if n in sys.modules)
)
_PACKAGES = frozenset(
    ".".join(n.split(".")[:i]) for n in _ALLOWED for i in range(1, n.count(".") + 1)
)
_OFFERED = ", ".join(sorted(n for n in _ALLOWED if n != "bastion" and n in ALLOWED_MODULES
                            + OPTIONAL_MODULES and "." not in n))
_real_import = builtins.__import__
_MEMORY_ERROR = json.dumps({
    "code": "MEMORY_LIMIT",
    "type": "MemoryError",
    "message": "the skill ran out of memory",
    "traceback": [],
})
# A wasm32 interpreter cannot hold one object over 2 GiB: these OverflowErrors are memory limits.
_SIZE_OVERFLOW = ("index-sized integer", "is too long", "too many items", "cannot allocate")
_REMOVED_BUILTINS = ("breakpoint", "input", "exit", "quit", "help", "copyright", "credits",
                     "license")


def _not_offered(name):
    top = name.partition(".")[0]
    hint = INSTEAD.get(name) or INSTEAD.get(top)
    if hint:
        message = f"module {name!r} is not available in the Bastion sandbox: {hint}"
    else:
        message = (
            f"module {name!r} is not available in the Bastion sandbox; a skill may import "
            f"its own modules, its vendored dependencies (skill.toml dependencies) and: "
            f"{_OFFERED}"
        )
    return ModuleNotFoundError(message, name=name)


class _Guard:
    """``__import__`` for one call: the skill's own code imports only what is offered."""

    def __init__(self, finder, namespace=None):
        self.finder = finder
        self.namespace = namespace

    def _owned(self, globals):
        if globals is None or globals is self.namespace:
            return True
        return self.finder is not None and globals.get("__name__") in self.finder.own

    def check(self, name, fromlist, level):
        if level:
            if self.finder is None:
                raise ImportError(
                    "relative imports need a skill package: this skill is a single source "
                    f"(from {'.' * level}{name} import ...)"
                )
            return
        if name in _ALLOWED:
            return  # offered whatever the folder holds (checked first: a folder look-up stats)
        if self.finder is not None and self.finder.top_level(name) is not None:
            return
        if name not in _PACKAGES:
            raise _not_offered(name)
        if name in _PACKAGES:
            for item in fromlist or ():
                full = f"{name}.{item}"
                if full not in _ALLOWED and full not in _PACKAGES:
                    raise _not_offered(full)

    def __call__(self, name, globals=None, locals=None, fromlist=(), level=0):
        # Imports made by the skill's own modules (or a bare __import__ call) are checked;
        # imports the stdlib or a vendored package makes on its own behalf are not (they reach
        # only the snapshot and the skill folder).
        if self._owned(globals):
            self.check(name, fromlist, level)
        try:
            return _real_import(name, globals, locals, fromlist, level)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name in INSTEAD or exc.name.partition(".")[0] in INSTEAD):
                raise _not_offered(exc.name) from None
            raise


# Lock the import machinery: from here on only modules in the snapshot can be imported, plus
# the skill folder through the finder a call installs.
sys.meta_path.clear()
sys.path_hooks.clear()
sys.path_importer_cache.clear()
sys.path[:] = []
for _name in HIDDEN_MODULES:
    sys.modules.pop(_name, None)
for _name in _REMOVED_BUILTINS:
    builtins.__dict__.pop(_name, None)
# Everything built so far lives as long as the instance: the cyclic GC need not scan it.
gc.collect()
gc.freeze()


def list_modules():
    """The modules a skill may import, sorted (what ``bastion doctor --modules`` shows)."""
    names = {n for n in ALLOWED_MODULES + OPTIONAL_MODULES if n != "bastion" and n in _ALLOWED}
    return json.dumps(sorted(names))


def _skill_traceback(tb, owned):
    frames = [f for f in traceback.extract_tb(tb) if owned(f.filename)]
    lines = []
    for entry in traceback.format_list(frames):
        lines.extend(line for line in entry.rstrip("\n").split("\n"))
    return lines[-MAX_TRACEBACK:]


def _error(code, exc_type, message, tb_lines=(), **extra):
    message = str(message)
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    return json.dumps({
        "code": code,
        "type": exc_type,
        "message": message,
        "traceback": list(tb_lines),
        **extra,
    })


def _syntax_error(exc):
    lines = [
        line
        for chunk in traceback.format_exception_only(type(exc), exc)
        for line in chunk.rstrip("\n").split("\n")
        if line.strip()
    ]
    where = f" ({exc.filename}, line {exc.lineno})" if exc.lineno else ""
    return _error("SKILL_ERROR", type(exc).__name__, f"{exc.msg}{where}", lines[:-1])


def _exception_code(exc):
    if isinstance(exc, MemoryError):
        return "MEMORY_LIMIT"
    if isinstance(exc, OverflowError) and any(s in str(exc) for s in _SIZE_OVERFLOW):
        return "MEMORY_LIMIT"
    return "SKILL_ERROR"


def _describe(exc):
    if isinstance(exc, SystemExit):
        return f"the skill called exit({exc.code!r}); return a value from run() instead"
    if isinstance(exc, OverflowError) and _exception_code(exc) == "MEMORY_LIMIT":
        return f"the skill tried to allocate more memory than the sandbox allows ({exc})"
    return str(exc)


def _parse_args(input_json):
    try:
        args = json.loads(input_json)
    except ValueError as exc:
        raise Err(_error("INVALID_INPUT", "ValueError", f"input is not valid JSON: {exc}"))
    if not isinstance(args, dict):
        raise Err(_error("INVALID_INPUT", "TypeError",
                         f"input must be a JSON object, not {type(args).__name__}"))
    return args


def _skill_builtins(guard):
    skill_builtins = dict(builtins.__dict__)
    for name in _REMOVED_BUILTINS:
        skill_builtins.pop(name, None)
    skill_builtins["__import__"] = guard
    return skill_builtins


class _Call:
    """One call's set-up: the finder, the guarded import, and the skill's module."""

    def __init__(self, entry, code=None):
        self.entry = entry
        self.finder = SkillFinder(SKILL_ROOT, code=code)
        self.guard = _Guard(self.finder)

    def owned(self, filename):
        return filename in self.finder.own_files

    def __enter__(self):
        sys.meta_path[:] = [self.finder]
        builtins.__import__ = self.guard
        return self

    def __exit__(self, *exc):
        builtins.__import__ = _real_import
        sys.meta_path[:] = []
        return False

    def load(self):
        module = self.finder.load_entry(self.entry)
        fn = getattr(module, "run", None)
        if not callable(fn):
            raise Err(_error("SKILL_ERROR", "AttributeError",
                             f"{self.entry} defines no run() function"))
        return fn


def _failure(exc, stage, owned):
    """The ``Err`` for an exception raised by the skill at ``stage``."""
    if isinstance(exc, Err):
        return exc
    if isinstance(exc, MemoryError):
        return Err(_MEMORY_ERROR)
    if isinstance(exc, SyntaxError) and stage == "load":
        return Err(_syntax_error(exc))
    if stage == "output" and isinstance(exc, (TypeError, ValueError)):
        return Err(_error("INVALID_OUTPUT", type(exc).__name__,
                          f"run() returned a value that is not JSON: {exc}"))
    lines = _skill_traceback(exc.__traceback__, owned)
    return Err(_error(_exception_code(exc), type(exc).__name__, _describe(exc), lines))


# -- parameters ------------------------------------------------------------------------------


class _Params:
    """``run``'s parameters read from its code object (cheaper than ``inspect.signature``)."""

    __slots__ = ("defaults", "names", "positional_only", "var_keyword", "var_positional")

    def __init__(self, fn):
        code = getattr(fn, "__code__", None)
        if code is None:
            sig = inspect.signature(fn)
            self.names = [p.name for p in sig.parameters.values()
                          if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            self.positional_only = [p.name for p in sig.parameters.values()
                                    if p.kind is p.POSITIONAL_ONLY]
            self.defaults = {p.name: p.default for p in sig.parameters.values()
                             if p.default is not p.empty}
            self.var_positional = next((p.name for p in sig.parameters.values()
                                        if p.kind is p.VAR_POSITIONAL), None)
            self.var_keyword = next((p.name for p in sig.parameters.values()
                                     if p.kind is p.VAR_KEYWORD), None)
            return
        npos = code.co_argcount
        nkw = code.co_kwonlyargcount
        names = code.co_varnames[: npos + nkw]
        self.positional_only = list(names[: code.co_posonlyargcount])
        self.names = list(names[code.co_posonlyargcount:])
        defaults = {}
        pos_defaults = fn.__defaults__ or ()
        if pos_defaults:
            for name, value in zip(names[npos - len(pos_defaults): npos], pos_defaults):
                defaults[name] = value
        defaults.update(fn.__kwdefaults__ or {})
        self.defaults = defaults
        flags = code.co_flags
        extra = npos + nkw
        self.var_positional = (code.co_varnames[extra] if flags & inspect.CO_VARARGS else None)
        if flags & inspect.CO_VARARGS:
            extra += 1
        self.var_keyword = code.co_varnames[extra] if flags & _CO_VARKEYWORDS else None

    def bind(self, args):
        """Refuse unknown and missing arguments as INVALID_INPUT, like a call would."""
        if self.var_keyword is None:
            for key in args:
                if key not in self.names:
                    raise Err(_error("INVALID_INPUT", "TypeError",
                                     f"run() got an unexpected keyword argument {key!r}"))
        for name in self.names:
            if name not in args and name not in self.defaults:
                raise Err(_error("INVALID_INPUT", "TypeError",
                                 f"run() missing a required argument: {name!r}"))
        for name in self.positional_only:
            if name not in self.defaults:
                raise Err(_error("INVALID_INPUT", "TypeError",
                                 f"run() has a positional-only parameter {name!r}; skills are "
                                 "called with keyword arguments"))


def _hints(fn):
    try:
        return bastion_types._hints(fn)
    except bastion_types.Unsupported as exc:
        raise Err(_error("SKILL_ERROR", "TypeError", exc.what)) from None


def _convert_args(fn, params, args):
    hints = _hints(fn)
    out = {}
    for key, value in args.items():
        hint = hints.get(key)
        if hint is None:
            out[key] = value
            continue
        try:
            out[key] = bastion_types.convert_in(hint, value, key)
        except bastion_types.ConvertError as exc:
            raise Err(_error("INVALID_INPUT", "TypeError", f"argument {exc}")) from None
        except RecursionError:
            raise Err(_error("INVALID_INPUT", "RecursionError",
                             f"argument {key!r} nests too deeply")) from None
    return out


def _call(fn, kwargs):
    result = fn(**kwargs)
    if inspect.iscoroutine(result):
        result = bastion_aio.run_to_completion(result)
    return result


def _dump(result):
    return json.dumps(bastion_types.to_json(result), ensure_ascii=False, allow_nan=False)


def _code_of(value):
    """``{display name: marshalled code}`` from the context's base64 map (empty if malformed)."""
    if not isinstance(value, dict):
        return None
    try:
        return {str(k): binascii.a2b_base64(v) for k, v in value.items() if isinstance(v, str)}
    except (binascii.Error, ValueError):
        return None


def compile_module(source, filename):
    """Compile (never run) ``source`` as module ``filename``: base64 of its marshalled code."""
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        raise Err(_error("SKILL_ERROR", type(exc).__name__, exc))
    return binascii.b2a_base64(marshal.dumps(code), newline=False).decode("ascii")


def call_skill(entry, input_json, context_json):
    """Run one skill from the mapped folder; returns the JSON text of the result."""
    args = _parse_args(input_json)
    try:
        context = json.loads(context_json or "{}")
    except ValueError:
        context = {}
    if not isinstance(context, dict):
        context = {}
    bastion_sdk._set_config(context.get("config"))
    call = _Call(entry, _code_of(context.get("code")))
    stage = "load"
    try:
        with call:
            fn = call.load()
            params = _Params(fn)
            params.bind(args)
            kwargs = _convert_args(fn, params, args)
            stage = "run"
            result = _call(fn, kwargs)
            stage = "output"
            return _dump(result)
    except BaseException as exc:  # the skill's own failure, reported as data
        err = _failure(exc, stage, call.owned)
        del exc
        raise err


# -- schemas ---------------------------------------------------------------------------------


def _schema_error(message, fix, param=None):
    return Err(_error("SCHEMA", "TypeError", message, fix=fix, param=param))


def _derive(fn):
    params = _Params(fn)
    if params.positional_only:
        raise _schema_error(f"parameter {params.positional_only[0]!r} of run() is "
                            "positional-only", "remove the `/` marker: skills are called with "
                            "keyword arguments", params.positional_only[0])
    if params.var_positional:
        raise _schema_error(f"run() takes *{params.var_positional}",
                            "declare each parameter by name with a type", params.var_positional)
    if params.var_keyword:
        raise _schema_error(f"run() takes **{params.var_keyword}",
                            "declare each parameter by name with a type", params.var_keyword)
    hints = _hints(fn)
    summary, docs = bastion_types.parse_docstring(getattr(fn, "__doc__", None) or "")
    builder = bastion_types._Builder()
    props, required = {}, []
    for name in params.names:
        if name not in hints:
            raise _schema_error(f"parameter {name!r} of run() has no type hint",
                                f"annotate it with a supported type: {bastion_types.SUPPORTED}",
                                name)
        try:
            prop = builder.schema(hints[name])
        except bastion_types.Unsupported as exc:
            raise _schema_error(f"parameter {name!r} of run(): {exc.what}", exc.fix,
                                name) from None
        if docs.get(name) and "description" not in prop and "$ref" not in prop:
            prop["description"] = docs[name]
        if name in params.defaults:
            default = params.defaults[name]
            try:
                prop["default"] = bastion_types.to_json(default)
            except (TypeError, ValueError):
                raise _schema_error(f"the default {default!r} of {name!r} is not JSON data",
                                    "use a number, string, bool, None or an Enum member",
                                    name) from None
        else:
            required.append(name)
        props[name] = prop
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": props,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    if builder.defs:
        schema["$defs"] = builder.defs
    output = None
    ret = hints.get("return", inspect.Parameter.empty)
    if ret is not inspect.Parameter.empty and not bastion_sdk._is_content_type(ret):
        try:
            out_builder = bastion_types._Builder(lenient=True)
            body = out_builder.schema(ret)
            if body:
                output = {"$schema": "https://json-schema.org/draft/2020-12/schema", **body}
                if out_builder.defs:
                    output["$defs"] = out_builder.defs
                if docs.get("return") and "description" not in output:
                    output["description"] = docs["return"]
        except bastion_types.Unsupported:
            output = None
    return {"input_schema": schema, "output_schema": output, "description": summary,
            "is_async": inspect.iscoroutinefunction(fn)}


def describe_skill(entry):
    """Import the skill (no grants) and derive its schemas and description."""
    bastion_sdk._set_config(None)
    call = _Call(entry)
    try:
        with call:
            fn = call.load()
            return json.dumps(_derive(fn), ensure_ascii=False, allow_nan=False)
    except BaseException as exc:
        err = _failure(exc, "load", call.owned)
        del exc
        raise err


# -- the first wave's single-source call -----------------------------------------------------


def run_skill(source, filename, input_json):
    """Run one skill given as source text; returns the JSON text of ``run(**input)``."""
    args = _parse_args(input_json)
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        if isinstance(exc, SyntaxError):
            raise Err(_syntax_error(exc))
        raise Err(_error("SKILL_ERROR", type(exc).__name__, exc))
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": SKILL_MODULE, "__file__": filename, "__doc__": None}
    guard = _Guard(None, namespace)
    namespace["__builtins__"] = _skill_builtins(guard)
    builtins.__import__ = guard
    stage = "load"
    try:
        exec(code, namespace)
        fn = namespace.get("run")
        if not callable(fn):
            raise Err(_error("SKILL_ERROR", "AttributeError",
                             f"{filename} defines no run() function"))
        params = _Params(fn)
        params.bind(args)
        kwargs = _convert_args(fn, params, args)
        stage = "run"
        result = _call(fn, kwargs)
        stage = "output"
        return _dump(result)
    except BaseException as exc:
        err = _failure(exc, stage, lambda f: f == filename)
        del exc
        raise err
    finally:
        builtins.__import__ = _real_import


class WitWorld(wit_world.WitWorld):
    """The exported functions of the ``python-runner`` world."""

    def run_skill(self, source: str, filename: str, input: str) -> str:
        return run_skill(source, filename, input)

    def call_skill(self, entry: str, input: str, context: str) -> str:
        return call_skill(entry, input, context)

    def compile_module(self, source: str, filename: str) -> str:
        return compile_module(source, filename)

    def describe_skill(self, entry: str) -> str:
        return describe_skill(entry)

    def list_modules(self) -> str:
        return list_modules()

    def warm(self) -> None:
        return None


__all__ = ["WitWorld", "bastion_sdk", "call_skill", "compile_module", "describe_skill",
           "list_modules", "run_skill"]
