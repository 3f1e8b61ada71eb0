import pytest

from weekcal import add_business_days, day_name, day_number, days_until, in_span, is_weekend, week_number


def test_day_name_wraps():
    assert day_name(0) == "Monday"
    assert day_name(13) == "Sunday"
    assert day_name(-1) == "Sunday"


def test_day_number_from_name_and_prefix():
    assert day_number("Wednesday") == 2
    assert day_number(" fri ") == 4
    assert day_number("THU") == 3


def test_day_number_rejects_short_or_unknown_names():
    with pytest.raises(ValueError):
        day_number("mo")
    with pytest.raises(ValueError):
        day_number("funday")


def test_weekend():
    assert [day for day in range(7) if is_weekend(day)] == [5, 6]


def test_days_until():
    assert days_until(0, 4) == 4
    assert days_until(4, 0) == 3
    assert days_until(2, 2) == 0


def test_in_span():
    assert in_span(2, 1, 3)
    assert not in_span(5, 1, 3)


def test_in_span_wraps_over_sunday():
    assert in_span(6, 4, 0)
    assert in_span(0, 4, 0)
    assert not in_span(2, 4, 0)


def test_add_business_days_skips_the_weekend():
    assert add_business_days(4, 1) == 0
    assert add_business_days(0, 5) == 0
    assert add_business_days(2, 0) == 2


def test_add_business_days_rejects_negative_counts():
    with pytest.raises(ValueError):
        add_business_days(0, -1)


def test_week_number():
    assert week_number(0) == 1
    assert week_number(6) == 1
    assert week_number(7) == 2
