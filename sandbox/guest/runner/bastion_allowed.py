"""The modules a Python skill may import inside the sandbox (data only, read by host and guest).

Every name here is imported when the runner component is built (componentize-py snapshots the
interpreter after start-up); nothing else can be imported at call time. The host reads this file
with ``ast.literal_eval`` (it never imports guest code) to document and test the list.
"""

ALLOWED_MODULES = (
    # text and data formats
    "json", "csv", "html", "html.parser", "html.entities", "xml.etree.ElementTree",
    "tomllib", "base64", "binascii", "quopri", "codecs", "unicodedata", "string", "textwrap",
    "difflib", "re", "fnmatch", "shlex", "pprint", "reprlib", "keyword", "mimetypes",
    "urllib.parse", "ipaddress", "uuid",
    # numbers
    "math", "cmath", "decimal", "fractions", "numbers", "statistics", "random", "colorsys",
    # time
    "datetime", "time", "calendar",
    # data structures and functional tools
    "collections", "collections.abc", "itertools", "functools", "operator", "heapq", "bisect",
    "array", "copy", "dataclasses", "enum", "typing", "types", "abc", "contextlib",
    "graphlib", "weakref", "warnings",
    # bytes, hashing, compression
    "struct", "hashlib", "hmac", "secrets", "zlib", "gzip", "zipfile",
    # files (only the mounts the policy grants are visible)
    "io", "os", "os.path", "pathlib", "glob",
    # language tools (``from __future__ import annotations`` is common in typed code)
    "__future__", "ast", "posixpath",
    # the skill SDK
    "bastion_sdk", "bastion", "bastion.sdk",
)

INTERNAL_MODULES = (
    # imported lazily by the stdlib on behalf of allowed modules; snapshotted, never offered
    "_strptime", "encodings.idna", "encodings.latin_1", "encodings.ascii", "encodings.utf_16",
    "encodings.utf_32", "encodings.utf_8_sig", "encodings.cp1252", "encodings.punycode",
    "encodings.hex_codec", "encodings.base64_codec", "encodings.raw_unicode_escape",
    "encodings.unicode_escape", "stringprep",
)

HIDDEN_MODULES = (
    # dropped from sys.modules after the build: no skill needs them, and they are the names an
    # escape attempt reaches for first (WASI would refuse them anyway)
    "socket", "_socket", "select", "selectors", "_thread", "threading", "subprocess", "signal",
    "ctypes", "_ctypes", "importlib", "importlib.util", "importlib.machinery", "zipimport",
)
