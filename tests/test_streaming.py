import io
import json
import tarfile

import pytest
from torch.utils.data import DataLoader

from emodet.data.cache import FeatureCache
from emodet.data.corpora import prepare_corpus
from emodet.data.dataset import pad_collate
from emodet.data.manifest import write_manifest
from emodet.data.splits import assign_splits
from emodet.data.streaming import StreamingDataset
from emodet.core.errors import AudioError

LABELS = ["neutral", "happy", "sad", "angry", "fearful"]


@pytest.fixture(scope="module")
def manifest(synth_corpus, tmp_path_factory):
    rows = assign_splits(prepare_corpus("folder", synth_corpus).rows, val=1, test=1, folds=None)
    path = tmp_path_factory.mktemp("m") / "manifest.csv"
    write_manifest(path, rows)
    return path, rows


def _keys(ds, workers=2, batch_size=4):
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=pad_collate)
    keys = []
    for x, y, lengths, batch_keys in loader:
        assert x.shape[0] == len(batch_keys) and x.shape[1] == 64
        keys += batch_keys
    return keys


def test_every_item_once_across_two_workers_and_two_ranks(manifest, synth_corpus):
    path, rows = manifest
    keys = []
    for rank in range(2):
        ds = StreamingDataset(path, LABELS, root=synth_corpus, rank=rank, world_size=2, shuffle_buffer=8, seed=1,
                              return_keys=True)
        got = _keys(ds)
        assert abs(len(got) - len(rows) / 2) <= 2
        keys += got
    assert sorted(keys) == sorted(r["path"] for r in rows)


def test_deterministic_for_a_seed_and_reshuffled_by_epoch(manifest, synth_corpus):
    path, _ = manifest

    def order(seed, epoch):
        ds = StreamingDataset(path, LABELS, root=synth_corpus, shuffle_buffer=10, seed=seed, return_keys=True)
        ds.set_epoch(epoch)
        return [item[3] for item in ds]

    first = order(0, 0)
    assert first == order(0, 0)
    assert first != order(0, 1) and sorted(first) == sorted(order(0, 1))
    assert first != sorted(first)  # shuffled


def test_split_filter_crop_and_cache_filling(manifest, synth_corpus, tmp_path):
    path, rows = manifest
    cache = FeatureCache(tmp_path / "c", "logmel")
    ds = StreamingDataset(path, LABELS, root=synth_corpus, cache=cache, split="test", max_frames=40, return_keys=True)
    items = list(ds)
    test_rows = [r for r in rows if r["split"] == "test"]
    assert len(items) == len(test_rows) == 15
    assert all(x.shape == (64, 40) and n == 40 for x, _, n, _ in items)
    assert len(list(cache.dir.glob("*/*.npy"))) == 15  # the cache was filled on the way
    label = {r["path"]: LABELS.index(r["label"]) for r in rows}
    assert all(y == label[k] for _, y, _, k in items)


def _write_shards(rows, root, out_dir, n_shards=3, bad=False):
    shards = []
    for s in range(n_shards):
        path = out_dir / f"shard-{s:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for i, row in enumerate(rows[s::n_shards]):
                key = f"item{s}_{i:04d}"
                for name, data in ((f"{key}.wav", (root / row["path"]).read_bytes()),
                                   (f"{key}.json", json.dumps({"label": row["label"], "speaker": row["speaker"]}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            if bad and s == 0:
                for name, data in (("broken.wav", b"RIFFjunk"), ("broken.json", b'{"label": "sad", "speaker": "x"}')):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards.append(path)
    return shards


def test_tar_shards(manifest, synth_corpus, tmp_path):
    _, rows = manifest
    shards = _write_shards(rows, synth_corpus, tmp_path, bad=True)
    keys = []
    for rank in range(2):
        ds = StreamingDataset(shards, LABELS, rank=rank, world_size=2, return_keys=True)
        keys += _keys(ds)
    assert len(keys) == len(rows) == len(set(keys))
    ds = StreamingDataset(shards, LABELS)
    items = list(ds)
    assert len(items) == 45 and ds.skipped and "broken" in ds.skipped[0]["path"]
    with pytest.raises(AudioError, match="broken"):
        list(StreamingDataset(shards, LABELS, on_error="raise"))
