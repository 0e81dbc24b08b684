import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_dict

from vqaudio.formats.checkpoint import list_checkpoints, load_checkpoint
from vqaudio.recipe import validate_recipe
from vqaudio.tasks import build_setup
from vqaudio.tasks.run import resume_recipe, train
from vqaudio.train.loop import Trainer

CPU = torch.device("cpu")


def recipe(tmp_path: Path, **train_keys):
    return validate_recipe(tiny_dict(train={"runs_dir": str(tmp_path / "runs"), **train_keys}), "tiny")


def test_a_few_steps_lower_the_held_out_loss(tmp_path):
    r = recipe(tmp_path, steps=40, valid_every=40, checkpoint_every=40, log_every=10)
    setup = build_setup(r)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    trainer = Trainer(setup, r, run_dir, CPU, show_progress=False)
    before = trainer.validate()["nll"]
    result = trainer.run()
    assert result.last_valid["nll"] < before - 0.15  # 5.57 -> about 5.3 nats
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {line["split"] for line in lines} == {"train", "valid"}
    assert [line["step"] for line in lines if line["split"] == "train"] == [10, 20, 30, 40]
    assert all({"loss", "nll", "commitment", "perplexity", "codes_used", "lr"} <= set(line) for line in lines if line["split"] == "train")


def test_run_folder_layout(tmp_path):
    r = recipe(tmp_path, steps=4, checkpoint_every=1, keep_checkpoints=2)
    result = train(r, CPU, show_progress=False)
    run = result.run_dir
    assert run.parent == tmp_path / "runs" / "tiny"
    assert validate_recipe(yaml.safe_load((run / "recipe.yaml").read_text()), "saved") == r
    assert json.loads((run / "run.json").read_text())["kind"] == "audio_vqvae"
    assert (tmp_path / "runs" / "latest").resolve() == run.resolve()
    assert [p.name for p in list_checkpoints(run)] == ["step_000003.pt", "step_000004.pt"]
    payload = load_checkpoint(result.checkpoint)
    assert payload["step"] == 4 and payload["metadata"]["speakers"] == ["demo0", "demo1"]
    assert payload["metadata"]["hop"] == 8 and payload["metadata"]["codebook_size"] == 32


def test_resume_continues_exactly(tmp_path):
    straight = train(recipe(tmp_path / "a", steps=6), CPU, show_progress=False)
    first = train(recipe(tmp_path / "b", steps=3), CPU, show_progress=False)
    resumed = train(resume_recipe(first.run_dir, ["train.steps=6"]), CPU, first.run_dir, show_progress=False)
    assert resumed.run_dir == first.run_dir and resumed.step == 6
    a = load_checkpoint(straight.checkpoint)
    b = load_checkpoint(resumed.checkpoint)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["fingerprint"] == b["fingerprint"]
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]


def test_resume_refuses_to_change_the_model(tmp_path):
    import pytest

    from vqaudio.errors import VQAudioError

    first = train(recipe(tmp_path, steps=2), CPU, show_progress=False)
    with pytest.raises(VQAudioError, match="model.quantizer.codebook_size cannot change"):
        resume_recipe(first.run_dir, ["model.quantizer.codebook_size=64"])


@pytest.mark.slow
def test_ctrl_c_leaves_a_resumable_checkpoint(tmp_path):
    data = tiny_dict(train={"steps": 100000, "checkpoint_every": 100000, "valid_every": 100000, "log_every": 1})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vqaudio", "train", "r.yaml", "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    metrics = None
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list((tmp_path / "runs" / "tiny").glob("*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            metrics = found[0]
            break
        time.sleep(0.2)
    assert metrics is not None, proc.communicate(timeout=5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    run = metrics.parent
    step = load_checkpoint(list_checkpoints(run)[-1])["step"]
    assert step >= 3
    done = subprocess.run(
        [sys.executable, "-m", "vqaudio", "train", "--resume", str(run), f"train.steps={step + 2}", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"finished step {step + 2}" in done.stdout


def test_a_checkpoint_outside_a_run_folder_is_a_one_line_error(tmp_path):
    from vqaudio.errors import VQAudioError
    from vqaudio.train.run_dir import runs_dir_of

    loose = tmp_path / "model.pt"
    loose.touch()
    with pytest.raises(VQAudioError, match="not inside a run folder") as caught:
        runs_dir_of(loose)
    assert "\n" not in str(caught.value)
    inside = tmp_path / "runs" / "demo" / "20260101-000000" / "checkpoints" / "step_000001.pt"
    inside.parent.mkdir(parents=True)
    inside.touch()
    assert runs_dir_of(inside) == (tmp_path / "runs").resolve()
