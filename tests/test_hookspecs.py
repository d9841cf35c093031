"""Every hook is a documented stub (datasette's rule): a test fails if one is not."""

from __future__ import annotations

import inspect
from pathlib import Path

from bastion import hookspecs

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def hooks() -> list[str]:
    return [
        n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("bastion_")
    ]


def test_there_are_hooks() -> None:
    assert {"bastion_executors", "bastion_skills", "bastion_guard"} <= set(hooks())


def test_every_hook_has_a_one_line_docstring_and_is_documented() -> None:
    text = DOC.read_text()
    for name in hooks():
        fn = getattr(hookspecs, name)
        doc = inspect.getdoc(fn)
        assert doc and "\n" not in doc.strip(), f"{name} needs a one-line docstring"
        params = ", ".join(inspect.signature(fn).parameters)
        assert f"### `{name}({params})`" in text, f"{name} is not in docs/plugins.md"
        assert doc.split(":")[0] in text, f"docs/plugins.md should quote {name}'s docstring"
