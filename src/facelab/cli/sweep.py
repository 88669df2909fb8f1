"""``facelab sweep [run] | worker | report``: hyperparameter sweeps on Optuna."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from facelab.cli.common import JSON_OPT, _refuse_with_resume, console, emit_json
from facelab.utils.console import stdout_console


class _SweepGroup(TyperGroup):
    """``facelab sweep SPEC.yaml`` and ``facelab sweep --resume DIR`` mean ``facelab sweep run ...``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(cls=_SweepGroup, no_args_is_help=True,
                        help="Hyperparameter sweeps on Optuna: facelab sweep SPEC.yaml [--workers N]; sweep worker; "
                             "sweep report.")


@sweep_app.command("run")
def sweep_run(
    spec: Optional[Path] = typer.Argument(None, help="The sweep spec (YAML): command, base, space, metric, sampler, "
                                          "pruner, n_trials (docs/sweeps.md)."),
    workers: int = typer.Option(1, min=1, help="Local worker processes sharing the study."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads per worker (default: the cores shared out)."),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", min=1, help="Trials COMPLETE or PRUNED to reach (with "
                                           "--resume: the new total)."),
    storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL of the study database, e.g. "
                                          "postgresql+psycopg://user@host/db (default: sqlite in the sweep folder)."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Study name (default: the folder's name)."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="Any spec key, dotted, value in YAML: "
                                               "-o base.store=stores/celeba32 -o pruner.name=none (repeatable)."),
    out: Path = typer.Option(Path("runs"), help="Folder under which the sweep folder is created."),
    name: Optional[str] = typer.Option(None, help="Sweep folder sweep-NAME under --out (default: a timestamp)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the sweep in this folder: more trials until n_trials are "
                                          "COMPLETE or PRUNED; a killed worker's trial is FAILED and replaced."),
    accept_changes: bool = typer.Option(False, "--accept-changes", help="With --resume: continue although the "
                                        "folder's config.yaml (its base, sampler, pruner, n_trials ...) or a store "
                                        "changed since the sweep started; the study takes them as they are now."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the spec, print it resolved, run nothing."),
    as_json: bool = JSON_OPT,
) -> None:
    """Run a hyperparameter sweep: N local workers on one Optuna study, one run folder per trial, then the report."""
    from facelab.sweeps import create_sweep, launcher_lock, load_spec, open_sweep, prepare_spec, resume_sweep
    from facelab.sweeps.stopping import stop_on_signals
    from facelab.utils.secrets import mask_secrets

    with stop_on_signals():  # a stopped launcher stops its workers, whose trials end FAILED instead of hanging RUNNING
        if resume is not None:
            _refuse_with_resume(resume, {"SPEC": spec, "--study-name": study_name, "-o": option, "--name": name},
                                allowed="--n-trials, --workers, --threads, --accept-changes and --storage (to give a "
                                        "password)")
            open_sweep(resume, storage=storage)  # a sweep folder (nothing is made in any other folder)
            with launcher_lock(resume):  # (taken before anything changes: a second launcher changes nothing)
                sweep = resume_sweep(resume, storage=storage, n_trials=n_trials, accept_changes=accept_changes)
                _run(sweep, workers=workers, threads=threads, as_json=as_json)
            return
        if spec is None:
            raise typer.BadParameter("give a sweep spec (facelab sweep SPEC.yaml) or --resume DIR")
        if accept_changes:
            raise typer.BadParameter("--accept-changes goes with --resume DIR (a new sweep has nothing to change)")
        loaded = load_spec(spec, options=option, flags={"n_trials": n_trials, "storage": storage,
                                                        "study_name": study_name})
        if dry_run:
            sys.stdout.write(mask_secrets(prepare_spec(loaded).to_yaml()))
            return
        _run(create_sweep(loaded, out=out, name=name), workers=workers, threads=threads, as_json=as_json)


def _run(sweep: Any, *, workers: int, threads: int | None, as_json: bool) -> None:
    from facelab.sweeps import run_sweep
    from facelab.sweeps.stopping import Stopped

    console.print(f"sweep folder: {sweep.dir} (study {sweep.study_name}, {sweep.spec.n_trials} trials, {workers} "
                  f"worker{'s' * (workers > 1)}; logs in {sweep.dir / 'workers'})", highlight=False, markup=False)
    try:
        result = run_sweep(sweep, workers=workers, threads=threads, on_trial=_print_trial(sweep.spec.metric))
    except Stopped as e:
        console.print(f"stopped ({e}): the workers stopped too, their trials FAILED (interrupted); continue with "
                      f"facelab sweep --resume {sweep.dir}", highlight=False, markup=False)
        raise SystemExit(130) from None
    if as_json:
        emit_json(result)
        return
    _print_sweep(result)


def _print_trial(metric: str | None) -> Any:
    from facelab.utils.secrets import mask_secrets

    def show(t: Any) -> None:
        value = f" {metric}={t.value:.4f}" if t.state.name == "COMPLETE" and t.value is not None else ""
        note = mask_secrets(t.user_attrs["note"]) if t.state.name != "COMPLETE" and t.user_attrs.get("note") else None
        cpu = t.user_attrs.get("cpu_seconds")
        console.print(f"trial {t.number} {t.state.name}{value}{f' ({note})' if note else ''}"
                      f"{f', {cpu:.0f} s CPU' if cpu is not None else ''}", highlight=False, markup=False, soft_wrap=True)

    return show


def _print_sweep(result: dict[str, Any]) -> None:
    from facelab.utils.secrets import mask_secrets

    def say(text: str) -> None:
        console.print(mask_secrets(text), highlight=False, markup=False, soft_wrap=True)

    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result["states"].items()))
    say(f"done: {states}; {result['cpu_seconds']:.0f} s CPU in trials")
    if result["best_trial"] is not None:
        params = ", ".join(f"{k}={v}" for k, v in result["best_params"].items())
        say(f"best: trial {result['best_trial']}, {result['metric']}={result['best_value']:.4f} ({params})")
        say(f"its config: {result['best_config']} (facelab {result['command']} --config {result['best_config']})")
    for note in result.get("notes", []):
        say(f"note: {note}")
    say(f"report: {result['report']}")
    say(f"dashboard: {result['dashboard']}  (then http://127.0.0.1:8080/)")


@sweep_app.command("worker")
def sweep_worker(
    study: str = typer.Option(..., "--study", help="The study to join."),
    storage: str = typer.Option(..., envvar="FACELAB_SWEEP_STORAGE", help="SQLAlchemy URL of the study database "
                                "(or the FACELAB_SWEEP_STORAGE variable, which keeps a password out of the process list)."),
    folder: Optional[Path] = typer.Option(None, "--dir", help="Where this worker's trial folders go (default: the sweep "
                                          "folder recorded in the study when it is on this machine, else runs/STUDY)."),
    worker_index: Optional[int] = typer.Option(None, "--worker-index", hidden=True, help="Ignored: every trial draws "
                                               "with a seed of its own (the spec's seed and the trial's number)."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads for training."),
    as_json: bool = JSON_OPT,
) -> None:
    """Join a sweep (from this or another machine): run its trials until n_trials are COMPLETE or PRUNED."""
    from facelab.sweeps import run_worker
    from facelab.sweeps.stopping import Stopped, stop_on_signals, watch_launcher

    with stop_on_signals():
        watch_launcher()  # started by facelab sweep: stop when it ends
        if worker_index is not None:
            console.print("note: --worker-index is ignored: every trial draws with a seed of its own (the spec's seed "
                          "and the trial's number), whichever worker runs it", highlight=False)
        try:
            report = run_worker(storage, study, sweep_dir=folder, threads=threads)
        except Stopped as e:
            console.print(f"worker stopped ({e}); its trial, if one was running, FAILED (interrupted)", highlight=False)
            raise SystemExit(130) from None
        if as_json:
            emit_json(report.__dict__)
            return
        console.print(f"worker {report.worker}: ran trials {report.trials or 'none'} of study {report.study} "
                      f"(folders in {report.sweep_dir})", highlight=False)


@sweep_app.command("report")
def sweep_report_command(
    sweep_dir: Path = typer.Argument(..., help="A sweep folder (runs/sweep-NAME)."),
    storage: Optional[str] = typer.Option(None, help="The study database's URL with its password, when the recorded "
                                          "one (which has none) is not enough."),
    as_json: bool = JSON_OPT,
) -> None:
    """The best trial (best.yaml), every trial's state, params, value and CPU time, plots in report.html."""
    from facelab.sweeps import sweep_report

    result = sweep_report(sweep_dir, storage=storage)
    if as_json:
        emit_json(result)
        return
    from rich.table import Table
    from rich.text import Text

    names = list(result["trials"][0]["params"]) if result["trials"] else []
    t = Table(title=f"sweep {result['study_name']}: {result['metric']} ({result['direction']})")
    for c in ("trial", "state", "value", *names, "epochs", "CPU s", "note"):
        t.add_column(c)
    for r in result["trials"]:
        t.add_row(str(r["number"]), r["state"], "-" if r["value"] is None else f"{r['value']:.4f}",
                  *(Text(str(r["params"].get(n, ""))) for n in names), str(r["epochs"] or "-"),
                  "-" if r["cpu_seconds"] is None else f"{r['cpu_seconds']:.0f}", Text(r.get("note") or ""))
    stdout_console().print(t)
    _print_sweep(result)
