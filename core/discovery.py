"""Finding skill packs: entry points in group ``bastion`` and pack folders given by path.

A pack whose package folder holds ``bastion-pack.toml`` is *data*: it is located with
``importlib.util.find_spec`` and its files are read, but its Python is never imported on the
host. Anything else behind an entry point is a Python plugin, imported and registered only if
the policy trusts its distribution. A pack that fails is reported and skipped; discovery itself
never raises for a bad pack.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from .cachedir import CacheDirError
from .errors import ConfigError, ManifestError, PackError
from .logs import get_logger
from .manifest import (
    PACK_MANIFEST,
    SKILL_MANIFEST,
    Example,
    SkillManifest,
    check_json_schema,
    load_pack_manifest,
    load_skill_manifest,
    written_as,
)
from .native import NativeSkill
from .policy import Policy
from .skill import Skill
from .textclean import clean_json_strings, clean_text, is_removed
from .vendorlock import verify_vendor

__all__ = [
    "ENTRY_POINT_GROUP",
    "LOAD_PLUGINS_ENV",
    "Discovery",
    "PackReport",
    "Problem",
    "discover",
    "load_pack_folder",
]

ENTRY_POINT_GROUP = "bastion"
LOAD_PLUGINS_ENV = "BASTION_LOAD_PLUGINS"
SCHEMA_TEXT_KEYS = ("description", "title", "$comment")
"""Schema keywords whose string values are prose for people and models (cleaned)."""
log = get_logger("bastion.discovery")


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that could not be loaded: which pack, what, and how to fix it."""

    pack: str
    message: str
    code: str = PackError.code

    def __post_init__(self) -> None:  # messages quote pack content: clean them once, here
        object.__setattr__(self, "pack", clean_text(self.pack, multiline=False).text)
        object.__setattr__(self, "message", clean_text(self.message).text)


@dataclass
class PackReport:
    """One pack as discovered: where from, what kind, which skills loaded, what failed."""

    name: str
    origin: str
    kind: str
    """``data`` (a pack folder read as files) or ``plugin`` (imported Python, trusted only)."""
    version: str = ""
    distribution: str | None = None
    folder: Path | None = None
    skills: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    loaded: bool = True

    def __post_init__(self) -> None:  # folder, entry point and distribution names are pack text
        self.name = clean_text(self.name, multiline=False).text
        self.origin = clean_text(self.origin, multiline=False).text


@dataclass
class Discovery:
    """Everything found: skills by name, pack reports and problems."""

    skills: dict[str, Skill] = field(default_factory=dict)
    packs: list[PackReport] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return [p for pack in self.packs for p in pack.problems]


def _derive_python(
    folder: Path, manifest: SkillManifest
) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """Input schema, description and output schema of a Python skill, derived inside the
    sandbox from ``run``'s type hints (``bastion.pyschema``; memoized by content hash)."""
    from .pyschema import derive_schema_memoized

    derived = derive_schema_memoized(folder, manifest)
    return derived.input_schema, derived.description, derived.output_schema


def _load_skill(folder: Path, pack: str, distribution: str | None) -> Skill:
    manifest = load_skill_manifest(folder)
    entry = folder / manifest.entry if manifest.entry else None
    if entry is not None:
        try:
            entry.resolve(strict=True).relative_to(folder.resolve())
        except (OSError, ValueError, RuntimeError):
            raise ManifestError(
                f"entry file {manifest.entry!r} does not exist inside the skill folder",
                source=str(folder / SKILL_MANIFEST),
                where="entry",
                fix="add the file or correct 'entry'",
            ) from None
        if not entry.is_file():
            raise ManifestError(
                f"entry {manifest.entry!r} is not a file",
                source=str(folder / SKILL_MANIFEST),
                where="entry",
            )
    if manifest.runtime == "native":
        raise ManifestError(
            "runtime 'native' cannot come from a pack folder; native skills are registered by "
            "trusted plugins",
            source=str(folder / SKILL_MANIFEST),
            where="runtime",
            fix="use runtime 'python', 'wasm' or 'component'",
        )
    description = manifest.description
    schema = manifest.input_schema
    output_schema = manifest.output_schema
    if manifest.runtime == "python":
        verify_vendor(folder, manifest.dependencies)  # a tampered _vendor/ is refused here
    if manifest.runtime == "python" and schema is not None and description is not None:
        if output_schema is None:  # optional: the TOML schema stands even if hints do not
            try:
                output_schema = _derive_python(folder, manifest)[2]
            except ManifestError:
                output_schema = None
    elif manifest.runtime == "python":
        derived_schema, derived_desc, derived_out = _derive_python(folder, manifest)
        schema = derived_schema if schema is None else schema
        output_schema = derived_out if output_schema is None else output_schema
        description = description or derived_desc.strip() or None
        if description is None:
            raise ManifestError(
                "the skill has no description: skill.toml has none and run() has no docstring",
                source=str(folder / SKILL_MANIFEST),
                where="description",
                fix="add a docstring to run() saying what the skill does, or a 'description'",
            )
        if len(description) > 4096:
            raise ManifestError(
                f"run()'s docstring summary is {len(description)} characters; the limit is 4096",
                source=str(folder / SKILL_MANIFEST),
                where="description",
                fix="shorten the docstring's first paragraph, or set 'description'",
            )
    assert schema is not None and description is not None
    if schema is not manifest.input_schema:
        try:  # a derived schema passes the same gate as a declared one
            check_json_schema(schema, "input_schema derived from run()")
        except ValueError as exc:
            raise ManifestError(str(exc), source=str(folder / SKILL_MANIFEST)) from None
    if output_schema is not None and output_schema is not manifest.output_schema:
        try:
            check_json_schema(output_schema, "output_schema derived from run()")
        except ValueError as exc:
            raise ManifestError(str(exc), source=str(folder / SKILL_MANIFEST)) from None
    return _cleaned(
        Skill(
            manifest=manifest,
            pack=pack,
            folder=folder,
            distribution=distribution,
            input_schema=schema,
            description=description,
            output_schema=output_schema,
        ),
        source=str(folder / SKILL_MANIFEST),
    )


def _hidden_in_names(schema: Any) -> str | None:
    """The first property name, ``required`` entry or enum/const string of ``schema`` holding a
    character the cleaner would remove (quoted), or None."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        names: list[Any] = []
        if isinstance(node.get("properties"), dict):
            names += list(node["properties"])
        for key in ("required", "enum"):
            if isinstance(node.get(key), list):
                names += node[key]
        names.append(node.get("const"))
        for name in names:
            if isinstance(name, str) and any(is_removed(c) for c in name):
                return ascii(name)[:80]
    return None


def _cleaned(skill: Skill, *, source: str) -> Skill:
    """``skill`` with its pack text cleaned for terminals and models, and what changed."""
    desc = clean_text(skill.description)
    title = clean_text(skill.manifest.title or "", multiline=False)
    changes = [c for c in [desc.change("description"), title.change("title")] if c is not None]
    if skill.manifest.title is not None and not title.text.strip():
        raise ManifestError(
            "the title is empty once invisible and control characters are removed",
            source=source,
            where="title",
            fix="write the title in plain visible text, or leave it out (the name is used)",
        )
    if not desc.text.strip():
        raise ManifestError(
            "the description is empty once invisible and control characters are removed",
            source=source,
            where="description",
            fix="write the description in plain visible text",
        )
    for schema, what in (
        (skill.input_schema, "input_schema"),
        (skill.output_schema, "output_schema"),
    ):
        hidden = _hidden_in_names(schema)
        if hidden is not None:
            raise ManifestError(
                f"{what} has an invisible or control character in {hidden}; property names "
                "and enum/const values reach the model verbatim, so they cannot be cleaned",
                source=source,
                where=what,
                fix="spell names and values in plain visible text",
            )
    inp, found = clean_json_strings(
        skill.input_schema, "input_schema", keys=SCHEMA_TEXT_KEYS, deep_keys=("examples",)
    )
    changes += found
    out, found = clean_json_strings(
        skill.output_schema, "output_schema", keys=SCHEMA_TEXT_KEYS, deep_keys=("examples",)
    )
    changes += found
    examples, found = clean_json_strings(
        [e.model_dump() for e in skill.manifest.examples], "examples"
    )
    changes += found
    if not changes:
        return skill
    manifest = skill.manifest.model_copy(
        update={
            "description": None if skill.manifest.description is None else desc.text,
            "title": None if skill.manifest.title is None else title.text.strip(),
            "examples": tuple(Example.model_validate(e) for e in examples),
        }
    )
    return dataclasses.replace(
        skill,
        manifest=manifest,
        description=desc.text,
        input_schema=inp,
        output_schema=out,
        cleaned=tuple(changes),
    )


def _outside(root: Path, *paths: Path) -> str | None:
    """The first of ``paths`` that resolves outside ``root`` (links are followed), or None.

    A pack is data read from disk: a link to, say, ``~/.aws/credentials`` named ``skill.toml``
    must not make the host read (and quote in errors) files the pack does not own.
    """
    for p in paths:
        try:
            p.resolve().relative_to(root)
        except ValueError:
            return str(p.relative_to(root) if p.is_relative_to(root) else p.name)
        except (OSError, RuntimeError):
            return p.name
    return None


def load_pack_folder(
    folder: Path,
    *,
    origin: str,
    distribution: str | None = None,
    only: Collection[str] | None = None,
) -> tuple[PackReport, list[Skill]]:
    """Read a pack folder (``bastion-pack.toml`` + skill folders) without importing anything.

    ``only``: load just the skills whose ``skill.toml`` names one of these (every folder still
    passes the pack's path checks); the others are left unread, so they report no problem."""
    try:
        if _outside(folder.resolve(), folder / PACK_MANIFEST) is not None:
            raise PackError(
                f"{PACK_MANIFEST} is a link to a file outside the pack folder",
                source=str(folder),
                fix=f"make {PACK_MANIFEST} a regular file inside the pack",
            )
        pm = load_pack_manifest(folder)
    except Exception as exc:  # ConfigError, or anything a hostile file provokes
        report = PackReport(
            name=folder.name,
            origin=origin,
            kind="data",
            folder=folder,
            distribution=distribution,
            loaded=False,
        )
        if isinstance(exc, ConfigError):
            report.problems.append(Problem(folder.name, str(exc), exc.code))
        else:
            report.problems.append(
                Problem(folder.name, f"{PACK_MANIFEST}: cannot load ({type(exc).__name__})")
            )
            log.warning("pack_load_failed", folder=folder.name, error=repr(exc))
        return report, []
    report = PackReport(
        name=pm.name,
        origin=origin,
        kind="data",
        version=pm.version,
        distribution=distribution,
        folder=folder,
    )
    skills: list[Skill] = []
    seen: set[str] = set()
    root = folder.resolve()
    for rel in pm.skills:
        sdir = folder / rel
        try:
            outside = _outside(root, sdir, sdir / SKILL_MANIFEST)
            if outside is not None:
                raise ManifestError(
                    f"{outside!r} leads outside the pack folder (a symbolic link?); a pack may "
                    "only use files inside its own folder",
                    source=str(folder / PACK_MANIFEST),
                    where="skills",
                    fix=f"replace the link with the real folder or file for {rel!r}",
                )
            if not (sdir / SKILL_MANIFEST).is_file():
                raise ManifestError(
                    f"skill folder {rel!r} has no {SKILL_MANIFEST}",
                    source=str(folder / PACK_MANIFEST),
                    where="skills",
                    fix=f"add {rel}/{SKILL_MANIFEST} or remove {rel!r} from skills",
                )
            if only is not None and not written_as(sdir, only):
                continue
            skill = _load_skill(sdir, pm.name, distribution)
        except CacheDirError:
            raise  # the host's cache is unsafe: every pack would fail alike; exit 2, not a problem
        except ConfigError as exc:
            report.problems.append(Problem(pm.name, str(exc), exc.code))
            continue
        except Exception as exc:  # a manifest must never take discovery down
            report.problems.append(Problem(pm.name, f"{rel}: cannot load ({type(exc).__name__})"))
            log.warning("skill_load_failed", pack=pm.name, folder=rel, error=repr(exc))
            continue
        if skill.name in seen:
            report.problems.append(
                Problem(
                    pm.name,
                    f"skill name {skill.name!r} appears twice in pack {pm.name!r} "
                    f"(folder {rel!r}); the second is skipped",
                )
            )
            continue
        seen.add(skill.name)
        skills.append(skill)
    return report, skills


def _wanted(names: Iterable[str | None]) -> bool:
    allow = os.environ.get(LOAD_PLUGINS_ENV)
    if allow is None:
        return True
    wanted = {n.strip().lower() for n in allow.split(",") if n.strip()}
    return any(n is not None and n.lower() in wanted for n in names)


def _entry_point_folder(value: str) -> Path | None:
    """The folder of the top-level package ``value`` names, found without importing it."""
    if not value.isidentifier():
        return None
    spec = importlib.util.find_spec(value)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        if (Path(loc) / PACK_MANIFEST).is_file():
            return Path(loc)
    return None


def _register_plugin(
    ep: importlib.metadata.EntryPoint, dist: str | None, pm: pluggy.PluginManager
) -> list[NativeSkill]:
    """Import a trusted plugin, register its hooks and collect the native skills it offers."""
    obj = ep.load()
    name = f"{dist or '?'}:{ep.name}"
    if pm.get_plugin(name) is None:
        pm.register(obj, name=name)
    impl = getattr(obj, "bastion_skills", None)
    return list(impl() or []) if callable(impl) else []


def _native_skills(natives: Iterable[object], report: PackReport) -> list[Skill]:
    """Skills for the NativeSkill objects a plugin returned; anything else is a problem."""
    skills = []
    for ns in natives:
        if not isinstance(ns, NativeSkill):
            report.problems.append(
                Problem(report.name, f"bastion_skills returned {ns!r}, not a NativeSkill")
            )
            continue
        skills.append(
            Skill(
                manifest=ns.manifest,
                pack=report.name,
                folder=None,
                distribution=report.distribution,
                input_schema=ns.manifest.input_schema or {"type": "object"},
                description=ns.manifest.description or "",
                output_schema=ns.manifest.output_schema,
                native=ns.func,
            )
        )
    return skills


def _shadowing(pack_paths: Sequence[Path]) -> dict[str, tuple[str, Path]]:
    """Pack name -> (the --pack argument, its folder) for each readable pack folder given."""
    out: dict[str, tuple[str, Path]] = {}
    for path in pack_paths:
        folder = Path(path).expanduser().resolve()
        try:
            out.setdefault(load_pack_manifest(folder).name, (str(path), folder))
        except (ConfigError, OSError):
            continue
    return out


def discover(
    policy: Policy,
    pm: pluggy.PluginManager,
    *,
    pack_paths: Sequence[Path] = (),
    entry_points: bool = True,
    embedded: Sequence[object] = (),
    only: Collection[str] | None = None,
) -> Discovery:
    """Find every pack (entry points, ``pack_paths``, then ``embedded`` plugin objects an
    embedder passed, trusted because they were passed) and return skills and problems.

    ``only`` (``bastion run NAME``): of the packs' skill folders, load only those whose
    ``skill.toml`` names one of these. Every pack is still found, checked and ordered as
    without it, and plugins are registered as before, so each name resolves to the same skill
    as in a full discovery (the first that loads under it); the other skills' problems are
    not reported."""
    from .logs import ensure_logging

    ensure_logging()  # discovery runs guests (schema derivation): never structlog's stdout default
    found = Discovery()

    def add(report: PackReport, skills: list[Skill]) -> None:
        for skill in skills:
            other = found.skills.get(skill.name)
            if other is not None:
                report.problems.append(
                    Problem(
                        report.name,
                        f"skill {skill.name!r} is already provided by pack "
                        f"{other.pack!r}; this one is skipped (rename one of them)",
                    )
                )
                continue
            found.skills[skill.name] = skill
            report.skills.append(skill.name)
        found.packs.append(report)

    shadows = _shadowing(pack_paths)  # an installed pack also given by --pack uses the folder
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points else []
    for ep in sorted(eps, key=lambda e: ((e.dist.name if e.dist else ""), e.name)):
        dist = ep.dist.name if ep.dist else None
        if not _wanted([dist, ep.name]):
            continue
        origin = f"entry point {ep.name!r} of {dist or 'unknown distribution'}"
        try:
            folder = _entry_point_folder(ep.value)
        except Exception as exc:  # find_spec of a dotted name may import; any failure is reported
            folder = None
            log.warning("pack_locate_failed", entry_point=ep.name, error=repr(exc))
        if folder is not None:
            report, skills = load_pack_folder(folder, origin=origin, distribution=dist, only=only)
            if report.name in shadows and folder.resolve() != shadows[report.name][1]:
                report.loaded = False
                report.problems.append(
                    Problem(
                        report.name,
                        f"installed pack {report.name!r} ({origin}) is shadowed by --pack "
                        f"{shadows[report.name][0]!r}: the folder's skills are used",
                        code="PACK_SHADOWED",
                    )
                )
                found.packs.append(report)
                continue
            add(report, skills)
            continue
        report = PackReport(name=ep.name, origin=origin, kind="plugin", distribution=dist)
        if not policy.trusts(dist):
            report.loaded = False
            report.problems.append(
                Problem(
                    ep.name,
                    f"{origin} is a Python plugin ({ep.value!r}) and its distribution is "
                    f'not trusted, so it was not imported: add "{dist}" to [plugins] trusted in '
                    f"{policy.source} if you trust its code to run on this host",
                )
            )
            found.packs.append(report)
            continue
        try:
            natives = _register_plugin(ep, dist, pm)
        except Exception as exc:
            report.loaded = False
            report.problems.append(
                Problem(
                    ep.name,
                    f"{origin} failed to import: {type(exc).__name__}: {exc}",
                )
            )
            found.packs.append(report)
            continue
        add(report, _native_skills(natives, report))

    for path in pack_paths:
        folder = Path(path).expanduser().resolve()
        if not (folder / PACK_MANIFEST).is_file():
            report = PackReport(
                name=folder.name,
                origin=f"path {str(path)!r}",
                kind="data",
                folder=folder,
                loaded=False,
            )
            report.problems.append(
                Problem(
                    folder.name,
                    f"--pack {str(path)!r} has no {PACK_MANIFEST}: point --pack at a "
                    "folder that holds one (see docs/authoring.md)",
                )
            )
            found.packs.append(report)
            continue
        report, skills = load_pack_folder(folder, origin=f"path {str(path)!r}", only=only)
        add(report, skills)
    for plugin in embedded:
        impl = getattr(plugin, "bastion_skills", None)
        if not callable(impl):
            continue
        report = PackReport(name=type(plugin).__name__, origin="embedded plugin", kind="plugin")
        add(report, _native_skills(impl() or [], report))
    return found
