"""Experiment configuration: one typed schema that validates and is what the code reads.

Four sections (``data``, ``features``, ``model``, ``training``), each a dataclass whose fields carry their default,
the types they take and, where the set is closed, their choices. YAML in (``yaml.safe_load``), defaults filled,
every key checked: an unknown or misspelt key gets an error naming it and the closest valid key; a value of the
wrong type names the key and the type it needs; a placeholder or missing data root says which key or flag sets it.

    cfg = load_config("configs/cnn_logmel.yaml", ["training.epochs=3"], data_root="corpus/")
    cfg.training.augment.mixup        # typed attribute access; cfg.to_dict() for YAML/JSON
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .core.audio import check_speed_factors
from .core.errors import UsageError
from .core.schema import Section, option, section
from .core.text import parse_assignments
from .data.corpora import CORPUS_NAMES
from .data.normalize import NORMALIZE_MODES, WHITENING

NUM = (int, float)
OPT_STR = (str, type(None))
PLACEHOLDER_ROOTS = {"D:/DATA/EmotionDataset", "DATA_ROOT_PLACEHOLDER"}


@dataclass
class SplitConfig(Section):
    method: str = option("auto", str, choices=("auto", "speaker", "manifest"))  # auto: a manifest's own split, else by speaker
    val: float = option(0.1, *NUM)
    test: float = option(0.2, *NUM)
    seed: int = option(0, int)


@dataclass
class DataConfig(Section):
    root: str | None = option(None, *OPT_STR)
    corpus: str = option("auto", str, choices=CORPUS_NAMES)
    manifest: str | None = option(None, *OPT_STR)
    sample_rate: int = option(16000, int)
    labels: list | None = option(None, list, type(None))
    label_map: str | None = option(None, *OPT_STR)
    speaker_pattern: str | None = option(None, *OPT_STR)
    split: SplitConfig = section(SplitConfig)
    max_seconds: float | None = option(3.0, *NUM, type(None))
    normalize: str = option("none", str, choices=NORMALIZE_MODES)
    nap: int = option(0, int)  # nuisance attribute projection: speaker directions projected out after normalising
    whiten: str = option("none", str, choices=("none", *WHITENING))  # with normalize: corpus (CORAL-like)
    eval_chunk_seconds: float | None = option(None, *NUM, type(None))
    num_workers: int = option(0, int)


@dataclass
class FeaturesConfig(Section):
    type: str = option("logmel", str)
    params: dict = option({}, dict)  # free-form: checked by the feature registry
    cache_dir: str = option("cache", str)
    plugins: list = option([], list)


@dataclass
class ModelConfig(Section):
    name: str = option("resnet", str)
    preset: str = option("base", str)
    params: dict = option({}, dict)  # free-form: checked by the model registry


@dataclass
class EarlyStoppingConfig(Section):
    metric: str = option("uar", str, choices=("uar", "wa", "macro_f1", "loss"))
    patience: int = option(10, int)  # epochs without improvement before stopping; 0 disables
    min_delta: float = option(0.0, *NUM)
    select: str = option("best", str, choices=("best", "last"))  # last: a fixed number of epochs


@dataclass
class LossConfig(Section):
    type: str = option("ce", str, choices=("ce", "focal"))
    class_weights: str = option("none", str, choices=("none", "balanced"))
    gamma: float = option(2.0, *NUM)
    label_smoothing: float = option(0.0, *NUM)


@dataclass
class WaveformAugmentConfig(Section):
    """Cached augmented copies of the training recordings (emodet.data.augment); probabilities per copy."""

    copies: int = option(0, int)  # augmented copies of each training recording (0: none)
    noise: float = option(0.5, *NUM)
    snr_db: list = option([0, 20], list)
    noise_kinds: list = option(["white", "pink", "brown", "babble"], list)
    noise_dir: str | None = option(None, *OPT_STR)  # a folder of noise recordings (e.g. MUSAN)
    # babble's voices: emodet's synthetic speakers, or the run's other training speakers' recordings
    babble_from: str = option("synthetic", str, choices=("synthetic", "training"))
    reverb: float = option(0.5, *NUM)
    rt60: list = option([0.2, 1.0], list)
    rir_dir: str | None = option(None, *OPT_STR)  # a folder of room impulse responses
    codec: float = option(0.3, *NUM)  # telephone band, MP3 32 kb/s, Opus 16 kb/s, GSM
    gain: float = option(0.3, *NUM)  # -30 to +6 dB, sometimes clipped


@dataclass
class AugmentConfig(Section):
    specaugment: bool = option(False, bool)
    freq_masks: int = option(2, int)
    freq_width: int = option(8, int)
    time_masks: int = option(2, int)
    time_width: int = option(20, int)
    mixup: float = option(0.0, *NUM)  # Beta(alpha, alpha); 0 disables
    speed: list = option([], list)  # speed-perturbation factors, e.g. [0.9, 1.1]: one extra training copy each
    waveform: WaveformAugmentConfig = section(WaveformAugmentConfig)


@dataclass
class DistillConfig(Section):
    teacher: str | None = option(None, *OPT_STR)
    weight: float = option(0.5, *NUM)
    temperature: float = option(2.0, *NUM)
    unlabelled: str | None = option(None, *OPT_STR)  # a folder or CSV (path column) of recordings the teacher labels
    unlabelled_max: int = option(0, int)  # a seeded random subset of that many (0: all)
    unlabelled_copies: int = option(0, int)  # augmented copies of each: the first N of training.augment.waveform's
    copy_targets: str = option("own", str, choices=("own", "clean"))  # an augmented copy's: the teacher on it or its original


@dataclass
class TrainingConfig(Section):
    """What ``train_loop`` reads (the ``training`` section of a config)."""

    epochs: int = option(30, int)
    batch_size: int = option(32, int)
    lr: float = option(1e-3, *NUM)
    weight_decay: float = option(1e-4, *NUM)
    optimizer: str = option("adamw", str, choices=("adamw", "adam", "sgd", "lbfgs"))
    scheduler: str = option("cosine", str, choices=("none", "cosine", "onecycle", "plateau"))
    amp: bool = option(False, bool)
    early_stopping: EarlyStoppingConfig = section(EarlyStoppingConfig)
    loss: LossConfig = section(LossConfig)
    augment: AugmentConfig = section(AugmentConfig)
    distill: DistillConfig = section(DistillConfig)
    grad_clip: float = option(5.0, *NUM)  # 0 disables
    seed: int = option(0, int)
    device: str = option("auto", str)


@dataclass
class Config(Section):
    """A whole experiment config."""

    data: DataConfig = section(DataConfig)
    features: FeaturesConfig = section(FeaturesConfig)
    model: ModelConfig = section(ModelConfig)
    training: TrainingConfig = section(TrainingConfig)

    @classmethod
    def from_mapping(cls, mapping: Any, source: str) -> "Config":
        """A full config from a mapping that may lack keys (a YAML file, or a config saved by an older
        emodet): each missing key takes its default, each present one is checked (``source`` names it)."""
        return cls().merged(mapping, "", source)

    def with_overrides(self, items: list[str] | None, flag: str = "--set") -> "Config":
        """``["training.epochs=3", ...]`` applied in order, each checked like a key in a file."""
        cfg = self
        for key, value in parse_assignments(items, flag, "training.epochs=3", "key.sub=value"):
            nested: Any = value
            for part in reversed(key.split(".")):
                nested = {part: nested}
            cfg = cfg.merged(nested, "", f"{flag} {key}")
        return cfg

    def plain(self) -> dict:
        """The config as JSON-equal plain data (tuples as lists), for comparing and hashing."""
        return json.loads(json.dumps(self.to_dict()))

    def check(self) -> "Config":
        """Checks beyond types: ranges and cross-key rules; returns the config."""
        t, d = self.training, self.data
        for key in ("epochs", "batch_size"):
            if getattr(t, key) < 1:
                raise UsageError(f"training.{key} must be at least 1, got {getattr(t, key)}")
        if t.lr <= 0:
            raise UsageError(f"training.lr must be positive, got {t.lr}")
        if not 0 <= t.loss.label_smoothing < 1:
            raise UsageError(f"training.loss.label_smoothing must be in [0, 1), got {t.loss.label_smoothing}")
        if not 0 <= t.distill.weight <= 1:
            raise UsageError(f"training.distill.weight must be in [0, 1], got {t.distill.weight}")
        if t.distill.temperature <= 0:
            raise UsageError(f"training.distill.temperature must be positive, got {t.distill.temperature}")
        if t.distill.unlabelled_max < 0:
            raise UsageError(f"training.distill.unlabelled_max must be 0 (all) or a count, got {t.distill.unlabelled_max}")
        check_speed_factors(t.augment.speed, "training.augment.speed")
        check_waveform_augment(t.augment.waveform)
        if d.max_seconds is not None and d.max_seconds <= 0:
            raise UsageError(f"data.max_seconds must be positive or null, got {d.max_seconds}")
        if d.labels is not None and (len(d.labels) < 2 or not all(isinstance(x, str) for x in d.labels)):
            raise UsageError(f"data.labels must be a list of at least two label names, got {d.labels!r}")
        return self


TrainConfig = TrainingConfig  # the name train_loop's callers know


def check_waveform_augment(w: WaveformAugmentConfig) -> None:
    """Probabilities in [0, 1], ranges as [low, high], known noise kinds, folders that exist."""
    from .data.augment import NOISE_KINDS

    where = "training.augment.waveform"
    if w.copies < 0:
        raise UsageError(f"{where}.copies must be 0 or more, got {w.copies}")
    for key in ("noise", "reverb", "codec", "gain"):
        if not 0 <= getattr(w, key) <= 1:
            raise UsageError(f"{where}.{key} is a probability in [0, 1], got {getattr(w, key)}")
    for key, low in (("snr_db", -20), ("rt60", 0.05)):
        pair = getattr(w, key)
        if len(pair) != 2 or not all(isinstance(v, (int, float)) for v in pair) or not low <= pair[0] <= pair[1]:
            raise UsageError(f"{where}.{key} must be [low, high] with {low} <= low <= high, got {pair}")
    if w.babble_from == "training" and (w.noise == 0 or "babble" not in w.noise_kinds):
        raise UsageError(f"{where}.babble_from: training changes babble only, and noise "
                         f"{'is 0' if w.noise == 0 else 'kinds hold no babble'}: add babble to noise_kinds and a noise "
                         "probability above 0, or leave babble_from: synthetic")
    unknown = [k for k in w.noise_kinds if k not in NOISE_KINDS]
    if unknown or not w.noise_kinds:
        raise UsageError(f"{where}.noise_kinds: {unknown[0] if unknown else 'empty'!r}; valid kinds: "
                         f"{', '.join(NOISE_KINDS)}")
    for key in ("noise_dir", "rir_dir"):
        folder = getattr(w, key)
        if folder is not None and not Path(folder).is_dir():
            raise UsageError(f"{where}.{key} {folder!r}: no such folder")


def check_training_start(cfg: "Config") -> None:
    """What a training run (``train``, each ``cv``) may not start with although a config may hold it: checked
    when training starts, never when a trained run's config is read (a run trained before a check stays
    loadable)."""
    w = cfg.training.augment.waveform
    if w.babble_from == "training" and w.copies == 0:
        raise UsageError("training.augment.waveform.babble_from: training mixes babble into the augmented copies, and "
                         "copies is 0 (no copies, so it would change nothing): set training.augment.waveform.copies, "
                         "e.g. 2, or leave babble_from: synthetic")


def config_differences(a: "Config | dict", b: "Config | dict", keys_local: frozenset = frozenset()) -> list[str]:
    """Dotted keys whose values differ between two configs (``keys_local``: ``section.key`` names to ignore)."""
    a = a.plain() if isinstance(a, Config) else a
    b = b.plain() if isinstance(b, Config) else b
    out = []
    for sec in sorted(set(a) | set(b)):
        old, new = a.get(sec, {}), b.get(sec, {})
        out += [f"{sec}.{k}" for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k) and f"{sec}.{k}" not in keys_local]
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                data_root: str | None = None) -> Config:
    """Defaults, then the YAML file, then ``--set key.sub=value`` overrides, then ``--data-root``."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"--config {path}: file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        cfg = Config.from_mapping(loaded, str(path))
    cfg = cfg.with_overrides(overrides)
    if data_root is not None:
        cfg.data.root = data_root
    return cfg.check()


def check_data_root(cfg: Config) -> Path | None:
    """The data root as a Path (``None``: a manifest's paths are relative to its own folder); a placeholder or
    missing folder is an error saying how to set it."""
    root = cfg.data.root
    placeholder = root is not None and (root in PLACEHOLDER_ROOTS or "PLACEHOLDER" in root.upper()
                                        or (re.match(r"^[A-Za-z]:[\\/]", root) and not Path(root).exists()))
    if root is None or (placeholder and cfg.data.manifest):  # a shipped config's placeholder with a manifest: unset
        if cfg.data.manifest is None:
            raise UsageError("no data: set data.root in the config or pass --data-root DIR "
                             "(or give data.manifest, a manifest CSV from `emodet data prepare`)")
        return None
    if placeholder:
        raise UsageError(f"data.root is a placeholder ({root!r}): pass --data-root DIR or set data.root in the config "
                         "to the folder holding your corpus")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UsageError(f"data.root {root!r}: no such folder (pass --data-root DIR or fix data.root in the config)")
    return path


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
