"""Data-parallel training under torchrun (gloo on the CPU), gradient accumulation, bf16 autocast,
torch.compile, and surviving signals: SIGTERM/SIGINT checkpoints, SIGKILL mid-write, exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
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
from vqaudio.train.loop import Trainer, autocast_dtype
from vqaudio.train.setup import Shard

CPU = torch.device("cpu")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

# k-means initialisation over two batches and a usage decay fast enough that dead codes are
# re-seeded within a few steps: every statistic that must be summed over ranks is exercised.
QUANTIZER = {"codebook_size": 32, "dim": 8, "init": "kmeans", "init_batches": 2, "restart_threshold": 0.5,
             "usage_decay": 0.5}  # fmt: skip


def recipe_dict(runs: Path, **train_keys) -> dict:
    model = {**tiny_dict()["model"], "quantizer": QUANTIZER}
    return tiny_dict(model=model, train={"runs_dir": str(runs), "checkpoint_every": 3, "valid_every": 100, **train_keys})


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def only_run(runs: Path) -> Path:
    (run,) = [p for p in (runs / "tiny").iterdir() if p.is_dir()]
    return run


def metrics(run: Path, split: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_the_doubled_batch(tmp_path):
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(recipe_dict(tmp_path / "ddp", steps=6, batch_size=2)))
    done = subprocess.run(
        [*TORCHRUN, "-m", "vqaudio", "train", "ddp.yaml", "--device", "cpu", "--quiet"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("finished step 6") == 1  # rank 0 alone reports
    single = train(validate_recipe(recipe_dict(tmp_path / "one", steps=6, batch_size=4), "one"), CPU, show_progress=False)

    run = only_run(tmp_path / "ddp")
    two = load_checkpoint(run / "checkpoints" / "step_000006.pt")
    one = load_checkpoint(single.checkpoint)
    assert max_difference(two["model"], one["model"]) < 1e-5
    # Both ranks hold the same weights and codebook, bit for bit.
    assert two["rank_fingerprints"] == [two["fingerprint"]] * 2
    # The logged metrics are the averages over ranks: the same numbers as the one-process run.
    logged_two, logged_one = metrics(run), metrics(single.run_dir)
    assert [r["step"] for r in logged_two] == list(range(1, 7))  # one writer
    assert sum(r["restarts"] for r in logged_one) > 0  # the restart path ran
    for a, b in zip(logged_two, logged_one):
        for key in ("loss", "nll", "commitment", "codes_used", "restarts", "perplexity"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert [p.name for p in list_checkpoints(run)] == ["step_000003.pt", "step_000006.pt"]


@pytest.mark.slow
def test_ddp_covers_the_discriminators_too(tmp_path):
    """A conv decoder trained against discriminators: two gloo processes give the generator and
    the discriminators the weights one process with the doubled batch gives them."""
    from test_conv_decoder import CONV_DECODER, SMALL_CRITIC

    def conv(runs: Path, batch_size: int) -> dict:
        data = recipe_dict(runs, steps=3, batch_size=batch_size, lr=0.01, adversarial_start=1, discriminator=SMALL_CRITIC,
                           # auraloss's spectral convergence is a ratio of norms over the whole batch, not a
                           # mean of per-example terms, so it alone would differ between 2 x 2 and 1 x 4
                           loss={"mel_windows": [64, 128, 256], "stft_ffts": [128, 256], "stft": 0.0})  # fmt: skip
        data["model"]["decoder"] = dict(CONV_DECODER)
        data["model"]["quantizer"]["restart_threshold"] = 0.0  # a restart would turn rounding noise into a new code
        return data

    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(conv(tmp_path / "ddp", 2)))
    done = subprocess.run(
        [*TORCHRUN, "-m", "vqaudio", "train", "ddp.yaml", "--device", "cpu", "--quiet"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    recipe = validate_recipe(conv(tmp_path / "one", 4), "one")
    initial = {k: v.clone() for k, v in build_setup(recipe).critic.state_dict().items()}
    single = train(recipe, CPU, show_progress=False)
    two = load_checkpoint(only_run(tmp_path / "ddp") / "checkpoints" / "step_000003.pt")
    one = load_checkpoint(single.checkpoint)
    # Convolutions sum in another order on batches of 2 than of 4; measured 8e-5 and 1e-5 here. A
    # rank that kept its own discriminator gradients would be off by about the step size, 1e-2.
    assert max_difference(two["model"], one["model"]) < 1e-3
    assert max_difference(two["critic"], one["critic"]) < 1e-3
    assert max_difference(two["critic"], initial) > 1e-3  # the discriminators did train
    assert two["rank_fingerprints"] == [two["fingerprint"]] * 2


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_at_one_step_and_resume_continues_the_job(tmp_path):
    """Ctrl-C reaches torchrun and both workers (twice: the launcher forwards it). One checkpoint is
    written; resuming under torchrun gives the model a straight one-process run would have."""
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(recipe_dict(tmp_path / "ddp", steps=100000, batch_size=2,
                                                                  log_every=1, checkpoint_every=100000)))  # fmt: skip
    proc = subprocess.Popen(
        [*TORCHRUN, "-m", "vqaudio", "train", "ddp.yaml", "--device", "cpu", "--quiet"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        logs = list((tmp_path / "ddp").glob("tiny/*/metrics.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(proc.communicate()[1])
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, stderr = proc.communicate(timeout=120)
    run = only_run(tmp_path / "ddp")
    (checkpoint,) = list_checkpoints(run)
    assert stderr.count("interrupted: SIGINT at step") == 1, stderr
    assert f"torchrun --nproc_per_node=2 -m vqaudio train --resume {run}" in stderr
    stopped = load_checkpoint(checkpoint)
    step = stopped["step"]
    assert stopped["rank_fingerprints"] == [stopped["fingerprint"]] * 2
    assert len(stopped["rng"]["ranks"]) == 2

    done = torchrun(["train", "--resume", str(run), f"train.steps={step + 2}", "--device", "cpu", "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr
    resumed = load_checkpoint(list_checkpoints(run)[-1])
    assert resumed["step"] == step + 2
    # The same job run straight through: equal to the interrupted one resumed. (A one-process run
    # differs from any two-rank run by summation order, about 1e-7 a step, and a dead code restarted
    # near the usage threshold can turn that into 1e-3; test_two_gloo_processes_... covers that
    # equivalence with its tolerance.)
    (tmp_path / "straight.yaml").write_text(yaml.safe_dump(recipe_dict(tmp_path / "straight", steps=step + 2, batch_size=2)))
    straight = torchrun(["train", "straight.yaml", "--device", "cpu", "--quiet"], tmp_path, retry=False)
    if straight.returncode != 0 and GLOO_TEARDOWN in straight.stderr:  # continue that run, as torchrun() would
        straight = torchrun(["train", "--resume", str(only_run(tmp_path / "straight")), "--device", "cpu", "--quiet"], tmp_path)
    assert straight.returncode == 0, straight.stderr
    uninterrupted = load_checkpoint(list_checkpoints(only_run(tmp_path / "straight"))[-1])
    assert uninterrupted["step"] == step + 2
    assert max_difference(resumed["model"], uninterrupted["model"]) < 1e-6
    assert max_difference(resumed["optimizer"]["state"][0], uninterrupted["optimizer"]["state"][0]) < 1e-6


GLOO_TEARDOWN = "terminate called without an active exception"


def torchrun(args: list[str], cwd: Path, retry: bool = True) -> subprocess.CompletedProcess[str]:
    """A torchrun job; with `retry` (for `--resume`, which continues from the run's last checkpoint
    exactly), run once more if a rank aborted in gloo's thread teardown (seen once in CI). Any other
    failure is returned as it is."""
    for _ in range(2 if retry else 1):
        done = subprocess.run([*TORCHRUN, "-m", "vqaudio", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
        if done.returncode == 0 or GLOO_TEARDOWN not in done.stderr:
            break
    return done


def trainer_for(tmp_path: Path, name: str, **train_keys) -> Trainer:
    """An in-process trainer on the tiny recipe with a loss-trained, randomly initialised codebook
    (its updates then depend on the gradient only, which accumulation must reproduce)."""
    model = {**tiny_dict()["model"], "quantizer": {"codebook_size": 32, "dim": 8, "update": "loss", "init": "random"}}
    data = tiny_dict(model=model, train={"valid_every": 100, "checkpoint_every": 100, **train_keys})
    recipe = validate_recipe(data, name)
    run_dir = tmp_path / name
    (run_dir / "checkpoints").mkdir(parents=True)
    return Trainer(build_setup(recipe), recipe, run_dir, CPU, show_progress=False)


def test_gradient_accumulation_equals_the_whole_batch_at_once(tmp_path):
    whole = trainer_for(tmp_path, "whole", steps=3, batch_size=4)
    parts = trainer_for(tmp_path, "parts", steps=3, batch_size=2, accumulate_batches=2)
    whole.run()
    parts.run()
    weights = lambda trainer: dict(trainer.model.named_parameters())  # noqa: E731 (usage statistics are per batch)
    assert max_difference(weights(whole), weights(parts)) < 1e-5
    halves = trainer_for(tmp_path, "halves", steps=3, batch_size=2)
    halves.run()  # not a test that cannot fail: half the batch trains a different model
    assert max_difference(weights(whole), weights(halves)) > 1e-4


def test_bf16_autocast_computes_in_bf16_but_quantises_and_stores_in_fp32(tmp_path):
    assert autocast_dtype("auto", CPU) is None
    assert autocast_dtype("fp32", torch.device("cuda")) is None
    trainer = trainer_for(tmp_path, "bf16", steps=2, batch_size=2, precision="bf16")
    batch = trainer.setup.train_batch(0, Shard(2, 0, 2))
    with trainer.autocast():
        z = trainer.model.encoder(batch["audio"][:, None])
        quantized = trainer.model.quantizer(z)
    assert z.dtype == torch.bfloat16 and quantized.quantized.dtype == torch.float32
    fp32 = trainer_for(tmp_path, "fp32", steps=2, batch_size=2)
    start = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    assert max_difference(start, dict(fp32.model.named_parameters())) == 0  # the same initial weights
    trainer.run()
    fp32.run()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    # bf16 trains the model fp32 trains, up to rounding: the weights move as far, the same way (but the
    # run did compute in bf16: not bit for bit), and the validation loss agrees closely.
    after_bf16, after_fp32 = dict(trainer.model.named_parameters()), dict(fp32.model.named_parameters())
    move_bf16 = torch.cat([(after_bf16[k] - start[k]).detach().flatten() for k in start])
    move_fp32 = torch.cat([(after_fp32[k] - start[k]).detach().flatten() for k in start])
    assert move_fp32.norm() > 0.1 and (move_bf16 - move_fp32).norm() < 0.5 * move_fp32.norm()
    assert max_difference(after_bf16, after_fp32) > 0
    assert trainer.last_valid["loss"] == pytest.approx(fp32.last_valid["loss"], rel=1e-2)


@pytest.mark.slow
def test_compiled_training_step_matches_eager(tmp_path):
    eager = trainer_for(tmp_path, "eager", steps=2, batch_size=2)
    compiled = trainer_for(tmp_path, "compiled", steps=2, batch_size=2, compile=True)
    assert compiled.forward is not compiled.step_module
    eager.run()
    compiled.run()
    assert max_difference(eager.model.state_dict(), compiled.model.state_dict()) < 1e-4
    assert not any(k.startswith("_orig_mod") for k in load_checkpoint(list_checkpoints(compiled.run_dir)[-1])["model"])


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_equals_an_uninterrupted_run(tmp_path):
    data = tiny_dict(train={"steps": 100000, "checkpoint_every": 100000, "valid_every": 100000, "log_every": 1,
                            "runs_dir": str(tmp_path / "runs")})  # fmt: skip
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vqaudio", "train", "r.yaml", "--quiet", "--device", "cpu"],
        cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(
        len(p.read_text().splitlines()) >= 3 for p in (tmp_path / "runs").glob("tiny/*/metrics.jsonl")
    ):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted: SIGTERM at step" in stderr and "Traceback" not in stderr
    run = only_run(tmp_path / "runs")
    step = load_checkpoint(list_checkpoints(run)[-1])["step"]
    resumed = train(resume_recipe(run, [f"train.steps={step + 3}"]), CPU, run, show_progress=False)
    data["train"].update(steps=step + 3, runs_dir=str(tmp_path / "straight"))
    straight = train(validate_recipe(data, "straight"), CPU, show_progress=False)
    a, b = load_checkpoint(resumed.checkpoint), load_checkpoint(straight.checkpoint)
    assert a["step"] == b["step"] == step + 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


KILLED_WHILE_WRITING = textwrap.dedent(
    """
    import io, os, sys, time
    from pathlib import Path
    import torch
    from vqaudio.tasks.run import resume_recipe, train

    real_save = torch.save

    def half_then_hang(obj, path):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        with open(path, "wb") as handle:
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            handle.flush()
            os.fsync(handle.fileno())
        print("WRITING", path, flush=True)
        time.sleep(600)

    torch.save = half_then_hang
    run = Path(sys.argv[1])
    train(resume_recipe(run, ["train.steps=4"]), torch.device("cpu"), run, show_progress=False)
    """
)


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_intact(tmp_path):
    first = train(validate_recipe(tiny_dict(train={"steps": 2, "runs_dir": str(tmp_path / "runs")}), "t"), CPU,
                  show_progress=False)  # fmt: skip
    before = first.checkpoint.read_bytes()
    (tmp_path / "driver.py").write_text(KILLED_WHILE_WRITING)
    proc = subprocess.Popen(
        [sys.executable, "driver.py", str(first.run_dir)], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = proc.stdout.readline()
    assert line.startswith("WRITING"), line
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = Path(line.split()[1])
    assert partial.exists() and partial.name.endswith(".tmp")  # the half-written file, under a temporary name
    assert [p.name for p in list_checkpoints(first.run_dir)] == ["step_000002.pt"]
    assert first.checkpoint.read_bytes() == before
    assert load_checkpoint(first.checkpoint)["step"] == 2
    resumed = train(resume_recipe(first.run_dir, ["train.steps=4"]), CPU, first.run_dir, show_progress=False)
    assert resumed.step == 4 and not partial.exists()  # the resumed run cleared the leftover


def test_the_unused_parameter_probe_restores_the_cuda_generator_too(monkeypatch):
    """The probe runs a training step on a copy; on a GPU it draws from CUDA's generator as well,
    which must be put back (the GPU is faked here: its generator state is a counter)."""
    from vqaudio.train import distributed as dist_module

    cuda_state = {"value": torch.tensor([7], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: cuda_state["value"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=None: cuda_state.update(value=state.clone()))

    def probe_step(model):
        cuda_state["value"] = torch.tensor([99], dtype=torch.uint8)  # the step advanced the GPU's generator
        torch.rand(3)  # and the CPU's
        return model(torch.ones(1, 2)).sum()

    model = torch.nn.Linear(2, 1)
    cpu_before = torch.get_rng_state()
    unused = dist_module.has_unused_parameters(model, probe_step, torch.device("cuda", 0))
    assert unused is False
    assert int(cuda_state["value"][0]) == 7
    assert torch.equal(torch.get_rng_state(), cpu_before)
