"""Derive a Python skill's input JSON Schema and description from its source, statically.

The source is parsed with ``ast`` and never imported or executed on the host: ``run``'s
signature gives the parameters, its docstring the description (first paragraph) and the
per-parameter descriptions (Google ``Args:`` or NumPy ``Parameters`` sections).

Supported annotations: ``str``, ``int``, ``float``, ``bool``, ``None``, ``list[X]``/``List[X]``,
``dict[str, X]``/``Dict[str, X]``, ``Optional[X]``, ``X | None``, ``Union[...]``,
``Literal[...]`` of str/int/bool/None, ``Annotated[X, "description"]`` and ``TypedDict`` classes
of the same file (``total=False``, ``Required``/``NotRequired``, TypedDict bases). ``Any`` and
bare ``list``/``dict`` are refused: the model can only fill in what the schema spells out.
Defaults must be literals: numbers, strings, booleans, ``None``, ``[]`` or ``{}``.
Every problem is a ``ManifestError`` naming the file, line, parameter and the fix.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jsonschema

from .errors import ManifestError
from .memo import default_memo

__all__ = ["DerivedSkill", "derive_schema", "derive_schema_memoized"]

_SUPPORTED: Final = (
    "str, int, float, bool, None, list[X], dict[str, X], Optional[X], X | None, Union[...], "
    "Literal[...], or a TypedDict class defined in the same file"
)
_TYPING_MODULES: Final = frozenset({"typing", "typing_extensions"})
_BUILTINS: Final = frozenset({"str", "int", "float", "bool", "list", "dict", "None"})
_SCALARS: Final[dict[str, dict[str, Any]]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "None": {"type": "null"},
    "NoneType": {"type": "null"},
}
_DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class DerivedSkill:
    """What static analysis found: the input schema, the description, the output schema (if the
    return annotation is supported; else ``None``)."""

    input_schema: dict[str, Any]
    description: str
    output_schema: dict[str, Any] | None


class _Unsupported(Exception):
    """An annotation outside the grammar; ``node`` is where, ``fix`` the remedy."""

    def __init__(self, what: str, node: ast.AST, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.node = node
        self.fix = fix


@dataclass
class _TypedDictDef:
    node: ast.ClassDef
    total: bool
    bases: list[str]


class _Analyzer:
    """Resolves annotation expressions of one module to JSON Schema."""

    def __init__(self, tree: ast.Module) -> None:
        self.aliases: dict[str, str] = {}  # local name -> typing name
        self.modules: set[str] = set()  # local names bound to typing modules
        self.typeddicts: dict[str, _TypedDictDef] = {}
        self._building: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in _TYPING_MODULES:
                        self.modules.add(a.asname or a.name)
            elif isinstance(node, ast.ImportFrom) and node.module in _TYPING_MODULES:
                for a in node.names:
                    self.aliases[a.asname or a.name] = a.name
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                self._maybe_typeddict(node)

    def _maybe_typeddict(self, node: ast.ClassDef) -> None:
        bases: list[str] = []
        is_td = False
        for b in node.bases:
            name = self.name_of(b)
            if name == "TypedDict":
                is_td = True
            elif isinstance(b, ast.Name) and b.id in self.typeddicts:
                is_td = True
                bases.append(b.id)
            else:
                return
        total = True
        for kw in node.keywords:
            if kw.arg == "total" and isinstance(kw.value, ast.Constant):
                total = bool(kw.value.value)
        if is_td:
            self.typeddicts[node.name] = _TypedDictDef(node, total, bases)

    def name_of(self, node: ast.AST) -> str | None:
        """The typing/builtin name an annotation node refers to, if any."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            if node.id in _BUILTINS or node.id in self.typeddicts:
                return node.id
            return None
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in self.modules
        ):
            return node.attr
        if isinstance(node, ast.Constant) and node.value is None:
            return "None"
        return None

    def schema(self, node: ast.expr) -> dict[str, Any]:
        """JSON Schema of an annotation; raises ``_Unsupported``."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                inner = ast.parse(node.value.strip(), mode="eval").body
            except SyntaxError:
                raise _Unsupported(
                    f"the string annotation {node.value!r} does not parse", node
                ) from None
            ast.copy_location(inner, node)
            return self.schema(inner)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return _union([self.schema(node.left), self.schema(node.right)])
        if isinstance(node, ast.Subscript):
            return self._generic(node)
        name = self.name_of(node)
        if name in _SCALARS:
            return dict(_SCALARS[name])
        if name in self.typeddicts:
            return self._typeddict(name)
        if name == "Any":
            raise _Unsupported(
                "`Any` is not allowed", node, "say what the parameter holds: " + _SUPPORTED
            )
        if name in ("list", "List", "dict", "Dict"):
            hint = "list[str]" if name.lower() == "list" else "dict[str, int]"
            raise _Unsupported(
                f"bare `{name}` does not say what it holds",
                node,
                f"give the item type, e.g. `{hint}`",
            )
        raise _Unsupported(f"`{ast.unparse(node)}` is not a supported type", node)

    def _generic(self, node: ast.Subscript) -> dict[str, Any]:
        name = self.name_of(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if name in ("list", "List") and len(args) == 1:
            return {"type": "array", "items": self.schema(args[0])}
        if name in ("dict", "Dict") and len(args) == 2:
            if self.name_of(args[0]) != "str":
                raise _Unsupported(
                    f"`{ast.unparse(node)}` has non-string keys",
                    node,
                    "JSON object keys are strings: use `dict[str, ...]`",
                )
            return {"type": "object", "additionalProperties": self.schema(args[1])}
        if name == "Optional" and len(args) == 1:
            return _union([self.schema(args[0]), {"type": "null"}])
        if name == "Union":
            return _union([self.schema(a) for a in args])
        if name == "Literal":
            values: list[Any] = []
            for a in args:
                try:
                    v = ast.literal_eval(a)  # also -1, which is a unary minus node
                except (ValueError, TypeError, SyntaxError, RecursionError):
                    v = ...
                if not (v is None or isinstance(v, (str, int, bool))):
                    raise _Unsupported(
                        f"`{ast.unparse(a)}` in `{ast.unparse(node)}` is not a "
                        "str, int, bool or None literal",
                        node,
                    )
                values.append(v)
            return {"enum": values}
        if name == "Annotated" and len(args) >= 2:
            out = self.schema(args[0])
            for meta in args[1:]:
                if isinstance(meta, ast.Constant) and isinstance(meta.value, str):
                    out["description"] = meta.value
                    break
            return out
        if name in ("Required", "NotRequired") and len(args) == 1:
            raise _Unsupported(f"`{name}` only belongs on a TypedDict field", node)
        raise _Unsupported(f"`{ast.unparse(node)}` is not a supported type", node)

    def _typeddict(self, name: str) -> dict[str, Any]:
        if name in self._building:
            raise _Unsupported(
                f"TypedDict `{name}` refers to itself",
                self.typeddicts[name].node,
                "JSON Schemas for tools are not recursive; flatten the type",
            )
        self._building.append(name)
        try:
            td = self.typeddicts[name]
            props: dict[str, Any] = {}
            required: list[str] = []
            for base in td.bases:
                sub = self._typeddict(base)
                props.update(sub["properties"])
                required += [r for r in sub.get("required", []) if r not in required]
            for stmt in td.node.body:
                if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
                    continue
                ann = stmt.annotation
                need = td.total
                if isinstance(ann, ast.Subscript) and self.name_of(ann.value) in (
                    "Required",
                    "NotRequired",
                ):
                    need = self.name_of(ann.value) == "Required"
                    ann = ann.slice
                field = stmt.target.id
                props[field] = self.schema(ann)
                if need and field not in required:
                    required.append(field)
                elif not need and field in required:
                    required.remove(field)
            out: dict[str, Any] = {
                "type": "object",
                "properties": props,
                "additionalProperties": False,
            }
            if required:
                out["required"] = required
            return out
        finally:
            self._building.pop()


def _union(members: list[dict[str, Any]]) -> dict[str, Any]:
    """``anyOf`` of the members, or one ``type`` list when every member is a bare type."""
    flat: list[dict[str, Any]] = []
    for m in members:
        flat.extend(m["anyOf"] if set(m) == {"anyOf"} else [m])
    if all(set(m) == {"type"} for m in flat):
        types: list[str] = []
        for m in flat:
            for t in m["type"] if isinstance(m["type"], list) else [m["type"]]:
                if t not in types:
                    types.append(t)
        return {"type": types[0] if len(types) == 1 else types}
    unique: list[dict[str, Any]] = []
    for m in flat:
        if m not in unique:
            unique.append(m)
    return unique[0] if len(unique) == 1 else {"anyOf": unique}


_SECTION: Final = re.compile(r"^\s*(Args|Arguments|Parameters|Params|Keyword Args)\s*:?\s*$")
_NUMPY_RULE: Final = re.compile(r"^\s*-{3,}\s*$")
_GOOGLE_ITEM: Final = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ITEM: Final = re.compile(r"^(\w+)\s*(?::.*)?$")
_ANY_HEADER: Final = re.compile(r"^\s*([A-Z][A-Za-z ]*)\s*:?\s*$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """First paragraph (joined into one line) and per-parameter descriptions."""
    lines = doc.expandtabs().splitlines()
    para: list[str] = []
    for line in lines:
        if not line.strip():
            if para:
                break
            continue
        if _SECTION.match(line):
            break
        para.append(line.strip())
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        m = _SECTION.match(lines[i])
        if not m:
            i += 1
            continue
        numpy = i + 1 < len(lines) and bool(_NUMPY_RULE.match(lines[i + 1]))
        i += 2 if numpy else 1
        item_indent: int | None = None
        current: str | None = None
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                i += 1
                if numpy and i < len(lines) and _NUMPY_RULE.match(lines[i]):
                    break
                continue
            indent = len(line) - len(line.lstrip())
            if numpy and i + 1 < len(lines) and _NUMPY_RULE.match(lines[i + 1]):
                break  # the next NumPy section
            if item_indent is None:
                item_indent = indent
            if indent < item_indent or (
                not numpy
                and indent == item_indent
                and _ANY_HEADER.match(line)
                and current is not None
                and not _GOOGLE_ITEM.match(line.strip())
            ):
                break
            text = line.strip()
            if indent == item_indent:
                mm = (_NUMPY_ITEM if numpy else _GOOGLE_ITEM).match(text)
                if mm is None:
                    break
                current = mm.group(1).lstrip("*")
                params[current] = "" if numpy else mm.group(2).strip()
            elif current is not None:
                params[current] = (params[current] + " " + text).strip()
            i += 1
    return " ".join(para), params


def _error(
    filename: str, node: ast.AST | None, message: str, fix: str | None, param: str | None = None
) -> ManifestError:
    line = getattr(node, "lineno", None)
    where = ", ".join(
        p
        for p in (f"line {line}" if line else None, f"parameter `{param}`" if param else None)
        if p
    )
    return ManifestError(message, source=filename, where=where or None, fix=fix)


_ALLOWED_DEFAULTS: Final = "a number, a string, True/False, None, [] or {}"


def _default(node: ast.expr, filename: str, param: str) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise _error(
            filename,
            node,
            f"the default `{ast.unparse(node)}` of `{param}` is not a literal",
            f"use {_ALLOWED_DEFAULTS}",
            param,
        ) from None
    ok = (
        value is None
        or isinstance(value, (str, bool, int, float))
        or (isinstance(value, (list, dict)) and not value)
    )
    if not ok or (isinstance(value, float) and value != value):
        raise _error(
            filename,
            node,
            f"the default {value!r} of `{param}` is not allowed",
            f"use {_ALLOWED_DEFAULTS}",
            param,
        )
    return value


def derive_schema(source: str, filename: str) -> DerivedSkill:
    """Input schema (draft 2020-12, ``additionalProperties: false``), description and output
    schema of the skill in ``source``, from ``def run(...)``; never executes the source."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise ManifestError(
            f"the source does not parse: {exc.msg}",
            source=filename,
            where=f"line {exc.lineno}" if exc.lineno else None,
            fix="fix the syntax error",
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ManifestError(
            f"the source cannot be parsed ({type(exc).__name__})",
            source=filename,
            fix="simplify the source",
        ) from None
    runs = [
        n
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "run"
    ]
    if not runs:
        raise ManifestError(
            "no top-level `def run(...)` found",
            source=filename,
            fix="define the skill's entry point as a top-level function `run`",
        )
    func = runs[-1]
    if isinstance(func, ast.AsyncFunctionDef):
        raise _error(
            filename,
            func,
            "`run` is `async def`",
            "make `run` a plain `def`: skills run synchronously in the sandbox",
        )
    analyzer = _Analyzer(tree)
    a = func.args
    if a.posonlyargs:
        p = a.posonlyargs[0]
        raise _error(
            filename,
            p,
            f"parameter `{p.arg}` is positional-only",
            "remove the `/` marker: skills are called with keyword arguments",
            p.arg,
        )
    if a.vararg:
        raise _error(
            filename,
            a.vararg,
            f"`*{a.vararg.arg}` is not allowed",
            "declare each parameter by name with a type",
            a.vararg.arg,
        )
    if a.kwarg:
        raise _error(
            filename,
            a.kwarg,
            f"`**{a.kwarg.arg}` is not allowed",
            "declare each parameter by name with a type",
            a.kwarg.arg,
        )
    doc = ast.get_docstring(func) or ""
    description, param_docs = _parse_docstring(doc)
    defaults: list[ast.expr | None] = (
        [None] * (len(a.args) - len(a.defaults)) + list(a.defaults) + list(a.kw_defaults)
    )
    props: dict[str, Any] = {}
    required: list[str] = []
    for arg, default in zip([*a.args, *a.kwonlyargs], defaults, strict=True):
        name = arg.arg
        if arg.annotation is None:
            raise _error(
                filename,
                arg,
                f"parameter `{name}` has no type annotation",
                f"annotate `{name}` with a supported type: {_SUPPORTED}",
                name,
            )
        try:
            prop = analyzer.schema(arg.annotation)
        except _Unsupported as exc:
            raise _error(
                filename,
                exc.node,
                f"parameter `{name}`: {exc.what}",
                exc.fix or f"annotate `{name}` with a supported type: {_SUPPORTED}",
                name,
            ) from None
        if name in param_docs and param_docs[name] and "description" not in prop:
            prop["description"] = param_docs[name]
        if default is None:
            required.append(name)
        else:
            value = _default(default, filename, name)
            if not jsonschema.Draft202012Validator(prop).is_valid(value):
                raise _error(
                    filename,
                    default,
                    f"the default {value!r} of `{name}` does not "
                    f"match its type `{ast.unparse(arg.annotation)}`",
                    f"change the default, or write `{ast.unparse(arg.annotation)} | "
                    "None` if None means 'not given'",
                    name,
                )
            prop["default"] = value
        props[name] = prop
    schema: dict[str, Any] = {
        "$schema": _DRAFT,
        "type": "object",
        "properties": props,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    output: dict[str, Any] | None = None
    if func.returns is not None:
        try:
            output = {"$schema": _DRAFT, **analyzer.schema(func.returns)}
        except _Unsupported:
            output = None
    return DerivedSkill(schema, description, output)


_MEMO_NAMESPACE: Final = "pyschema"
_code_digest: str | None = None


def _analyzer_digest() -> str:
    """sha256 of this analyzer's own source and the Python version (part of every memo key)."""
    global _code_digest
    if _code_digest is None:
        h = hashlib.sha256(f"python-{sys.version_info[0]}.{sys.version_info[1]}\0".encode())
        h.update(Path(__file__).read_bytes())
        _code_digest = h.hexdigest()
    return _code_digest


def derive_schema_memoized(source: str, filename: str) -> DerivedSkill:
    """``derive_schema`` through the persistent memo (``bastion.memo``).

    Keyed by the source, the file name and this analyzer's own code, so an edit to either
    derives afresh. Only successes are remembered: errors are recomputed to be reported.
    """
    memo = default_memo()
    if memo is None:
        return derive_schema(source, filename)
    try:
        parts = (_analyzer_digest(), filename, source)
    except OSError:
        return derive_schema(source, filename)
    hit = memo.get(_MEMO_NAMESPACE, *parts)
    if (
        isinstance(hit, dict)
        and isinstance(hit.get("input_schema"), dict)
        and isinstance(hit.get("description"), str)
        and (hit.get("output_schema") is None or isinstance(hit.get("output_schema"), dict))
    ):
        return DerivedSkill(hit["input_schema"], hit["description"], hit["output_schema"])
    derived = derive_schema(source, filename)
    memo.put(
        _MEMO_NAMESPACE,
        {
            "input_schema": derived.input_schema,
            "description": derived.description,
            "output_schema": derived.output_schema,
        },
        *parts,
    )
    return derived
