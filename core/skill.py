"""A discovered skill: its manifest, where it came from and its effective description/schema."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifest import SkillManifest, default_title
from .textclean import TextChange

__all__ = ["Skill"]


@dataclass(frozen=True, slots=True)
class Skill:
    """One skill as the kernel knows it, before any policy decision."""

    manifest: SkillManifest
    pack: str
    """The pack's name (``bastion-pack.toml`` name, or the plugin's name for native skills)."""
    folder: Path | None
    distribution: str | None
    input_schema: dict[str, Any]
    description: str
    output_schema: dict[str, Any] | None = None
    native: Callable[..., Any] | None = None
    cleaned: tuple[TextChange, ...] = ()
    """What the text cleaner removed from this skill's pack text (empty: nothing)."""

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def title(self) -> str:
        """The manifest's (cleaned) ``title``, or one derived from the name."""
        return self.manifest.title or default_title(self.manifest.name)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def runtime(self) -> str:
        return self.manifest.runtime

    @property
    def entry_path(self) -> Path | None:
        if self.folder is None or self.manifest.entry is None:
            return None
        return self.folder / self.manifest.entry
