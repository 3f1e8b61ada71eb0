"""A shopping cart: prices in cents, a bulk discount per line and percentage coupons."""

from collections.abc import Iterable

BULK_QUANTITY = 10
BULK_PERCENT = 5
COUPONS = {"SAVE10": 10, "HALF": 50}


class Cart:
    """Items by name, each with a unit price in cents and a quantity; adding a known name adds to its quantity."""

    def __init__(self, items: Iterable[tuple[str, int, int]] = ()) -> None:
        self.lines: dict[str, list[int]] = {}
        for name, price, quantity in items:
            self.add(name, price, quantity)

    def add(self, name: str, price: int, quantity: int = 1) -> "Cart":
        if quantity <= 0:
            raise ValueError(f"quantity must be positive, got {quantity}")
        if name in self.lines:
            self.lines[name][1] += quantity
        else:
            self.lines[name] = [price, quantity]
        return self

    def remove(self, name: str, quantity: int = 1) -> "Cart":
        """Takes `quantity` of `name` out; the line disappears when none is left."""
        held = self.lines[name][1]
        if quantity >= held:
            del self.lines[name]
        else:
            self.lines[name][1] = held - quantity
        return self

    def count(self) -> int:
        return sum(quantity for _, quantity in self.lines.values())

    def line_total(self, name: str) -> int:
        """Price times quantity; from BULK_QUANTITY items on, less BULK_PERCENT percent (rounded down in cents)."""
        price, quantity = self.lines[name]
        gross = price * quantity
        net = gross
        if quantity >= BULK_QUANTITY:
            net -= gross * BULK_PERCENT // 100
        return net

    def total(self, coupon: str | None = None) -> int:
        """The sum of the line totals, less the coupon's percentage; coupon codes are case-insensitive."""
        subtotal = sum(self.line_total(name) for name in self.lines)
        if coupon is None:
            return subtotal
        if coupon.upper() not in COUPONS:
            raise KeyError(f"unknown coupon {coupon!r}")
        return subtotal - subtotal * COUPONS[coupon.upper()] // 100
