"""Procedurally generated pyfunc tasks: small integer, string and list functions, from a seed.

Each family has parameters (`add_3`, `add_7`, ...), so train and held-out splits share families but
never a function. Expected outputs are computed by running the reference, so the tests are right by
construction.
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


def _argument(kind: str, rng: random.Random):
    if kind == INT:
        return rng.randint(-20, 60)
    if kind == STR:
        return rng.choice(WORDS) + rng.choice(["", rng.choice(WORDS)])
    return [rng.randint(-9, 30) for _ in range(rng.randint(1, 5))]


def generate_functions(count: int, seed: int = 0, cases: int = 5) -> list[dict]:
    """Up to `count` distinct functions (as many as the families hold), each with `cases` test cases."""
    rng = random.Random(seed)
    combos = [(family, p) for family, params, *_ in FAMILIES for p in params]
    rng.shuffle(combos)
    specs = {family: rest for family, *rest in FAMILIES}
    out = []
    for family, p in combos[:count]:
        _, signature, doc, body, kind = specs[family]
        name = f"{family}_{p}" if isinstance(p, int) else f"{family}_{p}".replace("'", "")
        reference = f"def {name}{signature}:\n    return {body.format(p=p)}\n"
        namespace: dict = {}
        exec(reference, namespace)  # trusted: our own template, to compute expected outputs
        inputs = [_argument(kind, rng) for _ in range(cases)]
        out.append({
            "name": name,
            "signature": f"{name}{signature}",
            "doc": doc.format(p=p),
            "reference": reference,
            "cases": [((arg,), namespace[name](arg)) for arg in inputs],
        })
    return out
