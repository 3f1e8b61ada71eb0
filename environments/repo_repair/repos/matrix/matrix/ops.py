"""Small dense matrices as lists of rows; every row has the same length."""

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
