"""The listening report (`eval --html`) and its blind test, opened in a real headless browser,
and `vqaudio listen-results`."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, run_main

from vqaudio.errors import VQAudioError
from vqaudio.evaluation.listening import (
    ANCHOR,
    HIDDEN_REFERENCE,
    low_pass_anchor,
    read_results,
    summarise,
)
from vqaudio.evaluation.metrics import magnitude

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def browser():
    """Headless Chromium from the distribution, driven by Selenium; skipped with the reason when absent."""
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no chromium and chromedriver on PATH (Debian: apt install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tempfile.mkdtemp(prefix="vqaudio-downloads-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='vqaudio-chromium-')}"):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": downloads, "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    return driver, Path(downloads)


def _wait(condition, seconds: float = 20.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return condition()


@pytest.mark.slow
def test_the_report_page_plays_every_clip_and_its_listening_test_downloads_every_rating(trained, tmp_path, capsys):
    _, checkpoint = trained
    clips = tmp_path / "clips"
    for i in range(2):
        invoke("demo-clip", str(clips / f"demo{i}_{i}.wav"), "--speaker", str(i), "--seconds", "1.0", "--sample-rate", "8000")
    page = tmp_path / "report.html"
    invoke("eval", "-c", str(checkpoint), "--data", str(clips), "--metrics", "stoi", "--html", str(page))
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing to fetch: it opens offline
    driver, downloads = browser()
    try:
        driver.get(page.as_uri())
        states = _wait(lambda: (s := driver.execute_script(
            "return Array.from(document.querySelectorAll('audio')).map(a => [a.readyState, a.duration])"
        )) and all(state >= 2 for state, _ in s) and s)  # fmt: skip
        assert states and all(state >= 2 and 0.9 < duration < 1.2 for state, duration in states), states
        sliders = driver.find_elements("css selector", "input[type=range]")
        for i, slider in enumerate(sliders):
            driver.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));", slider, 7 * i % 101)
        hidden_before = driver.execute_script("return Array.from(document.querySelectorAll('.key')).filter(k => !k.hidden).length")
        driver.find_element("id", "submit").click()
        files = _wait(lambda: sorted(p.name for p in downloads.iterdir() if not p.name.endswith(".crdownload")) if len(list(downloads.glob("listening_*"))) >= 2 else None)
        revealed = driver.execute_script("return Array.from(document.querySelectorAll('.key')).filter(k => !k.hidden).length")
    finally:
        driver.quit()
    assert files == ["listening_listener.csv", "listening_listener.json"]
    assert hidden_before == 0 and revealed == len(sliders)  # the key appears only after submitting
    results = json.loads((downloads / "listening_listener.json").read_text())
    ratings = results["ratings"]
    assert len(ratings) == len(sliders) and sorted(r["score"] for r in ratings) == sorted(7 * i % 101 for i in range(len(sliders)))
    per_clip = {clip: {r["system"] for r in ratings if r["clip"] == clip} for clip in ("demo0_0", "demo1_1")}
    for systems in per_clip.values():  # every system, the hidden reference and the anchor, in each trial
        assert {"vqaudio", HIDDEN_REFERENCE, ANCHOR} <= systems
    csv_lines = (downloads / "listening_listener.csv").read_text().strip().splitlines()
    assert csv_lines[0] == "listener,clip,letter,system,score" and len(csv_lines) == len(ratings) + 1
    code, output = run_main(capsys, "listen-results", str(downloads / "listening_listener.json"), str(downloads / "listening_listener.csv"))
    assert code == 0 and HIDDEN_REFERENCE in output and "2 listener" not in output and f"{2 * len(ratings)} ratings" in output


def test_the_blind_order_is_fixed_by_the_seed_and_differs_between_clips(trained, tmp_path):
    _, checkpoint = trained
    clips = tmp_path / "clips"
    for i in range(3):
        invoke("demo-clip", str(clips / f"demo{i % 2}_{i}.wav"), "--speaker", str(i % 2), "--seconds", "0.6", "--sample-rate", "8000")
    pages = []
    for name in ("a.html", "b.html"):
        invoke("eval", "-c", str(checkpoint), "--data", str(clips), "--metrics", "stoi", "--baselines", "none", "--html", str(tmp_path / name))
        text = (tmp_path / name).read_text()
        trials = json.loads(text.split("const TRIALS = ", 1)[1].split(";\n", 1)[0])
        pages.append([[s["system"] for s in trial["stimuli"]] for trial in trials])
    assert pages[0] == pages[1]  # the same seed, the same order
    assert all(sorted(order) == sorted(["vqaudio", HIDDEN_REFERENCE, ANCHOR]) for order in pages[0])
    assert len({tuple(order) for order in pages[0]}) > 1  # but not the same order for every clip


def test_the_anchor_is_the_original_low_passed_at_3_5_khz():
    rate = 16000
    t = np.arange(rate) / rate
    audio = (0.3 * np.sin(2 * np.pi * 500 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    anchor = low_pass_anchor(audio, rate)
    spectrum, original = magnitude(anchor, 1024, 256).mean(axis=0), magnitude(audio, 1024, 256).mean(axis=0)
    low, high = 500 * 1024 // rate, 6000 * 1024 // rate
    assert spectrum[low] == pytest.approx(original[low], rel=0.02)  # the band below 3.5 kHz passes
    assert spectrum[high] < 1e-3 * original[high]  # 6 kHz is gone


def test_listen_results_summarise_with_a_95_percent_interval(tmp_path, capsys):
    files = []
    for listener, scores in (("ann", [60, 90]), ("bob", [80, 100])):
        ratings = [{"clip": "c", "system": "vqaudio", "score": scores[0]}, {"clip": "c", "system": "opus", "score": scores[1]}]
        path = tmp_path / f"{listener}.json"
        path.write_text(json.dumps({"format": "vqaudio-listening", "version": 1, "listener": listener, "ratings": ratings}))
        files.append(path)
    summary = {s["system"]: s for s in summarise(read_results(files))}
    assert summary["vqaudio"]["mean"] == 70 and summary["vqaudio"]["listeners"] == 2
    # two ratings 60 and 80: sd 14.14, t(0.975, 1) = 12.706, interval 12.706 * 14.14 / sqrt 2 = 127.06
    assert summary["vqaudio"]["ci95"] == pytest.approx(127.06, rel=1e-3)
    code, output = run_main(capsys, "listen-results", *map(str, files), "--json", str(tmp_path / "s.json"))
    assert code == 0 and json.loads((tmp_path / "s.json").read_text())["systems"][0]["system"] == "opus"  # best first
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "vqaudio-listening", "ratings": [{"clip": "c", "system": "x", "score": "loud\n"}]}))
    code, output = run_main(capsys, "listen-results", str(bad))
    assert code == 2 and "a rating without a numeric score" in output and len(output.strip().splitlines()) == 1
    with pytest.raises(VQAudioError, match="outside 0..100"):
        bad.write_text(json.dumps({"format": "vqaudio-listening", "ratings": [{"clip": "c", "system": "x", "score": 150}]}))
        read_results([bad])
