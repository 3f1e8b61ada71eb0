"""Run-length encoding of text: "aaabcc" <-> "3a1b2c". Text to encode must not contain digits."""


def runs(text: str) -> list[tuple[str, int]]:
    """The runs of equal consecutive characters as (character, length) pairs."""
    found: list[tuple[str, int]] = []
    for char in text:
        if found and found[-1][0] == char:
            found[-1] = (char, found[-1][1] + 1)
        else:
            found.append((char, 1))
    return found


def encode(text: str) -> str:
    """Each run written as its length followed by its character."""
    if any(char.isdigit() for char in text):
        raise ValueError("text with digits cannot be run-length encoded")
    return "".join(f"{length}{char}" for char, length in runs(text))


def decode(encoded: str) -> str:
    """The inverse of `encode`; raises ValueError for a character without a count or a count without one."""
    pieces: list[str] = []
    digits = ""
    for char in encoded:
        if char.isdigit():
            digits += char
            continue
        if not digits:
            raise ValueError(f"{char!r} has no count")
        pieces.append(char * int(digits))
        digits = ""
    if digits:
        raise ValueError(f"count {digits} has no character")
    return "".join(pieces)


def longest_run(text: str) -> tuple[str, int]:
    """The first of the longest runs; ("", 0) for empty text."""
    best = ("", 0)
    for char, length in runs(text):
        if length > best[1]:
            best = (char, length)
    return best
