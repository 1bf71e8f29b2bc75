"""Corpus parsers: a folder of a known corpus -> manifest rows (SpeechBrain's ``prepare_<corpus>``).

Each parser reads one file's path (relative to the corpus root) and returns its raw label,
speaker and corpus-specific columns, or raises ``ValueError`` saying why the name does not
parse. ``prepare_corpus`` runs one over a folder, maps labels onto the canonical set, reads
durations, and returns the rows with every file that failed and why.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from ..core.audio import audio_duration, extensions_text
from ..core.errors import AudioError, UsageError
from ..core.files import scan_folder
from .labels import DROP, canonical_label

EMODB_LETTERS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}
EMODB_MALE = {"03", "10", "11", "12", "15"}
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                    "07": "disgust", "08": "surprised"}
CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMAD_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SAVEE_EMOTIONS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised"}
SAVEE_SPEAKERS = {"DC", "JE", "JK", "KL"}


def parse_emodb(rel: str) -> dict:
    m = re.fullmatch(r"(\d\d)([a-z]\d\d)([WLEAFTN])([a-z])", PurePosixPath(rel).stem)
    if not m:
        raise ValueError("not an EmoDB name like 03a01Fa.wav (speaker, text, emotion letter W/L/E/A/F/T/N, version)")
    spk, text, letter, version = m.groups()
    return {"label": EMODB_LETTERS[letter], "speaker": spk, "text": text, "version": version,
            "gender": "male" if spk in EMODB_MALE else "female"}


def parse_ravdess(rel: str) -> dict:
    parts = PurePosixPath(rel).stem.split("-")
    if len(parts) != 7 or not all(re.fullmatch(r"\d\d", p) for p in parts):
        raise ValueError("not a RAVDESS name like 03-01-05-02-01-01-12 (seven two-digit fields)")
    modality, channel, emotion, intensity, statement, repetition, actor = parts
    if emotion not in RAVDESS_EMOTIONS or channel not in ("01", "02") or intensity not in ("01", "02"):
        raise ValueError(f"RAVDESS fields out of range (emotion {emotion}, vocal channel {channel}, intensity {intensity})")
    return {"label": RAVDESS_EMOTIONS[emotion], "speaker": actor, "modality": modality,
            "vocal_channel": "speech" if channel == "01" else "song",
            "intensity": "normal" if intensity == "01" else "strong", "statement": statement,
            "repetition": repetition, "gender": "male" if int(actor) % 2 else "female"}


def parse_cremad(rel: str) -> dict:
    m = re.fullmatch(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})", PurePosixPath(rel).stem)
    if not m or m.group(3) not in CREMAD_EMOTIONS:
        raise ValueError("not a CREMA-D name like 1001_DFA_ANG_XX (actor, sentence, ANG/DIS/FEA/HAP/NEU/SAD, level)")
    spk, sentence, emotion, level = m.groups()
    return {"label": CREMAD_EMOTIONS[emotion], "speaker": spk, "sentence": sentence,
            "intensity": CREMAD_LEVELS.get(level, level.lower())}


def parse_tess(rel: str) -> dict:
    m = re.fullmatch(r"([OY]AF)_([A-Za-z]+)_([A-Za-z_]+)", PurePosixPath(rel).stem, flags=re.IGNORECASE)
    if not m:
        raise ValueError("not a TESS name like OAF_back_angry.wav (speaker OAF/YAF, word, emotion)")
    spk, word, emotion = m.groups()
    return {"label": emotion.lower(), "speaker": spk.upper(), "word": word.lower()}


NEMO_EMOTIONS = ("anger", "fear", "happiness", "neutral", "sadness", "surprised")


def parse_nemo(rel: str) -> dict:
    m = re.fullmatch(r"([A-Z]{2}\d)_([a-z]+)_(\d+)", PurePosixPath(rel).stem)
    if not m or m.group(2) not in NEMO_EMOTIONS:
        raise ValueError("not an nEMO name like EB0_anger_12.flac (speaker, anger/fear/happiness/neutral/sadness/"
                         "surprised, number)")
    spk, emotion, number = m.groups()
    return {"label": emotion, "speaker": spk, "number": number}


def parse_savee(rel: str) -> dict:
    path = PurePosixPath(rel)
    m = re.fullmatch(r"(DC|JE|JK|KL)_(sa|su|a|d|f|h|n)(\d\d)", path.stem)
    if m:
        spk, code, number = m.groups()
    else:
        m = re.fullmatch(r"(sa|su|a|d|f|h|n)(\d\d)", path.stem)
        if not m or path.parent.name not in SAVEE_SPEAKERS:
            raise ValueError("not a SAVEE name like DC_a01.wav or DC/a01.wav (speaker DC/JE/JK/KL, emotion code, number)")
        spk, (code, number) = path.parent.name, m.groups()
    return {"label": SAVEE_EMOTIONS[code], "speaker": spk, "sentence": f"{code}{number}"}


DEFAULT_SPEAKER_PATTERN = r"^([^_\-\s.]+)"


def make_folder_parser(speaker_pattern: str | None) -> Callable[[str], dict]:
    """Folder per label: the label is the file's folder name; the speaker comes from ``speaker_pattern``.

    The pattern is a regular expression searched in the file name (without extension); its
    group ``speaker`` (or its first group, or the whole match) is the speaker.
    """
    pattern_text = speaker_pattern or DEFAULT_SPEAKER_PATTERN
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise UsageError(f"--speaker-pattern {pattern_text!r}: not a valid regular expression ({exc})") from None

    def parse_folder(rel: str) -> dict:
        path = PurePosixPath(rel)
        if len(path.parts) < 2:
            raise ValueError("file is not inside a label folder (expected <label>/<file>)")
        m = pattern.search(path.stem)
        if not m:
            raise ValueError(f"speaker pattern {pattern_text!r} does not match the file name")
        spk = m.groupdict().get("speaker") or (m.group(1) if m.groups() else m.group(0))
        return {"label": path.parent.name, "speaker": spk}

    return parse_folder


PARSERS: dict[str, Callable[[str], dict]] = {
    "emodb": parse_emodb, "ravdess": parse_ravdess, "nemo": parse_nemo, "crema-d": parse_cremad, "tess": parse_tess,
    "savee": parse_savee,
}
CORPUS_NAMES = (*PARSERS, "folder", "csv", "auto")
OWN_LABEL_CORPORA = ("folder", "csv")  # a user's own data: labels outside the canonical set are kept as they are
# per-file metadata some corpora ship beside the audio: (file, separator, key column, columns kept)
METADATA_FILES = {"nemo": ("data.tsv", "\t", "file_id", ("gender", "age", "raw_text"))}


@dataclass
class PrepareResult:
    """Rows that parsed, and every file left out with the reason."""

    corpus: str
    root: Path
    rows: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)  # {"path", "reason"}: did not parse or unreadable
    dropped: int = 0  # mapped to nothing by --label-map
    excluded: int = 0  # labels not in --labels
    own_labels: set = field(default_factory=set)  # labels outside the canonical set, kept as they are
    ignored: dict = field(default_factory=dict)  # extension -> count of files that are not audio


def detect_corpus(files: list[str]) -> str:
    """The named corpus whose parser reads the most file names (``folder`` when none reads any)."""
    best, best_hits = "folder", 0
    for name, parser in PARSERS.items():
        hits = 0
        for rel in files[:500]:
            try:
                parser(rel)
                hits += 1
            except ValueError:
                pass
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def prepare_corpus(corpus: str, root: str | Path, label_map: dict | None = None, labels: list[str] | None = None,
                   speaker_pattern: str | None = None, columns: dict | None = None) -> PrepareResult:
    """Parse the corpus under ``root`` (for ``csv``: ``root`` is the CSV file) into manifest rows.

    Labels map onto the canonical set (synonyms, ``label_map``); a user's own corpus (``folder``,
    ``csv``) keeps labels outside it as they are (lower-cased), a named corpus knows all of its own.
    """
    if corpus not in CORPUS_NAMES:
        raise UsageError(f"--corpus {corpus!r}: valid corpora are {', '.join(CORPUS_NAMES)}")
    root = Path(root)
    ignored = {}
    if corpus == "csv":
        entries, base = _read_source_csv(root, columns or {})
    else:
        if not root.is_dir():
            raise UsageError(f"--root {root}: not a folder")
        files, others = scan_folder(root)
        ignored = dict(others)
        if not files:
            raise UsageError(f"--root {root}: no audio files found (extensions read: {extensions_text()})")
        if corpus == "auto":
            corpus = detect_corpus(files)
        parser = make_folder_parser(speaker_pattern) if corpus == "folder" else PARSERS[corpus]
        entries, base = [], root
        for rel in files:
            try:
                entries.append((rel, parser(rel)))
            except ValueError as exc:
                entries.append((rel, str(exc)))
    result = PrepareResult(corpus, base, ignored=ignored)
    metadata = _corpus_metadata(corpus, base)
    for rel, parsed in entries:
        if isinstance(parsed, str):
            result.failed.append({"path": rel, "reason": parsed})
            continue
        label = canonical_label(parsed["label"], label_map)
        if label is None and corpus in OWN_LABEL_CORPORA and str(parsed["label"]).strip():
            label = str(parsed["label"]).strip().lower()
            result.own_labels.add(label)
        if label is None:
            result.failed.append({"path": rel, "reason": f"label {parsed['label']!r} is not a known emotion; "
                                  "map it with --label-map (canonical labels: neutral, calm, happy, sad, angry, "
                                  "fearful, disgust, surprised, boredom)"})
            continue
        if label == DROP:
            result.dropped += 1
            continue
        if labels is not None and label not in labels:
            result.excluded += 1
            continue
        try:
            duration = audio_duration(_abs(base, rel))
        except AudioError as exc:
            result.failed.append({"path": rel, "reason": str(exc).split(": ", 1)[-1]})
            continue
        if duration <= 0:
            result.failed.append({"path": rel, "reason": "audio holds no samples"})
            continue
        extras = {k: v for k, v in parsed.items() if k not in ("label", "speaker")}
        extras.update(metadata.get(PurePosixPath(rel).name, {}))
        result.rows.append({"path": rel, "label": label, "speaker": str(parsed["speaker"]), "corpus": corpus,
                            "duration_s": round(duration, 4), "split": "", **extras})
    if labels is not None:
        found = {r["label"] for r in result.rows}
        missing = [lab for lab in labels if lab not in found]
        if missing:
            raise UsageError(f"--labels: no file has label {missing[0]!r} in {root}; labels found: "
                             f"{', '.join(sorted(found)) or '(none)'}")
    return result


def merge_corpora(results: list[PrepareResult], out_dir: str | Path) -> list[dict]:
    """One manifest's rows over several prepared corpora: paths relative to ``out_dir`` (the manifest's
    folder, so the manifest needs no data root) and speakers prefixed with their corpus (``emodb:03``),
    since two corpora may number their speakers alike."""
    import os

    names = [r.corpus for r in results]
    # two corpora of one kind (a user's two folders) are told apart by their folders' names
    names = [f"{n}-{r.root.name}" if names.count(n) > 1 else n for n, r in zip(names, results)]
    if len(set(names)) != len(names):
        raise UsageError(f"each corpus may be given once; got {', '.join(names)} (two corpora of one kind need "
                         f"folders of different names)")
    rows = []
    for name, result in zip(names, results):
        for row in result.rows:
            path = Path(os.path.relpath(_abs(result.root, row["path"]).resolve(), Path(out_dir).resolve()))
            rows.append({**row, "path": path.as_posix(), "speaker": f"{name}:{row['speaker']}", "corpus": name})
    return rows


def _corpus_metadata(corpus: str, root: Path) -> dict[str, dict]:
    """``{file name: {column: value}}`` from the metadata file a corpus ships (nEMO's data.tsv), if present."""
    if corpus not in METADATA_FILES or not (root / METADATA_FILES[corpus][0]).is_file():
        return {}
    name, sep, key, keep = METADATA_FILES[corpus]
    with open(root / name, newline="", encoding="utf-8") as fh:
        return {row[key]: {k: row.get(k, "") for k in keep} for row in csv.DictReader(fh, delimiter=sep)}


def _abs(base: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else base / p


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _read_source_csv(path: Path, columns: dict) -> tuple[list, Path]:
    """Rows of a user's CSV (columns ``path,label,speaker`` or renamed with ``columns``)."""
    if not path.is_file():
        raise UsageError(f"--root {path}: for --corpus csv, --root is the CSV file; no such file")
    names = {"path": columns.get("path", "path"), "label": columns.get("label", "label"),
             "speaker": columns.get("speaker", "speaker")}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [f"{key} (column {col!r})" for key, col in names.items() if col not in header]
        if missing:
            raise UsageError(f"--root {path}: missing {', '.join(missing)}; columns found: {', '.join(header)}. "
                             "Rename with --column path=NAME, --column label=NAME, --column speaker=NAME")
        entries = []
        for i, row in enumerate(reader, start=2):
            rel = (row.get(names["path"]) or "").strip()
            if not rel:
                entries.append((f"{path.name}:{i}", "empty path"))
                continue
            if not _abs(path.parent, rel).is_file():
                entries.append((rel, "file not found"))
                continue
            extras = {k: v for k, v in row.items() if k not in names.values() and k not in ("split", "corpus", "duration_s")}
            entries.append((rel, {"label": row.get(names["label"], ""), "speaker": row.get(names["speaker"], ""), **extras}))
    for k, (rel, parsed) in enumerate(entries):
        if isinstance(parsed, dict) and not str(parsed["speaker"]).strip():
            entries[k] = (rel, "empty speaker")
    return entries, path.parent
