"""The example calls that repo_repair's problem statements show, by name.

Each mutation in `repos/<package>/mutations.json` names its example, a key of `EXAMPLES`: a function of the task's
random generator that returns one call expression against the package, such as "trace([[3, 1], [5, 2]])". The
generator evaluates it on the buggy and on the correct module. The examples are code, not data, because they draw
their arguments from the seed; every draw counts, so changing their order or number changes the generated tasks.
"""

from __future__ import annotations

import random
from collections.abc import Callable

WORDS = (
    "ant", "bee", "owl", "fox", "bird", "lamp", "door", "frog", "apple", "river", "stone", "cloud", "garden", "silver",
    "bottle", "pepper", "balloon", "kitchen", "thunder", "dolphin", "elephant", "mountain", "notebook", "sandwich",
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


def _repeat_call(rng: random.Random) -> str:
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


EXAMPLES: dict[str, Callable[[random.Random], str]] = {
    # textstats
    "mean_of_wordless_text": lambda r: f"mean_word_length({r.choice(['', '...', '42', '?!'])!r})",
    "top_words_of_ranked_text": lambda r: f"top_words({_ranked_text(r)!r}, {r.randint(2, 3)})",
    "top_words_by_default": lambda r: f"top_words({_ranked_text(r)!r})",
    "long_words_of_exact_length": _exact_length_call,
    "long_words_with_a_repeat": _repeat_call,
    # intervals
    "merge_adjacent": _adjacent_merge,
    "covered_by_two_spans": lambda r: "covered([({}, {}), ({}, {})])".format(*_two_spans(r)),
    "gaps_between_two_spans": lambda r: "gaps([({}, {}), ({}, {})])".format(*_two_spans(r)),
    "contains_a_point_after": lambda r: "contains([({}, {})], {})".format(
        *sorted(r.sample(range(1, 20), 2)), 20 + r.randint(0, 9)
    ),
    # shopcart
    "line_total_at_bulk_quantity": lambda r: _cart_line(r, 10, "line_total({item})"),
    "line_total_in_bulk": lambda r: _cart_line(r, r.randint(10, 30), "line_total({item})"),
    "count_after_non_positive_add": lambda r: _cart_line(r, -r.randint(0, 3), "count()"),
    "count_of_constructed_cart": lambda r: (
        f"Cart([({r.choice(ITEMS)!r}, {r.randrange(120, 900, 10)}, {r.randint(2, 6)})]).count()"
    ),
    "remove_all_of_a_line": _removal_call,
    # rle
    "longest_run_with_a_tie": lambda r: f"longest_run({_run_text(r, (3, 1, 3) if r.random() < 0.5 else (2, 2, 1))!r})",
    "decode_a_trailing_count": lambda r: f"decode('{r.randint(2, 9)}{r.choice('abxyz')}{r.randint(2, 9)}')",
    "encode_three_runs": lambda r: f"encode({_run_text(r, tuple(r.randint(1, 4) for _ in range(3)))!r})",
    "longest_run_first": lambda r: f"longest_run({_run_text(r, (r.randint(3, 5), 1, r.randint(1, 2)))!r})",
    # matrix
    "add_different_shapes": lambda r: f"add({_square(r)}, [[{r.randint(1, 9)}, {r.randint(1, 9)}]])",
    "trace_of_square": lambda r: f"trace({_square(r)})",
    "transpose_square": lambda r: f"transpose({_square(r)})",
    "is_symmetric_of_asymmetric": lambda r: f"is_symmetric({_square(r)})",
    "power_of_square": lambda r: f"power({_square(r)}, {r.randint(2, 3)})",
    "power_zero": lambda r: f"power({_square(r)}, 0)",
    # weekcal
    "day_number_of_prefix": lambda r: f"day_number({_day_prefix(r)!r})",
    "days_until_another_day": lambda r: "days_until({}, {})".format(*r.sample(range(7), 2)),
    "is_weekend_saturday": lambda r: f"is_weekend({5 + 7 * r.randint(0, 3)})",
    "in_wrapping_span": _wrapping_span_call,
    "add_negative_business_days": lambda r: f"add_business_days({r.randint(0, 4)}, {-r.randint(1, 5)})",
    "week_number_of_day": lambda r: f"week_number({r.randint(0, 60)})",
    # rpn
    "evaluate_subtraction": lambda r: "evaluate('{} {} -')".format(*r.sample(range(1, 30), 2)),
    "evaluate_missing_operand": lambda r: f"evaluate('{r.randint(1, 99)} {r.choice('+-*/')}')",
    "evaluate_zero_operand": lambda r: f"evaluate('{r.randint(1, 99)} 0 {r.choice('+-')}')",
    "evaluate_blank": lambda r: f"evaluate({r.choice(['', ' ', '   '])!r})",
    "to_infix_unknown_token": lambda r: (
        f"to_infix('{r.randint(1, 9)} {r.choice(['x', 'rate', 'n2'])} {r.choice('+-*/')}')"
    ),
    "evaluate_power": lambda r: f"evaluate('{r.randint(2, 6)} {r.randint(2, 4)} ^')",
}
