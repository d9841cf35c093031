"""URL slugs from any text: accents folded to ASCII, punctuation dropped, words joined."""

import re
import unicodedata

__all__ = ["slugify"]
__version__ = "1.0.0"

_SPECIAL = {
    "ß": "ss",
    "æ": "ae",
    "Æ": "AE",
    "ø": "o",
    "Ø": "O",
    "œ": "oe",
    "Œ": "OE",
    "đ": "d",
    "Đ": "D",
    "ł": "l",
    "Ł": "L",
    "þ": "th",
    "&": " and ",
}
_NON_WORD = re.compile(r"[^a-z0-9]+")


def slugify(text, separator="-", max_length=None):
    """``text`` as a slug: lower case ASCII letters and digits joined by ``separator``."""
    text = "".join(_SPECIAL.get(c, c) for c in str(text))
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NON_WORD.sub(separator, folded.lower()).strip(separator)
    if max_length is not None and len(slug) > max_length:
        cut = slug[:max_length]
        if separator in cut and slug[max_length : max_length + 1] not in ("", separator):
            cut = cut.rsplit(separator, 1)[0]
        slug = cut.strip(separator)
    return slug
