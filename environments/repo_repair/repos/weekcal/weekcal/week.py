"""Week arithmetic without dates: day numbers run from 0 (Monday) to 6 (Sunday) and wrap around."""

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEKEND = (5, 6)


def day_name(day: int) -> str:
    """The name of day number `day`, taken modulo 7."""
    return DAYS[day % 7]


def day_number(name: str) -> int:
    """The number of a day given by its name or a prefix of at least three letters, in any case."""
    key = name.strip().lower()
    if len(key) < 3:
        raise ValueError(f"day name too short: {name!r}")
    for number, full in enumerate(DAYS):
        if full.lower().startswith(key):
            return number
    raise ValueError(f"not a day: {name!r}")


def is_weekend(day: int) -> bool:
    return day % 7 in WEEKEND


def days_until(start: int, target: int) -> int:
    """How many days from `start` forward to the next `target`; 0 when they are the same day."""
    return (target - start) % 7


def in_span(day: int, first: int, last: int) -> bool:
    """Whether `day` lies from `first` to `last` inclusive; a span such as Friday to Monday wraps over Sunday."""
    day, first, last = day % 7, first % 7, last % 7
    if first <= last:
        return first <= day <= last
    return day >= first or day <= last


def add_business_days(day: int, count: int) -> int:
    """The day reached after `count` business days (weekend days do not count) from `day`."""
    if count < 0:
        raise ValueError("count must not be negative")
    while count > 0:
        day = (day + 1) % 7
        if not is_weekend(day):
            count -= 1
    return day


def week_number(day_index: int) -> int:
    """The 1-based week of an absolute day index, where index 0 is the Monday of week 1."""
    return day_index // 7 + 1
