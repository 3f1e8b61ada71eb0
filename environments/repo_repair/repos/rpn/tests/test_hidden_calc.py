import pytest

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
