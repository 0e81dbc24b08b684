"""`vqaudio eval --html REPORT.html`: one self-contained page to listen, look and judge.

Everything is inside the one file (audio as WAV data, spectrograms as PNG data), so it opens
offline and can be sent to listeners. Per clip: the original, the model's reconstruction and each
baseline as audio players with a spectrogram each, and the clip's metric table. Below, a blind
listening test in the MUSHRA style (ITU-R BS.1534): per clip an open reference, then the systems
in an order shuffled with a fixed seed, with a hidden reference and a 3.5 kHz low-pass anchor among
them, each with a 0-100 slider. Submitting downloads the ratings as CSV and JSON and reveals which
letter was which system; `vqaudio listen-results` summarises downloaded files.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from matplotlib.figure import Figure
from scipy.signal import butter, sosfiltfilt

from vqaudio.errors import VQAudioError
from vqaudio.evaluation.clips import EvalClip
from vqaudio.evaluation.evaluate import METRICS, ORIGINAL_SYSTEM
from vqaudio.evaluation.metrics import magnitude
from vqaudio.fileio import atomic_output, check_writable

HIDDEN_REFERENCE = "hidden reference"
ANCHOR = "anchor 3.5 kHz"
ANCHOR_HZ = 3500.0  # BS.1534's low-pass anchor
RESULTS_FORMAT = "vqaudio-listening"


def low_pass_anchor(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The original low-passed at 3.5 kHz (8th-order Butterworth, zero phase)."""
    if sample_rate / 2 <= ANCHOR_HZ:
        return audio.astype(np.float32)
    sos = butter(8, ANCHOR_HZ, btype="low", fs=sample_rate, output="sos")
    return sosfiltfilt(sos, audio.astype(np.float64)).astype(np.float32)


def _wav_uri(audio: np.ndarray, sample_rate: int) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()


def _spectrogram_uri(audio: np.ndarray, sample_rate: int, top_db: float) -> str:
    n_fft = 1 << int(round(math.log2(sample_rate * 0.032)))
    image = 20 * np.log10(magnitude(audio, n_fft, n_fft // 4).T + 1e-5)
    figure = Figure(figsize=(4.2, 1.6), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    axes.imshow(image, origin="lower", aspect="auto", cmap="magma", vmin=top_db - 80, vmax=top_db,
                extent=(0.0, audio.size / sample_rate, 0.0, sample_rate / 2000.0))  # fmt: skip
    axes.set_ylabel("kHz", fontsize=7)
    axes.tick_params(labelsize=6)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _letters(count: int) -> list[str]:
    return [chr(ord("A") + i) if i < 26 else f"Z{i - 25}" for i in range(count)]


def _clip_table(report: dict[str, Any], clip_id: str) -> str:
    rows = [r for r in report["clips"] if r["clip"] == clip_id]
    metrics = report.get("metrics", list(METRICS))
    head = "".join(f"<th>{html.escape(METRICS[m][0])} {'↑' if METRICS[m][1] else '↓'}</th>" for m in metrics)
    body = []
    for row in rows:
        cells = "".join("<td>-</td>" if row.get(m) is None else f"<td>{row[m]:.2f}</td>" for m in metrics)
        body.append(f"<tr><th>{html.escape(row['system'])}</th>{cells}</tr>")
    return f"<table class='metrics'><tr><th>system</th>{head}</tr>{''.join(body)}</table>"


def build_page(
    report: dict[str, Any], clips: list[EvalClip], audio: dict[tuple[str, str], np.ndarray], sample_rate: int, seed: int = 0
) -> str:
    """The report page as one HTML string (see the module's docstring)."""
    systems = [s["name"] for s in report["systems"] if s["name"] != ORIGINAL_SYSTEM]
    rng = np.random.default_rng(seed)
    sections, trials = [], []
    for clip in clips:
        players = [("original", clip.audio)] + [(name, audio[(clip.id, name)]) for name in systems if (clip.id, name) in audio]
        top_db = float(20 * np.log10(magnitude(clip.audio, 512, 128).max() + 1e-5))
        cards = "".join(
            f"<div class='card'><h4>{html.escape(name)}</h4><audio controls preload='auto' src='{_wav_uri(sound, sample_rate)}'></audio>"
            f"<img alt='spectrogram of {html.escape(name)}' src='{_spectrogram_uri(sound, sample_rate, top_db)}'></div>"
            for name, sound in players
        )  # fmt: skip
        sections.append(f"<section><h3>{html.escape(clip.id)}</h3><div class='cards'>{cards}</div>{_clip_table(report, clip.id)}</section>")
        candidates = [(name, audio[(clip.id, name)]) for name in systems if (clip.id, name) in audio]
        candidates += [(HIDDEN_REFERENCE, clip.audio), (ANCHOR, low_pass_anchor(clip.audio, sample_rate))]
        order = rng.permutation(len(candidates))
        letters = _letters(len(candidates))
        trials.append({
            "clip": clip.id,
            "reference": _wav_uri(clip.audio, sample_rate),
            "stimuli": [{"letter": letters[i], "system": candidates[j][0], "src": _wav_uri(candidates[j][1], sample_rate)}
                        for i, j in enumerate(order)],
        })  # fmt: skip
    title = f"vqaudio eval: {report['data']}, model step {report['step']}"
    return PAGE.replace("{{title}}", html.escape(title)).replace("{{sections}}", "\n".join(sections)).replace(
        "{{trials}}", json.dumps(trials).replace("</", "<\\/")
    ).replace("{{format}}", RESULTS_FORMAT)


def write_page(path: Path, page: str, force: bool = False) -> None:
    with atomic_output(path, force=force) as tmp:
        tmp.write_text(page, encoding="utf-8")


def read_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Ratings from downloaded result files (.json or .csv): rows of listener, clip, system, score."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        if not path.is_file():
            raise VQAudioError(f"{path}: no such results file")
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise VQAudioError(f"{path}: not valid JSON ({exc})") from None
            if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT or not isinstance(data.get("ratings"), list):
                raise VQAudioError(f"{path}: not a vqaudio listening-test results file")
            listener = str(data.get("listener") or path.stem)
            found = data["ratings"]
        else:
            import csv

            reader = csv.DictReader(io.StringIO(text))
            if reader.fieldnames is None or not {"clip", "system", "score"} <= set(reader.fieldnames):
                raise VQAudioError(f"{path}: a results CSV needs the columns clip, system and score")
            found = list(reader)
            listener = path.stem
        for item in found:
            try:
                score = float(item["score"])
            except (KeyError, TypeError, ValueError):
                raise VQAudioError(f"{path}: a rating without a numeric score: {item!r}") from None
            if not 0.0 <= score <= 100.0:
                raise VQAudioError(f"{path}: score {score!r} is outside 0..100")
            rows.append({"listener": str(item.get("listener") or listener), "clip": str(item.get("clip")),
                         "system": str(item.get("system")), "score": score})  # fmt: skip
    if not rows:
        raise VQAudioError("no ratings in the given files")
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system: ratings, listeners, mean and the 95% confidence interval (Student's t), best first."""
    from scipy.stats import t as student

    out = []
    for system in sorted({r["system"] for r in rows}):
        scores = np.array([r["score"] for r in rows if r["system"] == system])
        n = scores.size
        half = float(student.ppf(0.975, n - 1) * scores.std(ddof=1) / math.sqrt(n)) if n > 1 else None
        out.append({"system": system, "n": n, "listeners": len({r["listener"] for r in rows if r["system"] == system}),
                    "mean": float(scores.mean()), "ci95": half})  # fmt: skip
    return sorted(out, key=lambda s: -s["mean"])


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{title}}</title>
<style>
body { font-family: sans-serif; margin: 1.5em; color: #222; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ccc; padding: 0.4em; border-radius: 4px; }
.card h4 { margin: 0 0 0.3em 0; font-size: 0.9em; }
.card audio { width: 380px; display: block; }
table.metrics { border-collapse: collapse; margin: 0.6em 0 1.5em 0; font-size: 0.85em; }
table.metrics td, table.metrics th { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }
.trial { border-top: 2px solid #888; padding: 0.6em 0; }
.stimulus { display: flex; align-items: center; gap: 1em; margin: 0.3em 0; }
.stimulus input[type=range] { width: 300px; }
.key { color: #a33; font-weight: bold; }
</style></head><body>
<h1>{{title}}</h1>
<h2>Listen and look</h2>
{{sections}}
<h2>Blind listening test (MUSHRA style)</h2>
<p>For each clip, listen to the reference, then rate every letter from 0 (bad) to 100 (excellent)
against it. One letter is the reference itself, hidden: rate it 100. Then submit: your ratings are
downloaded as CSV and JSON, and the letters are revealed.</p>
<p>Your name or initials: <input id="listener" value="listener"></p>
<div id="test"></div>
<button id="submit">Submit ratings</button>
<p id="downloads"></p>
<script>
const TRIALS = {{trials}};
const FORMAT = "{{format}}";
const test = document.getElementById("test");
TRIALS.forEach((trial, t) => {
  const div = document.createElement("div");
  div.className = "trial";
  div.innerHTML = `<h3></h3><p>Reference: <audio controls preload="auto" src="${trial.reference}"></audio></p>`;
  div.querySelector("h3").textContent = trial.clip;  // names come from file names: text, never markup
  trial.stimuli.forEach((s, i) => {
    const row = document.createElement("div");
    row.className = "stimulus";
    row.innerHTML = `<b>${s.letter}</b><audio controls preload="auto" src="${s.src}"></audio>` +
      `<input type="range" min="0" max="100" value="50" data-trial="${t}" data-index="${i}">` +
      `<output>50</output><span class="key" hidden></span>`;
    row.querySelector(".key").textContent = s.system;
    const slider = row.querySelector("input");
    slider.addEventListener("input", () => { row.querySelector("output").textContent = slider.value; });
    div.appendChild(row);
  });
  test.appendChild(div);
});
function link(name, type, text) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], {type}));
  a.download = name;
  a.textContent = "download " + name;
  document.getElementById("downloads").appendChild(a);
  document.getElementById("downloads").appendChild(document.createTextNode(" "));
  return a;
}
document.getElementById("submit").addEventListener("click", () => {
  const listener = document.getElementById("listener").value || "listener";
  const ratings = [];
  document.querySelectorAll("input[type=range]").forEach((slider) => {
    const trial = TRIALS[+slider.dataset.trial], s = trial.stimuli[+slider.dataset.index];
    ratings.push({listener, clip: trial.clip, letter: s.letter, system: s.system, score: +slider.value});
  });
  const csv = "listener,clip,letter,system,score\\n" +
    ratings.map(r => [r.listener, r.clip, r.letter, r.system, r.score].map(v => `"${String(v).replace(/"/g, '""')}"`).join(",")).join("\\n") + "\\n";
  const json = JSON.stringify({format: FORMAT, version: 1, listener, ratings}, null, 1);
  const stem = "listening_" + listener.replace(/[^A-Za-z0-9_-]/g, "_");
  document.getElementById("downloads").textContent = "";
  link(stem + ".csv", "text/csv", csv).click();
  link(stem + ".json", "application/json", json).click();
  document.querySelectorAll(".key").forEach((k) => { k.hidden = false; });
  document.getElementById("submit").disabled = true;
});
</script>
</body></html>
"""


@dataclass
class ListeningSummary:
    systems: list[dict[str, Any]]  # per system: n, listeners, mean, ci95 (None with one rating)
    ratings: int
    listeners: int
    clips: int


def summarise_files(paths: list[Path], json_out: Path | None = None, force: bool = False) -> ListeningSummary:
    """`vqaudio listen-results`: read every results file, summarise, and write the JSON if asked."""
    if json_out is not None:
        check_writable(json_out, force)
    rows = read_results(paths)
    summary = ListeningSummary(summarise(rows), len(rows), len({r["listener"] for r in rows}), len({r["clip"] for r in rows}))
    if json_out is not None:
        with atomic_output(json_out, force=force) as tmp:
            tmp.write_text(json.dumps({"format": "vqaudio-listening-summary", "version": 1, **asdict(summary)}, indent=2) + "\n")
    return summary
