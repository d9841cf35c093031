"""The error scrubber, by attack: what a hostile or careless error message can carry."""

from __future__ import annotations

import base64
import re
import traceback
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from bastion.scrub import scrub_message

SECRET = "hunter2-s3cr3t-value"


def real_traceback() -> str:
    empty: dict[str, int] = {}
    try:
        empty["missing"]  # a real KeyError with a real host traceback
    except KeyError:
        return traceback.format_exc()
    raise AssertionError("unreachable")


def test_a_real_host_traceback_is_reduced_to_its_last_line() -> None:
    tb = real_traceback()
    assert __file__ in tb
    out = scrub_message("skill failed:\n" + tb)
    assert "Traceback" not in out and 'File "' not in out and __file__ not in out
    assert out == "skill failed: KeyError: 'missing'"


def test_chained_tracebacks_and_stray_frame_lines_go() -> None:
    msg = (
        'Traceback (most recent call last):\n  File "/a/b.py", line 1, in f\n    x()\n'
        "ValueError: one\n\nDuring handling of the above exception, another exception occurred:"
        '\n\nTraceback (most recent call last):\n  File "/c/d.py", line 2, in g\n'
        'RuntimeError: two\nalso File "/e/f.py", line 9, in h'
    )
    out = scrub_message(msg)
    assert out == "ValueError: one RuntimeError: two also"


def test_any_absolute_path_is_hidden_but_urls_stay() -> None:
    out = scrub_message(
        "open /etc/passwd, ~/x/.ssh/id_rsa, C:\\Users\\bob\\a.txt, \\\\srv\\share\\f, "
        "file:///var/lib/x and https://example.com/a/b?c=d, --config=/etc/x"
    )
    assert out == (
        "open [path], [path], [path], [path], [path] and "
        "https://example.com/a/b?c=d, --config=[path]"
    )


def test_known_host_paths_secrets_and_credentials_are_redacted() -> None:
    out = scrub_message(
        f"token {SECRET} b64 {base64.b64encode(SECRET.encode()).decode()} in myproj/x "
        "key AKIAIOSFODNN7EXAMPLE",
        secrets=[SECRET],
        paths=["myproj"],
    )
    assert SECRET not in out and "AKIA" not in out and "myproj" not in out
    assert out.count("[REDACTED:SECRET]") == 2


@given(st.text(), st.integers(5, 400))
def test_always_one_bounded_line_without_control_characters(msg: str, limit: int) -> None:
    out = scrub_message(msg, secrets=[SECRET], limit=limit)
    assert len(out) <= limit
    assert "\n" not in out
    assert all(unicodedata.category(c) not in ("Cc", "Cs") for c in out)


@given(st.text("ab ", min_size=1, max_size=50), st.integers(5, 100))
def test_long_messages_end_with_an_ellipsis(word: str, limit: int) -> None:
    msg = ("w" + word) * 200
    out = scrub_message(msg, limit=limit)
    assert len(out) <= limit and out.endswith("…")


@given(
    st.lists(
        st.sampled_from(["/", "a", "b", ".", " ", "~", ":", "\\", "C:", "x/"]), max_size=40
    ).map("".join)
)
def test_no_absolute_path_survives(msg: str) -> None:
    out = scrub_message(msg, limit=10_000)
    assert not re.search(r"(?:^|\s)~?/[A-Za-z]", out), out
