"""A WASI module cannot leave a link in a writable mount (symlinks out, absolute, inside, hard).

The attack: with a writable mount, create ``/w/up -> ../../../../etc/passwd`` (wasmtime's
own resolution allows creating it; only following it is confined), wait for the next host
process that follows links. The fix shadows ``path_symlink`` and ``path_link`` with host
functions returning errno ``perm``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from bastion.executor import Capabilities, Mount
from bastion.sandbox.wasi_module import WasiModuleExecutor
from tests.sandbox.conftest import MakeRequest


def test_no_link_of_any_kind_can_be_created(
    executor: WasiModuleExecutor,
    guest: Callable[[str], Path],
    make_request: MakeRequest,
    tmp_path: Path,
) -> None:
    host = tmp_path / "w"
    host.mkdir()
    caps = Capabilities(mounts=(Mount("/w", host, writable=True),))
    out = json.loads(executor.execute(make_request(guest("links.c"), caps=caps)))
    eperm = out["eperm"]
    assert {k: out[k] for k in ("up", "abs", "inside", "hard")} == {
        "up": eperm,
        "abs": eperm,
        "inside": eperm,
        "hard": eperm,
    }
    # Only the regular file the guest wrote is there; nothing in the folder is a link.
    assert sorted(os.listdir(host)) == ["file.txt"]
    assert not any(p.is_symlink() for p in host.rglob("*"))
    assert os.stat(host / "file.txt").st_nlink == 1
