"""Metrics against hand-computed examples and the textbook formulas (plain Python loops)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audioconv.training.metrics import (accuracy, confusion_matrix, macro_f1, per_class_f1, per_class_precision,
                               per_class_recall, summarize)

# 7 clips, 3 classes, worked out by hand:
#   true 0: predicted 0, 1      -> recall 1/2
#   true 1: predicted 1, 1      -> recall 2/2
#   true 2: predicted 2, 0, 2   -> recall 2/3
TRUE = [0, 0, 1, 1, 2, 2, 2]
PRED = [0, 1, 1, 1, 2, 0, 2]
CONFUSION = [[1, 1, 0],
             [0, 2, 0],
             [1, 0, 2]]


def test_confusion_matrix_by_hand():
    c = confusion_matrix(torch.tensor(TRUE), torch.tensor(PRED), 3)
    assert c.dtype == torch.int64
    assert c.tolist() == CONFUSION


def test_scores_by_hand():
    c = torch.tensor(CONFUSION)
    assert accuracy(c) == pytest.approx(5 / 7)
    assert per_class_recall(c).tolist() == pytest.approx([1 / 2, 1.0, 2 / 3])
    # precision: column sums are 2, 3, 2
    assert per_class_precision(c).tolist() == pytest.approx([1 / 2, 2 / 3, 1.0])
    # F1 = 2PR/(P+R): class 0: 0.5, class 1: 2*(2/3)/(5/3) = 0.8, class 2: 2*(2/3)/(5/3) = 0.8
    assert per_class_f1(c).tolist() == pytest.approx([0.5, 0.8, 0.8])
    assert macro_f1(c) == pytest.approx((0.5 + 0.8 + 0.8) / 3)


def test_absent_classes():
    # class 2 never occurs (neither true nor predicted): left out of macro-F1, recall NaN
    c = confusion_matrix([0, 0, 1, 1], [0, 1, 1, 1], 3)
    rec = per_class_recall(c)
    assert rec[:2].tolist() == pytest.approx([0.5, 1.0]) and math.isnan(rec[2])
    f1_0 = 2 * 1 / (2 * 1 + 0 + 1)  # TP=1, FP=0, FN=1
    f1_1 = 2 * 2 / (2 * 2 + 1 + 0)  # TP=2, FP=1, FN=0
    assert macro_f1(c) == pytest.approx((f1_0 + f1_1) / 2)
    # a class predicted but never true counts with F1 = 0 (sklearn's zero_division=0)
    c = confusion_matrix([0, 0], [0, 1], 2)
    assert macro_f1(c) == pytest.approx((2 / 3 + 0.0) / 2)
    assert math.isnan(accuracy(torch.zeros(2, 2, dtype=torch.long)))


def test_summarize_is_json_ready():
    s = summarize(torch.tensor(CONFUSION), ["a", "b", "c"])
    assert s["n"] == 7 and s["confusion"] == CONFUSION
    assert s["per_class_recall"] == pytest.approx({"a": 0.5, "b": 1.0, "c": 2 / 3})
    s = summarize(confusion_matrix([0, 0], [0, 0], 2), ["a", "b"])
    assert s["per_class_recall"]["b"] is None


def test_bad_input():
    with pytest.raises(ValueError, match="targets must be in 0..2"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="integer class indices"):
        confusion_matrix(torch.tensor([0.0, 1.0]), [0, 1], 3)
    with pytest.raises(ValueError, match="square"):
        accuracy(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="3 labels"):
        summarize(torch.zeros(2, 2, dtype=torch.long), ["a", "b", "c"])


def _reference(true, pred, k):
    """Textbook formulas, one class at a time."""
    tp = [sum(1 for t, p in zip(true, pred) if t == p == c) for c in range(k)]
    fp = [sum(1 for t, p in zip(true, pred) if p == c and t != c) for c in range(k)]
    fn = [sum(1 for t, p in zip(true, pred) if t == c and p != c) for c in range(k)]
    f1 = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) for c in range(k) if tp[c] + fp[c] + fn[c] > 0]
    acc = sum(tp) / len(true)
    return acc, sum(f1) / len(f1)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=40))))
def test_against_formulas(data):
    k, pairs = data
    true, pred = [t for t, _ in pairs], [p for _, p in pairs]
    c = confusion_matrix(true, pred, k)
    assert int(c.sum()) == len(pairs)
    acc, mf1 = _reference(true, pred, k)
    assert accuracy(c) == pytest.approx(acc)
    assert macro_f1(c) == pytest.approx(mf1)
    # a confusion matrix adds up over shards (what DDP's all_reduce relies on)
    half = len(pairs) // 2
    assert torch.equal(confusion_matrix(true[:half], pred[:half], k) + confusion_matrix(true[half:], pred[half:], k), c)
