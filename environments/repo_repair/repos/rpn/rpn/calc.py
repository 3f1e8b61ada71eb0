"""Reverse Polish notation: "3 4 + 2 *" means (3 + 4) * 2. Tokens are separated by spaces."""

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
