"""URL slugs from titles, with the vendored pure-Python ``textslug`` library."""

from typing import Annotated, Literal, TypedDict

from bastion_sdk import Field
from textslug import slugify

MAX_TEXT = 10_000


class Slug(TypedDict):
    slug: str
    length: int


def run(
    text: Annotated[str, Field(max_length=MAX_TEXT)],
    separator: Literal["-", "_", "."] = "-",
    max_length: Annotated[int, Field(ge=1, le=1000)] | None = None,
) -> Slug:
    """Turn a title into a URL slug: ASCII letters and digits joined by a separator.

    Args:
        text: the title or phrase
        separator: what joins the words
        max_length: cut the slug at a word boundary to at most this many characters
    """
    slug = slugify(text, separator=separator, max_length=max_length)
    return {"slug": slug, "length": len(slug)}
