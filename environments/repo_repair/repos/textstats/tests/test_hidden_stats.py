from textstats import (
    long_words,
    mean_word_length,
    sentences,
    top_words,
    words,
    words_per_sentence,
)


def test_words_are_lower_cased_in_order():
    assert words("The cat, the HAT!") == ["the", "cat", "the", "hat"]


def test_sentences_split_on_terminators():
    assert sentences("One. Two!  Three? four") == ["One", "Two", "Three", "four"]


def test_mean_word_length():
    assert mean_word_length("ab abcd") == 3.0


def test_mean_word_length_of_text_without_words():
    assert mean_word_length("") == 0.0
    assert mean_word_length("... 42 !") == 0.0


def test_words_per_sentence():
    assert words_per_sentence("One two three. Four.") == 2.0
    assert words_per_sentence("") == 0.0


def test_top_words_ranks_by_count_then_alphabet():
    text = "b a c b a b d"
    assert top_words(text, 2) == [("b", 3), ("a", 2)]
    assert top_words(text, 4) == [("b", 3), ("a", 2), ("c", 1), ("d", 1)]


def test_top_words_defaults_to_three():
    assert top_words("x y z w x y x") == [("x", 3), ("y", 2), ("w", 1)]


def test_top_words_with_n_above_the_vocabulary():
    assert top_words("one two", 5) == [("one", 1), ("two", 1)]


def test_long_words_include_the_exact_length():
    assert long_words("seven letters in balloon", 7) == ["letters", "balloon"]


def test_long_words_are_distinct_and_ordered():
    assert long_words("elephant giraffe elephant ant", 5) == ["elephant", "giraffe"]
