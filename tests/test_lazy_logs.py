"""``bastion.logs.get_logger``: structlog is imported only when a line is written, and the lines
are the same (fields, level, timestamp, renderer) as before; ``configure_logging`` made before
structlog is imported still governs code that uses structlog directly. Each case runs in a
fresh interpreter: this one has imported structlog long ago."""

from __future__ import annotations

import json
import subprocess
import sys


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_a_dropped_line_imports_nothing_and_a_written_one_has_every_field() -> None:
    out = _python(
        "import sys\n"
        "from bastion.logs import configure_logging, get_logger\n"
        "log = get_logger('bastion.t')\n"
        "configure_logging(level='warning', json=True)\n"
        "bound = log.bind(skill='s', invocation_id='1')\n"
        "bound.info('dropped', x=1)\n"
        "print('structlog' in sys.modules, bound.is_enabled_for(30), bound.is_enabled_for(20))\n"
        "bound.warning('kept', n=2)\n"
        "print('structlog' in sys.modules)\n"
    )
    assert out.stdout.split() == ["False", "True", "False", "True"]
    (line,) = out.stderr.splitlines()
    rec = json.loads(line)
    assert {k: rec[k] for k in ("event", "skill", "invocation_id", "n", "level")} == {
        "event": "kept", "skill": "s", "invocation_id": "1", "n": 2, "level": "warning",
    }  # fmt: skip
    assert rec["timestamp"].endswith("Z")


def test_structlog_used_directly_gets_the_configuration_made_before_its_import() -> None:
    out = _python(
        "from bastion.logs import configure_logging\n"
        "configure_logging(level='info', json=True)\n"
        "import structlog\n"
        "structlog.get_logger('direct').debug('below')\n"
        "structlog.get_logger('direct').info('direct_line', a=1)\n"
    )
    assert out.stdout == ""  # structlog's unconfigured default would print here
    (line,) = out.stderr.splitlines()
    assert json.loads(line)["event"] == "direct_line"


def test_an_embedders_own_configuration_wins_over_the_quiet_default() -> None:
    out = _python(
        "from bastion.logs import ensure_logging, get_logger\n"
        "ensure_logging()\n"
        "import structlog\n"
        "structlog.configure(processors=[structlog.processors.JSONRenderer()],\n"
        "                    logger_factory=structlog.PrintLoggerFactory())\n"
        "get_logger('x').bind(k='v').warning('mine')\n"
    )
    assert json.loads(out.stdout) == {"k": "v", "event": "mine"}
    assert out.stderr == ""


def test_a_lazy_line_is_the_line_structlog_itself_writes() -> None:
    out = _python(
        "import structlog\n"
        "from bastion.logs import configure_logging, get_logger\n"
        "configure_logging(level='warning', json=True)\n"
        "for log in (get_logger('x').bind(a=1), structlog.get_logger('x').bind(a=1)):\n"
        "    log.warning('same', b=[1, 'two'])\n"
        "    try:\n"
        "        1 / 0\n"
        "    except ZeroDivisionError:\n"
        "        log.exception('failed')\n"
    )
    lazy_warn, lazy_exc, direct_warn, direct_exc = (json.loads(x) for x in out.stderr.splitlines())
    for lazy, direct in ((lazy_warn, direct_warn), (lazy_exc, direct_exc)):
        lazy.pop("timestamp"), direct.pop("timestamp")
        assert lazy == direct
    assert lazy_warn == {"a": 1, "b": [1, "two"], "event": "same", "level": "warning"}
