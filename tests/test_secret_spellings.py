"""The one redactor finds every spelling of a granted secret at every offset inside any text.

Hypothesis generates the spellings (``tests/secretspell.py``); an independent oracle, built on
the standard library's decoders, checks that the secret cannot be read back from the cleaned
text. The sinks (results, error messages, log lines, audit records) all use this redactor; they
are tested end to end in ``tests/python_skills/test_secret_sinks.py``.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.sanitize import SanitizeConfig, Sanitizer
from bastion.scrub import scrub_message
from tests.secretspell import KINDS, SECRETS, around, leaks, spelled

SANITIZER = Sanitizer(SanitizeConfig(redact_secrets=SECRETS))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=120, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(SECRETS)), before=around, after=around)
def test_every_spelling_is_redacted(
    kind: str, data: st.DataObject, name: str, before: str, after: str
) -> None:
    secret = SECRETS[name]
    _, form = data.draw(spelled(secret, kind))
    text = before + form + after
    assert leaks(secret, text), "the oracle must see the secret before cleaning"
    out = SANITIZER.clean_text(text).text
    assert not leaks(secret, out), (form, out)
    assert "[REDACTED:" in out


@settings(max_examples=80, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(SECRETS)), before=around, after=around)
def test_error_messages_are_redacted(
    data: st.DataObject, name: str, before: str, after: str
) -> None:
    secret = SECRETS[name]
    _, form = data.draw(spelled(secret))
    msg = scrub_message(f"upstream said: {before}{form}{after}", secrets=SECRETS, limit=2000)
    assert not leaks(secret, msg), (form, msg)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), count=st.integers(2, 4))
def test_several_spellings_in_one_text(data: st.DataObject, count: int) -> None:
    parts = []
    for _ in range(count):
        name = data.draw(st.sampled_from(sorted(SECRETS)))
        parts += [data.draw(around), data.draw(spelled(SECRETS[name]))[1]]
    out = SANITIZER.clean_text(" ".join(parts)).text
    for secret in SECRETS.values():
        assert not leaks(secret, out), out


def test_text_without_secrets_is_unchanged() -> None:
    text = (
        'GET /a%20b?q=caf%C3%A9 HTTP/1.1 {"k": "\\u00e9\\/x"} &#233; 0xdeadbeef '
        "de:ad:be:ef " + base64.b64encode(b"nothing secret here").decode()
    )
    assert SANITIZER.clean_text(text).text == text


def test_views_map_back_exactly() -> None:
    """Only the escapes that spell the secret are replaced; neighbouring ones stay."""
    secret = SECRETS["DEMO_TOKEN"]
    spelled_pct = "".join(f"%{b:02X}" for b in secret.encode())
    out = SANITIZER.clean_text(f"q=%41%42{spelled_pct}%43&x=1").text
    assert out == "q=%41%42[REDACTED:DEMO_TOKEN]%43&x=1"
