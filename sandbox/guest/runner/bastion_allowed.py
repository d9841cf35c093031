"""The modules a Python skill may import inside the sandbox (data only, read by host and guest).

Every name here is imported when the runner component is built (componentize-py snapshots the
interpreter after start-up); nothing else of the standard library can be imported at call time
(a skill's own modules and vendored packages come from its folder). ``OPTIONAL_MODULES`` are
offered when the runner's CPython has them (``sqlite3`` needs a C extension that a WASI build
may lack). The list a build really offers is the runner's ``list-modules`` export (``bastion
doctor --modules``); the host reads this file with ``ast.literal_eval`` (it never imports guest
code) only to document and test it.
"""

ALLOWED_MODULES = (
    # text and data formats
    "json", "csv", "html", "html.parser", "html.entities", "xml.etree.ElementTree",
    "tomllib", "base64", "binascii", "quopri", "codecs", "unicodedata", "string", "textwrap",
    "difflib", "re", "fnmatch", "shlex", "pprint", "reprlib", "keyword", "mimetypes",
    "urllib.parse", "ipaddress", "uuid",
    # numbers
    "math", "cmath", "decimal", "fractions", "numbers", "statistics", "random", "colorsys",
    # time (zoneinfo with the IANA database from tzdata, bundled at build time)
    "datetime", "time", "calendar", "zoneinfo",
    # e-mail messages and MIME
    "email", "email.message", "email.parser", "email.policy", "email.utils", "email.header",
    "email.headerregistry", "email.generator", "email.charset", "email.encoders",
    "email.mime", "email.mime.text", "email.mime.multipart", "email.mime.base",
    "email.mime.application", "email.mime.image", "email.contentmanager",
    # XML beyond ElementTree
    "xml", "xml.etree", "xml.dom", "xml.dom.minidom", "xml.sax", "xml.sax.saxutils",
    "xml.sax.handler", "xml.parsers", "xml.parsers.expat",
    # asynchronous code: an event loop with timers and tasks (no sockets, threads, processes)
    "asyncio", "contextvars",
    # data structures and functional tools
    "collections", "collections.abc", "itertools", "functools", "operator", "heapq", "bisect",
    "array", "copy", "dataclasses", "enum", "typing", "types", "abc", "contextlib",
    "graphlib", "weakref", "warnings",
    # bytes, hashing, compression
    "struct", "hashlib", "hmac", "secrets", "zlib", "gzip", "zipfile",
    # files (only the mounts the policy grants are visible)
    "io", "os", "os.path", "pathlib", "glob", "shutil", "tarfile",
    # language tools (``from __future__ import annotations`` is common in typed code)
    "__future__", "ast", "posixpath", "inspect", "traceback", "logging",
    # the skill SDK
    "bastion_sdk", "bastion", "bastion.sdk",
)

OPTIONAL_MODULES = (
    # built into the runner only if its CPython has the C extension
    "sqlite3", "bz2", "lzma", "string.templatelib", "annotationlib",
)

INTERNAL_MODULES = (
    # imported lazily by the stdlib on behalf of allowed modules; snapshotted, never offered
    "_strptime", "encodings.idna", "encodings.latin_1", "encodings.ascii", "encodings.utf_16",
    "encodings.utf_32", "encodings.utf_8_sig", "encodings.cp1252", "encodings.punycode",
    "encodings.hex_codec", "encodings.base64_codec", "encodings.raw_unicode_escape",
    "encodings.unicode_escape", "stringprep", "xml.dom.expatbuilder", "xml.sax.expatreader",
    "xml.dom.xmlbuilder", "xml.dom.minicompat", "email.feedparser", "email.iterators",
    "email._header_value_parser", "email.base64mime", "email.quoprimime",
)

HIDDEN_MODULES = (
    # dropped from sys.modules after the build: no skill needs them, and they are the names an
    # escape attempt reaches for first (WASI would refuse them anyway)
    "socket", "_socket", "select", "selectors", "_thread", "threading", "subprocess", "signal",
    "ctypes", "_ctypes", "importlib", "importlib.util", "importlib.machinery", "zipimport",
)

_HTTP = (
    "make HTTP requests with bastion_sdk.http (the host sends them, checked against the "
    "skill's network grants)"
)
_THREADS = "the sandbox has no threads: use asyncio (an async def run) or plain loops"
_PROCESSES = "a skill cannot start processes or signal them; do the work in Python"
_NATIVE = (
    "it needs compiled (native) code, which cannot run in WebAssembly; only pure-Python "
    "dependencies can be vendored (skill.toml dependencies, bastion pack vendor)"
)

INSTEAD = {
    # what an import of a module that is not offered says to use instead
    "socket": _HTTP, "_socket": _HTTP, "ssl": _HTTP, "http": _HTTP, "http.client": _HTTP,
    "urllib.request": _HTTP, "requests": _HTTP, "httpx": _HTTP, "urllib3": _HTTP,
    "aiohttp": _HTTP, "ftplib": _HTTP, "smtplib": _HTTP, "imaplib": _HTTP, "poplib": _HTTP,
    "select": _HTTP, "selectors": _HTTP,
    "threading": _THREADS, "_thread": _THREADS, "concurrent": _THREADS, "queue": _THREADS,
    "multiprocessing": _PROCESSES, "subprocess": _PROCESSES, "signal": _PROCESSES,
    "pty": _PROCESSES,
    "ctypes": _NATIVE, "_ctypes": _NATIVE, "cffi": _NATIVE, "numpy": _NATIVE,
    "pandas": _NATIVE, "lxml": _NATIVE, "PIL": _NATIVE, "pydantic_core": _NATIVE,
    "importlib": "import modules with import statements; a skill's own modules and its "
                 "vendored dependencies are importable by name",
    "sqlite3": "this runner's CPython has no sqlite3; keep data as JSON or CSV files on a "
               "mounted folder",
    "tempfile": "there is no temporary folder; keep data in memory (io.BytesIO, io.StringIO) "
                "or on a writable mount the policy grants",
    "pickle": "use json: pickle can run code when it loads data",
}
