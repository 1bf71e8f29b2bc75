import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from emodet.models import build_model
from emodet.training import FocalLoss, TrainConfig, balanced_class_weights, distillation_loss, train_loop
from emodet.training.checkpoint import load_checkpoint, save_checkpoint
from emodet.training.device import autocast_context
from emodet.core.errors import UsageError

from conftest import Cut, cut_after_epoch

LABELS = ["a", "b", "c"]


def tc(**keys) -> TrainConfig:
    """A training config from the keys a config file's training section has (nested sections as dicts)."""
    return TrainConfig().merged(keys, "training", "test")


class ToyData(torch.utils.data.Dataset):
    """Separable toy features (F=8, variable T) with a class-dependent mean; random crops use torch's RNG."""

    def __init__(self, n=48, seed=0, crop=True):
        g = torch.Generator().manual_seed(seed)
        self.targets = [i % 3 for i in range(n)]
        self.items = [torch.randn(8, 30, generator=g) + torch.linspace(-1, 1, 8)[:, None] * (y - 1) for y in self.targets]
        self.crop = crop

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        x = self.items[i]
        if self.crop:
            s = int(torch.randint(0, 10, (1,)))
            x = x[:, s:s + 20]
        return x, self.targets[i], x.shape[1]


def loaders(seed=0):
    from emodet.data.dataset import pad_collate

    train = DataLoader(ToyData(48, seed), batch_size=8, shuffle=True, collate_fn=pad_collate,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(ToyData(24, seed + 1, crop=False), batch_size=8, collate_fn=pad_collate)
    return train, val


def test_focal_loss_against_hand_computed_value():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    targets = torch.tensor([0, 2])
    p = torch.softmax(logits, 1)
    gamma = 2.0
    hand = (-(1 - p[0, 0]) ** gamma * torch.log(p[0, 0]) - (1 - p[1, 2]) ** gamma * torch.log(p[1, 2])) / 2
    torch.testing.assert_close(FocalLoss(gamma)(logits, targets), hand)
    # value by hand: p0 = e^2 / (e^2 + e^0.5 + e^-1)
    p00 = math.exp(2) / (math.exp(2) + math.exp(0.5) + math.exp(-1))
    p12 = math.exp(0.3) / (math.exp(0.1) + math.exp(0.2) + math.exp(0.3))
    expected = (-(1 - p00) ** 2 * math.log(p00) - (1 - p12) ** 2 * math.log(p12)) / 2
    assert abs(FocalLoss(2.0)(logits, targets).item() - expected) < 1e-6
    # gamma 0 is cross-entropy, with weights and label smoothing too
    w = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(FocalLoss(0.0, w)(logits, targets), F.cross_entropy(logits, targets, weight=w))
    torch.testing.assert_close(FocalLoss(0.0, None, 0.1)(logits, targets),
                               F.cross_entropy(logits, targets, label_smoothing=0.1))


def test_balanced_class_weights():
    w = balanced_class_weights([0, 0, 0, 1], 3)
    torch.testing.assert_close(w, torch.tensor([4 / 9, 4 / 3, 0.0]))


def test_distillation_loss_zero_when_equal():
    z = torch.randn(4, 3)
    assert distillation_loss(z, z, 2.0).abs() < 1e-6
    assert distillation_loss(z, -z, 2.0) > 0.1


def test_trains_and_writes_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = build_model("fc", 3, (8, 20), hidden=(16,))
    train, val = loaders()
    res = train_loop(model, train, val, tc(epochs=6, lr=0.01, early_stopping={"patience": 0}, seed=0), LABELS, run_dir=tmp_path,
                     progress=False)
    assert res.epochs_run == 6 and len(res.history) == 6
    assert res.history[-1]["val_uar"] > 0.8 and res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert (tmp_path / "checkpoints" / "best.pt").exists() and (tmp_path / "history.csv").exists()
    assert res.best_epoch == 1 + int(np.argmax([r["val_uar"] for r in res.history]))
    assert 0 <= res.history[0]["data_wait_share"] < 1


def test_amp_on_cpu_runs_in_bfloat16(tmp_path):
    model = build_model("fc", 3, (8, 20), hidden=(16,))
    with autocast_context(torch.device("cpu"), True):
        assert model.net[0](torch.randn(2, 16)).dtype == torch.bfloat16
    train, val = loaders()
    res = train_loop(model, train, val, tc(epochs=2, lr=0.01, amp=True, early_stopping={"patience": 0}), LABELS, progress=False)
    assert all(math.isfinite(r["train_loss"]) for r in res.history)


def test_early_stopping_stops():
    model = build_model("fc", 3, (8, 20), hidden=(16,))
    train, val = loaders()
    res = train_loop(model, train, val, tc(epochs=20, lr=1e-9, scheduler="none",
                                           early_stopping={"patience": 2, "metric": "loss", "min_delta": 0.1}), LABELS, progress=False)
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 1


@pytest.mark.parametrize("name,extra", [("fc", {}), ("resnet", {"specaugment": True, "mixup": 0.4})])
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, monkeypatch, name, extra):
    cfg = tc(epochs=5, lr=0.01, early_stopping={"patience": 0}, seed=3, scheduler="cosine", augment=extra)

    def fresh():
        torch.manual_seed(123)
        return build_model(name, 3, (8, 20), preset="tiny")

    torch.manual_seed(0)
    full_model = fresh()
    full = train_loop(full_model, *loaders(), cfg, LABELS, run_dir=tmp_path / "full", progress=False)

    # Interrupt right after epoch 2's checkpoint is written, as a kill would.
    undo = cut_after_epoch(monkeypatch, 1)
    with pytest.raises(Cut):
        train_loop(fresh(), *loaders(), cfg, LABELS, run_dir=tmp_path / "cut", progress=False)
    undo()
    torch.manual_seed(999)  # a different process state before resuming
    resumed_model = fresh()
    resumed = train_loop(resumed_model, *loaders(), cfg, LABELS, run_dir=tmp_path / "cut", resume=True, progress=False)
    assert [r["val_uar"] for r in resumed.history] == [r["val_uar"] for r in full.history]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_distillation_pulls_student_toward_teacher():
    torch.manual_seed(5)
    teacher = build_model("fc", 3, (8, 20), hidden=(32,)).eval()
    for p in teacher.parameters():
        p.data.normal_(0, 1)  # a confident, arbitrary teacher, unlike the labels

    def teacher_fn(x, lengths):
        return teacher(x, lengths)

    val_x = torch.stack([ToyData(24, 9, crop=False)[i][0] for i in range(24)])

    def kl_to_teacher(student):
        student.eval()
        with torch.no_grad():
            return distillation_loss(student(val_x), teacher(val_x), 1.0).item()

    results = {}
    for weight in (0.0, 0.9):
        torch.manual_seed(7)
        student = build_model("fc", 3, (8, 20), hidden=(16,))
        before = kl_to_teacher(student)
        train_loop(student, *loaders(), tc(epochs=8, lr=0.01, early_stopping={"patience": 0},
                                           distill={"weight": weight, "temperature": 2.0}), LABELS, teacher=teacher_fn, progress=False)
        results[weight] = (before, kl_to_teacher(student))
    assert results[0.9][1] < results[0.9][0] * 0.7  # the distilled student moved toward the teacher
    assert results[0.9][1] < results[0.0][1] * 0.7  # much more than a student trained on labels alone


def test_checkpoint_loading_is_weights_only(tmp_path):
    save_checkpoint(tmp_path / "ok.pt", {"model": {"w": torch.ones(2)}, "epoch": 3})
    assert load_checkpoint(tmp_path / "ok.pt")["epoch"] == 3

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UsageError, match="evil.pt: refused.*never runs code"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(UsageError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


class Functionals(torch.utils.data.Dataset):
    """One vector a recording (T = 1), imbalanced classes: the shape of openSMILE functionals."""

    def __init__(self, n=90, dim=12, seed=0):
        rng = np.random.default_rng(seed)
        self.targets = [int(v) for v in rng.choice(3, size=n, p=[0.5, 0.3, 0.2])]
        self.x = (rng.normal(size=(n, dim)) + np.eye(3, dim)[self.targets] * 1.5).astype(np.float32)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i])[:, None], self.targets[i], 1


def test_lbfgs_reaches_the_logistic_regression_optimum_of_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    from emodet.data.dataset import pad_collate

    data = Functionals()
    train = DataLoader(data, batch_size=16, shuffle=True, collate_fn=pad_collate, generator=torch.Generator().manual_seed(0))
    model = build_model("fc", 3, (12, 1), hidden=[], dropout=0.0, pooling="mean")
    wd = 0.05
    cfg = tc(epochs=6, lr=1.0, optimizer="lbfgs", scheduler="none", weight_decay=wd, early_stopping={"patience": 0},
             loss={"class_weights": "balanced"})
    res = train_loop(model, train, None, cfg, LABELS, targets=data.targets, progress=False)
    ref = LogisticRegression(C=1 / (wd * len(data)), class_weight="balanced", tol=1e-10, max_iter=10000)
    ref.fit(data.x, data.targets)
    with torch.no_grad():
        ours = torch.softmax(model(torch.from_numpy(data.x)[:, :, None]), 1).numpy()
    np.testing.assert_allclose(ours, ref.predict_proba(data.x), atol=1e-3)  # float32 vs float64
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


@pytest.mark.parametrize("change,key", [({"scheduler": "cosine"}, "training.scheduler"),
                                        ({"augment": {"mixup": 0.2}}, "mixup"), ({"amp": True}, "training.amp"),
                                        ({"targets": None}, "a dataset without targets")])
def test_lbfgs_refuses_what_would_move_its_objective(change, key):
    targets = change.pop("targets", ToyData().targets)
    cfg = tc(**{"epochs": 1, "lr": 1.0, "optimizer": "lbfgs", "scheduler": "none", **change})
    with pytest.raises(UsageError, match=key):
        train_loop(build_model("fc", 3, (8, 20), preset="tiny"), *loaders(), cfg, LABELS, targets=targets,
                   progress=False)


def test_lbfgs_resume_equals_uninterrupted_run(tmp_path):
    cfg = tc(epochs=4, lr=1.0, optimizer="lbfgs", scheduler="none", early_stopping={"patience": 0},
             augment={"specaugment": True}, seed=1)

    def run(name, epochs, resume=False):
        torch.manual_seed(5)
        model = build_model("fc", 3, (8, 20), preset="tiny")
        res = train_loop(model, *loaders(), dataclasses.replace(cfg, epochs=epochs), LABELS,
                         targets=ToyData().targets, run_dir=tmp_path / name, resume=resume, progress=False)
        return model, res

    full_model, full = run("full", 4)
    run("cut", 2)
    resumed_model, resumed = run("cut", 4, resume=True)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_lbfgs_objective_with_unlabelled_items_is_the_minibatch_one_over_the_whole_set():
    """L-BFGS with recordings that only a teacher labels (label -1): its data term is the minibatch path's
    objective over the whole set, (1 - w) x the class-weighted mean loss of the labelled items + w x the mean
    distillation loss of every item, wherever the unlabelled items fall among the batches."""
    from emodet.data.dataset import pad_collate
    from emodet.training.loop import lbfgs_epoch
    from emodet.training.optim import make_loss

    data = Functionals()
    data.targets = [t if i % 4 else -1 for i, t in enumerate(data.targets)]  # a quarter without labels
    labelled = [t for t in data.targets if t >= 0]
    torch.manual_seed(0)
    model, teacher = (build_model("fc", 3, (12, 1), hidden=[], dropout=0.0, pooling="mean") for _ in range(2))
    cfg = tc(epochs=1, lr=1.0, optimizer="lbfgs", scheduler="none", weight_decay=0.0, loss={"class_weights": "balanced"},
             distill={"weight": 0.3, "temperature": 2.0})
    criterion = make_loss(cfg, labelled, 3, torch.device("cpu"))
    x, y = torch.from_numpy(data.x)[:, :, None], torch.tensor(data.targets)
    with torch.no_grad():
        logits, known = model(x), y >= 0
        hard = F.cross_entropy(logits[known], y[known], weight=criterion.weight)
        want = 0.7 * float(hard) + 0.3 * float(distillation_loss(logits, teacher(x), 2.0))
    for batch_size in (7, 64):
        loader = DataLoader(data, batch_size=batch_size, collate_fn=pad_collate)
        trial = build_model("fc", 3, (12, 1), hidden=[], dropout=0.0, pooling="mean")
        trial.load_state_dict(model.state_dict())
        optimizer = torch.optim.LBFGS(trial.parameters(), lr=1.0, max_iter=1)
        got = lbfgs_epoch(trial, loader, optimizer, criterion, cfg, teacher.eval(), torch.device("cpu"), 3, 0, labelled)
        assert got == pytest.approx(want, rel=1e-5)
