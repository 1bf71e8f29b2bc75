import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from emodet.data.cache import FeatureCache
from emodet.data.corpora import prepare_corpus
from emodet.data.normalize import Normalizer
from emodet.data.dataset import (FeatureDataset, chunk_collate, chunk_features, pad_collate,
                                 pool_chunks)
from emodet.data.splits import assign_splits
from emodet.core.errors import UsageError

LABELS = ["neutral", "happy", "sad", "angry", "fearful"]


@pytest.fixture(scope="module")
def manifest_rows(synth_corpus):
    rows = prepare_corpus("folder", synth_corpus).rows
    return assign_splits(rows, val=1, test=1, folds=None, seed=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return FeatureCache(tmp_path_factory.mktemp("cache"), "logmel", {"n_mels": 32})


def test_items_shapes_and_labels(manifest_rows, synth_corpus, cache):
    ds = FeatureDataset(manifest_rows, synth_corpus, cache, LABELS)
    x, y, n = ds[0]
    assert x.dtype == torch.float32 and x.shape == (32, n) and n > 50
    assert LABELS[y] == manifest_rows[0]["label"]
    np.testing.assert_allclose(x.numpy(), cache.compute(synth_corpus / manifest_rows[0]["path"]), atol=1e-4)


def test_train_crop_and_collate(manifest_rows, synth_corpus, cache):
    ds = FeatureDataset(manifest_rows, synth_corpus, cache, LABELS, train=True, max_seconds=0.5)
    torch.manual_seed(0)
    a = ds[1][0]
    assert a.shape == (32, 50)
    full = ds.raw_features(1)
    start = [s for s in range(full.shape[1] - 49) if np.allclose(full[:, s:s + 50], a.numpy())]
    assert start, "the crop is a window of the full features"
    batch = [ds[i] for i in range(4)]
    x, y, lengths = pad_collate([(torch.ones(3, 5), 1, 5), (torch.ones(3, 2), 0, 2)])
    assert x.shape == (2, 3, 5) and lengths.tolist() == [5, 2] and y.tolist() == [1, 0]
    assert x[1, :, 2:].abs().sum() == 0 and x[1, :, :2].sum() == 6
    loader = DataLoader(ds, batch_size=4, collate_fn=pad_collate)
    xb, yb, lb = next(iter(loader))
    assert xb.shape == (4, 32, 50) and (lb == 50).all() and len(batch) == 4
    # evaluation: full length, or the first max_seconds with crop_eval
    ev = FeatureDataset(manifest_rows, synth_corpus, cache, LABELS, max_seconds=0.5)
    assert ev[1][2] == full.shape[1]
    assert FeatureDataset(manifest_rows, synth_corpus, cache, LABELS, max_seconds=0.5, crop_eval=True)[1][2] == 50


def test_global_normalisation_uses_training_split_only(manifest_rows, synth_corpus, cache):
    train = [r for r in manifest_rows if r["split"] == "train"]
    test = [r for r in manifest_rows if r["split"] == "test"]
    probe = FeatureDataset(manifest_rows, synth_corpus, cache, LABELS)
    index = {r["path"]: i for i, r in enumerate(manifest_rows)}
    norm = Normalizer.fit("global", train, lambda r: probe.raw_features(index[r["path"]]))
    frames = np.concatenate([probe.raw_features(index[r["path"]]) for r in train], axis=1)
    np.testing.assert_allclose(norm.mean, frames.mean(1), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(norm.std, frames.std(1), rtol=1e-4, atol=1e-3)
    all_frames = np.concatenate([probe.raw_features(i) for i in range(len(manifest_rows))], axis=1)
    assert not np.allclose(norm.mean, all_frames.mean(1), atol=1e-3)  # test data did not leak in
    ds = FeatureDataset(test, synth_corpus, cache, LABELS, normalizer=norm)
    x = ds[0][0].numpy()
    np.testing.assert_allclose(x, (probe.raw_features(index[test[0]["path"]]) - norm.mean[:, None]) / norm.std[:, None],
                               atol=1e-5)
    assert Normalizer.from_dict(norm.to_dict()).mean.tolist() == norm.mean.tolist()


def test_per_speaker_normalisation(manifest_rows, synth_corpus, cache):
    probe = FeatureDataset(manifest_rows, synth_corpus, cache, LABELS)
    index = {r["path"]: i for i, r in enumerate(manifest_rows)}
    norm = Normalizer.fit("speaker", manifest_rows, lambda r: probe.raw_features(index[r["path"]]))
    assert set(norm.groups) == {"spk01", "spk02", "spk03"}
    ds = FeatureDataset(manifest_rows, synth_corpus, cache, LABELS, normalizer=norm)
    for spk in norm.groups:
        frames = np.concatenate([ds[i][0].numpy() for i, r in enumerate(manifest_rows) if r["speaker"] == spk], 1)
        np.testing.assert_allclose(frames.mean(1), 0, atol=1e-3)
        np.testing.assert_allclose(frames.std(1), 1, atol=1e-3)
    with pytest.raises(UsageError, match="no statistics for speaker 'nobody'"):
        norm(np.zeros((32, 3), np.float32), {"speaker": "nobody"})
    with pytest.raises(UsageError, match="valid values are none, global, corpus, speaker"):
        Normalizer.fit("per-speaker", manifest_rows, lambda r: None)


def test_chunked_evaluation_pools_per_item():
    x = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 10)
    chunks, lengths = chunk_features(x, 4)
    assert chunks.shape == (3, 2, 4) and lengths.tolist() == [4, 4, 2]
    assert chunks[2, 0].tolist() == [8, 9, 0, 0]
    collate = chunk_collate(4)
    xb, yb, lb, owner = collate([(x, 1, 10), (x[:, :3], 0, 3)])
    assert xb.shape == (4, 2, 4) and owner.tolist() == [0, 0, 0, 1] and yb.tolist() == [1, 0]
    pooled = pool_chunks(torch.tensor([[1.0, 0], [3, 0], [5, 0], [7, 1]]), owner, 2)
    assert pooled.tolist() == [[3.0, 0.0], [7.0, 1.0]]


def test_unknown_label_and_missing_file_are_named(manifest_rows, synth_corpus, cache):
    with pytest.raises(UsageError, match=r"has label 'angry', not one of data.labels: neutral, happy"):
        FeatureDataset(manifest_rows, synth_corpus, cache, ["neutral", "happy"])
    rows = [dict(manifest_rows[0], path="neutral/nope.wav")]
    ds = FeatureDataset(rows, synth_corpus, cache, LABELS)
    with pytest.raises(UsageError, match="row 1: file not found: .*nope.wav"):
        ds[0]


def test_nuisance_attribute_projection_removes_speaker_directions():
    """Speakers shifted along their own directions, emotions along others: the projection learnt from the
    speakers' means removes the shifts and keeps the emotions."""
    rng = np.random.default_rng(0)
    shifts = rng.normal(size=(8, 10))
    shifts[:, :4] = 0  # speakers differ in dimensions 4-9, emotions (below) in 0-3
    rows, feats = [], {}
    for s in range(8):
        for e in range(4):
            row = {"speaker": f"s{s}", "path": f"{s}/{e}"}
            feats[row["path"]] = (shifts[s] * 3 + np.eye(10)[e] + rng.normal(size=10) * 0.01)[:, None].astype(np.float32)
            rows.append(row)
    norm = Normalizer.fit("global", rows, lambda r: feats[r["path"]], nap=6)
    assert norm.nap.shape == (10, 6)
    projected = np.stack([norm(feats[r["path"]], r)[:, 0] for r in rows])
    by_speaker = projected.reshape(8, 4, 10).mean(1)
    assert by_speaker.std(0).max() < 0.05  # the speakers' means coincide
    assert projected.reshape(8, 4, 10).std(1).mean() > 0.2  # the emotions still differ within a speaker
    back = Normalizer.from_dict(norm.to_dict())
    np.testing.assert_allclose(back(feats["0/1"], rows[1]), norm(feats["0/1"], rows[1]), atol=1e-5)
    with pytest.raises(UsageError, match="needs more than 8 training speakers"):
        Normalizer.fit("global", rows, lambda r: feats[r["path"]], nap=8)


def test_per_corpus_whitening_aligns_the_corpora_second_order_statistics():
    """data.whiten (issue 18): each corpus z-scored and whitened by its own matrix. ``ledoit-wolf``: the inverse
    square root of scikit-learn's shrunk estimate; two corpora correlated differently come out with the same
    (near identity) covariance. ``coral``: (C + I)^(-1/2), never amplifying a direction. Refused without
    per-corpus statistics."""
    from sklearn.covariance import ledoit_wolf

    from emodet.core.stats import whitening

    rng = np.random.default_rng(0)
    rows, feats = [], {}
    for corpus, shared, scale in (("a", 1.0, np.arange(1, 7)), ("b", 2.0, np.full(6, 5.0))):  # correlation 0.5 / 0.8
        for i in range(400):
            row = {"path": f"{corpus}{i}", "corpus": corpus, "speaker": f"{corpus}{i % 8}"}
            feats[row["path"]] = ((rng.normal(size=6) + shared * rng.normal()) * scale)[:, None].astype(np.float32)
            rows.append(row)
    norm = Normalizer.fit("corpus", rows, lambda r: feats[r["path"]], whiten="ledoit-wolf")
    plain = Normalizer.fit("corpus", rows, lambda r: feats[r["path"]])
    for corpus in "ab":
        mine = [r for r in rows if r["corpus"] == corpus]
        z = np.concatenate([plain(feats[r["path"]], r) for r in mine], 1)
        assert np.abs(np.corrcoef(z) - np.eye(6)).max() > 0.5  # correlated before
        cov, _ = ledoit_wolf(z.T, assume_centered=True)
        values, vectors = np.linalg.eigh(cov)
        np.testing.assert_allclose(whitening([z], "ledoit-wolf"), (vectors / np.sqrt(values)) @ vectors.T, atol=1e-4)
        w = np.concatenate([norm(feats[r["path"]], r) for r in mine], 1)
        assert np.abs(np.cov(w, bias=True) - np.eye(6)).max() < 0.05  # decorrelated: both corpora alike
        # coral (whitening()'s default): (C + I)^(-1/2), which damps the shared direction and amplifies none
        c = z @ z.T / z.shape[1]
        values, vectors = np.linalg.eigh(c + np.eye(6))
        coral = whitening([z])
        np.testing.assert_allclose(coral, (vectors / np.sqrt(values)) @ vectors.T, atol=1e-4)
        assert np.linalg.eigvalsh(coral).max() <= 1 + 1e-6
        assert np.linalg.eigvalsh(coral @ c @ coral).max() < 1 < np.linalg.eigvalsh(c).max()
    back = Normalizer.from_dict(norm.to_dict())
    assert norm.to_dict() == {"mode": "corpus", "whiten": "ledoit-wolf"} and back.whiten == "ledoit-wolf"
    with pytest.raises(UsageError, match="ledoit-wolf whitening needs at least 3 recordings"):
        whitening([z[:, :2]], "ledoit-wolf")  # two z-scored vectors: mirror images, no shrinkage, a 1e3 gain
    from pathlib import Path

    from emodet.config import load_config
    with pytest.raises(UsageError, match="data.whiten must be one of none, coral, ledoit-wolf, got True"):
        load_config(Path(__file__).resolve().parents[1] / "configs" / "general.yaml", ["data.whiten=true"])
    for mode in ("global", "speaker"):
        with pytest.raises(UsageError, match="data.whiten aligns each corpus's statistics and needs data.normalize: corpus"):
            Normalizer.fit(mode, rows, lambda r: feats[r["path"]], whiten="coral")


def test_nap_beyond_the_training_speakers_is_refused_before_any_feature(tmp_path, synth_corpus):
    """data.nap needs more training speakers than directions: said before the feature pass, naming the largest
    value that works (it used to come after every recording's features)."""
    from pathlib import Path

    from emodet.config import load_config
    from emodet.data.prepare import prepare_data

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "fc_mfcc.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.val=0", "data.split.test=1", "data.nap=2",
        f"features.cache_dir={tmp_path / 'c'}"])
    with pytest.raises(UsageError, match=r"data.nap 2: .* this run trains on 2 \(set data.nap to at most 1, or 0"):
        prepare_data(cfg, progress=False)
    assert not list(tmp_path.rglob("*.npy"))
    cfg = load_config(repo / "configs" / "fc_mfcc.yaml", [  # so is whitening without per-corpus statistics
        f"data.root={synth_corpus}", "data.corpus=folder", "data.normalize=speaker", "data.whiten=coral",
        f"features.cache_dir={tmp_path / 'c'}"])
    with pytest.raises(UsageError, match="data.whiten .* needs data.normalize: corpus, not 'speaker'"):
        prepare_data(cfg, progress=False)
    assert not list(tmp_path.rglob("*.npy"))
