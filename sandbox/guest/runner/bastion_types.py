"""Type hints to JSON Schema, JSON to typed arguments, and results back to JSON (in the guest).

Runs inside the sandbox on the skill's real objects (``typing.get_type_hints``), so what the
schema says is exactly what the runner converts. Supported: ``int float str bool None``,
``list/tuple/set/frozenset[T]``, ``tuple[A, B]``, ``dict[str, T]``, ``Optional``/unions,
``Literal``, aliases (``X = ...`` and ``type X = ...``), ``Enum``, ``TypedDict``
(``Required``/``NotRequired``), dataclasses, ``NamedTuple`` (an object of its fields),
``Annotated[T, Field(...)]`` or ``Annotated[T, "description"]``. Anything else is an
``Unsupported`` error that names the type and the fix.
"""

import collections.abc as _cabc
import dataclasses
import datetime
import enum
import re
import types
import typing

__all__ = [
    "ConvertError",
    "Field",
    "Unsupported",
    "convert_in",
    "parse_docstring",
    "schema_of",
    "to_json",
]

SUPPORTED = (
    "int, float, str, bool, None, list[T], tuple[T, ...], set[T], frozenset[T], dict[str, T], "
    "unions and Optional, Literal[...], Enum, TypedDict, dataclass, NamedTuple, type aliases "
    "and Annotated[T, Field(...)]"
)
_NoneType = type(None)
_UNION_TYPES = (typing.Union, types.UnionType)
_TYPE_ALIAS = getattr(typing, "TypeAliasType", None)
_REQUIRED_WRAPPERS = tuple(
    w for w in (typing.Required, typing.NotRequired, getattr(typing, "ReadOnly", None)) if w
)
_LISTS = (list, _cabc.Sequence, _cabc.MutableSequence)
_SETS = (set, _cabc.Set, _cabc.MutableSet)
_DICTS = (dict, _cabc.Mapping, _cabc.MutableMapping)


class Unsupported(Exception):
    """A type hint outside what the runner can describe; ``fix`` says what to write instead."""

    def __init__(self, what, fix=None):
        super().__init__(what)
        self.what = what
        self.fix = fix or f"use one of: {SUPPORTED}"


class ConvertError(Exception):
    """An argument does not fit its parameter's type; ``path`` says where (``a/0/b``)."""

    def __init__(self, path, message):
        super().__init__(f"{path or '(root)'}: {message}")
        self.path = path


class Field:
    """Constraints and a description for ``Annotated[T, Field(...)]``.

    ``ge le gt lt multiple_of`` for numbers, ``min_length max_length`` for strings and arrays,
    ``pattern`` for strings (a regular expression the host checks before the skill runs).
    """

    __slots__ = ("description", "examples", "ge", "gt", "le", "lt", "max_length",
                 "min_length", "multiple_of", "pattern", "title")

    def __init__(self, description=None, *, ge=None, le=None, gt=None, lt=None,
                 multiple_of=None, min_length=None, max_length=None, pattern=None,
                 title=None, examples=None):
        for key, value in (("ge", ge), ("le", le), ("gt", gt), ("lt", lt),
                           ("multiple_of", multiple_of)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                raise TypeError(f"Field({key}=...) must be a number, not {value!r}")
        for key, value in (("min_length", min_length), ("max_length", max_length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise TypeError(f"Field({key}=...) must be a non-negative int, not {value!r}")
        if pattern is not None:
            re.compile(pattern)
        self.description = description
        self.ge, self.le, self.gt, self.lt = ge, le, gt, lt
        self.multiple_of = multiple_of
        self.min_length, self.max_length = min_length, max_length
        self.pattern = pattern
        self.title = title
        self.examples = list(examples) if examples is not None else None

    def __repr__(self):
        items = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__
                          if getattr(self, k) is not None)
        return f"Field({items})"

    def apply(self, schema):
        """Add this marker's keywords to ``schema`` (a dict made for the annotated type)."""
        out = dict(schema)
        kind = out.get("type")
        for key, word in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"),
                          ("lt", "exclusiveMaximum"), ("multiple_of", "multipleOf")):
            value = getattr(self, key)
            if value is not None:
                out[word] = value
        if self.min_length is not None or self.max_length is not None:
            array = kind == "array"
            if self.min_length is not None:
                out["minItems" if array else "minLength"] = self.min_length
            if self.max_length is not None:
                out["maxItems" if array else "maxLength"] = self.max_length
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.description is not None:
            out["description"] = str(self.description)
        if self.title is not None:
            out["title"] = str(self.title)
        if self.examples is not None:
            out["examples"] = [to_json(e) for e in self.examples]
        return out


def _name(tp):
    return getattr(tp, "__qualname__", None) or getattr(tp, "__name__", None) or repr(tp)


def _is_typeddict(tp):
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _is_namedtuple(tp):
    return isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields")


def _strip_required(tp):
    origin = typing.get_origin(tp)
    while origin in _REQUIRED_WRAPPERS:
        tp = typing.get_args(tp)[0]
        origin = typing.get_origin(tp)
    return tp


def _hints(obj):
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception as exc:  # a name the annotation uses is not defined, a bad forward ref
        raise Unsupported(
            f"the type hints of {_name(obj)} cannot be resolved ({type(exc).__name__}: {exc})",
            "import every name an annotation uses at the module's top level",
        ) from None


def _union(members):
    """``anyOf`` of the members, or one ``type`` list when every member is a bare type."""
    flat = []
    for m in members:
        flat.extend(m["anyOf"] if set(m) == {"anyOf"} else [m])
    if flat and all(set(m) == {"type"} for m in flat):
        kinds = []
        for m in flat:
            for t in m["type"] if isinstance(m["type"], list) else [m["type"]]:
                if t not in kinds:
                    kinds.append(t)
        return {"type": kinds[0] if len(kinds) == 1 else kinds}
    unique = []
    for m in flat:
        if m not in unique:
            unique.append(m)
    return unique[0] if len(unique) == 1 else {"anyOf": unique}


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _enum_schema(values):
    out = {"enum": values}
    kinds = {_json_type(v) for v in values}
    if len(kinds) == 1 and None not in kinds:
        out["type"] = kinds.pop()
    return out


class _Builder:
    """Builds one document's schemas; recursive named types go to ``$defs``."""

    def __init__(self, lenient=False):
        self.lenient = lenient  # output schemas: Any and bare containers are allowed
        self.defs = {}
        self._stack = []
        self._recursive = set()
        self._names = {}

    def _def_name(self, key, tp):
        name = self._names.get(key)
        if name is None:
            base = re.sub(r"[^A-Za-z0-9_]", "_", getattr(tp, "__name__", "T")) or "T"
            name, n = base, 1
            while name in self._names.values():
                n += 1
                name = f"{base}{n}"
            self._names[key] = name
        return name

    def named(self, key, tp, build):
        """Expand a named type; a reference to itself inside becomes a ``$ref``."""
        if key in self._stack:
            self._recursive.add(key)
            return {"$ref": f"#/$defs/{self._def_name(key, tp)}"}
        self._stack.append(key)
        try:
            schema = build()
        finally:
            self._stack.pop()
        if key in self._recursive:
            name = self._def_name(key, tp)
            self.defs[name] = schema
            return {"$ref": f"#/$defs/{name}"}
        return schema

    def schema(self, tp):
        if tp is None or tp is _NoneType:
            return {"type": "null"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if _TYPE_ALIAS is not None and isinstance(tp, _TYPE_ALIAS):
            return self.named(("alias", id(tp)), tp, lambda: self.schema(tp.__value__))
        if isinstance(tp, typing.TypeVar):
            raise Unsupported(f"the type variable {tp!r} has no fixed type")
        if isinstance(tp, (str, typing.ForwardRef)):
            raise Unsupported(f"the forward reference {tp!r} cannot be resolved")
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            schema = self.schema(args[0])
            for meta in args[1:]:
                if isinstance(meta, Field):
                    schema = meta.apply(schema)
                elif isinstance(meta, str):
                    schema = {**schema, "description": meta}
            return schema
        if origin in _REQUIRED_WRAPPERS:
            return self.schema(args[0])
        if origin in _UNION_TYPES:
            return _union([self.schema(a) for a in args])
        if origin is typing.Literal:
            values = []
            for v in args:
                if isinstance(v, enum.Enum):
                    v = v.value
                if _json_type(v) in (None, "number"):
                    raise Unsupported(f"Literal value {v!r} is not a string, int, bool or None")
                values.append(v)
            return _enum_schema(values)
        if origin in _LISTS:
            return {"type": "array", "items": self.schema(args[0])} if args else self._bare(tp)
        if origin in _SETS or origin is frozenset:
            if not args:
                return self._bare(tp)
            return {"type": "array", "items": self.schema(args[0]), "uniqueItems": True}
        if origin is tuple:
            if not args:
                return self._bare(tp)
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.schema(args[0])}
            if args == ((),):
                return {"type": "array", "maxItems": 0}
            return {"type": "array", "prefixItems": [self.schema(a) for a in args],
                    "minItems": len(args), "maxItems": len(args), "items": False}
        if origin in _DICTS:
            if not args:
                return self._bare(tp)
            key = _strip_annotated(args[0])
            if not (key is str or (isinstance(key, type) and issubclass(key, str))):
                raise Unsupported(f"dict keys must be str (got {_name(args[0])}): JSON object "
                                  "keys are strings", "use dict[str, T]")
            return {"type": "object", "additionalProperties": self.schema(args[1])}
        if tp is typing.Any or tp is object:
            if self.lenient:
                return {}
            raise Unsupported("Any says nothing the model can fill in",
                              "name the type (str, int, a TypedDict or dataclass ...)")
        if tp in (list, tuple, set, frozenset, dict):
            return self._bare(tp)
        if isinstance(tp, type):
            if issubclass(tp, enum.Enum):
                return self.named(tp, tp, lambda: self._enum(tp))
            if _is_typeddict(tp):
                return self.named(tp, tp, lambda: self._typeddict(tp))
            if _is_namedtuple(tp):
                return self.named(tp, tp, lambda: self._namedtuple(tp))
            if dataclasses.is_dataclass(tp):
                return self.named(tp, tp, lambda: self._dataclass(tp))
            if issubclass(tp, bool):
                return {"type": "boolean"}
            if issubclass(tp, int):
                return {"type": "integer"}
            if issubclass(tp, float):
                return {"type": "number"}
            if issubclass(tp, str):
                return {"type": "string"}
            if tp is datetime.datetime:
                return {"type": "string", "format": "date-time"}
            if tp is datetime.date:
                return {"type": "string", "format": "date"}
        if self.lenient:
            return {}
        raise Unsupported(f"type {_name(tp)} is not supported")

    def _bare(self, tp):
        if self.lenient:
            return {"type": "object" if tp in (dict,) or typing.get_origin(tp) is dict
                    else "array"}
        name = getattr(tp, "__name__", repr(tp))
        raise Unsupported(f"bare {name} says nothing about its items",
                          f"write {name}[T] (for example {name}[str])")

    def _enum(self, tp):
        values = [to_json(m.value) for m in tp]
        for v in values:
            if _json_type(v) is None:
                raise Unsupported(f"Enum {tp.__name__} has the value {v!r}, which is not a "
                                  "JSON string, number, bool or null")
        out = _enum_schema(values)
        if tp.__doc__ and tp.__doc__ != enum.Enum.__doc__ and "An enumeration." not in tp.__doc__:
            out["description"] = _first_paragraph(tp.__doc__)
        return out

    def _object(self, tp, fields, required, descriptions):
        props = {}
        for name, (hint, default) in fields.items():
            prop = self.schema(hint)
            if name in descriptions and "description" not in prop and "$ref" not in prop:
                prop["description"] = descriptions[name]
            if default is not dataclasses.MISSING:
                try:
                    prop["default"] = to_json(default)
                except TypeError:
                    pass
            props[name] = prop
        out = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            out["required"] = required
        doc = tp.__doc__
        if doc and not _auto_doc(tp, doc):
            out["description"] = _first_paragraph(doc)
        return out

    def _typeddict(self, tp):
        hints = _hints(tp)
        fields = {k: (_strip_required(v), dataclasses.MISSING) for k, v in hints.items()}
        required = _td_required(tp, hints)
        return self._object(tp, fields, required, _attr_docs(tp))

    def _namedtuple(self, tp):
        hints = _hints(tp)
        defaults = getattr(tp, "_field_defaults", {})
        fields = {}
        for k in tp._fields:
            if k not in hints:
                raise Unsupported(f"field {k!r} of NamedTuple {tp.__name__} has no type")
            fields[k] = (hints[k], defaults.get(k, dataclasses.MISSING))
        required = [k for k in tp._fields if k not in defaults]
        return self._object(tp, fields, required, _attr_docs(tp))

    def _dataclass(self, tp):
        hints = _hints(tp)
        fields, required = {}, []
        for f in dataclasses.fields(tp):
            if not f.init:
                continue
            default = f.default
            if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
                try:
                    default = f.default_factory()
                except Exception:
                    default = dataclasses.MISSING
            else:
                if default is dataclasses.MISSING:
                    required.append(f.name)
            fields[f.name] = (hints.get(f.name, f.type), default)
        docs = _attr_docs(tp)
        for f in dataclasses.fields(tp):
            if f.metadata and f.metadata.get("description"):
                docs[f.name] = str(f.metadata["description"])
        return self._object(tp, fields, required, docs)


def _td_required(tp, hints):
    """Required keys of a TypedDict, also when ``from __future__ import annotations`` hid the
    ``Required``/``NotRequired`` wrappers from the class statement."""
    out = []
    for key, hint in hints.items():
        origin = typing.get_origin(_strip_annotated(hint))
        if origin is typing.NotRequired:
            continue
        if origin is typing.Required or key in tp.__required_keys__:
            out.append(key)
    return out


def _auto_doc(tp, doc):
    # dataclasses and NamedTuples get a generated __doc__ like "Point(x, y)"
    return doc.startswith(f"{tp.__name__}(") or "An enumeration." in doc


def _strip_annotated(tp):
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _first_paragraph(doc):
    summary, _ = parse_docstring(doc)
    return summary


def _attr_docs(tp):
    """Per-field descriptions from the class docstring (``Attributes:`` or ``Args:``)."""
    _, params = parse_docstring(tp.__doc__ or "")
    return params


def schema_of(tp, *, lenient=False):
    """The JSON Schema (draft 2020-12) of one type, with ``$defs`` when it is recursive."""
    builder = _Builder(lenient=lenient)
    schema = builder.schema(tp)
    if builder.defs:
        schema = {**schema, "$defs": builder.defs}
    return schema


# -- docstrings ----------------------------------------------------------------------------

_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Attributes|"
    r"Returns|Return|Yields|Raises|Examples?|Notes?|See Also|References)\s*:?\s*$"
)
_PARAM_SECTIONS = {"Args", "Arguments", "Parameters", "Params", "Keyword Args",
                   "Keyword Arguments", "Attributes"}
_RETURN_SECTIONS = {"Returns", "Return"}
_NUMPY_RULE = re.compile(r"^\s*-{3,}\s*$")
_GOOGLE_ITEM = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ITEM = re.compile(r"^(\w+)\s*(?::.*)?$")
_REST_PARAM = re.compile(r"^\s*:(?:param|parameter|arg|argument|key|keyword)\s+"
                         r"(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_REST_RETURN = re.compile(r"^\s*:(?:returns?)\s*:\s*(.*)$")
_REST_ANY = re.compile(r"^\s*:\w+")


def parse_docstring(doc):
    """``(summary, {param: description})`` from a Google, NumPy or reST docstring.

    The summary is the first paragraph joined into one line; ``"return"`` holds the
    description of the result, if the docstring has one.
    """
    import inspect

    lines = inspect.cleandoc(doc or "").expandtabs().splitlines()
    para = []
    for line in lines:
        if not line.strip():
            if para:
                break
            continue
        if _SECTION.match(line) or _REST_ANY.match(line):
            break
        para.append(line.strip())
    params = {}
    _rest(lines, params)
    i = 0
    while i < len(lines):
        m = _SECTION.match(lines[i])
        if not m:
            i += 1
            continue
        section = m.group(1)
        numpy = i + 1 < len(lines) and bool(_NUMPY_RULE.match(lines[i + 1]))
        i += 2 if numpy else 1
        body = []
        while i < len(lines):
            line = lines[i]
            if line.strip() and (_SECTION.match(line) and (
                    numpy and i + 1 < len(lines) and _NUMPY_RULE.match(lines[i + 1])
                    or not numpy and len(line) - len(line.lstrip()) == 0)):
                break
            body.append(line)
            i += 1
        if section in _PARAM_SECTIONS:
            _items(body, params, numpy)
        elif section in _RETURN_SECTIONS:
            text = " ".join(line.strip() for line in body if line.strip())
            if numpy and body:
                # NumPy: a type line, then the indented description
                rest = [line.strip() for line in body[1:] if line.strip()]
                text = " ".join(rest) or text
            if text:
                params.setdefault("return", text)
    return " ".join(para), params


def _items(body, params, numpy):
    item_indent = None
    current = None
    for line in body:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if item_indent is None:
            item_indent = indent
        if indent < item_indent:
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


def _rest(lines, params):
    current = None
    for line in lines:
        m = _REST_PARAM.match(line)
        if m:
            current = m.group(1)
            params[current] = m.group(2).strip()
            continue
        m = _REST_RETURN.match(line)
        if m:
            current = "return"
            params[current] = m.group(1).strip()
            continue
        if _REST_ANY.match(line) or not line.strip():
            current = None
        elif current is not None and line.startswith((" ", "\t")):
            params[current] = (params[current] + " " + line.strip()).strip()


# -- conversion ------------------------------------------------------------------------------


def _kind(value):
    return type(value).__name__ if value is not None else "null"


def convert_in(tp, value, path=""):
    """``value`` (parsed JSON) as the Python value ``tp`` describes; ``ConvertError`` if not."""
    if tp is None or tp is _NoneType:
        if value is None:
            return None
        raise ConvertError(path, f"expected null, got {_kind(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConvertError(path, f"expected a boolean, got {_kind(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConvertError(path, f"expected an integer, got {_kind(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConvertError(path, f"expected a number, got {_kind(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConvertError(path, f"expected a string, got {_kind(value)}")
    if _TYPE_ALIAS is not None and isinstance(tp, _TYPE_ALIAS):
        return convert_in(tp.__value__, value, path)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated or origin in _REQUIRED_WRAPPERS:
        return convert_in(args[0], value, path)
    if origin in _UNION_TYPES:
        # exact JSON kind first (so 1 stays an int in int | float), then the others in order
        errors = []
        for arg in sorted(args, key=lambda a: not _same_kind(a, value)):
            try:
                return convert_in(arg, value, path)
            except ConvertError as exc:
                errors.append(str(exc))
        raise ConvertError(path, f"{_kind(value)} matches none of the union's types")
    if origin is typing.Literal:
        for v in args:
            raw = v.value if isinstance(v, enum.Enum) else v
            if raw == value and type(raw) is type(value):
                return v
        raise ConvertError(path, f"{value!r} is not one of {[to_json(a) for a in args]!r}")
    if origin in _LISTS or origin in _SETS or origin is frozenset:
        if not isinstance(value, list):
            raise ConvertError(path, f"expected an array, got {_kind(value)}")
        item = args[0] if args else typing.Any
        items = [convert_in(item, v, f"{path}/{i}") for i, v in enumerate(value)]
        if origin in _SETS:
            try:
                return set(items)
            except TypeError:
                raise ConvertError(path, "set items must be hashable") from None
        if origin is frozenset:
            try:
                return frozenset(items)
            except TypeError:
                raise ConvertError(path, "set items must be hashable") from None
        return items
    if origin is tuple:
        if not isinstance(value, list):
            raise ConvertError(path, f"expected an array, got {_kind(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert_in(args[0], v, f"{path}/{i}") for i, v in enumerate(value))
        if args == ((),):
            args = ()
        if len(value) != len(args):
            raise ConvertError(path, f"expected {len(args)} items, got {len(value)}")
        return tuple(convert_in(a, v, f"{path}/{i}") for i, (a, v) in enumerate(zip(args, value)))
    if origin in _DICTS:
        if not isinstance(value, dict):
            raise ConvertError(path, f"expected an object, got {_kind(value)}")
        vt = args[1] if args else typing.Any
        kt = _strip_annotated(args[0]) if args else str
        out = {}
        for k, v in value.items():
            key = convert_in(kt, k, f"{path}/{k}") if kt is not str else k
            out[key] = convert_in(vt, v, f"{path}/{k}")
        return out
    if tp is typing.Any or tp is object or tp in (list, dict, tuple, set, frozenset):
        if tp in (tuple, set, frozenset) and isinstance(value, list):
            return tp(value)
        return value
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            for member in tp:
                raw = to_json(member.value)
                if raw == value and type(raw) is type(value):
                    return member
            raise ConvertError(path, f"{value!r} is not one of {[to_json(m.value) for m in tp]!r}")
        if _is_typeddict(tp):
            hints = _hints(tp)
            return _convert_fields(tp, value, path,
                                   {k: _strip_required(h) for k, h in hints.items()}, dict,
                                   _td_required(tp, hints))
        if _is_namedtuple(tp):
            hints = _hints(tp)
            required = [k for k in tp._fields if k not in getattr(tp, "_field_defaults", {})]
            return _convert_fields(tp, value, path, {k: hints[k] for k in tp._fields}, tp,
                                   required)
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            fields = [f for f in dataclasses.fields(tp) if f.init]
            required = [f.name for f in fields if f.default is dataclasses.MISSING
                        and f.default_factory is dataclasses.MISSING]
            return _convert_fields(tp, value, path, {f.name: hints.get(f.name, f.type)
                                                     for f in fields}, tp, required)
        if issubclass(tp, (bool, int, float, str)):
            for base in (bool, int, float, str):
                if issubclass(tp, base):
                    return tp(convert_in(base, value, path))
        if tp is datetime.datetime or tp is datetime.date:
            if not isinstance(value, str):
                raise ConvertError(path, f"expected an ISO 8601 string, got {_kind(value)}")
            try:
                return tp.fromisoformat(value)
            except ValueError as exc:
                raise ConvertError(path, str(exc)) from None
    return value


def _same_kind(tp, value):
    tp = _strip_annotated(tp)
    kind = _json_type(value)
    if tp is _NoneType or tp is None:
        return kind == "null"
    if tp is bool:
        return kind == "boolean"
    if tp is int:
        return kind == "integer"
    if tp is float:
        return kind == "number"
    if tp is str:
        return kind == "string"
    return False


def _convert_fields(tp, value, path, hints, build, required):
    if not isinstance(value, dict):
        raise ConvertError(path, f"expected an object for {tp.__name__}, got {_kind(value)}")
    out = {}
    for key, v in value.items():
        if key not in hints:
            raise ConvertError(f"{path}/{key}", f"{tp.__name__} has no field {key!r}")
        out[key] = convert_in(hints[key], v, f"{path}/{key}")
    for key in required:
        if key not in out:
            raise ConvertError(f"{path}/{key}", f"{tp.__name__} needs the field {key!r}")
    return build(**out)


def to_json(value, _depth=0):
    """A result as plain JSON data: dataclasses, NamedTuples and TypedDicts become objects,
    Enums their values, tuples and sets arrays, dates ISO strings; files and images stay
    as their SDK objects' JSON form. ``TypeError`` for anything else."""
    if _depth > 200:
        raise ValueError("the result nests more than 200 levels deep")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return to_json(value.value, _depth + 1)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise ValueError(f"{value!r} is not a JSON number")
        return value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, enum.Enum):
                k = k.value
            if not isinstance(k, str):
                raise TypeError(f"object keys must be str, not {type(k).__name__} ({k!r})")
            out[k] = to_json(v, _depth + 1)
        return out
    if _is_namedtuple(type(value)):
        return {k: to_json(getattr(value, k), _depth + 1) for k in value._fields}
    if isinstance(value, (list, tuple)):
        return [to_json(v, _depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_json(v, _depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name), _depth + 1)
                for f in dataclasses.fields(value)}
    as_json = getattr(type(value), "__bastion_json__", None)
    if as_json is not None:
        return as_json(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
