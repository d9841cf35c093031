"""Sanitizer throughput in MB/s on 1 KiB and 1 MiB outputs, with and without PII redaction.

Run: .venv/bin/python bench/bench_sanitize.py. The text is realistic tool output (JSON-ish
lines with words, numbers, URLs, some paths, one granted secret); it is cleaned from scratch
each round. ``escaped`` text also carries percent-encoded URLs and JSON ``\\u`` escapes (the
decoded view of the secret matcher is built only for such text). The anchor is the same
sanitizer without any secret configured, measured in the same run: ``ratio`` is the secret
matcher's cost as (anchor rate / rate).
"""

from __future__ import annotations

import random
import statistics
import time

from bastion.sanitize import SanitizeConfig, Sanitizer

SECRET = "tok-7d1e9c0a5b-4f2a"
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "weather",
    "forecast",
    "city",
    "temperature",
    "rain",
    "wind",
    "humidity",
    "pressure",
    "report",
    "status",
    "ok",
    "error",
    "none",
]


def sample(size: int, seed: int = 1, *, escaped: bool = False) -> str:
    rnd = random.Random(seed)
    parts: list[str] = []
    total = 0
    while total < size:
        r = rnd.random()
        if r < 0.02:
            piece = f"path=/home/alice/project/data/{rnd.randint(1, 999)}.csv "
        elif r < 0.03:
            piece = f"url=https://api.example.com/v1/items?id={rnd.randint(1, 10**6)} "
        elif r < 0.035:
            piece = f"key={SECRET} "
        elif escaped and r < 0.05:
            piece = f"q=caf%C3%A9%20{rnd.randint(1, 999)}%2Fx name=\\u00e9t\\u00e9 "
        elif r < 0.2:
            piece = f"{rnd.random() * 100:.3f} "
        elif r < 0.25:
            piece = "\n"
        else:
            piece = rnd.choice(WORDS) + " "
        parts.append(piece)
        total += len(piece)
    return "".join(parts)[:size]


def throughput(san: Sanitizer, text: str, min_time: float = 1.0) -> float:
    size_mb = len(text.encode()) / 1e6
    rates: list[float] = []
    spent = 0.0
    while spent < min_time or len(rates) < 5:
        t0 = time.perf_counter()
        san.clean_text(text)
        dt = time.perf_counter() - t0
        spent += dt
        rates.append(size_mb / dt)
    return statistics.median(rates)


def main() -> None:
    for pii in (False, True):
        sans = {
            secrets: Sanitizer(
                SanitizeConfig(
                    max_output_bytes=4 << 20,
                    redact_secrets={"DEMO_TOKEN": SECRET} if secrets else {},
                    redact_paths=("/home/alice",),
                    pii=pii,
                )
            )
            for secrets in (False, True)
        }
        for escaped in (False, True):
            for label, size in (("1 KiB", 1024), ("1 MiB", 1 << 20)):
                text = sample(size, escaped=escaped)
                anchor = throughput(sans[False], text)
                rate = throughput(sans[True], text)
                print(
                    f"sanitize {label:6s} {'escaped' if escaped else 'plain  '} "
                    f"pii={'on ' if pii else 'off'}  {rate:8.1f} MB/s  "
                    f"anchor (no secret) {anchor:8.1f} MB/s  ratio {anchor / rate:5.2f}x"
                )


if __name__ == "__main__":
    main()
