"""``bastion demo``: the whole path on an embedded policy, a local web site and real packs.

It starts a web server on 127.0.0.1, writes a policy that grants the first-party packs what
they need (and no more), lists every skill with its decision, runs the first-party skills, then
lets the deliberately hostile skills of ``demo_data/hostile`` try to break out.
"""

from __future__ import annotations

import http.server
import json
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from .localserver import serve_local
from .table import render_table

__all__ = ["run_demo"]

HOSTILE = Path(__file__).resolve().parent / "demo_data" / "hostile"

_PAGES = {
    "/": (
        "<html><head><title>Harbour Lights Co-op</title><style>body{}</style></head><body>"
        "<h1>Harbour Lights Co-op</h1><p>We repair boats and teach sailing on the north "
        "quay.</p><script>track()</script><p>Opening hours: 9:00 to 17:00, Monday to "
        "Saturday.</p><a href='/courses'>Courses</a> <a href='/leave'>Partners</a>"
        "</body></html>"
    ),
    "/courses": (
        "<html><head><title>Courses</title></head><body><h1>Courses</h1><ul>"
        "<li>Dinghy basics: 4 evenings</li><li>Navigation: 6 evenings</li></ul>"
        "</body></html>"
    ),
}


class _Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/leave":
            # A granted host redirecting to the cloud metadata address: the host refuses the hop.
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        page = _PAGES.get(self.path)
        body = (page or "<h1>not found</h1>").encode()
        self.send_response(200 if page else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the demo's output clean."""


def _files(root: Path) -> None:
    (root / "minutes").mkdir(parents=True)
    (root / "notes.txt").write_text(
        "Boat 7 needs a new rudder pin.\nOrder varnish before May.\nThe crane is booked on "
        "Fridays.\n"
    )
    (root / "minutes" / "march.md").write_text(
        "# March meeting\n\n- Budget approved: 4,200 EUR for the crane.\n- Next meeting: "
        "April 12.\n"
    )


def _excerpt(value: Any, width: int = 58) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def run_demo(out: TextIO) -> int:
    """Run the tour; returns 0 when every call ended the way the demo expects."""
    from .kernel import Kernel
    from .policy import load_policy

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    with (
        tempfile.TemporaryDirectory(prefix="bastion-demo-") as tmp,
        serve_local(_Site, name="bastion-demo-site") as site,
    ):
        root = Path(tmp)
        files = root / "files"
        _files(files)
        policy_text = f"""\
# The demo's policy: deny by default, then exactly what the first-party packs need.
[[mounts]]
guest = "/files"
host = "{files.as_posix()}"
access = "read"

[skills.fetch_page]
network = ["{site}"]        # the local demo site, named explicitly (it is a loopback address)

[limits]
timeout_ms = 10000
memory_mb = 256

[audit]
path = "{(root / "audit.jsonl").as_posix()}"
"""
        say("Bastion demo\n============\n")
        say(f"A local web site is running at {site}; /files is a folder of notes.\n")
        say("Policy (bastion.toml):\n")
        say("    " + policy_text.replace("\n", "\n    "))
        policy = load_policy(text=policy_text)
        with Kernel(policy, pack_paths=[HOSTILE]) as kernel:
            rows = []
            for st in kernel.skills():
                why = "; ".join(st.grant.public_reasons) if not st.grant.granted else ""
                rows.append(
                    [
                        st.name,
                        st.skill.pack,
                        st.skill.runtime,
                        "granted" if st.usable else "DENIED",
                        why,
                    ]
                )
            say("Skills and permission decisions:\n")
            say(render_table(["SKILL", "PACK", "RUNTIME", "DECISION", "WHY"], rows, max_width=48))
            for p in kernel.problems:
                say(f"  problem: [{p.pack}] {p.message}")
            say(
                "\nPreparing the sandbox (the first run builds and compiles the Python runner; "
                "later runs load it from the cache)..."
            )
            t0 = time.perf_counter()
            problems = kernel.prepare()
            say(f"ready in {time.perf_counter() - t0:.1f} s")
            for p in problems:
                say(f"  problem: {p.message}")

            calls: list[tuple[str, str, dict[str, Any], str]] = [
                ("calculate", "calc", {"expression": "2 * (3 + 4) ** 2 + sqrt(16)"}, "ok"),
                (
                    "convert",
                    "convert_units",
                    {"value": 12, "from_unit": "knots", "to_unit": "km/h"},
                    "ok",
                ),
                (
                    "count words",
                    "text_stats",
                    {"text": "The crane is booked. The boat is not.", "top_n": 3},
                    "ok",
                ),
                (
                    "query JSON",
                    "json_query",
                    {
                        "document": '{"boats": [{"name": "Aster"}, {"name": "Brisa"}]}',
                        "query": "boats[*].name",
                    },
                    "ok",
                ),
                ("list files", "list_files", {"path": "/files", "recursive": True}, "ok"),
                ("search files", "search_text", {"query": "crane"}, "ok"),
                ("read a file", "read_file", {"path": "/files/notes.txt"}, "ok"),
                ("escape the mount", "read_file", {"path": "/files/../etc/passwd"}, "error"),
                ("fetch a page", "fetch_page", {"url": site + "/"}, "ok"),
                (
                    "follow a redirect to the metadata address",
                    "fetch_page",
                    {"url": site + "/leave"},
                    "error",
                ),
                ("fetch a host not granted", "fetch_page", {"url": "http://localhost:9/"}, "error"),
                ("loop forever", "spin", {}, "TIMEOUT"),
                ("allocate 2 GiB", "hog", {}, "MEMORY_LIMIT"),
                ("print 50 MB, return 10 MB", "flood", {}, "OUTPUT_LIMIT"),
                ("read host files and environment", "snoop", {}, "ok"),
                ("send data to an unlisted host", "exfil", {}, "DENIED"),
                ("bad input", "calc", {"expression": 42}, "INVALID_INPUT"),
            ]
            say("\nCalls through the kernel:\n")
            rows = []
            surprises = 0
            for label, name, args, expect in calls:
                r = kernel.invoke(name, args)
                if r.ok:
                    outcome, detail = "ok", _excerpt(r.output)
                else:
                    assert r.error is not None
                    outcome, detail = r.error.code, _excerpt(r.error.message)
                matched = outcome == expect or (expect == "error" and not r.ok)
                surprises += not matched
                rows.append(
                    [
                        label,
                        name,
                        outcome + ("" if matched else " (unexpected)"),
                        f"{r.duration_ms:.1f}",
                        detail,
                    ]
                )
            say(render_table(["WHAT", "SKILL", "OUTCOME", "MS", "RESULT"], rows, max_width=60))
            kernel.audit.flush()
            n = sum(1 for _ in (root / "audit.jsonl").open())
            say(f"\nThe audit log recorded {n} events (one per call, plus each network request).")
        say(
            "\nEvery hostile call ended with a typed error; the host process is unharmed."
            if not surprises
            else f"\n{surprises} call(s) did not end as expected."
        )
        return 0 if not surprises else 1
