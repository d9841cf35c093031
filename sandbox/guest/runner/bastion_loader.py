"""Imports from the skill's folder (mapped read-only at ``SKILL_ROOT``), its ``_vendor/``, and
the pack's ``_shared/`` folder of modules common to its skills (read-only at ``SHARED_ROOT``).

The runner's import system has no other finder: the standard library is what the build
snapshotted, and everything else comes from here. Modules compile with a file name relative to
the skill folder (``helpers.py``, ``_vendor/dateutil/parser.py``), so tracebacks never show a
path of the host or of the guest's mounts.

``code`` (optional) maps a display name to the marshalled code object the host's compile
sandbox made from exactly that file's bytes (``compile-module``: a fresh instance with no grants
that only compiles, never runs, the source). The host passes it only when the file's current
bytes are the ones compiled, and only for a module file with no package directory of the same
name beside it, so the finder can skip the stat, read and compile of that file; its source
lines are read lazily, when a traceback needs them.
"""

import functools
import linecache
import marshal
import os
import sys
from importlib import import_module
from importlib.machinery import ModuleSpec

__all__ = ["SHARED_ROOT", "SKILL_ROOT", "VENDOR_DIR", "SkillFinder"]

SKILL_ROOT = "/_bastion/skill"
SHARED_ROOT = "/_bastion/shared"
VENDOR_DIR = "_vendor"
MAX_MODULE_BYTES = 4 * 1024 * 1024


def _isfile(path):
    try:
        return os.stat(path).st_mode & 0o170000 == 0o100000
    except OSError:
        return False


class SkillFinder:
    """A meta-path finder and loader for the skill folder and its vendored packages."""

    def __init__(self, root=SKILL_ROOT, shared=SHARED_ROOT, code=None):
        self.code = dict(code) if code else {}
        self.root = root.rstrip("/")
        self.shared = shared.rstrip("/")
        self.vendor = f"{self.root}/{VENDOR_DIR}"
        self.roots = (self.root, self.shared, self.vendor)
        self.own = set()  # module names loaded from the skill's own files
        self.vendored = set()  # module names loaded from _vendor/
        self.own_files = set()  # display names of the skill's own files (for tracebacks)

    def display(self, path):
        """``path`` relative to the skill folder, or ``_shared/...`` (what tracebacks show)."""
        prefix = self.root + "/"
        if path.startswith(prefix):
            return path[len(prefix):]
        if path.startswith(self.shared + "/"):
            return "_shared/" + path[len(self.shared) + 1:]
        return os.path.basename(path)

    def locate(self, name, search=None):
        """``(file, package_dir or None)`` for module ``name``'s last part, or None."""
        tail = name.rpartition(".")[2]
        for base in search if search is not None else self.roots:
            if self.code and base.startswith(self.root):
                mod = f"{base}/{tail}.py"
                if mod.startswith(self.root + "/") and self.display(mod) in self.code:
                    return mod, None  # the host checked the file and that no package shadows it
            pkg_dir = f"{base}/{tail}"
            init = f"{pkg_dir}/__init__.py"
            if _isfile(init):
                return init, pkg_dir
            mod = f"{base}/{tail}.py"
            if _isfile(mod):
                return mod, None
        return None

    def top_level(self, name):
        """``"own"``, ``"vendor"`` or None: where a top-level module ``name`` would come from."""
        found = self.locate(name.partition(".")[0])
        if found is None:
            return None
        return "vendor" if found[0].startswith(self.vendor + "/") else "own"

    def find_spec(self, fullname, path=None, target=None):
        if path is not None:
            path = [p for p in path if isinstance(p, str)
                    and p.startswith((self.root + "/", self.shared + "/"))]
            if not path:
                return None
        found = self.locate(fullname, path)
        if found is None:
            return None
        origin, pkg_dir = found
        spec = ModuleSpec(fullname, self, origin=origin, is_package=pkg_dir is not None)
        if pkg_dir is not None:
            spec.submodule_search_locations = [pkg_dir]
        spec.has_location = True
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        origin = module.__spec__.origin
        code = self.compile_file(origin)
        module.__file__ = origin
        name = module.__name__
        if origin.startswith(self.vendor + "/"):
            self.vendored.add(name)
        else:
            self.own.add(name)
            self.own_files.add(self.display(origin))
        exec(code, module.__dict__)

    def _read_source(self, origin):
        with open(origin, "rb") as f:
            raw = f.read(MAX_MODULE_BYTES + 1)
        return raw.decode("utf-8", "replace")  # linecache's lazy entries return the text

    def compile_file(self, origin):
        display = self.display(origin)
        blob = self.code.pop(display, None)
        if blob is not None:
            linecache.cache[display] = (functools.partial(self._read_source, origin),)
            return marshal.loads(blob)
        with open(origin, "rb") as f:
            raw = f.read(MAX_MODULE_BYTES + 1)
        if len(raw) > MAX_MODULE_BYTES:
            raise ImportError(f"{display} is larger than {MAX_MODULE_BYTES} bytes")
        source = raw.decode("utf-8")
        linecache.cache[display] = (len(source), None, source.splitlines(True), display)
        return compile(source, display, "exec", dont_inherit=True)

    def load_entry(self, entry):
        """Import the skill's entry module (``skill.py``, ``pkg/__init__.py``, ``pkg/main.py``)."""
        rel = entry.strip("/")
        if rel.endswith("/__init__.py"):
            name = rel[: -len("/__init__.py")].replace("/", ".")
        elif rel.endswith(".py"):
            name = rel[:-3].replace("/", ".")
        else:
            raise ImportError(f"entry {entry!r} is not a .py file")
        if not all(part.isidentifier() for part in name.split(".")):
            raise ImportError(
                f"entry {entry!r} is not importable: each folder and the file name must be a "
                "Python identifier (letters, digits, _)"
            )
        top = name.partition(".")[0]
        if top in sys.modules and top not in self.own:
            raise ImportError(
                f"entry module {top!r} has the name of a standard library module; rename "
                f"{entry!r} (for example to skill.py)"
            )
        return import_module(name)
