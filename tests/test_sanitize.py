"""The output sanitizer, tested by properties and by attack.

Oracles are independent of the implementation: a leaked secret is looked for by *decoding*
every base64/hex run and the URL-decoded text of the output, not by re-encoding the secret the
way the sanitizer does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import signal
import unicodedata
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bastion.sanitize import SanitizeConfig, Sanitizer

FORBIDDEN_CATEGORIES = {"Cc", "Cs"}
INVISIBLES = set(
    "\u061c\u180e\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)


def assert_clean_chars(text: str) -> None:
    text.encode("utf-8")  # strict: no lone surrogates
    for ch in text:
        if ch in "\n\t":
            continue
        assert unicodedata.category(ch) not in FORBIDDEN_CATEGORIES, repr(ch)
        assert ch not in INVISIBLES, repr(ch)
        assert not 0xE0000 <= ord(ch) <= 0xE007F, repr(ch)


def size(text: str) -> int:
    return len(text.encode("utf-8"))


def jsize(value: Any) -> int:
    return size(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


# -- strategies ------------------------------------------------------------------------------

FRAGMENTS = [
    "\x1b[31m",
    "\x1b[0m",
    "\x1b]0;title\x07",
    "\x1b]8;;http://x\x1b\\",
    "\x1bP1$r\x1b\\",
    "\x9b2J",
    "\x1b(B",
    "\x1b",
    "\r\n",
    "\r",
    "\x00",
    "\x7f",
    "\x85",
    "\u202e",
    "\u2066",
    "\u200b",
    "\ufeff",
    "\U000e0041",
    "\ud800",
    "\udfff",
    "sk-",
    "AKIA",
    "Bearer ",
    "eyJ",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----END RSA PRIVATE KEY-----",
    "/home/alice",
    "/home/alice/",
    "@",
    ".com",
    "+1 ",
    "4111",
    " ",
    "-",
    ".",
    ":",
    "::",
    "%",
    "%2",
    "[",
    "]",
    "REDACTED",
    "[REDACTED:",
    "[path]",
    "…[truncated ",
    " bytes]",
    "DE89",
    "0",
    "7",
]
noisy_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)),
    max_size=40,
).map("".join)

secret_chars = st.characters(
    blacklist_categories=("Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn"),
    blacklist_characters="\ufffd",
)
secrets = st.text(secret_chars, min_size=8, max_size=40)


def b64_runs(text: str) -> Iterator[bytes]:
    """Every decoding, at every alignment, of every base64 (standard or URL-safe) run."""
    for run in re.findall(r"[A-Za-z0-9+/_\-]{4,}", text):
        run = run.replace("-", "+").replace("_", "/")
        for start in range(4):
            chunk = run[start:]
            chunk = chunk[: len(chunk) // 4 * 4]
            if chunk:
                yield base64.b64decode(chunk)


def hex_runs(text: str) -> Iterator[bytes]:
    for run in re.findall(r"[0-9a-fA-F]{2,}", text):
        for start in range(2):
            chunk = run[start:]
            chunk = chunk[: len(chunk) // 2 * 2]
            if chunk:
                yield binascii.unhexlify(chunk)


def leaks(secret: str, text: str) -> list[str]:
    raw = secret.encode("utf-8")
    found = []
    if secret in text:
        found.append("raw")
    if any(raw in decoded for decoded in b64_runs(text)):
        found.append("base64")
    if any(raw in decoded for decoded in hex_runs(text)):
        found.append("hex")
    if secret in urllib.parse.unquote(text) or secret in urllib.parse.unquote_plus(text):
        found.append("url")
    return found


@st.composite
def embedded_secret(draw: st.DrawFn) -> tuple[str, str]:
    """A secret and a text holding it in one of its encodings, inside noise."""
    secret = draw(secrets)
    raw = secret.encode()
    form = draw(st.sampled_from(["raw", "b64", "b64url", "hex", "HEX", "url", "urlplus"]))
    if form in ("b64", "b64url"):
        blob = draw(st.binary(max_size=5)) + raw + draw(st.binary(max_size=5))
        enc = (base64.b64encode if form == "b64" else base64.urlsafe_b64encode)(blob).decode()
    elif form == "hex":
        enc = raw.hex()
    elif form == "HEX":
        enc = raw.hex().upper()
    elif form == "url":
        enc = urllib.parse.quote(secret, safe=draw(st.sampled_from(["", "/"])))
    elif form == "urlplus":
        enc = urllib.parse.quote_plus(secret)
    else:
        enc = secret
    return secret, draw(noisy_text) + enc + draw(noisy_text)


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(noisy_text, st.integers(64, 600), st.booleans())
def test_output_is_clean_utf8_within_the_cap_and_idempotent(
    text: str,
    cap: int,
    pii: bool,
) -> None:
    san = Sanitizer(
        SanitizeConfig(
            max_output_bytes=cap,
            pii=pii,
            redact_paths=("/home/alice",),
            redact_secrets=("hunter2-secret",),
        )
    )
    out = san.clean_text(text)
    assert_clean_chars(out.text)
    assert size(out.text) <= cap
    assert san.clean_text(out.text).text == out.text
    assert "/home/alice" not in out.text
    if out.report.bytes_cut:
        assert re.search(r"…\[truncated \d+ bytes\]$", out.text)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(embedded_secret(), st.booleans())
def test_a_granted_secret_never_leaves_in_any_encoding(
    case: tuple[str, str],
    named: bool,
) -> None:
    secret, text = case
    cfg = SanitizeConfig(
        redact_secrets={"MY_KEY": secret} if named else (secret,), max_output_bytes=1 << 20
    )
    clean = Sanitizer(cfg).clean_text(text)
    assert leaks(secret, clean.text) == []
    # Was the secret still there once escapes were removed (an ESC can eat its first char)?
    unredacted = Sanitizer(SanitizeConfig(credential_shapes=False, max_output_bytes=1 << 20))
    if leaks(secret, unredacted.clean_text(text).text):
        assert clean.report.redactions["MY_KEY" if named else "SECRET"] >= 1 or (
            "-----BEGIN" in text  # an unterminated key block swallowed the rest first
        )


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(embedded_secret(), st.integers(64, 300))
def test_cutting_never_exposes_a_secret_and_stays_idempotent(
    case: tuple[str, str],
    cap: int,
) -> None:
    secret, text = case
    san = Sanitizer(SanitizeConfig(redact_secrets=(secret,), max_output_bytes=cap, pii=True))
    out = san.clean_text(text).text
    assert leaks(secret, out) == []
    assert size(out) <= cap
    assert san.clean_text(out).text == out


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | noisy_text,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(noisy_text, children, max_size=5)
    ),
    max_leaves=30,
)


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", sorted(repr(shape(v)) for v in value.values()))
    if isinstance(value, list):
        return ("list", [shape(v) for v in value])
    return type(value).__name__


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_clean_value_under_the_cap_keeps_the_shape(value: Any) -> None:
    san = Sanitizer(SanitizeConfig(max_output_bytes=1 << 20, redact_paths=("/home/alice",)))
    out = san.clean_value(value)
    text = json.dumps(out.value, ensure_ascii=False)
    text.encode("utf-8")
    assert shape(out.value) == shape(value)
    assert san.clean_value(out.value).value == out.value

    def strings(v: Any) -> Iterator[str]:
        stack = [v]
        while stack:
            node = stack.pop()
            if isinstance(node, str):
                yield node
            elif isinstance(node, dict):
                stack.extend(node.keys())
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)

    for s in strings(out.value):
        assert_clean_chars(s)


def test_keys_that_collide_once_cleaned_are_numbered_and_scalars_are_copied() -> None:
    san = Sanitizer()
    value = {"a\x1b[1m": 1, "a": [2.5, None, True], "a\u200b": {"a": "x\x07"}, "b": ("t",)}
    out = san.clean_value(value).value
    assert out == {"a": 1, "a#2": [2.5, None, True], "a#3": {"a": "x"}, "b": ["t"]}
    assert list(out) == ["a", "a#2", "a#3", "b"]
    assert out["a#2"] is not value["a"]
    assert san.clean_value("lone \x1b[2Jstring").value == "lone string"
    assert san.clean_value(7).value == 7


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.integers(64, 400))
def test_clean_value_over_the_cap_fits_and_is_still_json(value: Any, cap: int) -> None:
    san = Sanitizer(SanitizeConfig(max_output_bytes=cap))
    out = san.clean_value(value)
    assert jsize(out.value) <= cap
    json.loads(json.dumps(out.value, ensure_ascii=False))
    assert san.clean_value(out.value).value == out.value


@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(600, 5000))))
def test_one_long_string_is_cut_with_a_marker_that_says_how_much(case: tuple[int, int]) -> None:
    n, cap = case
    value = {"k": ["x" * (cap * n)]}
    out = Sanitizer(SanitizeConfig(max_output_bytes=cap)).clean_value(value)
    s = out.value["k"][0]
    m = re.search(r"…\[truncated (\d+) bytes\]$", s)
    assert m is not None
    kept = len(s) - len(m.group())
    assert kept + int(m.group(1)) == cap * n
    assert out.report.bytes_cut == int(m.group(1))
    assert jsize(out.value) <= cap


# -- attacks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack",
    [
        "\x1b]0;owned\x07",
        "\x1b]8;;https://evil/\x1b\\click\x1b]8;;\x1b\\",
        "\x1b[2J\x1b[H",
        "\x9b31m",
        "\x1bPq#0;2;0;0;0\x1b\\",
        "\x1b_payload\x1b\\",
        "\x1b[?1049h",
        "\x1bc",
        "a\u202egnp.exe",
        "\u2066x\u2069",
        "\U000e0049\U000e0047\U000e004e",
        "\x00\x01\x08\x0b\x7f",
    ],
)
def test_terminal_and_bidi_attacks_leave_no_control_characters(attack: str) -> None:
    out = Sanitizer().clean_text("before " + attack + " after").text
    assert_clean_chars(out)
    assert out.startswith("before ") and out.endswith(" after")
    assert "\x1b" not in out and "owned" not in out


def test_zero_width_characters_cannot_split_a_secret() -> None:
    out = (
        Sanitizer(SanitizeConfig(redact_secrets=("topsecretvalue",)))
        .clean_text("key=top\u200bsecret\u2060value")
        .text
    )
    assert out == "key=[REDACTED:SECRET]"


def test_joiners_used_by_emoji_and_scripts_are_kept() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert Sanitizer().clean_text(family).text == family


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("key sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345", "API_KEY"),
        ("AKIAIOSFODNN7EXAMPLE", "AWS_KEY"),
        ("ghp_" + "a1" * 18, "GITHUB_TOKEN"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "GITHUB_TOKEN"),
        ("xoxb-123456789012-abcdefghij", "SLACK_TOKEN"),
        ("Authorization: Bearer abcdefghijklmnop.qrstuvwx", "BEARER"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "JWT",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"
            "-----END OPENSSH PRIVATE KEY-----",
            "PRIVATE_KEY",
        ),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC (cut off)", "PRIVATE_KEY"),
    ],
)
def test_credential_shapes_are_redacted(text: str, kind: str) -> None:
    out = Sanitizer().clean_text("x " + text + " y")
    assert out.report.redactions[kind] >= 1
    assert f"[REDACTED:{kind}]" in out.text
    secret_part = text.split()[-1] if kind != "PRIVATE_KEY" else "MII"
    assert secret_part[-12:] not in out.text


def test_credential_shapes_can_be_turned_off() -> None:
    text = "AKIAIOSFODNN7EXAMPLE"
    assert Sanitizer(SanitizeConfig(credential_shapes=False)).clean_text(text).text == text


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, d in enumerate(int(c) for c in reversed(digits)):
        total += sum(divmod(d * 2, 10)) if i % 2 else d
    return total % 10 == 0


@given(
    st.sampled_from("3456"),
    st.text("0123456789", min_size=14, max_size=14),
    st.sampled_from(["", " ", "-"]),
)
def test_card_numbers_are_redacted_exactly_when_luhn_holds(
    first: str,
    rest: str,
    sep: str,
) -> None:
    digits = first + rest
    body = digits[:15]
    check = next(c for c in "0123456789" if luhn_ok(body + c))
    good = body + check
    bad = body + str((int(check) + 1) % 10)
    san = Sanitizer(SanitizeConfig(pii=True))

    def grouped(d: str) -> str:
        return sep.join(d[i : i + 4] for i in range(0, 16, 4))

    assert san.clean_text(f"card {grouped(good)} ok").text == "card [REDACTED:CARD] ok"
    assert grouped(bad) in san.clean_text(f"card {grouped(bad)} ok").text


def iban_with_check(country: str, bban: str) -> str:
    n = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - n % 97:02d}{bban}"


@given(
    st.sampled_from(["DE", "FR", "GB", "NL"]),
    st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=14, max_size=26),
)
def test_ibans_are_redacted_exactly_when_mod97_holds(country: str, bban: str) -> None:
    iban = iban_with_check(country, bban)
    wrong = iban[:2] + f"{(int(iban[2:4]) + 1) % 100:02d}" + iban[4:]
    san = Sanitizer(SanitizeConfig(pii=True))
    assert san.clean_text(f"pay {iban} now").text == "pay [REDACTED:IBAN] now"
    spaced = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    assert san.clean_text(f"pay {spaced} now").text == "pay [REDACTED:IBAN] now"
    assert wrong in san.clean_text(f"pay {wrong} now").text


@pytest.mark.parametrize(
    "text",
    [
        "mail bob.smith+tag@mail.example.co.uk now",
        "ip 192.168.10.254 now",
        "ip 2001:db8:85a3::8a2e:370:7334 now",
        "ip fe80::1ff:fe23:4567:890a%eth0 now",
        "call +44 20 7946 0958 now",
        "call (415) 555-2671 now",
        "call 415-555-2671 now",
    ],
)
def test_pii_is_redacted_only_when_asked(text: str) -> None:
    on = Sanitizer(SanitizeConfig(pii=True)).clean_text(text).text
    assert re.fullmatch(r"\w+ \[REDACTED:[A-Z]+\] now", on), on
    assert Sanitizer(SanitizeConfig(pii=False)).clean_text(text).text == text


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3 released 2024-01-15",
        "ts 1700000000000",
        "ratio 3:2",
        "a[::2]",
        "see https://example.com/a/b",
        "Bearer tokens are short-lived",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Sanitizer(SanitizeConfig(pii=True)).clean_text(text).text == text


def test_host_path_prefixes_are_hidden_wherever_they_occur() -> None:
    san = Sanitizer(SanitizeConfig(redact_paths=("/home/alice/", "/srv/data", "/")))
    out = san.clean_text("/home/alice/x.txt file:///srv/data/y /home/alice.bak /srv/dat").text
    assert out == "[path]/x.txt file://[path]/y [path].bak /srv/dat"


def test_bytes_are_decoded_with_replacement() -> None:
    out = Sanitizer().clean_text(b"ok \xff\xfe bad \xed\xa0\x80")
    out.text.encode("utf-8")
    assert out.text.startswith("ok \ufffd")
    assert out.report.invalid_replaced >= 2


def test_a_secret_that_forms_the_marker_does_not_loop() -> None:
    san = Sanitizer(SanitizeConfig(redact_secrets=("REDACTED",)))
    out = san.clean_text("REDACTED").text
    assert "REDACTED" not in out or out == ""
    assert san.clean_text(out).text == out


def test_config_refuses_a_cap_too_small_for_the_marker() -> None:
    with pytest.raises(ValueError, match="max_output_bytes is 10"):
        SanitizeConfig(max_output_bytes=10)


class _Hang(Exception):
    pass


def _alarm(_sig: int, _frame: Any) -> None:
    raise _Hang


MIB = 1 << 20
ADVERSARIAL = {
    "jwt": "eyJ-" * (MIB // 4),
    "jwt-parts": "eyJaaaaaaaaa.eyJ" * (MIB // 16),
    "pem-headers": "-----BEGIN PRIVATE KEY-----" * (MIB // 27),
    "pem-long": "-----BEGIN " + "A" * MIB,
    "email-domain": "a@" + "a." * (MIB // 2),
    "email-locals": ("a" * 63 + "@") * (MIB // 64),
    "csi": "\x1b[" + "0" * MIB,
    "osc": "\x1b]" * (MIB // 2),
    "cards": "4 " * (MIB // 2),
    "phones": "+1 " * (MIB // 3),
    "ibans": "DE89 " * (MIB // 5),
    "colons": ":" * MIB,
    "ipv6ish": "a:" * (MIB // 2),
    "dots": "1." * (MIB // 2),
    "bearer": "Bearer " + "a" * MIB + "!",
    "paths": "/home/alice" * (MIB // 11),
    "percent": "%2" * (MIB // 2),
    "digits": "1" * MIB,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_mebibyte_inputs_finish(name: str) -> None:
    """ReDoS guard: a quadratic pattern takes hours on these; the alarm only stops a hang
    (it is not a performance assertion; bench/bench_sanitize.py measures speed)."""
    san = Sanitizer(
        SanitizeConfig(
            max_output_bytes=4 * MIB,
            pii=True,
            redact_paths=("/home/alice",),
            redact_secrets={"K": "hunter2-s3cret!", "P": "%%%%%%%%"},
        )
    )
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(120)
    try:
        out = san.clean_text(ADVERSARIAL[name])
    except _Hang:
        pytest.fail(f"sanitizing {name!r} did not finish: a pattern is super-linear")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert_clean_chars(out.text)


@given(st.text(max_size=80), st.text(min_size=8, max_size=20))
def test_a_remembered_clean_string_gives_the_same_text_and_report(text: str, secret: str) -> None:
    """The sanitizer remembers short strings it found clean; a second pass must not differ."""
    san = Sanitizer(SanitizeConfig(redact_secrets={"TOKEN": secret}, redact_paths=("/srv/app",)))
    first = san.clean_text(text)
    second = san.clean_text(text)
    assert second.text == first.text
    assert second.report.to_dict() == first.report.to_dict()
    value = {text: [text, {"k": text}]}
    assert san.clean_value(value).value == Sanitizer(san.config).clean_value(value).value


def _wrap(text: str, width: int, sep: str) -> str:
    return sep.join(text[i : i + width] for i in range(0, len(text), width))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    secrets.filter(lambda s: len(s.encode()) >= 8),
    st.sampled_from(["b64", "hex", "raw"]),
    st.integers(1, 80),
    st.sampled_from(["\n", "\r\n", " ", "\t", "\n  "]),
    noisy_text,
    noisy_text,
)
def test_a_secret_split_by_whitespace_is_still_redacted(
    secret: str, form: str, width: int, sep: str, before: str, after: str
) -> None:
    # A secret with whitespace in it is not looked for across whitespace (documented).
    assume(form != "raw" or not re.search(r"\s", secret))
    raw = secret.encode()
    enc = {
        "b64": base64.b64encode(b"pre:" + raw + b":post").decode(),
        "hex": raw.hex(),
        "raw": secret,
    }[form]
    text = before + " " + _wrap(enc, width, sep) + " " + after
    clean = Sanitizer(SanitizeConfig(redact_secrets={"K": secret}, max_output_bytes=1 << 20))
    out = clean.clean_text(text)
    squeezed = re.sub(r"\s+", "", out.text)
    assert leaks(secret, squeezed) == [], out.text
    # Was it still there once escapes were removed (an ESC in the noise can eat a character)?
    plain = Sanitizer(SanitizeConfig(credential_shapes=False, max_output_bytes=1 << 20))
    if leaks(secret, re.sub(r"\s+", "", plain.clean_text(text).text)):
        assert out.report.redactions["K"] >= 1


def test_pem_style_wrapped_base64_of_a_secret_is_redacted_and_the_rest_kept() -> None:
    secret = "s3cr3t-token-value-0123456789"
    blob = base64.b64encode(b"user:" + secret.encode() + b"\n" * 40).decode()
    text = "config dump:\n" + _wrap(blob, 64, "\n") + "\nend of dump"
    out = Sanitizer(SanitizeConfig(redact_secrets={"API_TOKEN": secret})).clean_text(text)
    assert out.text.startswith("config dump:\n") and out.text.endswith("\nend of dump")
    assert "[REDACTED:API_TOKEN]" in out.text
    assert leaks(secret, re.sub(r"\s+", "", out.text)) == []


def test_text_with_spaces_but_no_split_secret_is_untouched() -> None:
    secret = "correct-horse-battery"
    text = "correct horse battery staple, and other words"
    out = Sanitizer(SanitizeConfig(redact_secrets={"K": secret})).clean_text(text)
    assert out.text == text and not out.report.redactions
