"""The audit hash chain: each record names its node and carries the digest of the previous one.

``link`` is called by ``AuditLog.write`` in the order records are queued (the order they reach
the file) and puts ``"node"`` and ``"prev"`` first in the line; ``prev`` is the sha256 (128
bits, hex) of the previous line of the same node, empty for a node's first record (a constant
digest could spell a short redacted value). A log reopened by a process of the same node
continues that node's chain from the file's last record of it. ``verify``
walks the files oldest first and reports, per node, every record whose ``prev`` does not match:
an edited, inserted, removed or reordered record. It cannot see the last record edited or
records cut from the end (no later record names them): ship the log off the node to keep
those, as docs/deploy.md shows.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import sys
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "GENESIS",
    "ChainReport",
    "default_node",
    "link",
    "node_id",
    "set_node_id",
    "verify",
    "verify_command",
]

GENESIS: Final = ""
_TAIL_BYTES: Final = 4 * 1024 * 1024

_node: str | None = None
_chains: weakref.WeakKeyDictionary[Any, _Chain] = weakref.WeakKeyDictionary()
_chains_lock = threading.Lock()


def set_node_id(node: str) -> None:
    """This process's node id (the kernel sets it from ``[state] node_id``)."""
    global _node
    _node = node


def default_node() -> str:
    """``$BASTION_NODE_ID``, else ``<host>-<pid>`` (unique per process on one host)."""
    return os.environ.get("BASTION_NODE_ID") or f"{socket.gethostname()}-{os.getpid()}"


def node_id() -> str:
    """The node id: set by the kernel (``[state] node_id``), else ``default_node()``."""
    return _node if _node is not None else default_node()


def _digest(line: str) -> str:
    # 128 bits of sha256: a forger needs a second preimage (2^128 work); half the bytes a
    # full digest would add to every record.
    data = line.rstrip("\n").encode("utf-8", errors="replace")
    return hashlib.sha256(data).hexdigest()[:32]


def _last_of(path: Path, node: str) -> str | None:
    """The digest of the last whole record of ``node`` in ``path`` (its tail), if any.

    Only a regular file is read, and at most its last ``_TAIL_BYTES``: another process may
    have swapped the log for a FIFO (an open would block) or a device such as ``/dev/full``
    (a read never ends); the log itself reports that path as failing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        os.lseek(fd, max(0, st.st_size - _TAIL_BYTES), os.SEEK_SET)
        chunks: list[bytes] = []
        left = _TAIL_BYTES
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
    for raw in reversed(data.split(b"\n")):
        text = raw.decode("utf-8", errors="replace")
        if not text.startswith('{"node":'):
            continue
        if node not in text and "\\" not in text:
            # Without an escape every JSON string decodes to its own text, so a record whose
            # "node" is ``node`` holds it verbatim: this line is another node's. Skipped
            # undecoded: a new process (node host-pid) would otherwise decode the whole tail.
            continue
        try:
            rec = json.loads(text)
        except ValueError:
            continue  # a torn or foreign line: not part of the chain
        if isinstance(rec, dict) and rec.get("node") == node:
            return _digest(text)
    return None


class _Chain:
    def __init__(self, path: Path | None, node: str) -> None:
        self.node = node
        self.prefix = '{"node":' + json.dumps(node, ensure_ascii=False) + ',"prev":"'
        prev = None
        if path is not None:
            prev = _last_of(path, node) or _last_of(path.with_name(path.name + ".1"), node)
        self.prev = prev or GENESIS


def link(log: Any, line: str) -> str:
    """``line`` (one serialized record) with this node's id and the previous digest; call in
    write order (``AuditLog`` holds its queue lock)."""
    chain = _chains.get(log)
    if chain is None:
        with _chains_lock:
            chain = _chains.get(log)
            if chain is None:
                chain = _Chain(getattr(log, "path", None), node_id())
                _chains[log] = chain
    body = line[1:] if line.startswith("{") else line
    out = chain.prefix + chain.prev + '",' + body
    chain.prev = _digest(out)
    return out


@dataclass
class ChainReport:
    """What ``verify`` found: per node, its records and every break in its chain."""

    records: int = 0
    unchained: int = 0
    """Records without ``prev`` (written before the chain existed, or by another tool)."""
    unreadable: int = 0
    torn: int = 0
    """Lines that are not JSON records (torn by a crash, or damaged)."""
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    breaks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "unchained": self.unchained,
            "unreadable": self.unreadable,
            "torn": self.torn,
            "nodes": self.nodes,
            "breaks": self.breaks,
        }


def verify(path: Path | str) -> ChainReport:
    """Check every node's chain over ``path`` and its rotated files, oldest first."""
    from .audit import AuditReader

    report = ChainReport()
    expect: dict[str, str] = {}
    for file in AuditReader(Path(path)).files():
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            continue
        except OSError:
            report.unreadable += 1
            continue
        lines = data.split(b"\n")
        for i, raw in enumerate(lines, start=1):
            text = raw.decode("utf-8", errors="replace")
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except ValueError:
                rec = None
            if not isinstance(rec, dict) or not isinstance(rec.get("prev"), str):
                # A torn line (a crash mid-write) is not in the chain: the next record links
                # past it. A complete record altered into junk shows as a break at the next
                # record of its node, which still names the original's digest.
                if rec is None:
                    report.torn += 1
                else:
                    report.unchained += 1
                continue
            report.records += 1
            node = str(rec.get("node"))
            info = report.nodes.setdefault(
                node,
                {"records": 0, "first": rec.get("ts"), "last": None, "starts": None},
            )
            info["records"] += 1
            info["last"] = rec.get("ts")
            want = expect.get(node)
            if want is None:
                info["starts"] = (
                    "at its first record"
                    if rec["prev"] == GENESIS
                    else "after records no longer here (rotated away)"
                )
            elif rec["prev"] != want:
                report.breaks.append(
                    {
                        "file": file.name,
                        "line": i,
                        "node": node,
                        "ts": rec.get("ts"),
                        "why": "its prev digest does not match the previous record of its node "
                        "(a record before it was changed, removed or inserted)",
                    }
                )
            expect[node] = _digest(text)
    return report


def verify_command(path: Path, *, as_json: bool) -> int:
    """``bastion audit verify``: 0 when every chain holds, 1 when one is broken."""
    report = verify(path)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")
        return 0 if report.ok else 1
    from .table import render_table

    rows = [
        [node, str(info["records"]), str(info["first"]), str(info["last"]), str(info["starts"])]
        for node, info in sorted(report.nodes.items())
    ]
    out = [f"audit log {path}: {report.records} chained records"]
    if report.unchained:
        out.append(f"{report.unchained} records carry no chain (written before it existed)")
    if report.torn:
        out.append(f"{report.torn} lines are not JSON records (torn by a crash, or damaged)")
    if rows:
        out.append(
            render_table(["NODE", "RECORDS", "FIRST", "LAST", "CHAIN STARTS"], rows, max_width=40)
        )
    for b in report.breaks[:50]:
        out.append(f"BROKEN: {b['file']} line {b['line']} (node {b['node']}): {b['why']}")
    if len(report.breaks) > 50:
        out.append(f"... and {len(report.breaks) - 50} more breaks")
    out.append("chain intact" if report.ok else f"{len(report.breaks)} break(s) found")
    sys.stdout.write("\n".join(out) + "\n")
    return 0 if report.ok else 1
