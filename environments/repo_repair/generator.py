"""Deterministic generator of SWE-style "repo repair" tasks.

Each task is a small, correct Python package with one bug injected, a problem statement written like an issue,
hidden tests in SWE-bench vocabulary (FAIL_TO_PASS, PASS_TO_PASS) and the reference fix.

What is not obvious:
- A bug is injected by replacing one exact snippet of whole lines in the correct source; the snippet must occur
  exactly once at the start of a line (no AST rewriting, so the buggy code keeps the author's formatting).
- FAIL_TO_PASS is declared per mutation (the hidden test functions it is known to break), not computed here:
  the generator never runs pytest. tests/test_repo_repair_generator.py proves every declaration by running the
  hidden tests against the buggy and the fixed repository.
- The problem statement's reproduction is computed, not written: the example call (with numbers drawn from the
  seed) is evaluated against the buggy and the correct source in-process with exec, so its shown output is real,
  and generation fails when an example does not expose the bug. The reproduction is a doctest; the expected output
  at the end of the statement is what the fixed code prints.
- Splits are by source module (the first TRAIN_MODULES modules train, the rest test), so no module is shared, and
  each split contributes to `count` in proportion to its number of (module, mutation) pairs.
- A task id names its (module, mutation) pair and does not depend on the seed; the seed only picks the pairs,
  their order and the cosmetic details of the statement.
- Stdlib only, Python 3.10+: the module must import inside sandboxes and without rlaif installed.
"""

from __future__ import annotations

import ast
import difflib
import random
import re
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RepairTask:
    """One repair task: the buggy repository, the issue, the hidden tests and the reference fix."""

    id: str
    problem_statement: str
    repo: dict[str, str]
    tests: dict[str, str]
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    reference_files: dict[str, str]
    reference_patch: str
    split: str


@dataclass(frozen=True)
class Mutation:
    """One injectable bug: `original` (whole lines of the correct source) becomes `replacement`."""

    kind: str
    original: str
    replacement: str
    breaks: tuple[str, ...]  # the hidden test functions that fail on the buggy code
    example: Callable[[random.Random], str]  # a call expression that shows the bug


@dataclass(frozen=True)
class BaseModule:
    """A correct package `package/` holding one module `stem`.py, its hidden tests and the bugs it can get."""

    package: str
    stem: str
    source: str
    tests: str  # import header, then test functions separated by two blank lines
    mutations: tuple[Mutation, ...]


WORDS = (
    "ant",
    "bee",
    "owl",
    "fox",
    "bird",
    "lamp",
    "door",
    "frog",
    "apple",
    "river",
    "stone",
    "cloud",
    "garden",
    "silver",
    "bottle",
    "pepper",
    "balloon",
    "kitchen",
    "thunder",
    "dolphin",
    "elephant",
    "mountain",
    "notebook",
    "sandwich",
)
ITEMS = ("pen", "mug", "lamp", "notebook", "stapler", "candle")


def _words(rng: random.Random, length: int, count: int = 1) -> list[str]:
    return rng.sample([word for word in WORDS if len(word) == length], count)


def _ranked_text(rng: random.Random) -> str:
    """Four distinct words occurring 4, 3, 2 and 1 times, shuffled."""
    bag = [word for times, word in zip((4, 3, 2, 1), _words(rng, 5, 4), strict=True) for _ in range(times)]
    rng.shuffle(bag)
    return " ".join(bag)


def _exact_length_call(rng: random.Random) -> str:
    length = rng.randint(5, 7)
    chosen = [*_words(rng, length - 2), *_words(rng, length), *_words(rng, length + 1)]
    rng.shuffle(chosen)
    return f"long_words({' '.join(chosen)!r}, {length})"


def _duplicate_call(rng: random.Random) -> str:
    short, long = _words(rng, 3)[0], _words(rng, 8)[0]
    return f"long_words('{short} {long} {long}', {rng.randint(5, 8)})"


def _two_spans(rng: random.Random) -> tuple[int, int, int, int]:
    """Two disjoint intervals with a hole between them."""
    a = rng.randint(1, 5)
    b = a + rng.randint(1, 4)
    c = b + rng.randint(2, 5)
    return a, b, c, c + rng.randint(0, 4)


def _adjacent_merge(rng: random.Random) -> str:
    a = rng.randint(1, 5)
    b = a + rng.randint(1, 4)
    return f"merge([({a}, {b}), ({b + 1}, {b + 1 + rng.randint(0, 4)})])"


def _gaps_call(rng: random.Random) -> str:
    a, b, c, d = _two_spans(rng)
    return f"gaps([({a}, {b}), ({c}, {d})])"


def _cart_line(rng: random.Random, quantity: int, tail: str) -> str:
    item = rng.choice(ITEMS)
    return f"Cart().add({item!r}, {rng.randrange(120, 900, 10)}, {quantity}).{tail.format(item=repr(item))}"


def _removal_call(rng: random.Random) -> str:
    item, quantity = rng.choice(ITEMS), rng.randint(2, 5)
    return f"Cart().add({item!r}, {rng.randrange(120, 900, 10)}, {quantity}).remove({item!r}, {quantity}).lines"


def _run_text(rng: random.Random, lengths: tuple[int, ...]) -> str:
    """Runs of the given lengths, each of a different letter."""
    return "".join(letter * length for letter, length in zip(rng.sample("abcdxyz", len(lengths)), lengths, strict=True))


def _square(rng: random.Random) -> str:
    """A 2x2 matrix that is not symmetric."""
    a, b, d = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)
    return f"[[{a}, {b}], [{b + rng.randint(1, 5)}, {d}]]"


def _day_prefix(rng: random.Random) -> str:
    prefix = rng.choice(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    return rng.choice((prefix, prefix.upper(), prefix.title()))


def _wrapping_span_call(rng: random.Random) -> str:
    first, last = rng.randint(4, 5), rng.randint(0, 1)
    return f"in_span({rng.randint(first, 6)}, {first}, {last})"


TEXTSTATS_SOURCE = r'''"""Word and sentence statistics for plain English text."""

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
'''

TEXTSTATS_TESTS = r"""from textstats import (
    long_words,
    mean_word_length,
    sentences,
    top_words,
    words,
    words_per_sentence,
)


def test_words_are_lower_cased_in_order():
    assert words("The cat, the HAT!") == ["the", "cat", "the", "hat"]


def test_sentences_split_on_terminators():
    assert sentences("One. Two!  Three? four") == ["One", "Two", "Three", "four"]


def test_mean_word_length():
    assert mean_word_length("ab abcd") == 3.0


def test_mean_word_length_of_text_without_words():
    assert mean_word_length("") == 0.0
    assert mean_word_length("... 42 !") == 0.0


def test_words_per_sentence():
    assert words_per_sentence("One two three. Four.") == 2.0
    assert words_per_sentence("") == 0.0


def test_top_words_ranks_by_count_then_alphabet():
    text = "b a c b a b d"
    assert top_words(text, 2) == [("b", 3), ("a", 2)]
    assert top_words(text, 4) == [("b", 3), ("a", 2), ("c", 1), ("d", 1)]


def test_top_words_defaults_to_three():
    assert top_words("x y z w x y x") == [("x", 3), ("y", 2), ("w", 1)]


def test_top_words_with_n_above_the_vocabulary():
    assert top_words("one two", 5) == [("one", 1), ("two", 1)]


def test_long_words_include_the_exact_length():
    assert long_words("seven letters in balloon", 7) == ["letters", "balloon"]


def test_long_words_are_distinct_and_ordered():
    assert long_words("elephant giraffe elephant ant", 5) == ["elephant", "giraffe"]
"""

INTERVALS_SOURCE = r'''"""Closed integer intervals (start, end), both ends included: merging, coverage and gaps."""

Interval = tuple[int, int]


def normalize(intervals: list[Interval]) -> list[Interval]:
    """The intervals sorted, each with start <= end (a reversed interval such as (5, 2) is flipped)."""
    return sorted((min(start, end), max(start, end)) for start, end in intervals)


def merge(intervals: list[Interval], touching: bool = True) -> list[Interval]:
    """Overlapping intervals merged into one; with `touching`, adjacent ones such as (1, 2) and (3, 4) too."""
    reach = 1 if touching else 0
    merged: list[Interval] = []
    for start, end in normalize(intervals):
        if merged and start <= merged[-1][1] + reach:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def covered(intervals: list[Interval]) -> int:
    """How many integers lie in at least one interval."""
    return sum(end - start + 1 for start, end in merge(intervals))


def gaps(intervals: list[Interval]) -> list[Interval]:
    """The stretches of integers between the merged intervals that no interval covers."""
    merged = merge(intervals)
    holes = [(left[1] + 1, right[0] - 1) for left, right in zip(merged, merged[1:])]
    return holes


def contains(intervals: list[Interval], point: int) -> bool:
    """Whether `point` lies in any of the intervals."""
    for start, end in normalize(intervals):
        if start <= point and point <= end:
            return True
    return False
'''

INTERVALS_TESTS = r"""from intervals import contains, covered, gaps, merge, normalize


def test_normalize_flips_and_sorts():
    assert normalize([(5, 2), (1, 1)]) == [(1, 1), (2, 5)]


def test_merge_overlapping():
    assert merge([(1, 4), (2, 6), (8, 9)]) == [(1, 6), (8, 9)]


def test_merge_shared_endpoint():
    assert merge([(1, 3), (3, 5)], touching=False) == [(1, 5)]


def test_merge_adjacent_by_default():
    assert merge([(1, 2), (3, 4)]) == [(1, 4)]


def test_merge_keeps_adjacent_apart_when_not_touching():
    assert merge([(1, 2), (3, 4)], touching=False) == [(1, 2), (3, 4)]


def test_merge_of_nothing():
    assert merge([]) == []


def test_covered_counts_each_integer_once():
    assert covered([(1, 3), (2, 5), (10, 10)]) == 6


def test_gaps_between_intervals():
    assert gaps([(1, 2), (6, 8), (4, 4)]) == [(3, 3), (5, 5)]


def test_no_gaps_in_one_interval():
    assert gaps([(1, 5), (2, 3)]) == []


def test_contains():
    assert contains([(1, 3), (7, 9)], 8)
    assert not contains([(1, 3), (7, 9)], 5)
    assert contains([(9, 7)], 7)
"""

SHOPCART_SOURCE = r'''"""A shopping cart: prices in cents, a bulk discount per line and percentage coupons."""

from collections.abc import Iterable

BULK_QUANTITY = 10
BULK_PERCENT = 5
COUPONS = {"SAVE10": 10, "HALF": 50}


class Cart:
    """Items by name, each with a unit price in cents and a quantity; adding a known name adds to its quantity."""

    def __init__(self, items: Iterable[tuple[str, int, int]] = ()) -> None:
        self.lines: dict[str, list[int]] = {}
        for name, price, quantity in items:
            self.add(name, price, quantity)

    def add(self, name: str, price: int, quantity: int = 1) -> "Cart":
        if quantity <= 0:
            raise ValueError(f"quantity must be positive, got {quantity}")
        if name in self.lines:
            self.lines[name][1] += quantity
        else:
            self.lines[name] = [price, quantity]
        return self

    def remove(self, name: str, quantity: int = 1) -> "Cart":
        """Takes `quantity` of `name` out; the line disappears when none is left."""
        held = self.lines[name][1]
        if quantity >= held:
            del self.lines[name]
        else:
            self.lines[name][1] = held - quantity
        return self

    def count(self) -> int:
        return sum(quantity for _, quantity in self.lines.values())

    def line_total(self, name: str) -> int:
        """Price times quantity; from BULK_QUANTITY items on, less BULK_PERCENT percent (rounded down in cents)."""
        price, quantity = self.lines[name]
        gross = price * quantity
        net = gross
        if quantity >= BULK_QUANTITY:
            net -= gross * BULK_PERCENT // 100
        return net

    def total(self, coupon: str | None = None) -> int:
        """The sum of the line totals, less the coupon's percentage; coupon codes are case-insensitive."""
        subtotal = sum(self.line_total(name) for name in self.lines)
        if coupon is None:
            return subtotal
        if coupon.upper() not in COUPONS:
            raise KeyError(f"unknown coupon {coupon!r}")
        return subtotal - subtotal * COUPONS[coupon.upper()] // 100
'''

SHOPCART_TESTS = r"""import pytest

from shopcart import Cart


def test_add_accumulates_quantity():
    cart = Cart().add("pen", 150).add("pen", 150, 2)
    assert cart.lines == {"pen": [150, 3]}
    assert cart.count() == 3


def test_constructor_adds_items():
    cart = Cart([("pen", 150, 2), ("ink", 400, 1)])
    assert cart.count() == 3
    assert cart.total() == 700


def test_add_rejects_non_positive_quantity():
    with pytest.raises(ValueError):
        Cart().add("pen", 150, 0)


def test_remove_part_of_a_line():
    assert Cart().add("pen", 150, 3).remove("pen").lines == {"pen": [150, 2]}


def test_remove_whole_line():
    assert Cart().add("pen", 150, 3).remove("pen", 3).lines == {}


def test_no_discount_below_bulk_quantity():
    assert Cart().add("pen", 150, 9).line_total("pen") == 1350


def test_bulk_discount_from_ten_items():
    assert Cart().add("pen", 150, 10).line_total("pen") == 1425
    assert Cart().add("pen", 99, 20).line_total("pen") == 1881


def test_coupon_applies_to_discounted_total():
    cart = Cart().add("pen", 150, 10).add("ink", 400)
    assert cart.total("save10") == 1643
    assert cart.total("HALF") == 913


def test_unknown_coupon():
    with pytest.raises(KeyError):
        Cart().add("pen", 150).total("FREE")
"""

RLE_SOURCE = r'''"""Run-length encoding of text: "aaabcc" <-> "3a1b2c". Text to encode must not contain digits."""


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
'''

RLE_TESTS = r"""import pytest

from rle import decode, encode, longest_run, runs


def test_runs():
    assert runs("aaabcc") == [("a", 3), ("b", 1), ("c", 2)]
    assert runs("") == []


def test_encode():
    assert encode("aaabcc") == "3a1b2c"
    assert encode("wwwwwwwwwwwwx") == "12w1x"


def test_encode_rejects_digits():
    with pytest.raises(ValueError):
        encode("a1")


def test_decode_multi_digit_counts():
    assert decode("12w1x") == "wwwwwwwwwwwwx"


def test_decode_rejects_a_character_without_count():
    with pytest.raises(ValueError):
        decode("3ab")


def test_decode_rejects_a_trailing_count():
    with pytest.raises(ValueError):
        decode("3a2")


def test_round_trip():
    text = "xxyyyzx  !!"
    assert decode(encode(text)) == text


def test_longest_run_prefers_the_first():
    assert longest_run("aabbbcccdd") == ("b", 3)


def test_longest_run_of_empty_text():
    assert longest_run("") == ("", 0)
"""

MATRIX_SOURCE = r'''"""Small dense matrices as lists of rows; every row has the same length."""

Matrix = list[list[float]]


def shape(m: Matrix) -> tuple[int, int]:
    """(rows, columns); (0, 0) for a matrix without rows."""
    if not m:
        return (0, 0)
    return (len(m), len(m[0]))


def identity(n: int) -> Matrix:
    return [[1 if i == j else 0 for j in range(n)] for i in range(n)]


def transpose(m: Matrix) -> Matrix:
    rows, cols = shape(m)
    return [[m[i][j] for i in range(rows)] for j in range(cols)]


def add(a: Matrix, b: Matrix) -> Matrix:
    """The elementwise sum; raises ValueError when the shapes differ."""
    if shape(a) != shape(b):
        raise ValueError(f"cannot add {shape(a)} and {shape(b)}")
    return [[x + y for x, y in zip(row_a, row_b)] for row_a, row_b in zip(a, b)]


def multiply(a: Matrix, b: Matrix) -> Matrix:
    """The matrix product; raises ValueError when the columns of `a` are not the rows of `b`."""
    rows, inner = shape(a)
    inner_b, cols = shape(b)
    if inner != inner_b:
        raise ValueError(f"cannot multiply {rows}x{inner} by {inner_b}x{cols}")
    return [[sum(a[i][k] * b[k][j] for k in range(inner)) for j in range(cols)] for i in range(rows)]


def trace(m: Matrix) -> float:
    """The sum of the main diagonal of a square matrix."""
    rows, cols = shape(m)
    if rows != cols:
        raise ValueError("trace needs a square matrix")
    return sum(m[i][i] for i in range(rows))


def is_symmetric(m: Matrix) -> bool:
    rows, cols = shape(m)
    return rows == cols and all(m[i][j] == m[j][i] for i in range(rows) for j in range(i + 1, cols))


def power(m: Matrix, exponent: int) -> Matrix:
    """`m` multiplied by itself `exponent` times; the identity for exponent 0."""
    rows, cols = shape(m)
    if rows != cols:
        raise ValueError("power needs a square matrix")
    if exponent < 0:
        raise ValueError("negative exponents are not supported")
    result = identity(rows)
    for _ in range(exponent):
        result = multiply(result, m)
    return result
'''

MATRIX_TESTS = r"""import pytest

from matrix import add, identity, is_symmetric, multiply, power, shape, trace, transpose


def test_shape():
    assert shape([[1, 2, 3], [4, 5, 6]]) == (2, 3)
    assert shape([]) == (0, 0)


def test_identity():
    assert identity(2) == [[1, 0], [0, 1]]


def test_transpose_rectangular():
    assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]


def test_transpose_square():
    assert transpose([[1, 2], [3, 4]]) == [[1, 3], [2, 4]]


def test_add():
    assert add([[1, 2]], [[10, 20]]) == [[11, 22]]


def test_add_rejects_different_shapes():
    with pytest.raises(ValueError):
        add([[1, 2], [3, 4]], [[1, 2]])


def test_multiply():
    assert multiply([[1, 2], [3, 4]], [[5], [6]]) == [[17], [39]]
    with pytest.raises(ValueError):
        multiply([[1, 2]], [[1, 2]])


def test_trace():
    assert trace([[1, 2, 3], [4, 5, 6], [7, 8, 9]]) == 15
    with pytest.raises(ValueError):
        trace([[1, 2]])


def test_is_symmetric():
    assert is_symmetric([[1, 7], [7, 2]])
    assert not is_symmetric([[1, 7], [8, 2]])
    assert not is_symmetric([[1, 2]])


def test_power():
    assert power([[1, 1], [1, 0]], 5) == [[8, 5], [5, 3]]
    assert power([[2, 3], [4, 5]], 0) == [[1, 0], [0, 1]]
    with pytest.raises(ValueError):
        power([[1, 1], [1, 0]], -1)
"""

WEEKCAL_SOURCE = r'''"""Week arithmetic without dates: day numbers run from 0 (Monday) to 6 (Sunday) and wrap around."""

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEKEND = (5, 6)


def day_name(day: int) -> str:
    """The name of day number `day`, taken modulo 7."""
    return DAYS[day % 7]


def day_number(name: str) -> int:
    """The number of a day given by its name or a prefix of at least three letters, in any case."""
    key = name.strip().lower()
    if len(key) < 3:
        raise ValueError(f"day name too short: {name!r}")
    for number, full in enumerate(DAYS):
        if full.lower().startswith(key):
            return number
    raise ValueError(f"not a day: {name!r}")


def is_weekend(day: int) -> bool:
    return day % 7 in WEEKEND


def days_until(start: int, target: int) -> int:
    """How many days from `start` forward to the next `target`; 0 when they are the same day."""
    return (target - start) % 7


def in_span(day: int, first: int, last: int) -> bool:
    """Whether `day` lies from `first` to `last` inclusive; a span such as Friday to Monday wraps over Sunday."""
    day, first, last = day % 7, first % 7, last % 7
    if first <= last:
        return first <= day <= last
    return day >= first or day <= last


def add_business_days(day: int, count: int) -> int:
    """The day reached after `count` business days (weekend days do not count) from `day`."""
    if count < 0:
        raise ValueError("count must not be negative")
    while count > 0:
        day = (day + 1) % 7
        if not is_weekend(day):
            count -= 1
    return day


def week_number(day_index: int) -> int:
    """The 1-based week of an absolute day index, where index 0 is the Monday of week 1."""
    return day_index // 7 + 1
'''

WEEKCAL_TESTS = r"""import pytest

from weekcal import add_business_days, day_name, day_number, days_until, in_span, is_weekend, week_number


def test_day_name_wraps():
    assert day_name(0) == "Monday"
    assert day_name(13) == "Sunday"
    assert day_name(-1) == "Sunday"


def test_day_number_from_name_and_prefix():
    assert day_number("Wednesday") == 2
    assert day_number(" fri ") == 4
    assert day_number("THU") == 3


def test_day_number_rejects_short_or_unknown_names():
    with pytest.raises(ValueError):
        day_number("mo")
    with pytest.raises(ValueError):
        day_number("funday")


def test_weekend():
    assert [day for day in range(7) if is_weekend(day)] == [5, 6]


def test_days_until():
    assert days_until(0, 4) == 4
    assert days_until(4, 0) == 3
    assert days_until(2, 2) == 0


def test_in_span():
    assert in_span(2, 1, 3)
    assert not in_span(5, 1, 3)


def test_in_span_wraps_over_sunday():
    assert in_span(6, 4, 0)
    assert in_span(0, 4, 0)
    assert not in_span(2, 4, 0)


def test_add_business_days_skips_the_weekend():
    assert add_business_days(4, 1) == 0
    assert add_business_days(0, 5) == 0
    assert add_business_days(2, 0) == 2


def test_add_business_days_rejects_negative_counts():
    with pytest.raises(ValueError):
        add_business_days(0, -1)


def test_week_number():
    assert week_number(0) == 1
    assert week_number(6) == 1
    assert week_number(7) == 2
"""

RPN_SOURCE = r'''"""Reverse Polish notation: "3 4 + 2 *" means (3 + 4) * 2. Tokens are separated by spaces."""

import operator

OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "^": operator.pow}


class RPNError(ValueError):
    """A malformed expression."""


def number(token: str) -> float:
    """The value of a numeric token: an int when it is written as one, else a float."""
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        raise RPNError(f"unknown token {token!r}") from None


def evaluate(expression: str) -> float:
    """The value of `expression`; raises RPNError when it is malformed or divides by zero."""
    stack: list[float] = []
    for token in expression.split():
        if token not in OPERATORS:
            stack.append(number(token))
            continue
        if len(stack) < 2:
            raise RPNError(f"{token!r} needs two operands")
        right = stack.pop()
        left = stack.pop()
        if token == "/" and right == 0:
            raise RPNError("division by zero")
        stack.append(OPERATORS[token](left, right))
    if len(stack) != 1:
        raise RPNError(f"expected one value, found {len(stack)}")
    return stack[0]


def to_infix(expression: str) -> str:
    """The fully parenthesised infix form: "3 4 + 2 *" gives "((3 + 4) * 2)"."""
    parts: list[str] = []
    for token in expression.split():
        if token not in OPERATORS:
            number(token)
            parts.append(token)
        elif len(parts) >= 2:
            right, left = parts.pop(), parts.pop()
            parts.append(f"({left} {token} {right})")
        else:
            raise RPNError(f"{token!r} needs two operands")
    if len(parts) != 1:
        raise RPNError(f"expected one value, found {len(parts)}")
    return parts[0]
'''

RPN_TESTS = r"""import pytest

from rpn import RPNError, evaluate, number, to_infix


def test_numbers():
    assert number("42") == 42
    assert number("2.5") == 2.5
    with pytest.raises(RPNError):
        number("x")


def test_evaluate_arithmetic():
    assert evaluate("3 4 + 2 *") == 14
    assert evaluate("2 3 ^") == 8


def test_evaluate_respects_operand_order():
    assert evaluate("10 4 -") == 6
    assert evaluate("8 2 /") == 4.0


def test_evaluate_single_number():
    assert evaluate("7") == 7


def test_missing_operand():
    with pytest.raises(RPNError):
        evaluate("1 +")


def test_division_by_zero():
    with pytest.raises(RPNError):
        evaluate("1 0 /")


def test_zero_operands_are_fine():
    assert evaluate("5 0 +") == 5
    assert evaluate("0 3 *") == 0


def test_leftover_or_empty():
    with pytest.raises(RPNError):
        evaluate("1 2")
    with pytest.raises(RPNError):
        evaluate("")


def test_to_infix():
    assert to_infix("3 4 + 2 *") == "((3 + 4) * 2)"
    with pytest.raises(RPNError):
        to_infix("3 +")


def test_to_infix_rejects_unknown_tokens():
    with pytest.raises(RPNError):
        to_infix("3 x +")
"""

MODULES = (
    BaseModule(
        "textstats",
        "stats",
        TEXTSTATS_SOURCE,
        TEXTSTATS_TESTS,
        (
            Mutation(
                "missing_guard",
                "    if not found:\n        return 0.0\n",
                "",
                ("test_mean_word_length_of_text_without_words",),
                lambda r: f"mean_word_length({r.choice(['', '...', '42', '?!'])!r})",
            ),
            Mutation(
                "off_by_one",
                "    return ranked[:n]\n",
                "    return ranked[:n - 1]\n",
                ("test_top_words_ranks_by_count_then_alphabet", "test_top_words_defaults_to_three"),
                lambda r: f"top_words({_ranked_text(r)!r}, {r.randint(2, 3)})",
            ),
            Mutation(
                "wrong_constant",
                "def top_words(text: str, n: int = 3) -> list[tuple[str, int]]:\n",
                "def top_words(text: str, n: int = 2) -> list[tuple[str, int]]:\n",
                ("test_top_words_defaults_to_three",),
                lambda r: f"top_words({_ranked_text(r)!r})",
            ),
            Mutation(
                "comparison",
                "        if len(word) >= min_length and word not in chosen:\n",
                "        if len(word) > min_length and word not in chosen:\n",
                ("test_long_words_include_the_exact_length",),
                _exact_length_call,
            ),
            Mutation(
                "boolean_op",
                "        if len(word) >= min_length and word not in chosen:\n",
                "        if len(word) >= min_length or word not in chosen:\n",
                ("test_long_words_include_the_exact_length", "test_long_words_are_distinct_and_ordered"),
                _duplicate_call,
            ),
        ),
    ),
    BaseModule(
        "intervals",
        "spans",
        INTERVALS_SOURCE,
        INTERVALS_TESTS,
        (
            Mutation(
                "comparison",
                "        if merged and start <= merged[-1][1] + reach:\n",
                "        if merged and start < merged[-1][1] + reach:\n",
                ("test_merge_shared_endpoint", "test_merge_adjacent_by_default"),
                _adjacent_merge,
            ),
            Mutation(
                "wrong_constant",
                "def merge(intervals: list[Interval], touching: bool = True) -> list[Interval]:\n",
                "def merge(intervals: list[Interval], touching: bool = False) -> list[Interval]:\n",
                ("test_merge_adjacent_by_default",),
                _adjacent_merge,
            ),
            Mutation(
                "off_by_one",
                "    return sum(end - start + 1 for start, end in merge(intervals))\n",
                "    return sum(end - start for start, end in merge(intervals))\n",
                ("test_covered_counts_each_integer_once",),
                lambda r: "covered([({}, {}), ({}, {})])".format(*_two_spans(r)),
            ),
            Mutation(
                "swapped_args",
                "    holes = [(left[1] + 1, right[0] - 1) for left, right in zip(merged, merged[1:])]\n",
                "    holes = [(left[1] + 1, right[0] - 1) for left, right in zip(merged[1:], merged)]\n",
                ("test_gaps_between_intervals",),
                _gaps_call,
            ),
            Mutation(
                "wrong_return",
                "    return holes\n",
                "    return merged\n",
                ("test_gaps_between_intervals", "test_no_gaps_in_one_interval"),
                _gaps_call,
            ),
            Mutation(
                "boolean_op",
                "        if start <= point and point <= end:\n",
                "        if start <= point or point <= end:\n",
                ("test_contains",),
                lambda r: "contains([({}, {})], {})".format(*sorted(r.sample(range(1, 20), 2)), 20 + r.randint(0, 9)),
            ),
        ),
    ),
    BaseModule(
        "shopcart",
        "cart",
        SHOPCART_SOURCE,
        SHOPCART_TESTS,
        (
            Mutation(
                "comparison",
                "        if quantity >= BULK_QUANTITY:\n",
                "        if quantity > BULK_QUANTITY:\n",
                ("test_bulk_discount_from_ten_items", "test_coupon_applies_to_discounted_total"),
                lambda r: _cart_line(r, 10, "line_total({item})"),
            ),
            Mutation(
                "wrong_constant",
                "BULK_PERCENT = 5\n",
                "BULK_PERCENT = 15\n",
                ("test_bulk_discount_from_ten_items", "test_coupon_applies_to_discounted_total"),
                lambda r: _cart_line(r, r.randint(10, 30), "line_total({item})"),
            ),
            Mutation(
                "missing_guard",
                "        if quantity <= 0:\n"
                '            raise ValueError(f"quantity must be positive, got {quantity}")\n',
                "",
                ("test_add_rejects_non_positive_quantity",),
                lambda r: _cart_line(r, -r.randint(0, 3), "count()"),
            ),
            Mutation(
                "swapped_args",
                "            self.add(name, price, quantity)\n",
                "            self.add(name, quantity, price)\n",
                ("test_constructor_adds_items",),
                lambda r: f"Cart([({r.choice(ITEMS)!r}, {r.randrange(120, 900, 10)}, {r.randint(2, 6)})]).count()",
            ),
            Mutation(
                "comparison",
                "        if quantity >= held:\n",
                "        if quantity > held:\n",
                ("test_remove_whole_line",),
                _removal_call,
            ),
            Mutation(
                "wrong_return",
                "        return net\n",
                "        return gross\n",
                ("test_bulk_discount_from_ten_items", "test_coupon_applies_to_discounted_total"),
                lambda r: _cart_line(r, r.randint(10, 30), "line_total({item})"),
            ),
        ),
    ),
    BaseModule(
        "rle",
        "codec",
        RLE_SOURCE,
        RLE_TESTS,
        (
            Mutation(
                "comparison",
                "        if length > best[1]:\n",
                "        if length >= best[1]:\n",
                ("test_longest_run_prefers_the_first",),
                lambda r: f"longest_run({_run_text(r, (3, 1, 3) if r.random() < 0.5 else (2, 2, 1))!r})",
            ),
            Mutation(
                "missing_guard",
                '    if digits:\n        raise ValueError(f"count {digits} has no character")\n',
                "",
                ("test_decode_rejects_a_trailing_count",),
                lambda r: f"decode('{r.randint(2, 9)}{r.choice('abxyz')}{r.randint(2, 9)}')",
            ),
            Mutation(
                "off_by_one",
                "            found.append((char, 1))\n",
                "            found.append((char, 0))\n",
                ("test_runs", "test_encode", "test_round_trip", "test_longest_run_prefers_the_first"),
                lambda r: f"encode({_run_text(r, tuple(r.randint(1, 4) for _ in range(3)))!r})",
            ),
            Mutation(
                "wrong_return",
                "    return best\n",
                "    return char, length\n",
                ("test_longest_run_prefers_the_first", "test_longest_run_of_empty_text"),
                lambda r: f"longest_run({_run_text(r, (r.randint(3, 5), 1, r.randint(1, 2)))!r})",
            ),
            Mutation(
                "swapped_args",
                '    return "".join(f"{length}{char}" for char, length in runs(text))\n',
                '    return "".join(f"{char}{length}" for char, length in runs(text))\n',
                ("test_encode", "test_round_trip"),
                lambda r: f"encode({_run_text(r, tuple(r.randint(1, 4) for _ in range(3)))!r})",
            ),
        ),
    ),
    BaseModule(
        "matrix",
        "ops",
        MATRIX_SOURCE,
        MATRIX_TESTS,
        (
            Mutation(
                "missing_guard",
                '    if shape(a) != shape(b):\n        raise ValueError(f"cannot add {shape(a)} and {shape(b)}")\n',
                "",
                ("test_add_rejects_different_shapes",),
                lambda r: f"add({_square(r)}, [[{r.randint(1, 9)}, {r.randint(1, 9)}]])",
            ),
            Mutation(
                "off_by_one",
                "    return sum(m[i][i] for i in range(rows))\n",
                "    return sum(m[i][i] for i in range(rows - 1))\n",
                ("test_trace",),
                lambda r: f"trace({_square(r)})",
            ),
            Mutation(
                "swapped_args",
                "    return [[m[i][j] for i in range(rows)] for j in range(cols)]\n",
                "    return [[m[j][i] for i in range(rows)] for j in range(cols)]\n",
                ("test_transpose_rectangular", "test_transpose_square"),
                lambda r: f"transpose({_square(r)})",
            ),
            Mutation(
                "boolean_op",
                "    return rows == cols and all(m[i][j] == m[j][i] for i in range(rows) for j in range(i + 1, cols))"
                "\n",
                "    return rows == cols or all(m[i][j] == m[j][i] for i in range(rows) for j in range(i + 1, cols))\n",
                ("test_is_symmetric",),
                lambda r: f"is_symmetric({_square(r)})",
            ),
            Mutation(
                "wrong_return",
                "    return result\n",
                "    return m\n",
                ("test_power",),
                lambda r: f"power({_square(r)}, {r.randint(2, 3)})",
            ),
            Mutation(
                "comparison",
                "    if exponent < 0:\n",
                "    if exponent <= 0:\n",
                ("test_power",),
                lambda r: f"power({_square(r)}, 0)",
            ),
        ),
    ),
    BaseModule(
        "weekcal",
        "week",
        WEEKCAL_SOURCE,
        WEEKCAL_TESTS,
        (
            Mutation(
                "comparison",
                "    if len(key) < 3:\n",
                "    if len(key) <= 3:\n",
                ("test_day_number_from_name_and_prefix",),
                lambda r: f"day_number({_day_prefix(r)!r})",
            ),
            Mutation(
                "swapped_args",
                "    return (target - start) % 7\n",
                "    return (start - target) % 7\n",
                ("test_days_until",),
                lambda r: "days_until({}, {})".format(*r.sample(range(7), 2)),
            ),
            Mutation(
                "wrong_constant",
                "WEEKEND = (5, 6)\n",
                "WEEKEND = (6, 7)\n",
                ("test_weekend", "test_add_business_days_skips_the_weekend"),
                lambda r: f"is_weekend({5 + 7 * r.randint(0, 3)})",
            ),
            Mutation(
                "boolean_op",
                "    return day >= first or day <= last\n",
                "    return day >= first and day <= last\n",
                ("test_in_span_wraps_over_sunday",),
                _wrapping_span_call,
            ),
            Mutation(
                "missing_guard",
                '    if count < 0:\n        raise ValueError("count must not be negative")\n',
                "",
                ("test_add_business_days_rejects_negative_counts",),
                lambda r: f"add_business_days({r.randint(0, 4)}, {-r.randint(1, 5)})",
            ),
            Mutation(
                "off_by_one",
                "    return day_index // 7 + 1\n",
                "    return day_index // 7\n",
                ("test_week_number",),
                lambda r: f"week_number({r.randint(0, 60)})",
            ),
        ),
    ),
    BaseModule(
        "rpn",
        "calc",
        RPN_SOURCE,
        RPN_TESTS,
        (
            Mutation(
                "swapped_args",
                "        right = stack.pop()\n        left = stack.pop()\n",
                "        left = stack.pop()\n        right = stack.pop()\n",
                ("test_evaluate_arithmetic", "test_evaluate_respects_operand_order", "test_division_by_zero"),
                lambda r: "evaluate('{} {} -')".format(*r.sample(range(1, 30), 2)),
            ),
            Mutation(
                "off_by_one",
                "        if len(stack) < 2:\n",
                "        if len(stack) < 1:\n",
                ("test_missing_operand",),
                lambda r: f"evaluate('{r.randint(1, 99)} {r.choice('+-*/')}')",
            ),
            Mutation(
                "boolean_op",
                '        if token == "/" and right == 0:\n',
                '        if token == "/" or right == 0:\n',
                ("test_zero_operands_are_fine",),
                lambda r: f"evaluate('{r.randint(1, 99)} 0 {r.choice('+-')}')",
            ),
            Mutation(
                "comparison",
                "    if len(stack) != 1:\n",
                "    if len(stack) > 1:\n",
                ("test_leftover_or_empty",),
                lambda r: f"evaluate({r.choice(['', ' ', '   '])!r})",
            ),
            Mutation(
                "missing_guard",
                "            number(token)\n",
                "",
                ("test_to_infix_rejects_unknown_tokens",),
                lambda r: f"to_infix('{r.randint(1, 9)} {r.choice(['x', 'rate', 'n2'])} {r.choice('+-*/')}')",
            ),
            Mutation(
                "wrong_constant",
                'OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, '
                '"^": operator.pow}\n',
                'OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, '
                '"^": operator.xor}\n',
                ("test_evaluate_arithmetic",),
                lambda r: f"evaluate('{r.randint(2, 6)} {r.randint(2, 4)} ^')",
            ),
        ),
    ),
)
TRAIN_MODULES = 5  # MODULES[:5] are the train split, the rest the test split

TITLES = ("Wrong result from `{name}`", "`{name}` does not behave as documented", "Unexpected behaviour of `{name}`")
OPENINGS = (
    "I ran into this while using `{package}`:",
    "Minimal reproduction, run from the repository root:",
    "This looks like a bug in `{package}`. To reproduce:",
)
EXPECTATIONS = ("I expected this instead:", "It should have printed:", "The expected output is:")


def _replace_lines(source: str, original: str, replacement: str, task_id: str) -> str:
    """`source` with the whole lines `original` replaced; they must occur exactly once, at a line start."""
    if not original.endswith("\n") or ("\n" + source).count("\n" + original) != 1:
        raise RuntimeError(f"{task_id}: the mutation site must be whole lines occurring exactly once: {original!r}")
    return ("\n" + source).replace("\n" + original, "\n" + replacement, 1)[1:]


def _split_tests(tests: str) -> tuple[str, dict[str, str]]:
    """The import header and the test functions by name."""
    header, *functions = re.split(r"\n\n\n(?=def test_)", tests.rstrip("\n"))
    return header, {re.match(r"def (test_\w+)\(", function)[1]: function for function in functions}


def _outcome(source: str, module_name: str, call: str) -> str:
    """What a doctest of `call` against `source` prints: the value's repr, or the exception as a traceback."""
    namespace: dict[str, object] = {"__name__": module_name}
    exec(compile(source, module_name, "exec"), namespace)
    try:
        return repr(eval(call, namespace))
    except Exception as error:
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return f"Traceback (most recent call last):\n  ...\n{detail}"


def _problem_statement(module: BaseModule, mutation: Mutation, buggy: str, rng: random.Random, task_id: str) -> str:
    call = mutation.example(rng)
    module_name = f"{module.package}.{module.stem}"
    actual, expected = _outcome(buggy, module_name, call), _outcome(module.source, module_name, call)
    if actual == expected:
        raise RuntimeError(f"{task_id}: the example {call} does not show the bug")
    name = re.match(r"\w+", call)[0]
    reproduction = f">>> from {module.package} import {name}\n>>> {call}\n{actual}"
    title, opening = rng.choice(TITLES).format(name=name), rng.choice(OPENINGS).format(package=module.package)
    return (
        f"{title}\n\n{opening}\n\n{textwrap.indent(reproduction, '    ')}\n\n"
        f"{rng.choice(EXPECTATIONS)}\n\n{textwrap.indent(expected, '    ')}\n"
    )


def _package_init(module: BaseModule) -> str:
    names = re.findall(r"^(?:def|class) ([A-Za-z]\w*)", module.source, re.MULTILINE)
    imported = "".join(f"    {name},\n" for name in names)
    exported = "".join(f'    "{name}",\n' for name in names)
    docstring = ast.get_docstring(ast.parse(module.source))
    return f'"""{docstring}"""\n\nfrom .{module.stem} import (\n{imported})\n\n__all__ = [\n{exported}]\n'


def _diff(before: dict[str, str], after: dict[str, str]) -> str:
    return "".join(
        line
        for path in sorted(after)
        for line in difflib.unified_diff(
            before[path].splitlines(keepends=True), after[path].splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
    )


def _build(module: BaseModule, index: int, split: str, seed: int) -> RepairTask:
    mutation = module.mutations[index]
    task_id = f"repo_repair/{module.package}-{mutation.kind}-{index:02d}"
    source_path = f"{module.package}/{module.stem}.py"
    buggy = _replace_lines(module.source, mutation.original, mutation.replacement, task_id)
    header, functions = _split_tests(module.tests)
    if not set(mutation.breaks) <= set(functions):
        raise RuntimeError(f"{task_id}: declares unknown tests {set(mutation.breaks) - set(functions)}")
    passing = [name for name in functions if name not in mutation.breaks]
    if not mutation.breaks or len(passing) < 2:
        raise RuntimeError(f"{task_id}: needs at least one failing and two passing hidden tests")
    hidden_path, visible_path = f"tests/test_hidden_{module.stem}.py", f"tests/test_{module.stem}.py"
    visible = "\n\n\n".join([header, *(functions[name] for name in passing[:3])]) + "\n"
    readme = (
        f"# {module.package}\n\n{ast.get_docstring(ast.parse(module.source))}\n\n"
        "Run the tests from the repository root with `python -m pytest`.\n"
    )
    repo = {
        "README.md": readme,
        f"{module.package}/__init__.py": _package_init(module),
        source_path: buggy,
        visible_path: visible,
    }
    fixed = {source_path: module.source}
    return RepairTask(
        id=task_id,
        problem_statement=_problem_statement(module, mutation, buggy, random.Random(f"{seed}/{task_id}"), task_id),
        repo=repo,
        tests={hidden_path: module.tests},
        fail_to_pass=tuple(f"{hidden_path}::{name}" for name in functions if name in mutation.breaks),
        pass_to_pass=tuple(f"{hidden_path}::{name}" for name in passing),
        reference_files=fixed,
        reference_patch=_diff(repo, fixed),
        split=split,
    )


def generate_tasks(seed: int = 0, count: int = 24) -> list[RepairTask]:
    """`count` distinct tasks chosen and ordered by `seed`, each split represented in proportion to its size.

    Raises ValueError when `count` exceeds the number of (module, mutation) pairs.
    """
    pairs: dict[str, list[tuple[BaseModule, int, str]]] = {"train": [], "test": []}
    for number, module in enumerate(MODULES):
        split = "train" if number < TRAIN_MODULES else "test"
        pairs[split] += [(module, index, split) for index in range(len(module.mutations))]
    total = len(pairs["train"]) + len(pairs["test"])
    if not 0 <= count <= total:
        raise ValueError(f"count must be between 0 and {total}, got {count}")
    rng = random.Random(seed)
    n_test = round(count * len(pairs["test"]) / total)
    chosen = rng.sample(pairs["train"], count - n_test) + rng.sample(pairs["test"], n_test)
    rng.shuffle(chosen)
    return [_build(module, index, split, seed) for module, index, split in chosen]
