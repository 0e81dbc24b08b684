"""Running a sweep on Optuna: the study, its trials, workers that share it.

Each trial is an ordinary run folder, `runs/<sweep>/t<NNN>/`, trained by the same function as
`vqaudio train`, then evaluated into `eval.json` (and `eval_nq<k>.json` for fewer codebooks of a
residual model). The study lives in an SQLite file in the sweep folder by default, or in any
database Optuna accepts, so that workers on several machines share it.

Stopping and resuming: a SIGTERM or Ctrl-C ends the current trial's training at a checkpoint;
the trial is then put back in the queue with its parameters and folder, so the next invocation
continues it from that checkpoint. A worker that dies without a word (SIGKILL, a lost machine)
stops its heartbeat; once the heartbeat is `GRACE_SECONDS` old, any worker re-queues that trial
the same way. Finished trials are never run again.

Grid sweeps put every point in the queue when the study is created; random and TPE sweeps ask
the sampler for each new trial until `trials` have been started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, Trial, TrialState
from rich.console import Console

from vqaudio.errors import SweepStopped, TrainingInterrupted, VQAudioError
from vqaudio.evaluation.evaluate import MODEL_SYSTEM, ORIGINAL_SYSTEM, EvalOptions
from vqaudio.evaluation.run import EvalRequest, run_eval
from vqaudio.experiments.runs import BASELINES_FILE, SWEEP_FILE, TRIAL_FILE
from vqaudio.experiments.sweep_file import VALID_PREFIX, Range, Sweep
from vqaudio.fileio import atomic_output
from vqaudio.formats.checkpoint import list_checkpoints
from vqaudio.progress import count_bar
from vqaudio.recipe import apply_overrides, read_yaml, validate_recipe
from vqaudio.tasks.run import resume_recipe, train
from vqaudio.train.setup import Diverged

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30  # a running trial whose heartbeat is this old belongs to a dead worker


class _Surplus(Exception):
    """The trial the sampler started is not needed (its point ran already, or enough trials have started)."""


@dataclass
class TrialOutcome:
    folder: Path
    params: dict[str, Any]
    state: str  # complete, pruned, failed
    value: float | None
    seconds: float
    message: str = ""


def storage_url(sweep: Sweep, given: str | None) -> str:
    """`--storage`, or the SQLite file `study.db` in the sweep folder."""
    if given:
        return given
    sweep.folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(sweep.folder / 'study.db').resolve()}"


def _spec_fingerprint(sweep: Sweep) -> str:
    """What must not change between invocations of one study (the trial count may grow)."""
    spec = sweep.spec.model_dump(mode="json", exclude={"trials"})
    return json.dumps({**spec, "recipe": str(sweep.recipe_path.resolve())}, sort_keys=True)


def _carried(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: attrs[k] for k in ("point", "folder") if k in attrs}


def _requeue(study: optuna.Study, trial: FrozenTrial | Trial) -> None:
    """Put a trial that did not finish back in the queue: same parameters, same folder."""
    study.enqueue_trial(trial.params, user_attrs={**_carried(trial.user_attrs), "retry_of": trial.number})


def _storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """The study database; workers that start together race to create its tables, so a failure is retried."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # the heartbeat is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=_requeue
                )
        except Exception as exc:  # noqa: BLE001 - a bad URL or an unreachable database, said in one line
            if isinstance(exc, ImportError):  # no driver for this database: retrying will not help
                raise VQAudioError(
                    f"--storage {url!r}: no Python driver for this database; install it (psycopg2-binary for "
                    f"postgresql+psycopg2://, psycopg for postgresql://, pymysql for mysql+pymysql://)"
                ) from None
            if attempt == attempts - 1:
                raise VQAudioError(f"--storage {url!r}: cannot open the study storage ({str(exc).splitlines()[0]})") from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(sweep: Sweep, url: str) -> optuna.Study:
    """Create the study (and, for a grid, queue every point) or join the one already there."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is said in one line of ours
    storage = _storage(url)
    sampler: optuna.samplers.BaseSampler
    if sweep.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=sweep.spec.sampler_seed)
    else:  # a grid's trials come from the queue; random draws otherwise
        sampler = optuna.samplers.RandomSampler(seed=sweep.spec.sampler_seed)
    pruning = sweep.pruning
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=pruning.startup_trials, n_warmup_steps=pruning.warmup_steps)
        if pruning.kind == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=storage, study_name=sweep.name, direction=sweep.direction, sampler=sampler, pruner=pruner, load_if_exists=True
    )
    fingerprint = _spec_fingerprint(sweep)
    recorded = study.user_attrs.get("spec")
    if recorded is None:
        study.set_user_attr("spec", fingerprint)
    elif recorded != fingerprint:
        raise VQAudioError(
            f"{sweep.path}: the study {sweep.name!r} in {url} was started from a different sweep file; "
            f"set another name: in the sweep file, or remove {sweep.folder}"
        )
    if sweep.sampler == "grid" and not study.user_attrs.get("queued"):
        for point, params in enumerate(sweep.grid()[: sweep.trials]):  # two workers starting together: see _check_needed
            study.enqueue_trial({k: _choice(v) for k, v in params.items()}, user_attrs={"point": point}, skip_if_exists=True)
        study.set_user_attr("queued", True)
    return study


def _choice(value: Any) -> Any:
    """Optuna's categorical choices are scalars; lists and mappings (levels: [8, 5, 5, 5]) go as JSON."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def _unchoice(value: Any, choices: list[Any]) -> Any:
    return json.loads(value) if isinstance(value, str) and any(_choice(c) == value and c != value for c in choices) else value


def suggest(trial: Trial, sweep: Sweep) -> dict[str, Any]:
    """The trial's recipe values, drawn from the space (or fixed by the queue)."""
    params: dict[str, Any] = {}
    for key, values in sweep.spec.space.items():
        if isinstance(values, Range):
            if values.integer:
                step = int(values.step or 1)
                params[key] = trial.suggest_int(key, int(values.low), int(values.high), step=step, log=values.log)
            else:
                params[key] = trial.suggest_float(key, float(values.low), float(values.high), step=values.step, log=values.log)
        else:
            params[key] = _unchoice(trial.suggest_categorical(key, [_choice(v) for v in values]), values)
    params["seed"] = trial.suggest_categorical("seed", sweep.seeds)
    return params


def _check_needed(trial: Trial, sweep: Sweep) -> None:
    trials = trial.study.get_trials(deepcopy=False)
    if sweep.sampler == "grid":
        point = trial.user_attrs.get("point")
        if point is None:
            raise _Surplus("no grid point left")
        for other in trials:
            same = other.number != trial.number and other.user_attrs.get("point") == point
            if same and (other.state in (TrialState.COMPLETE, TrialState.PRUNED) or (other.state == TrialState.RUNNING and other.number < trial.number)):
                raise _Surplus(f"point {point} ran in trial {other.number}")
        return
    if "retry_of" in trial.user_attrs:
        return
    replaced = {t.user_attrs.get("retry_of") for t in trials}
    earlier = [t for t in trials if t.number < trial.number and t.number not in replaced and not t.user_attrs.get("surplus")]
    if len(earlier) >= sweep.trials:
        raise _Surplus(f"{sweep.trials} trials have started")


def _work_left(study: optuna.Study, sweep: Sweep) -> bool | None:
    """True: start a trial. False: the sweep is done. None: only other workers' trials are running."""
    with warnings.catch_warnings():  # experimental since Optuna 2.9, and the heartbeat's only public entry
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # dead workers' trials go back in the queue
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    replaced = {t.user_attrs.get("retry_of") for t in trials}
    if sweep.sampler != "grid":
        counted = [t for t in trials if t.number not in replaced and not t.user_attrs.get("surplus")]
        if len(counted) < sweep.trials:
            return True
    return None if any(t.state == TrialState.RUNNING for t in trials) else False


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_output(path, force=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM and Ctrl-C raise SweepStopped outside training (training turns them into a checkpoint)."""

    def handler(signum: int, frame: Any) -> None:
        raise SweepStopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _TrialRunner:
    """The objective: train one trial in its folder (or continue it), evaluate, return the metric."""

    def __init__(self, sweep: Sweep, device: torch.device, console: Console, show_progress: bool) -> None:
        self.sweep = sweep
        self.device = device
        self.console = console
        self.show_progress = show_progress
        self.outcome: TrialOutcome | None = None

    def __call__(self, trial: Trial) -> float:
        sweep = self.sweep
        params = suggest(trial, sweep)
        try:
            _check_needed(trial, sweep)
        except _Surplus:
            trial.set_user_attr("surplus", True)
            raise
        folder = sweep.folder / trial.user_attrs.get("folder", f"t{trial.number:03d}")
        trial.set_user_attr("folder", folder.name)
        started = time.perf_counter()
        record = {"trial": trial.number, "sweep": sweep.name, "params": params, "state": "running", "value": None}
        self.outcome = TrialOutcome(folder, params, "failed", None, 0.0)
        try:
            result = self._train(trial, folder, params)
            _write_json(folder / TRIAL_FILE, record)
            value = self._evaluate(folder, result.last_valid)
        except optuna.TrialPruned as exc:
            self._finish(folder, record, "pruned", None, started, str(exc))
            raise
        except (TrainingInterrupted, SweepStopped) as exc:
            trial.set_user_attr("interrupted", True)
            _requeue(trial.study, trial)
            self._finish(folder, record, "interrupted", None, started, "stopped: it continues from its checkpoint next time")
            cause = str(exc).split(":")[0]  # SIGTERM at step N, or the signal's name outside training
            raise SweepStopped(f"{cause} in {sweep.name}/{folder.name}; continue the sweep with: vqaudio sweep {sweep.path}") from None
        except (VQAudioError, Diverged) as exc:  # this trial cannot train or be measured: the sweep goes on
            trial.set_user_attr("error", str(exc))
            self._finish(folder, record, "failed", None, started, str(exc))
            raise
        except Exception as exc:  # a crash (a bug, out of memory): the worker stops; the trial runs again next time
            _requeue(trial.study, trial)
            self._finish(folder, record, "failed", None, started, f"{type(exc).__name__}: {exc}")
            raise
        self._finish(folder, record, "complete", value, started)
        return value

    def _finish(self, folder: Path, record: dict[str, Any], state: str, value: float | None, started: float, message: str = "") -> None:
        seconds = time.perf_counter() - started
        assert self.outcome is not None
        self.outcome = TrialOutcome(folder, record["params"], state, value, seconds, message)
        if folder.exists():
            _write_json(folder / TRIAL_FILE, {**record, "state": state, "value": value, "message": message})

    def _train(self, trial: Trial, folder: Path, params: dict[str, Any]):
        sweep = self.sweep
        if folder.exists() and list_checkpoints(folder):  # a trial stopped part-way: continue it
            self.console.print(f"{sweep.name}/{folder.name}: continuing from {list_checkpoints(folder)[-1].name}")
            return train(resume_recipe(folder, []), self.device, folder, self.show_progress, self.console)
        if folder.exists():  # stopped before its first checkpoint: nothing to keep
            shutil.rmtree(folder)
        overrides = [*sweep.overrides(params), f"train.runs_dir={json.dumps(str(sweep.folder))}"]
        data, touched = apply_overrides(read_yaml(sweep.recipe_path), overrides)
        recipe = validate_recipe(data, str(sweep.recipe_path), touched)
        hook = _pruning_hook(trial, sweep) if sweep.pruning.kind != "none" else None
        return train(recipe, self.device, None, self.show_progress, self.console, run_dir=folder, on_validation=hook)

    def _evaluate(self, folder: Path, last_valid: dict[str, float]) -> float:
        sweep = self.sweep
        spec = sweep.spec.eval
        baselines_file = sweep.folder / BASELINES_FILE
        with_baselines = spec.baselines and not baselines_file.exists()
        report = self._eval(folder, None, "all" if with_baselines else "none", folder / "eval.json")
        if with_baselines:
            others = [s for s in report["systems"] if s["name"] not in (MODEL_SYSTEM, ORIGINAL_SYSTEM)]
            _write_json(baselines_file, {**{k: v for k, v in report.items() if k not in ("systems", "clips")}, "systems": others})
        n_q = int(report.get("n_q") or 1)
        if spec.each_n_q and n_q > 1:
            for k in range(1, n_q):
                self._eval(folder, k, "none", folder / f"eval_nq{k}.json")
        metric = sweep.metric
        if metric.startswith(VALID_PREFIX):
            name = metric.removeprefix(VALID_PREFIX)
            if name not in last_valid:
                raise VQAudioError(f"{sweep.path}: objective {metric}: the validation has no {name!r}; it has {', '.join(last_valid)}")
            return float(last_valid[name])
        model = next(s for s in report["systems"] if s["name"] == MODEL_SYSTEM)
        value = (model["summary"].get(metric) or {}).get("mean")
        if value is None:
            raise VQAudioError(f"{sweep.path}: objective {metric}: the eval gave no value (see {folder / 'eval.json'})")
        return float(value)

    def _eval(self, folder: Path, n_q: int | None, baselines: str, target: Path) -> dict[str, Any]:
        spec = self.sweep.spec.eval
        options = EvalOptions(n_q, spec.temperature, 0, "auto", baselines, metrics=",".join(self.sweep.eval_metrics()))
        request = EvalRequest(folder, data=spec.data, json_out=target, options=options, max_clips=spec.max_clips, force=True)
        return run_eval(request, self.device).report


def _pruning_hook(trial: Trial, sweep: Sweep) -> Callable[[int, dict[str, float]], None]:
    """Report the validation metric to the pruner (as the study's direction reads it) and stop a poor trial."""
    sign = 1.0 if sweep.direction == "minimize" else -1.0
    name = sweep.pruning.metric

    def hook(step: int, values: dict[str, float]) -> None:
        if name not in values:
            raise VQAudioError(f"{sweep.path}: pruning.metric {name!r}: the validation has no such value; it has {', '.join(values)}")
        trial.report(sign * values[name], step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: valid {name} {values[name]:.4g}")

    return hook


def _describe(outcome: TrialOutcome, sweep: Sweep) -> str:
    params = " ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in outcome.params.items())
    result = f"{sweep.metric} {outcome.value:.4g}" if outcome.value is not None else outcome.state
    tail = f" ({outcome.message})" if outcome.message and outcome.state != "complete" else ""
    took = f"{outcome.seconds:.0f} s" if outcome.seconds < 120 else f"{outcome.seconds / 60:.1f} min"
    return f"{sweep.name}/{outcome.folder.name} {params}: {result} in {took}{tail}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_worker(
    sweep: Sweep, url: str, device: torch.device, console: Console, show_progress: bool = True, label: str = ""
) -> list[TrialOutcome]:
    """Take trials from the study until none is left; returns what this worker ran."""
    study = open_study(sweep, url)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    if not (sweep.folder / "sweep.yaml").exists():
        (sweep.folder / "sweep.yaml").write_text(sweep.path.read_text())
    _write_json(sweep.folder / SWEEP_FILE, {"name": sweep.name, "metric": sweep.metric, "direction": sweep.direction,
                                            "sampler": sweep.sampler, "trials": sweep.trials, "storage": url})  # fmt: skip
    runner = _TrialRunner(sweep, device, console, show_progress)
    ran: list[TrialOutcome] = []
    with _signals_stop():
        while True:
            left = _work_left(study, sweep)
            if left is False:
                break
            if left is None:  # another worker's trial is running: it finishes, or its heartbeat goes stale
                time.sleep(HEARTBEAT_SECONDS / 2)
                continue
            runner.outcome = None
            try:
                study.optimize(runner, n_trials=1, catch=(VQAudioError, Diverged, _Surplus))
            except SweepStopped:
                if runner.outcome is not None:
                    console.print(f"{label}{_describe(runner.outcome, sweep)}", soft_wrap=True, highlight=False, markup=False)
                raise
            if runner.outcome is not None:
                ran.append(runner.outcome)
                console.print(f"{label}{_describe(runner.outcome, sweep)}", soft_wrap=True, highlight=False, markup=False)
    return ran


def finished_trials(study: optuna.Study) -> int:
    """Trials that ran to an end: complete, pruned, or failed on their own (not stopped, not surplus)."""
    done = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            done += 1
        elif trial.state == TrialState.FAIL and "error" in trial.user_attrs:
            done += 1
    return done


def run_sweep(
    sweep: Sweep,
    url: str,
    device: torch.device,
    workers: int,
    console: Console,
    threads: int | None = None,
    device_name: str = "auto",
    show_progress: bool = True,
) -> None:
    """`vqaudio sweep`: one worker here, or `workers` worker processes sharing the storage."""
    if workers == 1:
        if threads:
            torch.set_num_threads(threads)
        run_worker(sweep, url, device, console, show_progress)
        return
    per_worker = threads or max(1, (os.cpu_count() or 1) // workers)
    command = [sys.executable, "-m", "vqaudio", "sweep", str(sweep.path), "--worker", "--storage", url,
               "--threads", str(per_worker), "--device", device_name, "--quiet"]  # fmt: skip
    study = open_study(sweep, url)  # create it (and queue a grid) once, before the workers race for it
    processes = [
        subprocess.Popen([*command, "--label", f"[worker {i + 1}] "], start_new_session=True, stderr=subprocess.PIPE, text=True)
        for i in range(workers)
    ]

    def relay(process: subprocess.Popen[str]) -> None:  # the workers' lines, printed above the bar
        assert process.stderr is not None
        for line in process.stderr:
            console.print(line.rstrip("\n"), soft_wrap=True, highlight=False, markup=False)

    readers = [threading.Thread(target=relay, args=(p,), daemon=True) for p in processes]
    for reader in readers:
        reader.start()

    def forward(signum: int, frame: Any) -> None:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with count_bar(f"sweep {sweep.name}", sweep.trials, console, show_progress) as update:
            while any(p.poll() is None for p in processes):
                update(finished_trials(study))
                time.sleep(1.0)
            update(finished_trials(study))
        for reader in readers:
            reader.join(timeout=5)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    codes = [process.returncode for process in processes]
    if any(code == 130 for code in codes):
        raise SweepStopped(f"the workers stopped at a checkpoint; continue with: vqaudio sweep {sweep.path} -j {workers}")
    failed = [code for code in codes if code != 0]
    if failed:
        raise VQAudioError(f"{sweep.path}: {len(failed)} of {workers} workers failed (exit codes {failed}); see their messages above")
