import pytest

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
