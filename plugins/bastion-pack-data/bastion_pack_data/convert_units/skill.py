"""Unit conversion for length, mass, time, temperature, data size and speed."""

import math
from typing import TypedDict

# category -> canonical unit -> (factor to the category's base unit, aliases)
UNITS: dict[str, dict[str, tuple[float, tuple[str, ...]]]] = {
    "length": {
        "nm": (1e-9, ("nanometer", "nanometers", "nanometre", "nanometres")),
        "um": (1e-6, ("µm", "micrometer", "micrometers", "micron", "microns")),
        "mm": (1e-3, ("millimeter", "millimeters", "millimetre", "millimetres")),
        "cm": (1e-2, ("centimeter", "centimeters", "centimetre", "centimetres")),
        "m": (1.0, ("meter", "meters", "metre", "metres")),
        "km": (1e3, ("kilometer", "kilometers", "kilometre", "kilometres")),
        "in": (0.0254, ("inch", "inches")),
        "ft": (0.3048, ("foot", "feet")),
        "yd": (0.9144, ("yard", "yards")),
        "mi": (1609.344, ("mile", "miles")),
        "nmi": (1852.0, ("nautical mile", "nautical miles")),
    },
    "mass": {
        "mg": (1e-6, ("milligram", "milligrams")),
        "g": (1e-3, ("gram", "grams")),
        "kg": (1.0, ("kilogram", "kilograms", "kilo", "kilos")),
        "t": (1e3, ("tonne", "tonnes", "metric ton", "metric tons")),
        "oz": (0.028349523125, ("ounce", "ounces")),
        "lb": (0.45359237, ("lbs", "pound", "pounds")),
        "st": (6.35029318, ("stone", "stones")),
    },
    "time": {
        "ns": (1e-9, ("nanosecond", "nanoseconds")),
        "us": (1e-6, ("µs", "microsecond", "microseconds")),
        "ms": (1e-3, ("millisecond", "milliseconds")),
        "s": (1.0, ("sec", "secs", "second", "seconds")),
        "min": (60.0, ("mins", "minute", "minutes")),
        "h": (3600.0, ("hr", "hrs", "hour", "hours")),
        "day": (86400.0, ("d", "days")),
        "week": (604800.0, ("wk", "weeks")),
        "year": (31557600.0, ("yr", "years", "julian year")),
    },
    "data size": {
        "bit": (0.125, ("bits", "b")),
        "kbit": (125.0, ("Kbit", "kilobit", "kilobits")),
        "Mbit": (125e3, ("Mb", "megabit", "megabits")),
        "Gbit": (125e6, ("Gb", "gigabit", "gigabits")),
        "B": (1.0, ("byte", "bytes")),
        "KB": (1e3, ("kB", "kilobyte", "kilobytes")),
        "MB": (1e6, ("megabyte", "megabytes")),
        "GB": (1e9, ("gigabyte", "gigabytes")),
        "TB": (1e12, ("terabyte", "terabytes")),
        "PB": (1e15, ("petabyte", "petabytes")),
        "KiB": (1024.0, ("kibibyte", "kibibytes")),
        "MiB": (1024.0**2, ("mebibyte", "mebibytes")),
        "GiB": (1024.0**3, ("gibibyte", "gibibytes")),
        "TiB": (1024.0**4, ("tebibyte", "tebibytes")),
    },
    "speed": {
        "m/s": (1.0, ("mps", "meters per second", "metres per second")),
        "km/h": (1 / 3.6, ("kph", "kmh", "kilometers per hour", "kilometres per hour")),
        "mph": (0.44704, ("mi/h", "miles per hour")),
        "kn": (1852.0 / 3600.0, ("knot", "knots", "kt")),
        "ft/s": (0.3048, ("fps", "feet per second")),
    },
    "temperature": {
        "C": (1.0, ("°C", "celsius", "degC")),
        "F": (1.0, ("°F", "fahrenheit", "degF")),
        "K": (1.0, ("kelvin", "kelvins")),
    },
}


def _index() -> tuple[dict[str, tuple[str, str]], dict[str, list[tuple[str, str]]]]:
    exact: dict[str, tuple[str, str]] = {}
    folded: dict[str, list[tuple[str, str]]] = {}
    for category, units in UNITS.items():
        for canonical, (_, aliases) in units.items():
            for name in (canonical, *aliases):
                exact[name] = (category, canonical)
                bucket = folded.setdefault(name.lower(), [])
                if (category, canonical) not in bucket:
                    bucket.append((category, canonical))
    return exact, folded


_EXACT, _FOLDED = _index()


def _lookup(unit: str, which: str) -> tuple[str, str]:
    key = " ".join(unit.strip().split())
    if key in _EXACT:
        return _EXACT[key]
    candidates = _FOLDED.get(key.lower(), [])
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(repr(c) for _, c in candidates)
        raise ValueError(f"{which} {unit!r} is ambiguous: did you mean {names}? Case matters")
    known = "; ".join(f"{cat}: {', '.join(units)}" for cat, units in UNITS.items())
    raise ValueError(f"unknown {which} {unit[:40]!r}. Known units: {known}")


def _to_kelvin(value: float, unit: str) -> float:
    if unit == "C":
        return value + 273.15
    if unit == "F":
        return (value - 32.0) * 5.0 / 9.0 + 273.15
    return value


def _from_kelvin(value: float, unit: str) -> float:
    if unit == "C":
        return value - 273.15
    if unit == "F":
        return (value - 273.15) * 9.0 / 5.0 + 32.0
    return value


class Conversion(TypedDict):
    value: float
    from_unit: str
    to_unit: str
    category: str
    result: float
    text: str


def run(value: float, from_unit: str, to_unit: str, precision: int = 12) -> Conversion:
    """Convert a value between units of length, mass, time, temperature, data size or speed.

    Units are written as symbols or names, e.g. "km", "miles", "lb", "°F", "MiB", "km/h".
    Symbols are case-sensitive where it matters ("Mb" is megabits, "MB" megabytes).

    Args:
        value: The number to convert.
        from_unit: The unit the value is in, e.g. "mi".
        to_unit: The unit to convert to, e.g. "km".
        precision: Significant digits kept in the result (1 to 17).
    """
    if not 1 <= precision <= 17:
        raise ValueError(f"precision must be between 1 and 17, got {precision}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("value is too large; use a number below 1e308") from None
    if not math.isfinite(number):
        raise ValueError(f"value must be a finite number, got {value!r}")
    src_cat, src = _lookup(from_unit, "from_unit")
    dst_cat, dst = _lookup(to_unit, "to_unit")
    if src_cat != dst_cat:
        raise ValueError(
            f"cannot convert {src!r} ({src_cat}) to {dst!r} ({dst_cat}); "
            "both units must measure the same thing"
        )
    if src_cat == "temperature":
        kelvin = _to_kelvin(number, src)
        if kelvin < -1e-9:
            raise ValueError(f"{value} {src} is below absolute zero")
        result = _from_kelvin(kelvin, dst)
    else:
        result = number * UNITS[src_cat][src][0] / UNITS[dst_cat][dst][0]
    if not math.isfinite(result):
        raise ValueError(f"the result of converting {value} {src} to {dst} is too large")
    result = float(f"{result:.{precision}g}") if result else 0.0
    shown = f"{result:.{precision}g}"
    return {
        "value": value,
        "from_unit": src,
        "to_unit": dst,
        "category": src_cat,
        "result": result,
        "text": f"{number:g} {src} = {shown} {dst}",
    }
