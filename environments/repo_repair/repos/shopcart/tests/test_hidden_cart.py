import pytest

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
