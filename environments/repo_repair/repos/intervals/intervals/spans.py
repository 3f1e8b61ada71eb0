"""Closed integer intervals (start, end), both ends included: merging, coverage and gaps."""

Interval = tuple[int, int]


def normalize(intervals: list[Interval]) -> list[Interval]:
    """The intervals sorted, each with start <= end (a reversed interval such as (5, 2) is flipped)."""
    return sorted((min(start, end), max(start, end)) for start, end in intervals)


def merge(intervals: list[Interval], touching: bool = True) -> list[Interval]:
    """Overlapping intervals merged into one; with `touching`, adjacent ones such as (1, 2) and (3, 4) too."""
    reach = 1 if touching else 0
    merged: list[Interval] = []
    for start, end in normalize(intervals):
        if merged and start <= merged[-1][1] + reach:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def covered(intervals: list[Interval]) -> int:
    """How many integers lie in at least one interval."""
    return sum(end - start + 1 for start, end in merge(intervals))


def gaps(intervals: list[Interval]) -> list[Interval]:
    """The stretches of integers between the merged intervals that no interval covers."""
    merged = merge(intervals)
    holes = [(left[1] + 1, right[0] - 1) for left, right in zip(merged, merged[1:])]
    return holes


def contains(intervals: list[Interval], point: int) -> bool:
    """Whether `point` lies in any of the intervals."""
    for start, end in normalize(intervals):
        if start <= point and point <= end:
            return True
    return False
