import pytest

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
