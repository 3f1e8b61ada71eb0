"""The wire of call-and-compare grading: what the trusted side decodes is built from builtins only, whatever bytes
arrive, and comparison is type-strict."""

from __future__ import annotations

import math
import random

import pytest

from rlaif_rewards.call_harness import (
    MAX_DEPTH,
    MAX_HASHED,
    Malformed,
    Unencodable,
    decode,
    encode,
    reply,
    same,
    strict_tree,
)

pytestmark = pytest.mark.unit
VALUES = [None, True, False, 0, -7, 1 << 200, -(1 << 200), 0.1, -0.0, math.inf, "", "héllo\udcff", b"\x00\xff",
          [1, [2, (3, {4})]], (), {"a": [1.5], 2: None, (1, "x"): {b"k": 3}}, set(), {1, "1", (2,)}]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_every_plain_value_round_trips_exactly_with_its_type(value):
    back = decode(encode(value))
    assert same(back, value) and repr(back) == repr(value)


def test_nan_equals_nan_and_floats_are_exact_unless_the_task_gives_a_tolerance():
    assert same(decode(encode(math.nan)), math.nan)
    assert not same(0.1 + 0.2, 0.3) and same(0.1 + 0.2, 0.3, 1e-9)


@pytest.mark.parametrize(("a", "b"), [(True, 1), (1, 1.0), ((1,), [1]), ({1}, [1]), ({"a": 1}, {"a": True}),
                                      ({1: "x"}, {True: "x"}), ("1", b"1"), ([1, 2], [1, 2, 3])])
def test_comparison_is_type_strict_all_the_way_down(a, b):
    assert not same(a, b) and not same(b, a)


class Liar(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


@pytest.mark.parametrize("value", [Liar(3), [Liar(3)], {"k": object()}, lambda: 1, iter([1]), bytearray(b"x"),
                                   frozenset({1})], ids=lambda v: type(v).__name__)
def test_anything_but_the_plain_types_is_unencodable(value):
    with pytest.raises(Unencodable):
        encode(value)


def test_nesting_past_the_limit_is_unencodable_and_undecodable():
    deep: list = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(Unencodable):
        encode(deep)
    forged = b"L\x00\x00\x00\x01" * (MAX_DEPTH + 5) + b"N"
    with pytest.raises(Malformed):
        decode(forged)


@pytest.mark.parametrize("data", [b"", b"Q", b"I\x00\x00\x00\x02zz", b"S\x00\x00\x00\x09abc", b"D\x00\x01",
                                  b"L\xff\xff\xff\xffN", b"E\x00\x00\x00\x01L\x00\x00\x00\x00", b"NN",
                                  b"M\x00\x00\x00\x01L\x00\x00\x00\x00N", b"S\x00\x00\x00\x01\xff"])
def test_bytes_that_are_not_the_protocol_are_malformed(data):
    with pytest.raises(Malformed):
        decode(data)


def test_a_set_too_large_to_hash_safely_is_malformed():
    """Ints hash predictably: a set of colliding ones would make decoding quadratic on the trusted side."""
    colliding = {i * (2**61 - 1) for i in range(MAX_HASHED + 1)}
    with pytest.raises(Malformed):
        decode(encode(colliding))
    assert len(decode(encode(set(range(MAX_HASHED))))) == MAX_HASHED


def test_random_bytes_decode_to_builtins_or_are_malformed_never_anything_else():
    rng = random.Random(0)
    seeds = [encode(v) for v in VALUES]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            value = decode(bytes(data))
        except Malformed:
            continue
        assert type(value) in (type(None), bool, int, float, str, bytes, list, tuple, dict, set)


def test_an_answer_of_an_unknown_kind_is_malformed():
    assert reply(b"v" + encode([1])) == ("value", [1])
    assert reply(b"rValueError: x") == ("raised", "ValueError: x")
    with pytest.raises(Malformed):
        reply(b"zzz")


def test_a_checks_equalities_become_strict_comparisons():
    namespace = {"__same__": same}
    exec(compile(strict_tree("a = (True == 1, 1 == 1, (1,) != [1], 1 < 2)"), "<t>", "exec"), namespace)
    assert namespace["a"] == (False, True, True, True)
