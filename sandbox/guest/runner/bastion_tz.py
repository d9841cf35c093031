"""``zoneinfo`` with the IANA database inside the sandbox (from the ``tzdata`` package).

The runner build copies ``tzdata``'s zone files beside this module; they are read into memory
here, at build time, so they are part of the snapshot and need no file system at call time.
``zoneinfo`` is pointed at them (its ``TZPATH`` is emptied: the guest has no system zones).
"""

import io
import os
import zoneinfo
import zoneinfo._common

__all__ = ["ZONES", "zone_names"]

_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tzdata", "zoneinfo")
ZONES = {}


def _load():
    if not os.path.isdir(_DIR):
        return
    for dirpath, dirnames, filenames in os.walk(_DIR):
        dirnames.sort()
        for fname in sorted(filenames):
            if fname.startswith(("_", ".")) or fname.endswith((".py", ".pyc", ".tab", ".zi")):
                continue
            path = os.path.join(dirpath, fname)
            with open(path, "rb") as f:
                data = f.read()
            if data[:4] == b"TZif":
                ZONES[os.path.relpath(path, _DIR).replace(os.sep, "/")] = data


_load()


def zone_names():
    """Every zone key the sandbox knows (``zoneinfo.available_timezones()``)."""
    return set(ZONES)


def _load_tzdata(key):
    data = ZONES.get(key)
    if data is None:
        raise zoneinfo.ZoneInfoNotFoundError(f"No time zone found with key {key}")
    return io.BytesIO(data)


zoneinfo._common.load_tzdata = _load_tzdata
zoneinfo.reset_tzpath(to=[])
zoneinfo.available_timezones = zone_names
