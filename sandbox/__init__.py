"""bastion.sandbox: the WebAssembly sandbox (wasmtime) in which untrusted skills run."""

from __future__ import annotations

__all__: list[str] = []
