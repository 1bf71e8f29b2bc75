"""`emodet report`: one self-contained HTML page for a run, a cross-validation, an ensemble or a benchmark;
its numbers against the JSON files, its bootstrap intervals, its audio, and a real browser rendering it."""

import argparse
import base64
import importlib.util
import io
import json
import os
import re
import shutil
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emodet.evaluation.bootstrap import figures_of_confusions, speaker_bootstrap
from emodet.evaluation.metrics import classification_metrics, metrics_from_confusion
from emodet.evaluation.report import write_report
from emodet.evaluation.report_review import MAX_MISTAKES, MAX_SECONDS

from conftest import REPO, cli

FAST = ["--set", "training.epochs=2", "--set", "model.preset=tiny", "--no-progress"]
SECTIONS = {"setup": "What was run", "results": "Results", "confidence": "Confidence", "mistakes": "Worst mistakes"}


@pytest.fixture(scope="module")
def made(tmp_path_factory, synth_corpus):
    """A cross-validation and two runs made through the CLI (whose hooks write report.html), and an ensemble."""
    base = tmp_path_factory.mktemp("report")
    common = ["--data-root", synth_corpus, "--runs-dir", base / "runs", "--set", f"features.cache_dir={base / 'c'}", *FAST]
    cv = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv", *common)
    assert cv.returncode == 0, cv.stderr
    for seed, extra in ((0, []), (1, ["--no-report"])):
        run = cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", f"m{seed}", *common,
                  "--set", "data.split.val=1", "--set", "data.split.test=1", "--set", f"training.seed={seed}", *extra)
        assert run.returncode == 0, run.stderr
    assert cli("ensemble", base / "runs" / "m0", base / "runs" / "m1", "--out", base / "ens").returncode == 0
    return {"base": base, "cv": base / "runs" / "cv", "m0": base / "runs" / "m0", "m1": base / "runs" / "m1",
            "ens": base / "ens", "cv_stdout": cv.stdout}


def page_data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="emodet-report-data">(.*?)</script>', html,
                                re.S).group(1))


def check_offline_and_sections(html: str, sections=SECTIONS) -> None:
    assert "http://" not in html and "https://" not in html  # nothing to fetch: no URL at all
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", html)
    for anchor, title in sections.items():
        assert f'<section id="{anchor}">' in html and f"<h2>{title}</h2>" in html, anchor


def check_figures(html: str, block: dict, labels: list) -> None:
    """The headline, per-class and confusion figures of the page are those of ``block`` (a metrics.json block)."""
    for key in ("uar", "wa", "macro_f1"):
        assert f'<td data-metric="{key}">{block[key]:.3f}</td>' in html
    for lab in labels:
        c = block["per_class"][lab]
        assert (f"<tr><td>{lab}</td><td>{c['precision']:.3f}</td><td>{c['recall']:.3f}</td><td>{c['f1']:.3f}</td>"
                f"<td>{c['support']}</td></tr>") in html
    cm_table = html[html.index('<table class="cm">'):]
    cm_table = cm_table[:cm_table.index("</table>")]
    assert [int(n) for n in re.findall(r">(\d+)<small>", cm_table)] == [n for row in block["confusion_matrix"] for n in row]


def check_interval(head: dict, block: dict) -> None:
    for key in ("uar", "wa", "macro_f1"):
        assert head[key]["value"] == block[key]
        assert head[key]["low"] <= head[key]["value"] <= head[key]["high"]


def test_run_report_holds_every_section_and_the_json_figures(trained_runs, tmp_path):
    run = trained_runs / "cnn"
    out = write_report(run, tmp_path / "cnn.html")
    html = out.read_text()
    check_offline_and_sections(html)
    m = json.loads((run / "metrics.json").read_text())
    check_figures(html, m["test"], m["labels"])
    data = page_data(html)
    check_interval(data["headline"], m["test"])
    assert data["headline"]["n_speakers"] == 1 and data["headline"]["uar"]["low"] == data["headline"]["uar"]["high"]
    assert "no spread can be estimated" in html
    # what was run: config, version, data by split and label, normalisation and what it needs, time and size
    assert (run / "config.yaml").read_text().splitlines()[1].strip() in html
    assert f"trained with {m['emodet_version']}" in html and f"{m['parameters']:,} parameters" in html
    assert "at deployment it needs a few recordings of the speaker" in html
    assert f"{m['train_seconds']:.1f} s" in html and "<td>total</td>" in html
    # confidence: trained with no validation split, so no temperature, and the page says so
    assert m["calibration"]["fitted_on"] is None and data["ece"] is None
    assert '<p class="note" id="not-calibrated">Not calibrated: no validation split' in html
    # worst mistakes: embedded FLAC, capped in number and length
    clips = re.findall(r'src="data:audio/flac;base64,([A-Za-z0-9+/=]+)"', html)
    wrong = sum(r["label"] != r["predicted"] for r in _csv(run / "predictions_test.csv"))
    assert len(clips) == min(wrong, MAX_MISTAKES) > 0
    for clip in clips:
        wav, sr = sf.read(io.BytesIO(base64.b64decode(clip)))
        assert sr == 16000 and 0 < len(wav) <= MAX_SECONDS * sr
    for figure in re.findall(r"<svg.*?</svg>", html, re.S):
        assert figure.count("<text") >= 6 and "(0-1)" in figure or "epoch" in figure  # labelled axes, with units


def test_run_without_test_split_shows_validation_figures_and_says_so(trained_runs, tmp_path):
    html = write_report(trained_runs / "fc", tmp_path / "fc.html", audio="none").read_text()
    m = json.loads((trained_runs / "fc" / "metrics.json").read_text())
    check_offline_and_sections(html)
    check_figures(html, m["val"], m["labels"])
    assert "validation speakers" in html and "These are validation figures" in html
    assert "<audio" not in html and "at deployment it needs nothing" in html
    # confidence: the calibration block's figures (judged on the validation speakers it was fitted on) and diagram
    cal = m["calibration"]
    assert f'<td data-metric="ece_after">{cal["ece_after"]:.3f}</td>' in html and "optimistic" in html
    assert page_data(html)["ece"]["temperature"] == cal["temperature"] and 'aria-label="reliability diagram' in html


def test_train_and_cv_write_their_report_unless_told_not_to(made):
    assert (made["cv"] / "report.html").is_file() and "report -> " in made["cv_stdout"]
    assert (made["m0"] / "report.html").is_file() and not (made["m1"] / "report.html").exists()
    html = (made["cv"] / "report.html").read_text()
    check_offline_and_sections(html)
    s = json.loads((made["cv"] / "cv_summary.json").read_text())
    check_figures(html, s["pooled"], s["pooled"]["labels"])
    data = page_data(html)
    check_interval(data["headline"], s["pooled"])
    assert data["per_speaker"] == s["per_speaker"] and data["headline"]["n_speakers"] == 3
    for f in s["folds"]:  # every fold, and the pooled figures
        assert f"<td>{f['uar']:.3f}</td><td>{f['wa']:.3f}</td><td>{f['macro_f1']:.3f}</td><td>{f['best_epoch']}</td>" in html
    assert f"{s['uar_mean']:.3f} &plusmn; {s['uar_std']:.3f}" in html
    assert "learning curves of the folds" in html


def test_report_failure_is_a_warning_and_no_report_is_a_flag(tmp_path):
    from emodet.cli import build_parser
    from emodet.cli.report import report_or_warn

    with pytest.warns(UserWarning, match="was not written"):
        report_or_warn(tmp_path / "nothing", argparse.Namespace(no_report=False))
    args = build_parser().parse_args(["cv", "--config", "c.yaml", "--folds", "loso", "--run-name", "x", "--no-report"])
    assert args.no_report


def test_ensemble_report_shows_members_beside_the_fusion(made):
    html = write_report(made["ens"], audio="link").read_text()
    check_offline_and_sections(html)
    fused = json.loads((made["ens"] / "eval_test.json").read_text())  # evaluated for the report
    check_figures(html, fused, fused["labels"])
    members = html[html.index('<table class="compare">'):]
    members = members[:members.index("</table>")]
    for run in ("m0", "m1"):
        m = json.loads((made[run] / "metrics.json").read_text())
        assert f'<td title="{made[run]}">{run}</td>' in members and f"{m['uar']:.3f}<br>" in members
    assert '<tr class="fusion">' in members and "an ensemble has no temperature of its own" in html
    for src in re.findall(r'<audio controls preload="metadata" src="([^"]+)"', html):  # linked, relative to the page
        assert (made["ens"] / urllib.parse.unquote(src)).resolve().is_file()


def test_compare_puts_runs_and_cross_validations_in_one_table(made, tmp_path):
    out = cli("report", made["cv"], "--compare", made["m0"], made["ens"], "--out", tmp_path / "c.html", "--audio", "none")
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "c.html").read_text()
    check_offline_and_sections(html, {**SECTIONS, "compare": "Comparison"})
    table = html[html.index('<section id="compare">'):]
    for path, figures in ((made["cv"], json.loads((made["cv"] / "cv_summary.json").read_text())["pooled"]),
                          (made["m0"], json.loads((made["m0"] / "metrics.json").read_text())["test"])):
        assert f'<td title="{path}">{path.name}</td>' in table
        assert f'<td data-metric="uar">{figures["uar"]:.3f}<br>' in table
        for lab, c in figures["per_class"].items():
            assert f"<td>{c['recall']:.3f}</td>" in table
    bad = cli("report", tmp_path / "nothing")
    assert bad.returncode == 2 and "not found" in bad.stderr
    (tmp_path / "broken.json").write_text('{"rows": [')
    broken = cli("report", tmp_path / "broken.json")
    assert broken.returncode == 2 and "not a run, cross-validation, ensemble or benchmark" in broken.stderr


def test_benchmark_tables_render_with_their_references(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_accuracy", REPO / "bench" / "accuracy.py")
    accuracy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(accuracy)
    args = argparse.Namespace(json=tmp_path / "acc.json", no_report=False, runs_dir=tmp_path, corpus="emodb", folds="loso")
    accuracy.write_table(args, {"fc_compare": {"UAR": 0.8304, "WA": 0.84, "F1": 0.82, "fold UAR": 0.81,
                                               "fold UAR std": 0.07, "params": 123456, "CV min": 3.2}}, "emodb, LOSO", "")
    html = (tmp_path / "acc.html").read_text()
    check_offline_and_sections(html, {"benchmark": "Benchmark"})
    assert "<td>fc_compare</td><td>0.830</td>" in html and "<td>123,456</td><td>3.2</td>" in html
    assert '<tr class="ref"><td>ComParE + SVM (reference)</td><td>0.830</td>' in html
    cross = {"rows": {"a [none]": {"emodb": 0.6, "ravdess": 0.5, "nemo": 0.4},
                      "eGeMAPS + linear SVM, reference [none]": {"emodb": 0.5, "ravdess": 0.4, "nemo": 0.3}},
             "labels": ["neutral", "happy"], "corpora": ["emodb", "ravdess", "nemo"]}
    (tmp_path / "cc").mkdir()
    (tmp_path / "cc" / "cross_corpus.json").write_text(json.dumps(cross))
    html = write_report(tmp_path / "cc").read_text()  # a benchmark's folder; the page beside its JSON
    assert "<th>mean</th>" in html and "<td>a [none]</td><td>0.600</td><td>0.500</td><td>0.400</td><td>0.500</td>" in html
    assert '<tr class="ref"><td>eGeMAPS + linear SVM, reference [none]</td>' in html


def _rows(n_speakers: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c"]
    rows = []
    for s in range(n_speakers):
        skill = rng.uniform(0.3, 0.9)  # speakers differ: the spread the interval should show
        for i in range(12):
            truth = labels[i % 3]
            rows.append({"speaker": f"s{s}", "label": truth,
                         "predicted": truth if rng.random() < skill else labels[(i + 1) % 3]})
    return rows


def test_speaker_bootstrap_contains_the_point_and_is_reproducible():
    labels = ["a", "b", "c"]
    rows = _rows(8)
    ci = speaker_bootstrap(rows, labels, draws=1000, seed=5)
    index = {lab: i for i, lab in enumerate(labels)}
    exact = classification_metrics([index[r["label"]] for r in rows], [index[r["predicted"]] for r in rows], labels)
    for key in ("uar", "wa", "macro_f1"):
        assert ci[key]["value"] == pytest.approx(exact[key], abs=1e-12)
        assert ci[key]["low"] < ci[key]["value"] < ci[key]["high"]
    assert speaker_bootstrap(rows, labels, draws=1000, seed=5) == ci
    assert speaker_bootstrap(rows, labels, draws=1000, seed=6)["uar"] != ci["uar"]
    one = speaker_bootstrap(_rows(1), labels)
    assert one["n_speakers"] == 1 and one["uar"]["low"] == one["uar"]["value"] == one["uar"]["high"]


def test_vectorised_figures_follow_the_metric_conventions():
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 6, size=(20, 4, 4))
    cms[:5, 2, :] = 0  # a class absent from the targets
    cms[5:10, :, 1] = 0  # a class never predicted
    got = figures_of_confusions(cms)
    for i, cm in enumerate(cms):
        want = metrics_from_confusion(cm)
        for key in ("uar", "wa", "macro_f1"):
            assert got[key][i] == pytest.approx(want[key], abs=1e-12)


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _browser():
    chromium = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no browser for the real-browser check of the report: install Chromium and its driver "
                    "(Debian: apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def test_a_real_browser_renders_the_page_plays_its_audio_and_prints_it(made, tmp_path):
    """Headless Chromium: sections shown, figures drawn, embedded audio decoded, no sideways scrolling in a
    narrow window, a PDF printed. EMODET_UPDATE_SCREENSHOT=1 (or =REPORT.html, another page) also writes
    docs/report.png for the README."""
    browser = _browser()
    try:
        browser.set_window_size(1100, 1900)
        browser.get((made["cv"] / "report.html").resolve().as_uri())
        assert browser.title == "emodet report: cv"
        for anchor in SECTIONS:
            assert browser.find_element("id", anchor).is_displayed()
        widths = browser.execute_script("return [...document.querySelectorAll('svg')].map(s => s.getBoundingClientRect().width)")
        assert len(widths) >= 3 and min(widths) > 200
        browser.execute_script("document.querySelectorAll('audio').forEach(a => a.load())")
        ready = browser.execute_async_script("""const done = arguments[arguments.length - 1];
            const audio = [...document.querySelectorAll('audio')];
            const check = (n) => audio.every(a => a.readyState >= 1 && a.duration > 0) || n === 0
                ? done(audio.map(a => a.duration)) : setTimeout(() => check(n - 1), 100);
            check(50);""")
        assert ready and all(d and 0 < d <= MAX_SECONDS + 0.1 for d in ready), ready
        pdf = base64.b64decode(browser.print_page())
        assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 2
        screenshot(browser, tmp_path / "report.png")
        assert (tmp_path / "report.png").stat().st_size > 10_000
        browser.set_window_size(420, 900)
        width, overflow = browser.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth - window.innerWidth]")
        assert width <= 440 and overflow <= 0, f"the page scrolls sideways by {overflow} px in a {width} px window"
        page = os.environ.get("EMODET_UPDATE_SCREENSHOT")  # the README's picture: 1 for this page, or a report's path
        if page:
            browser.set_window_size(1100, 1900)
            browser.get((made["cv"] / "report.html" if page == "1" else Path(page)).resolve().as_uri())
            screenshot(browser, REPO / "docs" / "report.png")
    finally:
        browser.quit()


def screenshot(browser, path: Path) -> None:
    """The top of the page, the long config folded."""
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = false)")
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
