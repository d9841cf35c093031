"""Skill and pack manifests (``skill.toml``, ``bastion-pack.toml``) as validated models.

A manifest is reviewed before anything of the skill runs. Every rule is checked here so that a
bad manifest is refused with the file, the field and the fix, never half-loaded.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .boundedread import read_capped
from .configfile import MAX_CONFIG_BYTES, config_error_from_validation, read_toml, read_toml_text
from .errors import ManifestError, RuleError
from .memo import default_memo
from .netrule import NetRule
from .schemas import check_schema_document

__all__ = [
    "CONFIG_TYPES",
    "MAX_TITLE_CHARS",
    "NAME_PATTERN",
    "PACK_MANIFEST",
    "RUNTIMES",
    "SKILL_MANIFEST",
    "ConfigKey",
    "Example",
    "FsRequest",
    "LimitsRequest",
    "PackManifest",
    "Permissions",
    "SkillManifest",
    "check_json_schema",
    "check_rules",
    "default_title",
    "load_pack_manifest",
    "load_skill_manifest",
    "normalize_guest_path",
    "written_as",
]

SKILL_MANIFEST = "skill.toml"
PACK_MANIFEST = "bastion-pack.toml"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
RUNTIMES = ("wasm", "component", "python", "native")
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_SECRET_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_REQUIREMENT = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?(?:\[[A-Za-z0-9._, -]{1,200}\])?"
    r"\s*(?:(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]{1,64}"
    r"(?:\s*,\s*(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]{1,64}){0,9})?$"
)
_CONFIG_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CONFIG_TYPES = ("string", "integer", "number", "boolean")
_PACK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_SCHEMA_OK = "schema-ok-draft2020-12"
"""Memo namespace: schemas that passed the draft 2020-12 metaschema check."""


def check_semver(value: str) -> str:
    """Accept a semantic version ``MAJOR.MINOR.PATCH[-pre][+build]``."""
    if not _SEMVER.match(value):
        raise ValueError(f"{value!r} is not a semantic version; write it as MAJOR.MINOR.PATCH")
    return value


def normalize_guest_path(value: str) -> str:
    """Normalise an absolute guest path; refuse relative paths, ``..`` and odd characters."""
    if not value.startswith("/"):
        raise ValueError(f"guest path {value!r} must be absolute, e.g. '/data'")
    if any(ord(c) < 32 or c == "\\" for c in value):
        raise ValueError(f"guest path {value!r} contains a control character or backslash")
    if ".." in value.split("/"):
        raise ValueError(f"guest path {value!r} must not contain '..'")
    norm = posixpath.normpath(value)
    if norm == "/":
        raise ValueError("guest path '/' is not allowed; mount a named folder such as '/data'")
    return norm


def check_rules(texts: tuple[str, ...]) -> tuple[str, ...]:
    """Validate network rules for a pydantic field: a bad rule is a ValueError quoting it."""
    for text in texts:
        try:
            NetRule.parse(text)
        except RuleError as exc:
            raise ValueError(exc.message) from None
    return texts


def _relative_inside(rel: str) -> bool:
    """True for a non-empty relative path that stays inside its folder (no ``..``, no ``\\``)."""
    return (
        bool(rel.strip())
        and not rel.startswith("/")
        and "\\" not in rel
        and (".." not in rel.split("/"))
    )


def _canonical(schema: dict[str, Any]) -> str | None:
    """One spelling per schema (sorted keys, no spaces), or None if it is not plain JSON."""
    try:
        return json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


def check_json_schema(schema: dict[str, Any], what: str) -> dict[str, Any]:
    """Validate ``schema`` as a JSON Schema (draft 2020-12) describing an object.

    First :func:`bastion.schemas.check_schema_document`: a schema is data, never a loader.

    A schema that passed the metaschema check once is remembered (``bastion.memo``) by its
    canonical JSON, so discovery does not re-walk the metaschema (nor import jsonschema, ~60 ms)
    in every process.
    """
    check_schema_document(schema, what)  # size, depth, local refs only, RE2 patterns
    memo = default_memo()
    canonical = _canonical(schema) if memo is not None else None
    if memo is None or canonical is None or memo.get(_SCHEMA_OK, canonical) is not True:
        from jsonschema import Draft202012Validator  # here: only a schema not yet checked
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            path = "/".join(str(p) for p in exc.path) or "(root)"
            raise ValueError(
                f"{what} is not a valid JSON Schema at {path}: {exc.message}"
            ) from None
        if memo is not None and canonical is not None:
            memo.put(_SCHEMA_OK, True, canonical)
    if what == "input_schema" and schema.get("type") != "object":
        raise ValueError(
            f"input_schema must have type 'object' (got {schema.get('type')!r}); "
            "tool inputs are JSON objects"
        )
    return schema


class _Model(BaseModel):
    """A manifest model. Validators are built at the first validation (``defer_build``): a
    ``SkillManifest`` builds its sections' schemas within its own, and a section validated on
    its own builds then. Defaults are written as ``Section.model_construct()``: the values
    pydantic would use (defaults are never validated), without building at import."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=False, defer_build=True
    )


class FsRequest(_Model):
    """A guest path the skill wants to see, and whether it needs to write there."""

    path: str
    access: Literal["read", "write"] = "read"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return normalize_guest_path(v)


class Permissions(_Model):
    """What a skill asks for; the policy decides what it gets (deny by default)."""

    network: tuple[str, ...] = ()
    filesystem: tuple[FsRequest, ...] = ()
    secrets: tuple[str, ...] = ()

    @field_validator("network")
    @classmethod
    def _rules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_rules(v)

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _SECRET_NAME.match(name):
                raise ValueError(
                    f"secret name {name!r} must be an environment variable name "
                    "(A-Z, 0-9 and _, not starting with a digit)"
                )
        return v

    @property
    def rules(self) -> tuple[NetRule, ...]:
        return tuple(NetRule.parse(t) for t in self.network)


class LimitsRequest(_Model):
    """Limits a skill asks for; the policy caps them."""

    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None
    memory_mb: Annotated[int, Field(ge=1, le=4096)] | None = None
    output_kb: Annotated[int, Field(ge=1, le=65_536)] | None = None


class Example(_Model):
    """An input and, optionally, the exact output it must produce (used by the conformance kit)."""

    input: dict[str, Any]
    output: Any = None
    description: str | None = None


class ConfigKey(_Model):
    """One setting a skill reads with ``bastion_sdk.config(key)``; the operator sets its value
    in the policy (``[skills.NAME.config]``). Not for secrets (those are ``secrets``)."""

    type: Literal["string", "integer", "number", "boolean"] = "string"
    description: Annotated[str, Field(max_length=1000)] = ""
    default: str | int | float | bool | None = None
    required: bool | None = None
    """Default: required when there is no default."""

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None

    def check(self, value: Any) -> str | None:
        """Why ``value`` does not fit this key's type, or None if it does."""
        ok = {
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
        }[self.type]
        article = "an" if self.type == "integer" else "a"
        return None if ok else f"{value!r} is not {article} {self.type}"

    @model_validator(mode="after")
    def _default_fits(self) -> ConfigKey:
        if self.default is not None and (why := self.check(self.default)) is not None:
            raise ValueError(f"default {why}")
        return self


def _dist_name(requirement: str) -> str:
    m = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    return m.group(0) if m else requirement


def check_requirements(values: tuple[str, ...]) -> tuple[str, ...]:
    """PEP 508 requirements limited to name, extras and version specifiers (no URLs or
    markers: a vendored dependency comes from the package index, for every platform)."""
    for req in values:
        if not _REQUIREMENT.match(req.strip()):
            raise ValueError(
                f"dependency {req!r} is not a requirement such as 'python-dateutil>=2.9' "
                "(name, optional [extras] and version specifiers; no URLs or markers)"
            )
    names = {re.sub(r"[-_.]+", "-", _dist_name(r)).lower() for r in values}
    if len(names) != len(values):
        raise ValueError("dependencies name the same distribution twice")
    return tuple(r.strip() for r in values)


MAX_TITLE_CHARS: Final[int] = 100
"""The longest ``title`` a skill may declare (a display name, not a description)."""


def default_title(name: str) -> str:
    """The title of a skill that declares none: its name in words (``web_fetch`` -> "Web fetch")."""
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


class SkillManifest(_Model):
    """A skill's ``skill.toml``."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    version: str
    description: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """Required except for ``python`` skills, which may take it from ``run()``'s docstring."""
    title: Annotated[str, Field(min_length=1, max_length=MAX_TITLE_CHARS)] | None = None
    """A short human-readable name (MCP ``title``); default derived from ``name``."""
    runtime: Literal["wasm", "component", "python", "native"]
    entry: str | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    permissions: Permissions = Permissions.model_construct()
    limits: LimitsRequest = LimitsRequest.model_construct()
    examples: tuple[Example, ...] = ()
    deterministic: bool = False
    dependencies: tuple[str, ...] = ()
    """Pure-Python distributions (PEP 508) vendored into ``_vendor/`` by ``bastion pack
    vendor`` and hash-locked in ``vendor.lock.json`` (Python skills only)."""
    config: dict[str, ConfigKey] = Field(default_factory=dict)
    """Settings the skill reads with ``bastion_sdk.config(key)``."""

    @field_validator("dependencies")
    @classmethod
    def _dependencies(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_requirements(v)

    @field_validator("config")
    @classmethod
    def _config(cls, v: dict[str, ConfigKey]) -> dict[str, ConfigKey]:
        for key in v:
            if not _CONFIG_KEY.match(key):
                raise ValueError(f"config key {key!r} must match {_CONFIG_KEY.pattern}")
        if len(v) > 64:
            raise ValueError(f"{len(v)} config keys; the limit is 64")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return check_semver(v)

    @field_validator("entry")
    @classmethod
    def _entry(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _relative_inside(v):
            raise ValueError(f"entry {v!r} must be a relative path inside the skill folder")
        return v

    @field_validator("input_schema")
    @classmethod
    def _input_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else check_json_schema(v, "input_schema")

    @field_validator("output_schema")
    @classmethod
    def _output_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else check_json_schema(v, "output_schema")

    @model_validator(mode="after")
    def _entry_needed(self) -> SkillManifest:
        if self.runtime != "native" and not self.entry:
            raise ValueError(f"runtime {self.runtime!r} needs an 'entry' file, e.g. 'skill.py'")
        if self.runtime != "python" and self.input_schema is None:
            raise ValueError(
                "input_schema is required (only Python skills can derive it from run())"
            )
        if self.runtime != "python" and self.dependencies:
            raise ValueError("dependencies are only for runtime 'python' skills")
        if self.runtime != "python" and self.description is None:
            raise ValueError(
                "description is required (only Python skills can take it from run()'s "
                "docstring); say in a sentence what the skill does and returns"
            )
        return self


class PackManifest(_Model):
    """A pack's ``bastion-pack.toml``: name, version and the skill folders it holds."""

    name: str
    version: str
    description: str = ""
    skills: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _PACK_NAME.match(v):
            raise ValueError(f"pack name {v!r} must match {_PACK_NAME.pattern}")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return check_semver(v)

    @field_validator("skills")
    @classmethod
    def _skills(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for rel in v:
            if not _relative_inside(rel):
                raise ValueError(f"skill folder {rel!r} must be a relative path inside the pack")
        if len(set(v)) != len(v):
            raise ValueError("skills lists the same folder twice")
        return v


def load_skill_manifest(folder: Path) -> SkillManifest:
    """Read and validate ``folder/skill.toml``; raises ManifestError naming the file and field."""
    path = folder / SKILL_MANIFEST
    data = read_toml(path, ManifestError)
    try:
        return SkillManifest.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, ManifestError, source=str(path)) from None


def written_as(folder: Path, names: Collection[str]) -> bool:
    """Whether ``folder/skill.toml`` writes one of ``names`` as its ``name``: read with
    ``read_toml``'s limits, not validated; False if the file cannot be read or parsed.

    A validated manifest's name is the written one (no coercion, no default), so a skill for
    which this is False never loads under any of ``names``: discovery of one skill skips the
    others. A TOML string can spell a name's characters only literally, split by line
    continuations (a backslash ending a line of a multi-line string), or with ``\\u`` /
    ``\\U`` escapes; a file whose text, continuations removed, holds no name and no such
    escape cannot write one, and is not parsed."""
    try:
        raw = read_capped(folder / SKILL_MANIFEST, MAX_CONFIG_BYTES)
        if b"\\u" not in raw and b"\\U" not in raw:
            joined = _CONTINUATION.sub(b"", raw)
            if not any(n.encode("utf-8", "replace") in joined for n in names):
                return False
        name = read_toml_text(raw.decode("utf-8"), ManifestError, source=str(folder)).get("name")
    except Exception:  # a hostile file is refused by the full load, never here
        return False
    return isinstance(name, str) and name in names


_CONTINUATION: Final = re.compile(rb"\\[ \t]*\r?\n[ \t\r\n]*")
"""A line-ending backslash and the whitespace it removes from a multi-line basic string."""


def load_pack_manifest(folder: Path) -> PackManifest:
    """Read and validate ``folder/bastion-pack.toml``."""
    path = folder / PACK_MANIFEST
    data = read_toml(path, ManifestError)
    try:
        return PackManifest.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, ManifestError, source=str(path)) from None
