"""Builds real installed-distribution layouts (package + .dist-info with entry points) on disk.

This is what pip leaves in site-packages, written directly so discovery tests need no network
and no pip run; tests put the folder on ``sys.path`` exactly as site-packages is.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

__all__ = ["SiteBuilder", "skill_toml"]


def skill_toml(
    name: str,
    *,
    runtime: str = "wasm",
    entry: str | None = "skill.wasm",
    extra: str = "",
    schema: bool = True,
) -> str:
    lines = [
        f'name = "{name}"',
        'version = "1.0.0"',
        f'description = "The {name} skill."',
        f'runtime = "{runtime}"',
    ]
    if entry:
        lines.append(f'entry = "{entry}"')
    if schema:
        lines.append('input_schema = { type = "object" }')
    return "\n".join(lines) + "\n" + textwrap.dedent(extra)


class SiteBuilder:
    """A fake site-packages folder holding distributions with ``bastion`` entry points."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _dist_info(self, dist: str, entry_points: dict[str, str], version: str = "1.0.0") -> None:
        norm = dist.replace("-", "_")
        info = self.root / f"{norm}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        eps = "[bastion]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(eps)

    def data_pack(
        self,
        dist: str,
        package: str,
        pack_toml: str,
        skills: dict[str, dict[str, str | bytes]],
        *,
        init_code: str = "",
        ep_name: str | None = None,
    ) -> Path:
        """A pack whose package folder holds bastion-pack.toml; ``init_code`` must never run."""
        folder = self.root / package
        folder.mkdir()
        (folder / "__init__.py").write_text(init_code)
        (folder / "bastion-pack.toml").write_text(pack_toml)
        for rel, files in skills.items():
            d = folder / rel
            d.mkdir(parents=True)
            for fname, content in files.items():
                p = d / fname
                if isinstance(content, bytes):
                    p.write_bytes(content)
                else:
                    p.write_text(content)
        self._dist_info(dist, {ep_name or package: package})
        return folder

    def plugin(self, dist: str, module: str, code: str, *, ep_name: str | None = None) -> Path:
        """A Python plugin module (imported only if the policy trusts ``dist``)."""
        path = self.root / f"{module}.py"
        path.write_text(textwrap.dedent(code))
        self._dist_info(dist, {ep_name or module: module})
        return path
