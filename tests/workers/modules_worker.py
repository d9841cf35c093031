"""A worker entry used only by tests: the real worker plus a ``modules`` runtime whose answer
is the sorted names in the worker's ``sys.modules`` (what its start and its calls imported).

Started by a ``WorkerPool`` whose ``WorkerSettings.entry`` points at this file; the pool the
kernel builds never runs it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bastion.sandbox.workers.entry import serve


def _modules(_request: Any) -> bytes:
    return json.dumps(sorted(sys.modules)).encode()


if __name__ == "__main__":
    sys.exit(serve(extra={"modules": _modules}))
