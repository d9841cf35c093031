"""Bastion's generic Python runner: the guest side of the ``python-runner`` world.

Built once into a WASM component by componentize-py, which imports this module at build time and
snapshots the interpreter. Each call (``run-skill``) gets a *fresh instance* of that snapshot, so
nothing a skill does survives the call. A call compiles the skill's source, executes it in a new
module namespace, calls ``run(**input)`` and returns ``json.dumps(result)``; a failure returns a
JSON error ``{"code", "type", "message", "traceback": [...]}`` where the traceback lists only
the skill's own file.

Imports: the allow-list (``bastion_allowed``) is imported here, at build time; then the import
machinery is emptied (``sys.meta_path``/``sys.path_hooks``), so only snapshotted modules exist.
An import from the skill of anything outside the allow-list fails with a message naming what the
sandbox offers. This is for clear errors, not the security boundary: the boundary is WASI (no
host files except granted mounts, empty environment, no sockets) and the host functions, which
check every grant.
"""

import builtins
import importlib
import inspect
import json
import linecache
import sys
import traceback

import wit_world
from componentize_py_types import Err

from bastion_allowed import ALLOWED_MODULES, HIDDEN_MODULES, INTERNAL_MODULES

for _name in ALLOWED_MODULES + INTERNAL_MODULES:
    importlib.import_module(_name)

import bastion_sdk  # noqa: E402  (after the allow-list, which it relies on)

MAX_MESSAGE = 2000
MAX_TRACEBACK = 60
SKILL_MODULE = "__skill__"

_ALLOWED = frozenset(ALLOWED_MODULES + INTERNAL_MODULES)
_PACKAGES = frozenset(
    ".".join(n.split(".")[:i]) for n in _ALLOWED for i in range(1, n.count(".") + 1)
)
_OFFERED = ", ".join(sorted(n for n in ALLOWED_MODULES if n != "bastion"))
_real_import = builtins.__import__
_MEMORY_ERROR = json.dumps({
    "code": "MEMORY_LIMIT",
    "type": "MemoryError",
    "message": "the skill ran out of memory",
    "traceback": [],
})
# A wasm32 interpreter cannot hold one object over 2 GiB: these OverflowErrors are memory limits.
_SIZE_OVERFLOW = ("index-sized integer", "is too long", "too many items", "cannot allocate")


def _not_offered(name):
    err = ModuleNotFoundError(
        f"module {name!r} is not available in the Bastion sandbox; "
        f"a skill may import: {_OFFERED}",
        name=name,
    )
    return err


def _check_import(name, fromlist, level):
    if level:
        raise ImportError(
            "relative imports are not available: a skill is a single file "
            f"(from {'.' * level}{name} import ...)"
        )
    if name not in _ALLOWED and name not in _PACKAGES:
        raise _not_offered(name)
    if name in _PACKAGES and name not in _ALLOWED:
        for item in fromlist or ():
            full = f"{name}.{item}"
            if full not in _ALLOWED and full not in _PACKAGES:
                raise _not_offered(full)


def _make_import(skill_globals):
    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        # Imports made by the skill itself (or a bare __import__ call) are checked; imports
        # the stdlib makes lazily on its own behalf are not (they can only reach the snapshot).
        if globals is None or globals is skill_globals:
            _check_import(name, fromlist, level)
        return _real_import(name, globals, locals, fromlist, level)

    return guarded_import


# Lock the import machinery: from here on only modules in the snapshot can be imported.
sys.meta_path.clear()
sys.path_hooks.clear()
sys.path_importer_cache.clear()
sys.path[:] = []
for _name in HIDDEN_MODULES:
    sys.modules.pop(_name, None)


def _skill_traceback(tb, filename):
    frames = [f for f in traceback.extract_tb(tb) if f.filename == filename]
    lines = []
    for entry in traceback.format_list(frames):
        lines.extend(line for line in entry.rstrip("\n").split("\n"))
    return lines[-MAX_TRACEBACK:]


def _error(code, exc_type, message, tb_lines=()):
    message = str(message)
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    return json.dumps({
        "code": code,
        "type": exc_type,
        "message": message,
        "traceback": list(tb_lines),
    })


def _syntax_error(exc, filename):
    lines = [
        line
        for chunk in traceback.format_exception_only(type(exc), exc)
        for line in chunk.rstrip("\n").split("\n")
        if line.strip()
    ]
    where = f" ({filename}, line {exc.lineno})" if exc.lineno else ""
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


def run_skill(source, filename, input_json):
    """Run one skill; returns the JSON text of ``run(**input)`` or raises ``Err(json)``."""
    try:
        args = json.loads(input_json)
    except ValueError as exc:
        raise Err(_error("INVALID_INPUT", "ValueError", f"input is not valid JSON: {exc}"))
    if not isinstance(args, dict):
        raise Err(_error("INVALID_INPUT", "TypeError",
                         f"input must be a JSON object, not {type(args).__name__}"))
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        if isinstance(exc, SyntaxError):
            raise Err(_syntax_error(exc, filename))
        raise Err(_error("SKILL_ERROR", type(exc).__name__, exc))
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": SKILL_MODULE, "__file__": filename, "__doc__": None}
    skill_builtins = dict(builtins.__dict__)
    for name in ("breakpoint", "input", "exit", "quit", "help", "copyright", "credits",
                 "license"):
        skill_builtins.pop(name, None)
    skill_builtins["__import__"] = _make_import(namespace)
    namespace["__builtins__"] = skill_builtins
    builtins.__import__ = skill_builtins["__import__"]
    stage = "load"
    try:
        exec(code, namespace)
        fn = namespace.get("run")
        if not callable(fn):
            raise Err(_error("SKILL_ERROR", "AttributeError",
                             f"{filename} defines no run() function"))
        try:
            inspect.signature(fn).bind(**args)
        except TypeError as exc:
            raise Err(_error("INVALID_INPUT", "TypeError", f"run() {exc}"))
        except ValueError:
            pass  # no signature available (e.g. a builtin): let the call decide
        stage = "run"
        result = fn(**args)
        stage = "output"
        return json.dumps(result, ensure_ascii=False, allow_nan=False)
    except Err:
        raise
    except MemoryError as exc:
        exc.__traceback__ = None
        del exc
        raise Err(_MEMORY_ERROR)
    except BaseException as exc:  # the skill's own failure, reported as data
        if stage == "output" and isinstance(exc, (TypeError, ValueError)):
            raise Err(_error("INVALID_OUTPUT", type(exc).__name__,
                             f"run() returned a value that is not JSON: {exc}"))
        lines = _skill_traceback(exc.__traceback__, filename)
        raise Err(_error(_exception_code(exc), type(exc).__name__, _describe(exc), lines))
    finally:
        builtins.__import__ = _real_import


class WitWorld(wit_world.WitWorld):
    """The exported ``run-skill`` function of the ``python-runner`` world."""

    def run_skill(self, source: str, filename: str, input: str) -> str:
        return run_skill(source, filename, input)


__all__ = ["WitWorld", "bastion_sdk", "run_skill"]
