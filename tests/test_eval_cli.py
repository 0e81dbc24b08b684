"""`vqaudio eval`, `vqaudio plot` and TensorBoard logging, end to end through the CLI."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import invoke, run_main, tiny_dict

from vqaudio.evaluation.evaluate import METRICS, MODEL_SYSTEM
from vqaudio.train import metrics_log

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_clips(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        invoke("demo-clip", str(folder / f"demo{i}_{i}.wav"), "--speaker", str(i), "--seconds", "1.0",
               "--sample-rate", "8000", "--seed", str(i))
    return folder


@pytest.mark.slow
def test_eval_json_schema_and_summaries(trained, tmp_path):
    _, checkpoint = trained
    clips = write_clips(tmp_path / "clips")
    report_path = tmp_path / "report.json"
    result = invoke("eval", "-c", str(checkpoint), "--data", str(clips), "--json", str(report_path),
                    "--audio-dir", str(tmp_path / "listen"))
    report = json.loads(report_path.read_text())
    assert report["format"] == "vqaudio-eval" and report["version"] == 1
    assert report["clips_evaluated"] == 2 and report["sample_rate"] == 8000 and report["n_q"] == 1
    systems = [s["name"] for s in report["systems"]]
    assert systems[0] == MODEL_SYSTEM
    # One row per clip and system, each with every metric and the lag it was aligned by.
    assert len(report["clips"]) == 2 * len(systems)
    for row in report["clips"]:
        assert set(METRICS) | {"clip", "system", "speaker", "seconds", "lag_samples", "lag_ms"} <= set(row)
        assert isinstance(row["lag_samples"], int) and row["lag_ms"] == pytest.approx(row["lag_samples"] / 8)
    assert {row["speaker"] for row in report["clips"]} == {"demo0", "demo1"}  # found from the file names
    # The summaries are the mean and spread of the rows.
    for system in report["systems"]:
        rows = [r for r in report["clips"] if r["system"] == system["name"]]
        for metric in METRICS:
            values = [r[metric] for r in rows if r[metric] is not None]
            summary = system["summary"][metric]
            assert summary["n"] == len(values)
            if values:
                assert summary["mean"] == pytest.approx(np.mean(values))
                assert summary["std"] == pytest.approx(np.std(values))
    model = report["systems"][0]
    assert model["bitrate"] == pytest.approx(8000 / 8 * 5)  # hop 8 at 8 kHz, K = 32
    # Codebook usage is that of the clips' codes, as `vqaudio encode` gives them, counted here.
    histogram = np.zeros(32, dtype=np.int64)
    for clip in sorted(clips.glob("*.wav")):
        invoke("encode", str(clip), str(tmp_path / f"{clip.stem}.npy"), "-c", str(checkpoint))
        histogram += np.bincount(np.load(tmp_path / f"{clip.stem}.npy").ravel(), minlength=32)
    probs = histogram[histogram > 0] / histogram.sum()
    entropy = float(-(probs * np.log2(probs)).sum())
    usage = report["codebook_usage"]
    assert usage["frames"] == histogram.sum() == 2 * 1000
    assert usage["codes_used"] == np.count_nonzero(histogram)
    assert usage["entropy"] == pytest.approx(entropy, abs=1e-6)
    assert usage["perplexity"] == pytest.approx(2.0**entropy, abs=1e-6)
    # The table names each system and metric; audio for listening was written.
    for heading, _ in METRICS.values():
        assert heading in result.output
    written = {p.name for p in (tmp_path / "listen").glob("demo0_0.*.wav")}
    coded = [name for name in systems if name != "original"]  # the original is the reference itself
    assert written == {"demo0_0.reference.wav"} | {f"demo0_0.{name.replace(' ', '_')}.wav" for name in coded}
    assert (tmp_path / "listen" / "demo1_1.vqaudio.wav").stat().st_size > 44


def test_eval_defaults_to_the_models_held_out_split(trained, tmp_path):
    _, checkpoint = trained
    report_path = tmp_path / "r.json"
    invoke("eval", "-c", str(checkpoint), "--json", str(report_path), "--no-baselines")
    report = json.loads(report_path.read_text())
    assert [s["name"] for s in report["systems"]] == [MODEL_SYSTEM, "original"]  # originals: the DNSMOS ceiling
    assert "held-out split of 'tiny'" in report["data"]
    # Exactly the utterances held out when the model was trained (recorded in its checkpoint).
    held_out = torch.load(checkpoint, weights_only=True)["metadata"]["valid_ids"]
    assert len(held_out) == 2 and sorted(row["clip"] for row in report["clips"] if row["system"] == MODEL_SYSTEM) == sorted(held_out)


@pytest.mark.slow
def test_eval_baselines_appear_when_installed(trained, tmp_path):
    if shutil.which("opusenc") is None or shutil.which("c2enc") is None:
        pytest.skip("opus-tools or codec2 not installed")
    _, checkpoint = trained
    report_path = tmp_path / "r.json"
    clips = write_clips(tmp_path / "c", 1)
    result = invoke("eval", "-c", str(checkpoint), "--data", str(clips), "--json", str(report_path), "--metrics", "stoi,dnsmos")
    report = json.loads(report_path.read_text())
    by_name = {s["name"]: s for s in report["systems"]}
    codecs = {"opus 6 kbps", "opus 8 kbps", "opus 12 kbps", "codec2 1200", "codec2 2400", "codec2 3200"}
    assert set(by_name) == {MODEL_SYSTEM, "original", *codecs}
    for name, rate in (("codec2 1200", 1200), ("codec2 2400", 2400), ("codec2 3200", 3200)):
        assert by_name[name]["stream_bitrate"] == pytest.approx(rate, rel=0.05)
    assert report["metrics"] == ["stoi", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"]
    # the table reads from the lowest bitrate up, the originals (no-reference DNSMOS only) last
    header = next(line for line in result.output.splitlines() if "bit/s" in line)
    rates = [int(cell) for cell in header.replace("│", " ").split() if cell.isdigit()]
    assert rates == sorted(rates) == [1200, 2400, 3200, 5000, 6000, 8000, 12000] and header.rstrip(" │").endswith("-")
    original = by_name["original"]["summary"]
    assert original["stoi"]["n"] == 0 and original["dnsmos_ovrl"]["n"] == (1 if importlib.util.find_spec("speechmos") else 0)
    # only some baselines, or a typo, on request
    invoke("eval", "-c", str(checkpoint), "--data", str(clips), "--json", str(report_path), "--force", "--metrics", "stoi",
           "--baselines", "codec2_3200,opus12")  # fmt: skip
    assert [s["name"] for s in json.loads(report_path.read_text())["systems"]] == [MODEL_SYSTEM, "codec2 3200", "opus 12 kbps"]


def test_eval_reports_skipped_metrics_and_baselines(trained, tmp_path, monkeypatch):
    from vqaudio.evaluation import baselines, metrics

    real_find_spec = metrics.importlib.util.find_spec
    monkeypatch.setattr(metrics.importlib.util, "find_spec", lambda n: None if n == "pystoi" else real_find_spec(n))
    for name in [m for m in sys.modules if m == "pystoi" or m.startswith("pystoi.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pystoi", None)  # `import pystoi` now raises ImportError: really missing
    monkeypatch.setattr(baselines.shutil, "which", lambda tool: None)
    _, checkpoint = trained
    report_path = tmp_path / "r.json"
    clips = write_clips(tmp_path / "c", 1)
    result = invoke("eval", "-c", str(checkpoint), "--data", str(clips), "--json", str(report_path))
    assert "skipped STOI: the 'pystoi' package is not installed" in result.output
    assert "opus 6 kbps: opusenc, opusdec not on PATH (Debian: apt install opus-tools)" in result.output
    # No STOI was computed: none in any row, "-" in the table; the other metrics still were.
    report = json.loads(report_path.read_text())
    assert set(report["skipped_metrics"]) == {"stoi"}
    model_rows = [row for row in report["clips"] if row["system"] == MODEL_SYSTEM]
    assert model_rows and all(row["stoi"] is None and row["si_snr"] is not None for row in model_rows)
    assert report["systems"][0]["summary"]["stoi"]["n"] == 0
    (stoi_row,) = [line for line in result.output.splitlines() if "STOI ↑" in line]
    assert stoi_row.replace("│", " ").split()[-1] == "-"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "no/such/folder"], "--data no/such/folder: no such folder, audio file or recipe"),
        (["--data", "tiny.yaml:test"], "unknown split 'test'"),
        (["--max-clips", "0"], "--max-clips 0: must be at least 1"),
        (["--n-q", "2"], "--n-q 2: this model has 1 codebook(s)"),
        (["--json", "exists.json"], "exists.json: already exists; pass --force"),
        (["--backend", "gpu"], "--backend 'gpu'"),
    ],
)
def test_eval_bad_input_is_one_line_and_exit_2(trained, args, message, monkeypatch, capsys):
    work, checkpoint = trained
    monkeypatch.chdir(work)
    (work / "exists.json").write_text("{}")
    code, output = run_main(capsys, "eval", "-c", str(checkpoint), *args)
    assert code == 2 and message in output, output
    assert "Traceback" not in output and len([line for line in output.splitlines() if "error:" in line]) == 1
    assert (work / "exists.json").read_text() == "{}"


def test_plot_writes_three_pngs_into_the_run(trained):
    _, checkpoint = trained
    run = checkpoint.parent.parent
    result = invoke("plot", str(run), "--clip", "demo1_003")
    written = sorted((run / "plots").glob("*.png"))
    assert [p.name for p in written] == ["codebook_usage.png", "spectrogram_demo1_003.png", "training_curves.png"]
    for path in written:
        assert str(path) in result.output
        head = path.read_bytes()[:24]
        assert head[:8] == PNG_MAGIC
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert width > 300 and height > 200


def test_plot_of_a_clip_file_and_a_clear_error_for_an_unknown_clip(trained, tmp_path, capsys):
    _, checkpoint = trained
    run = checkpoint.parent.parent
    clip = write_clips(tmp_path / "c", 1) / "demo0_0.wav"
    invoke("plot", str(run), "--clip", str(clip))
    assert (run / "plots" / "spectrogram_demo0_0.png").stat().st_size > 1000
    code, output = run_main(capsys, "plot", str(run), "--clip", "nobody_999")
    assert code == 2 and "--clip 'nobody_999': not among the held-out clips" in output
    code, output = run_main(capsys, "plot", str(tmp_path))
    assert code == 2 and f"{tmp_path}: not a run folder" in output


def test_training_writes_tensorboard_events_when_asked(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_dict(data={"sample_rate": 8000})))
    invoke("train", "tiny.yaml", "train.steps=2", "train.tensorboard=true", "--quiet", "--device", "cpu")
    run = next((tmp_path / "runs" / "tiny").iterdir())
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/perplexity", "valid/nll", "valid/codes_used"} <= set(tags)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in logged if r["split"] == "train")
    assert events.Scalars("train/loss")[0].value == pytest.approx(first["loss"], rel=1e-6)


def test_tensorboard_missing_is_a_clear_error_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(metrics_log.importlib.util, "find_spec", lambda name: None)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_dict()))
    code, output = run_main(capsys, "train", "tiny.yaml", "train.tensorboard=true", "--quiet")
    assert code == 2
    assert "train.tensorboard=true needs the tensorboard package: pip install tensorboard" in output
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_eval_convert_decodes_every_clip_as_the_other_speakers(trained, tmp_path, capsys):
    if importlib.util.find_spec("resemblyzer") is None:
        pytest.skip("resemblyzer is not installed (pip install 'vqaudio[eval]')")
    _, checkpoint = trained
    clips = write_clips(tmp_path / "c")  # demo0_0.wav and demo1_1.wav: one clip per speaker
    report_path = tmp_path / "r.json"
    result = invoke("eval", "-c", str(checkpoint), "--data", str(clips), "--no-baselines", "--metrics", "stoi",
                    "--convert", "--json", str(report_path))  # fmt: skip
    conversion = json.loads(report_path.read_text())["conversion"]
    assert conversion["targets"] == ["demo0", "demo1"]
    pairs = {(row["clip"], row["target"]) for row in conversion["rows"]}
    assert pairs == {("demo0_0", "demo0"), ("demo0_0", "demo1"), ("demo1_1", "demo1"), ("demo1_1", "demo0")}
    for row in conversion["rows"]:
        assert row["converted"] == (row["source"] != row["target"])
        assert -1.0 <= row["target_similarity"] <= 1.0 and -1.0 <= row["source_similarity"] <= 1.0
        if not row["converted"]:  # decoded as its own speaker: target and source are one centroid
            assert row["target_similarity"] == row["source_similarity"]
    assert conversion["converted"]["target_similarity"]["n"] == 2
    assert "voice conversion to demo0, demo1" in " ".join(result.output.split())
    invoke("eval", "-c", str(checkpoint), "--data", str(clips), "--no-baselines", "--metrics", "stoi",
           "--to", "demo1", "--json", str(report_path), "--force")  # fmt: skip
    rows = json.loads(report_path.read_text())["conversion"]["rows"]
    assert {(row["clip"], row["target"]) for row in rows} == {("demo0_0", "demo0"), ("demo0_0", "demo1"), ("demo1_1", "demo1")}
    code, output = run_main(capsys, "eval", "-c", str(checkpoint), "--data", str(clips), "--no-baselines", "--to", "zebra")
    assert code == 2 and "--to 'zebra': not a speaker of this model" in output
