import pytest

from blocks.rl.claims import (CheckedClaim, ClaimReport, YesNoChecker, build_pairs, claim_question, contradiction_rate,
                              near_duplicates, parse_yes_no, split_sentences)


def report(accepted=0, rejected=0, unverifiable=0):
    verdicts = ["accepted"] * accepted + ["rejected"] * rejected + ["unverifiable"] * unverifiable
    return ClaimReport(tuple(CheckedClaim(f"c{i}", v) for i, v in enumerate(verdicts)))


def test_report_score_counts_rejections_only():
    r = report(accepted=3, rejected=2, unverifiable=4)
    assert (r.score, r.count("accepted"), r.count("unverifiable")) == (-2, 3, 4)
    assert contradiction_rate([r, report(accepted=5)]) == pytest.approx(2 / 10)
    assert contradiction_rate([report(unverifiable=2)]) is None


def test_yes_no_adapter_with_a_fake_model():
    assert split_sentences("A red circle. A cat!\nTwo shapes?  ") == ["A red circle.", "A cat!", "Two shapes?"]
    assert [parse_yes_no(r) for r in ("Yes.", " no, it is blue", "NO", "maybe", "")] == [True, False, False, None, None]
    truth = {"A red circle.": "Yes", "A cat!": "No.", "Two shapes?": "I cannot tell"}
    asked = []

    def ask(question):
        asked.append(question)
        claim = next(c for c in truth if f'"{c}"' in question)
        return parse_yes_no(truth[claim])

    got = YesNoChecker(ask)("A red circle. A cat!\nTwo shapes?")
    assert [c.verdict for c in got.claims] == ["accepted", "rejected", "unverifiable"] and got.score == -1
    assert asked[0] == claim_question("A red circle.")


def test_pairs_by_score_gap_each_response_once():
    responses = ["a b c d", "e f g h", "i j k l", "m n o p", "q r s t"]
    reports = [report(3), report(1, 2), report(2, 1), report(2), report(0, 3)]   # scores 0, -2, -1, 0, -3
    pairs = build_pairs(responses, reports)
    assert [(p.chosen, p.rejected) for p in pairs] == [(0, 4), (3, 1)]     # gaps 3, then 2
    assert (pairs[0].chosen_score, pairs[0].rejected_score) == (0, -3)
    assert len(build_pairs(responses, reports, max_pairs=1)) == 1
    assert build_pairs(responses, reports, min_gap=4) == []


def test_no_pair_chooses_a_response_that_claims_nothing():
    pairs = build_pairs(["", "a red square", "a red circle"], [report(), report(0, 1), report(1, 1)])
    assert pairs == []                      # "" has score 0 but nothing accepted; the other two tie


def test_near_duplicates_and_length_filter():
    responses = ["a red circle at top left", "a red circle at top left", "a blue square at top left now", "x"]
    assert near_duplicates(responses) == {1}
    reports = [report(2), report(2), report(1, 1), report(0, 1)]
    assert [(p.chosen, p.rejected) for p in build_pairs(responses, reports)] == [(0, 2)]  # gap 1 each; 0-3 longer
    assert [(p.chosen, p.rejected) for p in build_pairs(responses, reports, max_word_gap=2)] == [(0, 2)]
    assert build_pairs(responses, reports, max_word_gap=0) == []
    with pytest.raises(ValueError):
        build_pairs(responses, reports[:2])
