"""`vqaudio sweep`, `vqaudio compare` and `vqaudio plot --compare` (issue 18).

Trials are the tiny recipe for a few steps, evaluated on one clip with log-mel distance only, so
that a whole sweep takes seconds. The study is read back from its SQLite storage to count trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import run_main, tiny_dict
from optuna.trial import TrialState
from typer.testing import CliRunner

from vqaudio.cli import app
from vqaudio.errors import VQAudioError
from vqaudio.experiments.compare import compare_runs
from vqaudio.experiments.figures import legend_labels, plot_rate_quality
from vqaudio.experiments.runs import TRIAL_FILE, find_runs
from vqaudio.experiments.study import open_study, suggest
from vqaudio.experiments.sweep_file import load_sweep

ROOT = Path(__file__).resolve().parents[1]
GRID = {"model.quantizer.codebook_size": [16, 32], "model.quantizer.beta": [0.25, 0.5]}


def write_sweep(folder: Path, steps: int = 6, name: str = "grid", **extra: Any) -> Path:
    (folder / "tiny.yaml").write_text(yaml.safe_dump(tiny_dict()))
    spec: dict[str, Any] = {
        "recipe": "tiny.yaml",
        "overrides": {"train.steps": steps, "train.valid_every": 3, "train.checkpoint_every": 3, "train.log_every": 3},
        "space": GRID,
        "objective": {"log_mel_distance": "minimize"},
        "eval": {"max_clips": 1, "metrics": ["log_mel_distance"], "baselines": False},
        "runs_dir": str(folder / "runs"),
        **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def study_trials(folder: Path, name: str = "grid") -> list[optuna.trial.FrozenTrial]:
    url = f"sqlite:///{folder / 'runs' / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def vqaudio(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vqaudio", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_grid_sweep_then_compare_lists_every_trial_with_the_keys_that_differ(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = write_sweep(tmp_path)
    result = CliRunner().invoke(app, ["sweep", str(sweep)], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    points = sorted((t.params["model.quantizer.codebook_size"], t.params["model.quantizer.beta"]) for t in trials)
    assert points == [(16, 0.25), (16, 0.5), (32, 0.25), (32, 0.5)]
    folders = sorted(p.name for p in (tmp_path / "runs" / "grid").iterdir() if p.is_dir())  # no runs/grid/latest link
    assert folders == ["t000", "t001", "t002", "t003"]
    for trial in trials:  # each trial is an ordinary run folder with its eval report and its own values
        run = tmp_path / "runs" / "grid" / trial.user_attrs["folder"]
        recipe = yaml.safe_load((run / "recipe.yaml").read_text())
        assert recipe["model"]["quantizer"]["codebook_size"] == trial.params["model.quantizer.codebook_size"]
        report = json.loads((run / "eval.json").read_text())
        assert report["systems"][0]["summary"]["log_mel_distance"]["mean"] == pytest.approx(trial.value)

    comparison = compare_runs([tmp_path / "runs" / "grid"])
    assert comparison.differing == ["model.quantizer.beta", "model.quantizer.codebook_size"]
    assert len(comparison.runs) == 4
    values = [run.metric("log_mel_distance") for run in comparison.runs]
    assert values == sorted(values)  # the sweep's objective, minimised: best first
    assert (comparison.sort, comparison.direction) == ("log_mel_distance", "minimize")

    outputs = {kind: tmp_path / f"table.{kind}" for kind in ("csv", "json", "md")}
    args = ["compare", str(tmp_path / "runs" / "grid"), "--csv", str(outputs["csv"]), "--json", str(outputs["json"]), "--markdown", str(outputs["md"])]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(outputs["json"].read_text())["rows"]
    assert [r["run"] for r in rows] == [run.label for run in comparison.runs]
    assert {(r["model.quantizer.codebook_size"], r["model.quantizer.beta"]) for r in rows} == set(points)
    csv_lines = outputs["csv"].read_text().splitlines()
    assert csv_lines[0].split(",")[:3] == ["run", "model.quantizer.beta", "model.quantizer.codebook_size"] and len(csv_lines) == 5
    assert len(outputs["md"].read_text().splitlines()) == 6
    code, output = run_main(capsys, *args)
    assert code == 2 and "table.csv: already exists" in output  # no overwrite without --force

    result = CliRunner().invoke(app, ["plot", "--compare", str(tmp_path / "runs" / "grid"), "--metric", "log_mel_distance"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "grid" / "compare_curves.png").stat().st_size > 0
    assert "4 runs, 4 points" in result.output


def test_a_finished_sweep_run_again_trains_nothing(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, space={"model.quantizer.beta": [0.25, 0.5]})
    assert CliRunner().invoke(app, ["sweep", str(sweep)]).exit_code == 0
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "grid").glob("t*/checkpoints/*.pt")}
    assert len(stamps) == 4  # two trials, checkpoints at steps 3 and 6
    assert CliRunner().invoke(app, ["sweep", str(sweep)]).exit_code == 0
    assert len(study_trials(tmp_path)) == 2
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "grid").glob("t*/checkpoints/*.pt")} == stamps


def test_a_changed_sweep_file_does_not_join_the_old_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert CliRunner().invoke(app, ["sweep", str(write_sweep(tmp_path, space={"model.quantizer.codebook_size": [16]}))]).exit_code == 0
    capsys.readouterr()
    changed = write_sweep(tmp_path, space={"model.quantizer.codebook_size": [16, 64]})
    code, output = run_main(capsys, "sweep", str(changed))
    assert code == 2
    assert "different sweep file" in output and len(output.strip().splitlines()) == 1


def _wait_for(condition: Any, process: subprocess.Popen[str], timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the sweep ended early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.1)


@pytest.mark.slow
def test_sigterm_mid_sweep_then_a_second_invocation_finishes_with_no_trial_run_twice(tmp_path: Path) -> None:
    steps = 60
    sweep = write_sweep(tmp_path, overrides={"train.steps": steps, "train.valid_every": 30, "train.checkpoint_every": 5})
    command = [sys.executable, "-m", "vqaudio", "sweep", str(sweep), "--quiet"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = tmp_path / "runs" / "grid" / "t001" / "checkpoints"
    _wait_for(lambda: second.is_dir() and any(second.glob("step_*.pt")), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr

    trials = study_trials(tmp_path)
    states = {t.number: t.state for t in trials}
    assert states[0] == TrialState.COMPLETE and states[1] == TrialState.FAIL
    assert trials[1].user_attrs.get("interrupted") is True
    (queued,) = [t for t in trials if t.state == TrialState.WAITING and "retry_of" in t.user_attrs]
    assert queued.user_attrs["retry_of"] == 1 and queued.user_attrs["folder"] == "t001"
    stopped_at = max(int(p.stem.split("_")[1]) for p in second.glob("step_*.pt"))
    assert 0 < stopped_at < steps

    finished = vqaudio("sweep", str(sweep), "--quiet", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert "continuing from" in finished.stderr

    trials = study_trials(tmp_path)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert sorted(t.user_attrs["point"] for t in complete) == [0, 1, 2, 3]  # every point once, none twice
    assert len([t for t in trials if t.state == TrialState.FAIL]) == 1  # the interrupted one, continued by its retry
    assert sorted(p.name for p in (tmp_path / "runs" / "grid").iterdir() if p.is_dir()) == ["t000", "t001", "t002", "t003"]
    # t001 continued from its checkpoint: the steps before it were not trained again
    records = [json.loads(line) for line in (tmp_path / "runs" / "grid" / "t001" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps[-1] == steps
    assert len(train_steps) - len(set(train_steps)) <= 3  # at most the log lines after the last checkpoint repeat


@pytest.mark.slow
def test_two_workers_on_one_sqlite_storage_split_the_trials(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, overrides={"train.steps": 80, "train.valid_every": 40, "train.checkpoint_every": 40})
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    command = [sys.executable, "-m", "vqaudio", "sweep", str(sweep), "--worker", "--storage", url, "--threads", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    trials = optuna.load_study(study_name="grid", storage=url).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["point"] for t in complete) == [0, 1, 2, 3]
    ran = [sum(line.startswith("grid/t0") for line in stderr.splitlines()) for _, stderr in outputs]  # a line per trial run
    assert sum(ran) == 4 and min(ran) >= 1, ran


def test_a_trial_that_crashes_runs_again_at_the_next_invocation_from_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vqaudio.experiments import study

    sweep = write_sweep(tmp_path, space={"model.quantizer.beta": [0.25, 0.5]})
    real_eval = study.run_eval
    calls = []

    def crash_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (simulated)")
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(study, "run_eval", crash_once)
    with pytest.raises(RuntimeError, match="simulated"):
        CliRunner().invoke(app, ["sweep", str(sweep)], catch_exceptions=False)
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert json.loads((tmp_path / "runs" / "grid" / "t001" / TRIAL_FILE).read_text())["state"] == "failed"

    assert CliRunner().invoke(app, ["sweep", str(sweep)], catch_exceptions=False).exit_code == 0
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].user_attrs["folder"] == "t001"
    assert json.loads((tmp_path / "runs" / "grid" / "t001" / TRIAL_FILE).read_text())["state"] == "complete"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VQAUDIO_TEST_POSTGRES"), reason="set VQAUDIO_TEST_POSTGRES to a PostgreSQL URL (no server in CI)")
def test_two_workers_share_a_postgresql_study(tmp_path: Path) -> None:
    url = os.environ["VQAUDIO_TEST_POSTGRES"]
    name = f"pg{os.getpid()}"
    sweep = write_sweep(tmp_path, name=name, space={"model.quantizer.beta": [0.25, 0.5, 1.0]})
    command = [sys.executable, "-m", "vqaudio", "sweep", str(sweep), "--worker", "--storage", url, "--threads", "1", "--quiet"]
    workers = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    assert sorted(t.user_attrs["point"] for t in trials if t.state == TrialState.COMPLETE) == [0, 1, 2]


def test_a_storage_without_its_driver_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = write_sweep(tmp_path)
    code, output = run_main(capsys, "sweep", str(sweep), "--storage", "mysql+notadriver://u@localhost/x")
    assert code == 2 and len(output.strip().splitlines()) == 1 and "mysql+notadriver" in output


def test_pruning_stops_a_trial_whose_validation_loss_is_worse_than_the_median(tmp_path: Path) -> None:
    # the first trial learns (lr 1e-2); the second cannot (lr 1e-9), so its validation loss is above the first's
    sweep = write_sweep(
        tmp_path,
        space={"train.lr": [1e-2, 1e-9]},
        objective={"valid.loss": "minimize"},
        overrides={"train.steps": 12, "train.valid_every": 4, "train.checkpoint_every": 4},
        pruning={"kind": "median", "startup_trials": 1},
    )
    result = CliRunner().invoke(app, ["sweep", str(sweep)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert max(trials[1].intermediate_values) < 12  # stopped before its last step
    states = {run.label: run.state for run in find_runs([tmp_path / "runs" / "grid"])}
    assert states == {"t000": "complete", "t001": "pruned"}


def test_random_sweep_draws_ranges_within_bounds_and_runs_the_trial_count(tmp_path: Path) -> None:
    space = {"model.quantizer.beta": {"low": 0.1, "high": 1.0, "log": True}, "model.quantizer.codebook_size": {"low": 8, "high": 64}}
    sweep = write_sweep(tmp_path, space=space, sampler="random", trials=3, seeds=[0, 1])
    result = CliRunner().invoke(app, ["sweep", str(sweep)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trials = study_trials(tmp_path)
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for trial in trials:
        assert 0.1 <= trial.params["model.quantizer.beta"] <= 1.0
        assert isinstance(trial.params["model.quantizer.codebook_size"], int) and 8 <= trial.params["model.quantizer.codebook_size"] <= 64
        assert trial.params["seed"] in (0, 1)
        recipe = yaml.safe_load((tmp_path / "runs" / "grid" / trial.user_attrs["folder"] / "recipe.yaml").read_text())
        assert recipe["seed"] == trial.params["seed"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # study.ask() here stands in for a worker's optimize()
def test_grid_values_that_are_lists_reach_the_recipe_unchanged(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, space={"model.quantizer.kind": ["fsq"], "model.quantizer.levels": [[8, 4], [4, 8]]}))
    assert [p["model.quantizer.levels"] for p in sweep.grid()] == [[8, 4], [4, 8]]
    study = open_study(sweep, f"sqlite:///{tmp_path / 'study.db'}")
    drawn = [suggest(study.ask(), sweep)["model.quantizer.levels"] for _ in range(2)]
    assert drawn == [[8, 4], [4, 8]]
    assert "model.quantizer.levels=[8, 5, 5]" in sweep.overrides({"model.quantizer.levels": [8, 5, 5]})


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"spcae": {}}, "spcae: unknown key"),
        ({"objective": None}, "objective"),
        ({"objective": {"pesq": "maximize"}}, "objective: unknown metric 'pesq'"),
        ({"objective": {"pesq_wb": "maximise"}}, "objective.pesq_wb"),
        ({"space": {"model.quantizer.codebok_size": [16]}}, "override model.quantizer.codebok_size"),
        ({"space": {"model.quantizer.codebook_size": [16, 1]}}, "space (model.quantizer.codebook_size=1): override model.quantizer.codebook_size"),
        ({"space": {"model.quantizer.beta": {"low": 1.0, "high": 0.1}}}, "space.model.quantizer.beta"),
        ({"space": {"model.quantizer.beta": {"low": 0.1, "high": 1.0}}, "sampler": "grid"}, "space.model.quantizer.beta: a grid needs a list"),
        ({"space": {"model.quantizer.beta": {"low": 0.1, "high": 1.0}}}, "trials: a tpe sweep needs a number of trials"),
        ({"overrides": {"train.stpes": 3}}, "overrides: override train.stpes"),
        ({"recipe": "missing.yaml"}, "recipe: no such file 'missing.yaml'"),
        ({"eval": {"max_clip": 1}}, "eval.max_clip: unknown key"),
    ],
)
def test_a_malformed_sweep_file_is_one_line_that_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], named: str
) -> None:
    sweep = write_sweep(tmp_path, **change)
    if change.get("objective", 1) is None:
        data = yaml.safe_load(sweep.read_text())
        del data["objective"]
        sweep.write_text(yaml.safe_dump(data))
    with pytest.raises(VQAudioError) as raised:
        load_sweep(sweep)
    assert named in str(raised.value)
    code, output = run_main(capsys, "sweep", str(sweep))
    assert code == 2
    assert len(output.strip().splitlines()) == 1 and named in output.replace("\n", "") and "Traceback" not in output


def _report(path: Path, n_q: int, bitrate: float, pesq: float, baselines: dict[str, tuple[float, float]] | None = None) -> None:
    systems = [{"name": "vqaudio", "bitrate": bitrate, "summary": {"pesq_wb": {"mean": pesq, "std": 0.1, "n": 2}}}]
    for name, (rate, value) in (baselines or {}).items():
        systems.append({"name": name, "bitrate": rate, "summary": {"pesq_wb": {"mean": value, "std": 0.1, "n": 2}}})
    path.write_text(json.dumps({"format": "vqaudio-eval", "version": 1, "n_q": n_q, "systems": systems}))


def _fake_run(folder: Path, codebook_size: int) -> Path:
    folder.mkdir(parents=True)
    recipe = tiny_dict(model={"quantizer": {"codebook_size": codebook_size, "n_q": 2}})
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 10, "split": "train", "time": 1.0, "loss": 3.0}) + "\n")
    return folder


def test_rate_quality_holds_every_n_q_of_each_run_and_the_baselines(tmp_path: Path) -> None:
    small = _fake_run(tmp_path / "runs" / "a" / "1", 256)
    large = _fake_run(tmp_path / "runs" / "b" / "1", 1024)
    codecs = {"codec2 2400": (2400.0, 1.3), "codec2 3200": (3200.0, 1.5), "opus 6 kbps": (6000.0, 2.2)}
    _report(small / "eval.json", 2, 2000.0, 1.6, codecs)
    _report(small / "eval_nq1.json", 1, 1000.0, 1.2)
    _report(large / "eval.json", 2, 2500.0, 1.8)
    runs = find_runs([tmp_path / "runs"])
    assert [r.label for r in runs] == ["a/1", "b/1"]
    path, points, baselines = plot_rate_quality(runs, "pesq_wb", tmp_path / "rq.png")
    assert points == 3 and baselines == sorted(codecs) and path.stat().st_size > 0
    assert legend_labels(runs) == ["a/1 codebook_size=256", "b/1 codebook_size=1024"]
    comparison = compare_runs([tmp_path / "runs"])
    assert comparison.differing == ["model.quantizer.codebook_size"]
    assert [r.label for r in comparison.runs] == ["b/1", "a/1"]  # PESQ-WB, higher first
    assert [r.full.bitrate for r in comparison.runs if r.full] == [2500.0, 2000.0]  # eval.json, not eval_nq1.json
    with pytest.raises(VQAudioError, match="no run has an eval report with stoi"):
        plot_rate_quality(runs, "stoi", tmp_path / "none.png")


def test_compare_refuses_a_folder_without_runs_and_an_unknown_sort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_main(capsys, "compare", str(tmp_path))
    assert code == 2 and "holds no run folder" in output
    _fake_run(tmp_path / "r" / "1", 16)
    code, output = run_main(capsys, "compare", str(tmp_path / "r"), "--sort", "pesq")
    assert code == 2 and "--sort 'pesq'" in output


def test_a_named_run_folder_is_never_reused(tmp_path: Path) -> None:
    from vqaudio.train.run_dir import create_run_dir

    made = create_run_dir(tmp_path, "x", {"kind": "audio_vqvae"}, tmp_path / "trial")
    assert made == tmp_path / "trial" and (made / "run.json").exists()
    with pytest.raises(VQAudioError, match="already holds a run"):
        create_run_dir(tmp_path, "x", {"kind": "audio_vqvae"}, tmp_path / "trial")


def test_sweep_files_shipped_in_recipes_validate() -> None:
    for path in sorted((ROOT / "recipes" / "sweeps").glob("*.yaml")):
        sweep = load_sweep(path)
        assert sweep.trials >= 1, path
