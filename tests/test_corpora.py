import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emodet.data.corpora import detect_corpus, prepare_corpus
from emodet.data.labels import load_label_map
from emodet.data.manifest import read_manifest
from emodet.core.errors import UsageError

from conftest import EMODB, RAVDESS, cli


def _touch_audio(root: Path, rels, ext_cycle=(".wav",)):
    tone = (0.1 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    for i, rel in enumerate(rels):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}[path.suffix]
        sf.write(path, tone, 16000, format=fmt, subtype="VORBIS" if fmt == "OGG" else "PCM_16")


def test_emodb_names(tmp_path):
    _touch_audio(tmp_path, ["03a01Fa.wav", "10b09Wc.flac", "16a05Ld.wav", "08a02Ea.ogg", "readme_notes.wav"])
    res = prepare_corpus("emodb", tmp_path)
    by_path = {r["path"]: r for r in res.rows}
    assert by_path["03a01Fa.wav"]["label"] == "happy" and by_path["03a01Fa.wav"]["speaker"] == "03"
    assert by_path["10b09Wc.flac"]["label"] == "angry" and by_path["10b09Wc.flac"]["gender"] == "male"
    assert by_path["16a05Ld.wav"]["label"] == "boredom" and by_path["08a02Ea.ogg"]["label"] == "disgust"
    assert abs(by_path["03a01Fa.wav"]["duration_s"] - 0.1) < 1e-3
    assert [f["path"] for f in res.failed] == ["readme_notes.wav"] and "EmoDB name" in res.failed[0]["reason"]


def test_ravdess_names_speech_and_song(tmp_path):
    _touch_audio(tmp_path, ["Actor_01/03-01-05-02-01-01-01.wav", "Actor_02/03-02-03-01-02-02-02.flac",
                            "Actor_02/03-01-09-01-01-01-02.wav"])
    res = prepare_corpus("ravdess", tmp_path)
    rows = {r["path"]: r for r in res.rows}
    a = rows["Actor_01/03-01-05-02-01-01-01.wav"]
    assert (a["label"], a["speaker"], a["intensity"], a["vocal_channel"], a["statement"], a["gender"]) == \
        ("angry", "01", "strong", "speech", "01", "male")
    b = rows["Actor_02/03-02-03-01-02-02-02.flac"]
    assert (b["label"], b["vocal_channel"], b["gender"]) == ("happy", "song", "female")
    assert len(res.failed) == 1 and "out of range" in res.failed[0]["reason"]


def test_cremad_tess_savee_names(tmp_path):
    _touch_audio(tmp_path / "c", ["1001_DFA_ANG_XX.wav", "1091_IEO_SAD_HI.wav", "1002_ITS_XYZ_LO.wav"])
    res = prepare_corpus("crema-d", tmp_path / "c")
    assert {(r["speaker"], r["label"], r["intensity"]) for r in res.rows} == {("1001", "angry", "unspecified"),
                                                                            ("1091", "sad", "high")}
    assert len(res.failed) == 1
    _touch_audio(tmp_path / "t", ["OAF_angry/OAF_back_angry.wav", "YAF_pleasant_surprised/YAF_dog_ps.wav",
                                  "OAF_Fear/OAF_bath_fear.wav", "YAF_neutral/YAF_date_neutral.wav"])
    res = prepare_corpus("tess", tmp_path / "t")
    assert sorted((r["speaker"], r["label"]) for r in res.rows) == [("OAF", "angry"), ("OAF", "fearful"),
                                                                   ("YAF", "neutral"), ("YAF", "surprised")]
    _touch_audio(tmp_path / "s", ["DC_a01.wav", "JE_sa03.wav", "AudioData/KL/su15.wav", "AudioData/JK/n02.wav"])
    res = prepare_corpus("savee", tmp_path / "s")
    assert sorted((r["speaker"], r["label"]) for r in res.rows) == [("DC", "angry"), ("JE", "sad"), ("JK", "neutral"),
                                                                   ("KL", "surprised")]


def test_folder_per_label_with_speaker_pattern(tmp_path):
    _touch_audio(tmp_path, ["happy/spk1_001.wav", "Anger/spk2-003.wav", "sad/rec_speakerB_9.wav", "loose.wav"])
    res = prepare_corpus("folder", tmp_path)
    got = {r["path"]: (r["label"], r["speaker"]) for r in res.rows}
    assert got["happy/spk1_001.wav"] == ("happy", "spk1") and got["Anger/spk2-003.wav"] == ("angry", "spk2")
    assert got["sad/rec_speakerB_9.wav"] == ("sad", "rec")
    assert res.failed[0]["path"] == "loose.wav" and "label folder" in res.failed[0]["reason"]
    res = prepare_corpus("folder", tmp_path, speaker_pattern=r"speaker(?P<speaker>[A-Z])")
    assert {r["speaker"] for r in res.rows} == {"B"} and len(res.failed) == 3
    with pytest.raises(UsageError, match="not a valid regular expression"):
        prepare_corpus("folder", tmp_path, speaker_pattern="(")


def test_csv_source_label_map_and_subset(tmp_path):
    _touch_audio(tmp_path, ["a/1.wav", "a/2.wav", "b/3.wav", "b/4.wav"])
    (tmp_path / "list.csv").write_text("file,emotion,actor,session\na/1.wav,Joy,x,s1\na/2.wav,anger,x,s1\n"
                                       "b/3.wav,contempt,y,s2\nb/4.wav,neutral,y,s2\nmissing.wav,sad,z,s3\n")
    with pytest.raises(UsageError, match=r"missing path \(column 'path'\).*--column path=NAME"):
        prepare_corpus("csv", tmp_path / "list.csv")
    cols = {"path": "file", "label": "emotion", "speaker": "actor"}
    res = prepare_corpus("csv", tmp_path / "list.csv", columns=cols)
    # synonyms map onto the canonical labels; a user's own label ("contempt") is kept as it is
    assert {r["path"]: r["label"] for r in res.rows} == {"a/1.wav": "happy", "a/2.wav": "angry", "b/3.wav": "contempt",
                                                         "b/4.wav": "neutral"}
    assert res.rows[0]["session"] == "s1" and res.own_labels == {"contempt"}
    reasons = {f["path"]: f["reason"] for f in res.failed}
    assert reasons == {"missing.wav": "file not found"}
    (tmp_path / "map.yaml").write_text("contempt: disgust\nneutral: null\n")
    res = prepare_corpus("csv", tmp_path / "list.csv", columns=cols, label_map=load_label_map(tmp_path / "map.yaml"))
    assert sorted(r["label"] for r in res.rows) == ["angry", "disgust", "happy"] and res.dropped == 1
    res = prepare_corpus("csv", tmp_path / "list.csv", columns=cols, labels=["happy", "angry"])
    assert len(res.rows) == 2 and res.excluded == 2
    with pytest.raises(UsageError, match="no file has label 'surprised'"):
        prepare_corpus("csv", tmp_path / "list.csv", columns=cols, labels=["happy", "surprised"])
    (tmp_path / "map.csv").write_text("from,to\njoy,calm\n")
    assert load_label_map(tmp_path / "map.csv") == {"joy": "calm"}


def test_unreadable_audio_is_listed(tmp_path):
    _touch_audio(tmp_path, ["03a01Fa.wav"])
    (tmp_path / "03a01Wb.wav").write_bytes(b"not audio")
    (tmp_path / "03a02Wb.wav").write_bytes(b"")
    res = prepare_corpus("emodb", tmp_path)
    assert len(res.rows) == 1 and sorted(f["path"] for f in res.failed) == ["03a01Wb.wav", "03a02Wb.wav"]
    reasons = {f["path"]: f["reason"] for f in res.failed}
    assert reasons["03a02Wb.wav"] == "zero-byte file" and reasons["03a01Wb.wav"].startswith("cannot decode audio")


def test_auto_detection(tmp_path):
    assert detect_corpus(["03a01Fa.wav", "08b02Tb.wav"]) == "emodb"
    assert detect_corpus(["Actor_01/03-01-05-02-01-01-01.wav"]) == "ravdess"
    assert detect_corpus(["1001_DFA_ANG_XX.wav"]) == "crema-d"
    assert detect_corpus(["happy/x_1.wav"]) == "folder"


def test_cli_prepare_writes_manifest_and_unparsed_list(tmp_path, synth_corpus):
    out = cli("data", "prepare", "--corpus", "folder", "--root", synth_corpus, "--out", tmp_path / "m.csv",
                  "--val", "1", "--test", "1", "--folds", "3")
    assert out.returncode == 0, out.stderr
    rows = read_manifest(tmp_path / "m.csv")
    assert len(rows) == 45 and {r["split"] for r in rows} == {"train", "val", "test"}
    assert {r["fold"] for r in rows} == {"0", "1", "2"} and {r["loso_fold"] for r in rows} == {"0", "1", "2"}
    assert "train   1 speakers" in out.stdout
    bad = cli("data", "prepare", "--corpus", "emodb", "--root", synth_corpus, "--out", tmp_path / "e.csv")
    assert bad.returncode == 2 and "no file parsed as corpus 'emodb'" in bad.stderr
    few = cli("data", "prepare", "--corpus", "folder", "--root", synth_corpus, "--out", tmp_path / "f.csv",
                  "--val", "2", "--test", "1")
    assert few.returncode == 2 and "needs at least 4 speakers" in few.stderr and "the data has 3" in few.stderr


@pytest.mark.skipif(not EMODB.is_dir(), reason="../shared/datasets/emodb is not here")
def test_real_emodb(tmp_path):
    res = prepare_corpus("auto", EMODB)
    assert res.corpus == "emodb" and len(res.rows) == 535 and not res.failed
    assert len({r["speaker"] for r in res.rows}) == 10
    assert Counter(r["label"] for r in res.rows) == {"angry": 127, "boredom": 81, "disgust": 46, "fearful": 69,
                                                    "happy": 71, "sad": 62, "neutral": 79}


@pytest.mark.skipif(not RAVDESS.is_dir(), reason="../shared/datasets/ravdess is not here")
def test_real_ravdess(tmp_path):
    res = prepare_corpus("ravdess", RAVDESS)
    assert len(res.rows) == 1434 and not res.failed
    assert all(r["path"].endswith(".flac") and r["path"].startswith("Actor_") for r in res.rows)
    assert len({r["speaker"] for r in res.rows}) == 24
    assert Counter(r["label"] for r in res.rows) == {"neutral": 96, "calm": 189, "happy": 191, "sad": 192,
                                                    "angry": 192, "fearful": 191, "disgust": 192, "surprised": 191}


def test_cli_prepare_lists_unparsed_files_and_exits_1(tmp_path, synth_corpus):
    import shutil

    root = tmp_path / "corpus"
    shutil.copytree(synth_corpus, root)
    (root / "neutral" / "spk01_broken.wav").write_bytes(b"RIFF....")
    (root / "stray.wav").write_bytes(b"")
    out = cli("data", "prepare", "--corpus", "folder", "--root", root, "--out", tmp_path / "m.csv", "--val", "1",
                  "--test", "1")
    assert out.returncode == 1
    assert "2 file(s) not in the manifest" in out.stderr and "m.unparsed.csv" in out.stderr
    listed = {r["path"]: r["reason"] for r in csv.DictReader(open(tmp_path / "m.unparsed.csv"))}
    assert set(listed) == {"neutral/spk01_broken.wav", "stray.wav"}
    assert len(read_manifest(tmp_path / "m.csv")) == 45


def _nemo(root: Path) -> None:
    names = ["EB0_anger_1.flac", "EB0_happiness_2.flac", "IC0_sadness_1.flac", "IC0_neutral_3.flac", "IC0_fear_4.flac"]
    _touch_audio(root / "audio", names + ["EB0_joy_1.flac"])
    with open(root / "data.tsv", "w", encoding="utf-8") as fh:
        fh.write("file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage\n")
        for n in names:
            fh.write(f"{n}\t{n.split('_')[1]}\tLubię czytać.\tlubię czytać\t{n[:3]}\t{'female' if n[0] == 'E' else 'male'}\t27\n")


def test_nemo_names_and_metadata(tmp_path):
    _nemo(tmp_path)
    res = prepare_corpus("auto", tmp_path)
    assert res.corpus == "nemo"
    rows = {r["path"]: r for r in res.rows}
    assert {(r["speaker"], r["label"]) for r in res.rows} == {("EB0", "angry"), ("EB0", "happy"), ("IC0", "sad"),
                                                             ("IC0", "neutral"), ("IC0", "fearful")}
    assert rows["audio/EB0_anger_1.flac"]["gender"] == "female" and rows["audio/EB0_anger_1.flac"]["raw_text"] == "Lubię czytać."
    assert [f["path"] for f in res.failed] == ["audio/EB0_joy_1.flac"] and "nEMO name" in res.failed[0]["reason"]


def test_one_manifest_over_several_corpora_and_leave_one_corpus_out(tmp_path):
    """Several --corpus/--root pairs: a corpus column, paths relative to the manifest (no data root), speakers
    prefixed by corpus, --labels keeps the shared classes; two folder corpora are told apart by their folders."""
    from emodet.data.splits import corpus_folds

    _touch_audio(tmp_path / "emodb", ["03a01Wa.wav", "03a02Ta.wav", "10b09Nc.wav", "10a05Ld.wav"])
    _nemo(tmp_path / "nemo")
    _touch_audio(tmp_path / "mine", ["angry/03_a.wav", "sad/04_b.wav", "neutral/04_c.wav"])
    _touch_audio(tmp_path / "theirs", ["angry/03_c.wav", "neutral/05_d.wav", "sad/05_e.wav"])
    out = tmp_path / "out" / "all.csv"
    done = cli("data", "prepare", "--corpus", "emodb", "--root", tmp_path / "emodb", "--corpus", "nemo", "--root",
               tmp_path / "nemo", "--corpus", "folder", "--root", tmp_path / "mine", "--corpus", "folder", "--root",
               tmp_path / "theirs", "--labels", "neutral,sad,angry", "--out", out, "--val", "0", "--test", "0")
    assert done.returncode in (0, 1), done.stderr  # 1: the unparsed nEMO file is listed
    rows = read_manifest(out)
    assert {r["corpus"] for r in rows} == {"emodb", "nemo", "folder-mine", "folder-theirs"}
    assert {r["label"] for r in rows} == {"neutral", "sad", "angry"}  # boredom, happiness, fear left out
    assert {r["speaker"] for r in rows if r["corpus"] == "emodb"} == {"emodb:03", "emodb:10"}
    assert {r["speaker"] for r in rows if r["corpus"].startswith("folder")} == {"folder-mine:03", "folder-mine:04",
                                                                               "folder-theirs:03", "folder-theirs:05"}
    for r in rows:  # relative to the manifest's own folder
        assert not Path(r["path"]).is_absolute() and (out.parent / r["path"]).is_file()
    folds = corpus_folds(rows)
    assert len(set(folds.values())) == 4 and folds["folder-mine:03"] != folds["folder-theirs:03"]
    with pytest.raises(UsageError, match="at least 2 corpora"):
        corpus_folds([r for r in rows if r["corpus"] == "nemo"])
    same = cli("data", "prepare", "--corpus", "emodb", "--root", tmp_path / "emodb", "--corpus", "emodb", "--root",
               tmp_path / "emodb", "--out", tmp_path / "twice.csv")
    assert same.returncode == 2 and "each corpus may be given once" in same.stderr
