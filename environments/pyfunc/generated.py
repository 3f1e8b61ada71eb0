"""Procedurally generated pyfunc tasks: small integer, string and list functions, from a seed.

Each family has parameters (`add_3`, `add_7`, ...), so train and held-out splits share families but
never a function. Expected outputs are computed by running the reference, so the tests are right by
construction. Two catalogues: `basic` (14 families, 116 functions: the default, which the tests' learning
checks are tuned on) and `wide` (34 families with wider parameters, 646 functions: enough for a held-out split
of hundreds, whose pass@1 an interval can pin down).
"""

from __future__ import annotations

import random

WORDS = ["cat", "dog", "apple", "sun", "tree", "blue", "code", "river", "stone", "light", "hello", "moon"]
INT = "int"
STR = "str"
LIST = "list"

# (family, parameter values, signature, doc, body, argument kind); {p} is the parameter in each.
FAMILIES: list[tuple[str, list, str, str, str, str]] = [
    ("add", list(range(1, 10)), "(x)", "returns x plus {p}.", "x + {p}", INT),
    ("sub", list(range(1, 10)), "(x)", "returns x minus {p}.", "x - {p}", INT),
    ("times", list(range(2, 10)), "(x)", "returns x multiplied by {p}.", "x * {p}", INT),
    ("mod", list(range(2, 10)), "(x)", "returns the remainder of x divided by {p}.", "x % {p}", INT),
    ("is_multiple_of", list(range(2, 10)), "(x)", "returns True when x is a multiple of {p}, else False.",
     "x % {p} == 0", INT),
    ("greater_than", list(range(0, 10)), "(x)", "returns True when x is greater than {p}, else False.", "x > {p}", INT),
    ("repeat", list(range(2, 6)), "(s)", "returns the string s repeated {p} times.", "s * {p}", STR),
    ("prefix", WORDS[:8], "(s)", "returns the string {p!r} followed by s.", "{p!r} + s", STR),
    ("suffix", WORDS[4:], "(s)", "returns s followed by the string {p!r}.", "s + {p!r}", STR),
    ("count", list("aeiourst"), "(s)", "returns how many times the letter {p!r} occurs in s.", "s.count({p!r})", STR),
    ("first", list(range(1, 5)), "(s)", "returns the first {p} characters of s.", "s[:{p}]", STR),
    ("sum_plus", list(range(1, 10)), "(xs)", "returns the sum of the list xs plus {p}.", "sum(xs) + {p}", LIST),
    ("len_times", list(range(2, 8)), "(xs)", "returns the length of the list xs times {p}.", "len(xs) * {p}", LIST),
    ("max_plus", list(range(1, 8)), "(xs)", "returns the largest element of the non-empty list xs plus {p}.",
     "max(xs) + {p}", LIST),
]


_LETTERS = list("aeiourstnlcdghmpb")
WIDE: list[tuple[str, list, str, str, str, str]] = [
    ("add", list(range(1, 41)), "(x)", "returns x plus {p}.", "x + {p}", INT),
    ("sub", list(range(1, 41)), "(x)", "returns x minus {p}.", "x - {p}", INT),
    ("times", list(range(2, 16)), "(x)", "returns x multiplied by {p}.", "x * {p}", INT),
    ("mod", list(range(2, 16)), "(x)", "returns the remainder of x divided by {p}.", "x % {p}", INT),
    ("is_multiple_of", list(range(2, 16)), "(x)", "returns True when x is a multiple of {p}, else False.",
     "x % {p} == 0", INT),
    ("greater_than", list(range(0, 41)), "(x)", "returns True when x is greater than {p}, else False.", "x > {p}", INT),
    ("less_than", list(range(0, 41)), "(x)", "returns True when x is less than {p}, else False.", "x < {p}", INT),
    ("equals", list(range(0, 31)), "(x)", "returns True when x equals {p}, else False.", "x == {p}", INT),
    ("min_with", list(range(0, 31)), "(x)", "returns the smaller of x and {p}.", "min(x, {p})", INT),
    ("max_with", list(range(0, 31)), "(x)", "returns the larger of x and {p}.", "max(x, {p})", INT),
    ("floordiv", list(range(2, 13)), "(x)", "returns x divided by {p}, rounded down.", "x // {p}", INT),
    ("double_plus", list(range(1, 21)), "(x)", "returns twice x plus {p}.", "2 * x + {p}", INT),
    ("square_plus", list(range(0, 16)), "(x)", "returns x squared plus {p}.", "x * x + {p}", INT),
    ("abs_minus", list(range(0, 16)), "(x)", "returns the absolute value of x minus {p}.", "abs(x) - {p}", INT),
    ("repeat", list(range(2, 7)), "(s)", "returns the string s repeated {p} times.", "s * {p}", STR),
    ("prefix", WORDS, "(s)", "returns the string {p!r} followed by s.", "{p!r} + s", STR),
    ("suffix", WORDS, "(s)", "returns s followed by the string {p!r}.", "s + {p!r}", STR),
    ("count", _LETTERS, "(s)", "returns how many times the letter {p!r} occurs in s.", "s.count({p!r})", STR),
    ("first", list(range(1, 9)), "(s)", "returns the first {p} characters of s.", "s[:{p}]", STR),
    ("last", list(range(1, 9)), "(s)", "returns the last {p} characters of s.", "s[-{p}:]", STR),
    ("drop_first", list(range(1, 7)), "(s)", "returns s without its first {p} characters.", "s[{p}:]", STR),
    ("starts_with", WORDS, "(s)", "returns True when s starts with {p!r}, else False.", "s.startswith({p!r})", STR),
    ("ends_with", WORDS, "(s)", "returns True when s ends with {p!r}, else False.", "s.endswith({p!r})", STR),
    ("contains", WORDS, "(s)", "returns True when {p!r} occurs in s, else False.", "{p!r} in s", STR),
    ("sum_plus", list(range(1, 31)), "(xs)", "returns the sum of the list xs plus {p}.", "sum(xs) + {p}", LIST),
    ("sum_times", list(range(2, 11)), "(xs)", "returns the sum of the list xs times {p}.", "sum(xs) * {p}", LIST),
    ("len_times", list(range(2, 13)), "(xs)", "returns the length of the list xs times {p}.", "len(xs) * {p}", LIST),
    ("max_plus", list(range(1, 21)), "(xs)", "returns the largest element of the non-empty list xs plus {p}.",
     "max(xs) + {p}", LIST),
    ("min_minus", list(range(1, 21)), "(xs)", "returns the smallest element of the non-empty list xs minus {p}.",
     "min(xs) - {p}", LIST),
    ("first_plus", list(range(1, 21)), "(xs)", "returns the first element of the non-empty list xs plus {p}.",
     "xs[0] + {p}", LIST),
    ("last_times", list(range(2, 11)), "(xs)", "returns the last element of the non-empty list xs times {p}.",
     "xs[-1] * {p}", LIST),
    ("count_of", list(range(0, 21)), "(xs)", "returns how many times {p} occurs in the list xs.", "xs.count({p})",
     LIST),
    ("contains_value", list(range(0, 21)), "(xs)", "returns True when {p} occurs in the list xs, else False.",
     "{p} in xs", LIST),
    ("count_above", list(range(0, 21)), "(xs)", "returns how many elements of the list xs are greater than {p}.",
     "sum(1 for v in xs if v > {p})", LIST),
]
CATALOGUES = {"basic": FAMILIES, "wide": WIDE}


def _argument(kind: str, rng: random.Random):
    if kind == INT:
        return rng.randint(-20, 60)
    if kind == STR:
        return rng.choice(WORDS) + rng.choice(["", rng.choice(WORDS)])
    return [rng.randint(-9, 30) for _ in range(rng.randint(1, 5))]


def _near(kind: str, p, rng: random.Random):
    """An argument where the parameter shows (x close to p, p inside s or xs): without such cases `equals_17`,
    `contains_value_4` or `starts_with_sun` would be passed by a constant `return False`."""
    arg = _argument(kind, rng)
    if kind == INT and isinstance(p, int):
        return p + rng.randint(-3, 3)
    if kind == STR and isinstance(p, str) and len(p) > 1:
        return rng.choice([p + arg, arg + p, p])
    if kind == LIST and isinstance(p, int):
        return [*arg, p] if rng.random() < 0.5 else [p, *arg]
    return arg


def _cases(fn, kind: str, p, rng: random.Random, cases: int, discriminating: bool) -> list:
    """`cases` (args, expected) pairs. `discriminating`: half the inputs near the parameter, and drawn again until
    the expected outputs differ, so that no constant answer passes every case."""
    for _ in range(100):
        inputs = [_near(kind, p, rng) if discriminating and i % 2 else _argument(kind, rng) for i in range(cases)]
        outputs = [fn(arg) for arg in inputs]
        if not discriminating or len({repr(o) for o in outputs}) > 1:
            break
    return list(zip([(arg,) for arg in inputs], outputs, strict=True))


def generate_functions(count: int, seed: int = 0, cases: int = 5, catalogue: str = "basic") -> list[dict]:
    """Up to `count` distinct functions (as many as the catalogue's families hold), each with `cases` test
    cases. The `wide` catalogue's cases are discriminating (`_cases`); `basic` keeps its random draws, on which
    the tests' learning checks are tuned (a constant answer passes some of its tasks, e.g. `is_multiple_of_9`)."""
    families = CATALOGUES[catalogue]
    rng = random.Random(seed)
    combos = [(family, p) for family, params, *_ in families for p in params]
    rng.shuffle(combos)
    specs = {family: rest for family, *rest in families}
    out = []
    for family, p in combos[:count]:
        _, signature, doc, body, kind = specs[family]
        name = f"{family}_{p}" if isinstance(p, int) else f"{family}_{p}".replace("'", "")
        reference = f"def {name}{signature}:\n    return {body.format(p=p)}\n"
        namespace: dict = {}
        exec(reference, namespace)  # trusted: our own template, to compute expected outputs
        out.append({
            "name": name,
            "signature": f"{name}{signature}",
            "doc": doc.format(p=p),
            "reference": reference,
            "cases": _cases(namespace[name], kind, p, rng, cases, discriminating=catalogue != "basic"),
        })
    return out
