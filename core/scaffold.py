"""``bastion new NAME``: a ready skill pack copied from the skill template.

The template's single source is ``skill-template/`` at the repository's root; an installed
wheel carries it as the package data ``bastion/_template``. Placeholders ``{{name}}``,
``{{dist}}``, ``{{package}}``, ``{{pack_name}}`` and ``{{bastion_version}}`` are replaced in
file contents and in file and folder names.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Final

from .errors import ConfigError
from .logs import get_logger
from .manifest import NAME_PATTERN, PACK_MANIFEST

__all__ = ["TEMPLATE_ENV", "add_skill", "create_pack", "pack_names", "template_dir"]

TEMPLATE_ENV: Final = "BASTION_TEMPLATE_DIR"
"""Overrides where the template is read from (for template development)."""

_NAME = re.compile(NAME_PATTERN)
_SKIPPED: Final = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
log = get_logger("bastion.scaffold")


def pack_names(name: str) -> dict[str, str]:
    """The placeholder values for skill ``name``; raises ConfigError for an invalid name."""
    if not isinstance(name, str) or not _NAME.match(name):
        hint = re.sub(r"[^a-z0-9_]", "_", str(name).strip().lower())
        hint = re.sub(r"_+", "_", hint).strip("_")
        if hint and not hint[0].isalpha():
            hint = "skill_" + hint
        suggestion = f", e.g. {hint[:64]!r}" if hint and _NAME.match(hint[:64]) else ""
        raise ConfigError(
            f"skill name {str(name)[:80]!r} is not valid",
            fix=f"use lowercase letters, digits and underscores, starting with a letter, "
            f"at most 64 characters ({NAME_PATTERN}){suggestion}",
        )
    return {
        "name": name,
        "dist": "bastion-pack-" + name.replace("_", "-"),
        "package": "bastion_pack_" + name,
        "pack_name": name.replace("_", "-"),
        "bastion_version": _bastion_version(),
    }


def _bastion_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("bastion")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def template_dir() -> Path:
    """Where the template lives: $BASTION_TEMPLATE_DIR, the wheel's data, or the repository."""
    import os

    candidates: list[Path] = []
    env = os.environ.get(TEMPLATE_ENV)
    if env:
        candidates.append(Path(env).expanduser())
    here = Path(__file__).resolve().parent
    candidates.append(here / "_template")
    try:
        spec = importlib.util.find_spec("bastion._template")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) for p in spec.submodule_search_locations)
    candidates.append(here.parent / "skill-template")
    for path in candidates:
        if (path / "pyproject.toml").is_file():
            return path
    raise ConfigError(
        "the skill template is not installed (looked in "
        + ", ".join(str(c) for c in candidates)
        + ")",
        fix=f"reinstall Bastion, or set {TEMPLATE_ENV} to a skill-template folder",
    )


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def create_pack(name: str, directory: Path | None = None, *, skill: str | None = None) -> Path:
    """Create a new pack ``name`` in ``directory`` (default ``./bastion-pack-NAME``) whose first
    skill is ``skill`` (default: the pack's name).

    Returns the pack's folder. Raises ConfigError for an invalid name, or when ``directory``
    exists and is not an empty folder.
    """
    values = pack_names(name)
    if skill is not None:
        values["name"] = pack_names(skill)["name"]
    target = Path(directory) if directory is not None else Path.cwd() / values["dist"]
    target = target.expanduser().absolute()
    if target.exists():
        if not target.is_dir():
            raise ConfigError(
                f"{str(target)!r} exists and is not a folder",
                fix="choose another directory for the new pack",
            )
        if any(target.iterdir()):
            raise ConfigError(
                f"folder {str(target)!r} already exists and is not empty",
                fix="choose a new or empty directory, or remove the existing one",
            )
    source = template_dir()
    files = sorted(
        p
        for p in source.rglob("*")
        if p.is_file()
        and not _SKIPPED.intersection(p.relative_to(source).parts)
        and p.suffix != ".pyc"
    )
    target.mkdir(parents=True, exist_ok=True)
    for src in files:
        rel = Path(*(_fill(part, values) for part in src.relative_to(source).parts))
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        try:
            dst.write_text(_fill(data.decode("utf-8"), values), encoding="utf-8")
        except UnicodeDecodeError:
            dst.write_bytes(data)
        dst.chmod(src.stat().st_mode & 0o777)
    log.info("pack_created", name=name, path=str(target), files=len(files))
    return target


def _pack_folder(path: Path) -> Path:
    """The folder holding ``bastion-pack.toml``: ``path`` itself or its one package folder."""
    if (path / PACK_MANIFEST).is_file():
        return path
    found = sorted(p.parent for p in path.glob(f"*/{PACK_MANIFEST}"))
    if len(found) == 1:
        return found[0]
    raise ConfigError(
        f"{str(path)!r} holds no {PACK_MANIFEST}"
        + (f" (it holds {len(found)} packs)" if found else ""),
        fix="run `bastion add` inside a pack made by `bastion new`, or pass --pack FOLDER",
    )


def add_skill(name: str, pack: Path | None = None) -> Path:
    """Add skill ``name`` (from the template) to an existing pack: its folder, its line in
    ``bastion-pack.toml``. Returns the new skill folder."""
    import tomllib

    values = pack_names(name)
    folder = _pack_folder((pack or Path.cwd()).expanduser().absolute())
    manifest = folder / PACK_MANIFEST
    text = manifest.read_text(encoding="utf-8")
    skills = tomllib.loads(text).get("skills", [])
    target = folder / name
    if name in skills or target.exists():
        raise ConfigError(
            f"pack {folder.name!r} already has a skill or folder named {name!r}",
            fix="choose another skill name",
        )
    source = template_dir() / "{{package}}" / "{{name}}"
    target.mkdir()
    for src in sorted(p for p in source.iterdir() if p.is_file() and p.suffix != ".pyc"):
        (target / src.name).write_text(_fill(src.read_text("utf-8"), values), encoding="utf-8")
    line = re.compile(r"^skills\s*=\s*\[[^\]]*\]", re.MULTILINE)
    new = "skills = [" + ", ".join(f'"{s}"' for s in [*skills, name]) + "]"
    text = line.sub(new, text, count=1) if line.search(text) else text + f"\n{new}\n"
    manifest.write_text(text, encoding="utf-8")
    log.info("skill_added", name=name, pack=str(folder))
    return target
