"""Word and sentence statistics for plain English text."""

import re

WORD = re.compile(r"[a-z']+")
SENTENCE_END = re.compile(r"[.!?]+")


def words(text: str) -> list[str]:
    """The words of `text`, lower-cased, in reading order."""
    return WORD.findall(text.lower())


def sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped; trailing text without '.', '!' or '?' is a sentence too."""
    return [part.strip() for part in SENTENCE_END.split(text) if part.strip()]


def mean_word_length(text: str) -> float:
    """The mean number of letters per word; 0.0 for text without words."""
    found = words(text)
    if not found:
        return 0.0
    return sum(len(word) for word in found) / len(found)


def words_per_sentence(text: str) -> float:
    """The mean number of words per sentence; 0.0 for text without sentences."""
    parts = sentences(text)
    if not parts:
        return 0.0
    return sum(len(words(part)) for part in parts) / len(parts)


def top_words(text: str, n: int = 3) -> list[tuple[str, int]]:
    """The `n` most frequent words (3 by default) with their counts: most frequent first, ties alphabetical."""
    counts: dict[str, int] = {}
    for word in words(text):
        counts[word] = counts.get(word, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:n]


def long_words(text: str, min_length: int = 7) -> list[str]:
    """The distinct words of at least `min_length` letters, in order of first appearance."""
    chosen: list[str] = []
    for word in words(text):
        if len(word) >= min_length and word not in chosen:
            chosen.append(word)
    return chosen
