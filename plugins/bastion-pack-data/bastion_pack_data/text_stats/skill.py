"""Counts and frequencies for a piece of text: characters, words, sentences, top words."""

import math
import re
from collections import Counter
from typing import TypedDict

MAX_TEXT_CHARS = 2_000_000
_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_SENTENCE_END = re.compile(r"[.!?…]+(?=\s|$)")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")

STOPWORDS = frozenset(
    (
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
    )
)


class WordCount(TypedDict):
    word: str
    count: int


class TextStats(TypedDict):
    characters: int
    characters_no_spaces: int
    words: int
    unique_words: int
    lines: int
    sentences: int
    paragraphs: int
    average_word_length: float
    top_words: list[WordCount]
    reading_time_seconds: int


def run(
    text: str, top_n: int = 10, exclude_stopwords: bool = True, words_per_minute: int = 200
) -> TextStats:
    """Count characters, words, lines, sentences and paragraphs of a text, list its most
    frequent words and estimate its reading time.

    Args:
        text: The text to measure.
        top_n: How many of the most frequent words to list (0 to 100).
        exclude_stopwords: Leave common English words ("the", "and", ...) out of top_words.
        words_per_minute: Reading speed used for the reading time (50 to 1000).
    """
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"the text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    if not 0 <= top_n <= 100:
        raise ValueError(f"top_n must be between 0 and 100, got {top_n}")
    if not 50 <= words_per_minute <= 1000:
        raise ValueError(f"words_per_minute must be between 50 and 1000, got {words_per_minute}")
    words = [w.lower() for w in _WORD.findall(text)]
    counts = Counter(w for w in words if not (exclude_stopwords and w in STOPWORDS))
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]
    stripped = text.strip()
    sentences = 0
    if stripped:
        pieces = _SENTENCE_END.split(stripped)
        sentences = sum(1 for p in pieces if _WORD.search(p))
    paragraphs = sum(1 for p in _PARAGRAPH_BREAK.split(stripped) if p.strip()) if stripped else 0
    average = round(sum(len(w) for w in words) / len(words), 2) if words else 0.0
    return {
        "characters": len(text),
        "characters_no_spaces": sum(1 for c in text if not c.isspace()),
        "words": len(words),
        "unique_words": len(set(words)),
        "lines": len(text.splitlines()),
        "sentences": sentences,
        "paragraphs": paragraphs,
        "average_word_length": average,
        "top_words": [{"word": w, "count": c} for w, c in top],
        "reading_time_seconds": math.ceil(len(words) * 60 / words_per_minute),
    }
