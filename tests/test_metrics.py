import numpy as np
import pytest
import torch

from emodet.models.ensemble import EnsembleModel
from emodet.core.errors import UsageError
from emodet.evaluation.metrics import classification_metrics, confusion_matrix, uar


def test_hand_computed_case():
    # targets: 3 a, 2 b, 1 c; predictions below
    t = [0, 0, 0, 1, 1, 2]
    p = [0, 0, 1, 1, 2, 2]
    m = classification_metrics(t, p, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["wa"] == pytest.approx(4 / 6)
    f1_a = 2 * 1.0 * (2 / 3) / (1 + 2 / 3)
    f1_b = 2 * 0.5 * 0.5 / 1.0
    f1_c = 2 * 0.5 * 1.0 / 1.5
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b + f1_c) / 3)
    assert m["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": f1_c, "support": 1})


def test_class_absent_from_predictions_counts_as_zero_recall():
    m = classification_metrics([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 1, 1], ["a", "b", "c"])
    assert m["per_class"]["c"]["recall"] == 0 and m["per_class"]["c"]["precision"] == 0
    assert m["uar"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["macro_f1"] == pytest.approx((1 + 2 * 0.5 / 1.5 + 0) / 3)


def test_class_absent_from_targets_is_left_out_of_uar():
    m = classification_metrics([0, 0, 1, 1], [0, 2, 1, 1], ["a", "b", "c"])
    assert m["per_class"]["c"]["support"] == 0
    assert m["uar"] == pytest.approx((0.5 + 1.0) / 2)  # c has no recall to average
    assert m["wa"] == pytest.approx(3 / 4)
    assert uar([0, 0, 1, 1], [0, 2, 1, 1], 3) == pytest.approx(0.75)


def test_ties_go_to_the_first_label(tmp_path):
    """Where emodet turns scores into a label (evaluation's metrics and predictions CSV, the runtime's answers),
    equal scores give the first label."""
    import csv

    from emodet.evaluation.evaluate import metrics_for, write_predictions
    from emodet.runtime.outputs import window_dicts

    logits = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    rows = [{"path": "x.wav", "speaker": "s", "label": "a"}, {"path": "y.wav", "speaker": "s", "label": "c"}]
    m = metrics_for(rows, logits, ["a", "b", "c"])
    assert m["confusion_matrix"][0][0] == 1 and m["confusion_matrix"][2][1] == 1 and m["uar"] == pytest.approx(0.5)
    write_predictions(tmp_path / "p.csv", rows, logits, ["a", "b", "c"])
    assert [r["predicted"] for r in csv.DictReader(open(tmp_path / "p.csv"))] == ["a", "b"]
    tied = window_dicts(["a", "b", "c"], [(0.0, 1.0, np.array([0.2, 0.4, 0.4]))])
    assert tied[0]["label"] == "b"


def test_uar_is_balanced_accuracy():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.6, t, rng.integers(0, 5, 300))
    from sklearn.metrics import balanced_accuracy_score, f1_score

    m = classification_metrics(t, p, list("abcde"))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(t, p))
    assert m["macro_f1"] == pytest.approx(f1_score(t, p, average="macro"))
    assert confusion_matrix(t, p, 5).sum() == 300


class Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.register_buffer("out", torch.tensor(logits))
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, lengths=None):
        return self.out.expand(x.shape[0], -1)


def test_ensemble_arithmetic():
    a, b = [2.0, 0.0, 0.0], [0.0, 0.0, 2.0]
    x = torch.zeros(2, 4, 5)
    pa, pb = torch.softmax(torch.tensor(a), 0), torch.softmax(torch.tensor(b), 0)
    probs = torch.softmax(EnsembleModel([Fixed(a), Fixed(b)])(x), 1)
    torch.testing.assert_close(probs[0], (pa + pb) / 2)
    weighted = torch.softmax(EnsembleModel([Fixed(a), Fixed(b)], [3, 1])(x), 1)
    torch.testing.assert_close(weighted[1], 0.75 * pa + 0.25 * pb)
    logit = EnsembleModel([Fixed(a), Fixed(b)], [1, 1], combine="logit")(x)
    torch.testing.assert_close(logit[0], torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(UsageError, match="one non-negative weight a member"):
        EnsembleModel([Fixed(a), Fixed(b)], [1])
    with pytest.raises(UsageError, match="valid values are prob, logit"):
        EnsembleModel([Fixed(a)], combine="vote")
