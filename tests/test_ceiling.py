"""bench/ceiling.py: what it counts as a hit by article, and the floors it says meet both targets,
on hand-made hits whose answers are known."""

import numpy as np

from bench.ceiling import by_article, spans_meeting_both, target_rate_floor


def question(rows, docs, label, right):
    return {"x": np.array(rows, float), "docs": docs, "label": np.array(label, bool), "right": set(right)}


def test_a_hit_by_article_is_the_answer_among_the_first_articles_three_shown():
    # a: the answer is a's fourth passage by late interaction, first by cosine; b leads by keywords
    q = question([[0.9, 0.1, 0.0], [0.8, 0.1, 0.0], [0.7, 0.1, 0.0], [0.6, 0.9, 0.0], [0.5, 0.0, 0.9]],
                 ["a", "a", "a", "a", "b"], [False, False, False, True, False], ["a"])
    w = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float).T  # late, cosine, keyword alone
    hit, first = by_article([q], w)
    assert hit.tolist() == [0, 1, 0] and first.tolist() == [1, 1, 0]


def test_an_answer_the_late_stage_did_not_grade_shows_only_below_its_articles_graded_passages():
    rows = [[0.9, 0.5, 0.1], [0.8, 0.4, 0.1], [np.nan, 0.3, 0.1], [np.nan, 0.2, 0.1]]
    near = question(rows, ["a", "b", "a", "a"], [False, False, True, False], ["a"])
    far = question(rows, ["a", "a", "a", "a"], [False, False, False, True], ["a"])
    hit, _ = by_article([near], np.array([1.0, 0, 0]))
    assert hit.tolist() == [1]  # a's second shown passage
    hit, _ = by_article([far], np.array([1.0, 0, 0]))
    assert hit.tolist() == [0]  # a's fourth


def test_the_floors_meeting_both_targets_are_joined_into_spans():
    answers = np.r_[np.full(97, 0.9), 0.2, 0.12, 0.05]  # 100 answers: 97 % kept needs a floor <= 0.9
    off_topic = np.r_[np.zeros(18), 0.15, 0.3]  # 20 queries: 95 % leaves out all but one, so 0.15 too
    assert spans_meeting_both(answers, off_topic) == [[0.15, 0.9]]
    assert spans_meeting_both(answers, np.r_[np.zeros(17), 0.95, 0.92, 0.15]) == []  # two answered, or 0.9 lost
    # at most 5 % of the 20 answered: the one at 0.15 left out, the floor midway to the answer at 0.2
    assert target_rate_floor(off_topic, answers) == 0.175
