import pytest

from blocks.answers import exact_match, final_answer, normalize, parse_completion, verify


def test_long_completion_splits_at_the_closing_tag():
    parsed = parse_completion("I see three shapes.\n</think>\n\n3", "long")
    assert (parsed.reasoning, parsed.answer, parsed.well_formed) == ("I see three shapes.", "3", True)


def test_long_completion_cut_before_the_closing_tag_has_no_answer():
    parsed = parse_completion("I see three shapes and the answer is 3", "long")
    assert parsed.answer == "" and not parsed.well_formed
    assert not verify(parsed.answer, "3", "numeric")


@pytest.mark.parametrize("text", ["</think>\n\n3", "a\n</think>\n\n", "a</think>b</think>3", "<think>a</think>3"])
def test_malformed_long_completions(text):
    assert not parse_completion(text, "long").well_formed


def test_short_completion_is_the_answer_and_must_not_think():
    assert parse_completion(" red\n", "short") == parse_completion("red", "short")
    assert parse_completion("red", "short").well_formed
    assert not parse_completion("x</think>red", "short").well_formed
    assert not parse_completion("  ", "short").well_formed


def test_normalize_and_exact_match():
    assert normalize("  The  Left. ") == "the left"
    assert exact_match("Left.", "left")
    assert not exact_match("", "")          # an empty answer earns nothing, even against an empty reference
    assert not exact_match("left side", "left")


def test_answer_tag_takes_the_last_one():
    assert final_answer("Answer: 3. Wait, Answer: 4") == "4"
    assert exact_match("So the Answer: Paris", "paris")


def test_numeric_and_choice_verifiers():
    assert verify("There are 1,000 of them", "1000", "numeric")
    assert not verify("3 or 4", "3", "numeric")         # ambiguous: two numbers
    assert verify("(B) the blue one", "B", "choice")
    assert not verify("Blue", "B", "choice")
    assert verify("2.50", "2.5", "auto") and verify("c.", "C", "auto") and verify("Top", "top", "auto")
    with pytest.raises(ValueError, match="unknown verifier"):
        verify("a", "a", "fuzzy")
