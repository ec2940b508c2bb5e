import pytest

from blocks.rl.rewards import (REWARDS, Rollout, build_reward, max_ngram_count, register_reward, reward_model_text,
                               verifier_of)

accuracy, format_ = build_reward("accuracy"), build_reward("format")


def long(text, reference="3", finish="stop", **meta):
    return Rollout(text, "long", reference, meta, finish)


def short(text, reference="3", finish="stop", **meta):
    return Rollout(text, "short", reference, meta, finish)


def test_accuracy_reads_the_answer_after_think():
    assert accuracy(long("I count three.\n</think>\n\n3")) == 1.0
    assert accuracy(long("I count three.\n</think>\n\n4")) == 0.0
    assert accuracy(long("3 3 3\n</think>\n\nfour")) == 0.0     # the reasoning's numbers do not count
    assert accuracy(short("3")) == 1.0
    assert accuracy(short("(B) blue", "B", verifier="choice")) == 1.0


def test_empty_answer_earns_no_accuracy():
    assert accuracy(long("I count three.\n</think>\n\n")) == 0.0
    assert accuracy(short("", reference="")) == 0.0   # not even against an empty reference
    assert accuracy(short("   ", reference=" ")) == 0.0


def test_long_rollout_cut_off_before_think_close_earns_none():
    assert accuracy(long("I count three, the answer is 3", finish="length")) == 0.0
    assert accuracy(long("3", finish="length")) == 0.0


def test_accuracy_does_not_apply_without_reference_or_to_rlpr_samples():
    assert accuracy(short("3", reference=None)) is None
    assert accuracy(long("r\n</think>\n\nParis, France", "Paris", verifier="rlpr")) is None


def test_format_long_and_short():
    assert format_(long("r\n</think>\n\n3")) == 0.0
    assert format_(long("r\n</think>\n\n3", finish="length")) == -1.0        # did not stop by itself
    assert format_(long("r\n</think>\n\n3</think>4")) == -1.0                # two closing tags
    assert format_(long("\n</think>\n\n3")) == -1.0                          # empty reasoning
    assert format_(long("r\n</think>\n\n")) == -1.0                          # empty answer
    assert format_(short("3")) == 0.0
    assert format_(short("<think>r</think>3")) == -1.0                       # short mode must not think
    assert format_(short("")) == -1.0
    assert build_reward("format", penalty=-0.5)(short("")) == -0.5


def test_repetition_counts_word_windows():
    assert max_ngram_count("a b a b a b", 2) == 3 and max_ngram_count("a b", 3) == 0
    repetition = build_reward("repetition", n=2, limit=3)
    assert repetition(short("a b a b a b")) == -1.0
    assert repetition(short("a b a b a")) == 0.0
    assert build_reward("repetition")(short(" ".join(["one two three four five"] * 20))) == -1.0  # RLPR defaults
    with pytest.raises(ValueError):
        build_reward("repetition", limit=1)


def test_reward_model_sees_only_the_final_answer_in_long_mode():
    assert reward_model_text(long("long reasoning\n</think>\n\nthe answer")) == "the answer"
    assert reward_model_text(long("cut off reasoning", finish="length")) is None
    assert reward_model_text(short("the answer")) == "the answer"


def test_registry():
    assert {"accuracy", "format", "repetition"} <= set(REWARDS)
    with pytest.raises(ValueError, match="unknown reward"):
        build_reward("bleu")
    with pytest.raises(ValueError, match="already registered"):
        register_reward("accuracy")(lambda: None)
    with pytest.raises(ValueError, match="verifier"):
        verifier_of(short("3", verifier="fuzzy"))
