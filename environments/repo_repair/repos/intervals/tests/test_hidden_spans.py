from intervals import contains, covered, gaps, merge, normalize


def test_normalize_flips_and_sorts():
    assert normalize([(5, 2), (1, 1)]) == [(1, 1), (2, 5)]


def test_merge_overlapping():
    assert merge([(1, 4), (2, 6), (8, 9)]) == [(1, 6), (8, 9)]


def test_merge_shared_endpoint():
    assert merge([(1, 3), (3, 5)], touching=False) == [(1, 5)]


def test_merge_adjacent_by_default():
    assert merge([(1, 2), (3, 4)]) == [(1, 4)]


def test_merge_keeps_adjacent_apart_when_not_touching():
    assert merge([(1, 2), (3, 4)], touching=False) == [(1, 2), (3, 4)]


def test_merge_of_nothing():
    assert merge([]) == []


def test_covered_counts_each_integer_once():
    assert covered([(1, 3), (2, 5), (10, 10)]) == 6


def test_gaps_between_intervals():
    assert gaps([(1, 2), (6, 8), (4, 4)]) == [(3, 3), (5, 5)]


def test_no_gaps_in_one_interval():
    assert gaps([(1, 5), (2, 3)]) == []


def test_contains():
    assert contains([(1, 3), (7, 9)], 8)
    assert not contains([(1, 3), (7, 9)], 5)
    assert contains([(9, 7)], 7)
