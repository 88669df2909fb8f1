"""``facelab experiment batch-schedule | imbalance | methods``: config -> run folder -> results and plots."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from facelab.cli.common import ACCEPT_CHANGED_OPT, JSON_OPT, _refuse_with_resume, _run_folder, console, emit_json
from facelab.config import resolve_config, resume_config
from facelab.utils.console import stdout_console

experiment_app = typer.Typer(help="Experiments: config -> run folder -> results and plots.", no_args_is_help=True)


@experiment_app.command("batch-schedule")
def experiment_batch_schedule(
    store: Optional[Path] = typer.Argument(None, help="Store to train on (or `store:` in --config)."),
    config: Optional[Path] = typer.Option(None, help="YAML overrides of BatchScheduleConfig."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="KEY=VALUE override, e.g. -o epochs=8"),
    out: Path = typer.Option(Path("runs"), help="Folder under which the experiment folder is created."),
    resume: Optional[Path] = typer.Option(None, help="Resume the study in this folder after a kill (finished "
                                                     "variants are kept, an interrupted one continues)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    accept_changed_inputs: bool = ACCEPT_CHANGED_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """LR decay vs batch-size increase vs hybrid at the same milestones: accuracy, updates, training time."""
    from facelab.data.store import Store
    from facelab.experiments.batch_schedule import BatchScheduleConfig, run_batch_schedule, study_splits
    from facelab.report.batch_schedule import results_table

    if resume is not None:
        _refuse_with_resume(resume, {"STORE": store, "--config": config, "-o": option})
        cfg = resume_config(BatchScheduleConfig, resume)
        result = run_batch_schedule(cfg, run_dir=resume, accept_changed_inputs=accept_changed_inputs)
    else:
        _accept_needs_resume(accept_changed_inputs)
        cfg = resolve_config(BatchScheduleConfig, yaml_file=config, flags={"store": str(store) if store else None},
                             options=option, where=str(config or "batch-schedule options"))
        study_splits(cfg, Store.open(cfg.store))  # labels, device and splits checked before any folder or training
        if dry_run:
            sys.stdout.write(cfg.to_yaml())
            return
        with _run_folder("batch-schedule", name=None, out=out, config=cfg, config_files=[config]) as run_dir:
            result = run_batch_schedule(cfg, run_dir=run_dir)
    if as_json:
        emit_json(result)
    else:
        stdout_console().print(results_table(result["results"]))
        console.print(f"results and curves in {result['run_dir']}")


def experiment_imbalance(
    config: Optional[Path] = typer.Argument(None, help="YAML overrides of ImbalanceStudyConfig (store, target, p, methods, ...)."),
    store: Optional[Path] = typer.Option(None, help="Store (overrides the config's)."),
    target: Optional[str] = typer.Option(None, help="Binary label whose minority is reduced, e.g. Male or gender."),
    p: Optional[str] = typer.Option(None, help="Minority share(s) kept in training, e.g. 0.1 or 0.05,0.1,0.25"),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods (see `facelab experiment methods`)."),
    seeds: Optional[int] = typer.Option(None, help="Number of seeds per method."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="An extra external store to evaluate on."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="KEY=VALUE, e.g. -o classifier.trainer.epochs=5"),
    out: Path = typer.Option(Path("runs"), help="Folder under which the study folder is created."),
    resume: Optional[Path] = typer.Option(None, help="Resume the study in this folder (finished cells are kept)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the resolved config, train nothing."),
    accept_changed_inputs: bool = ACCEPT_CHANGED_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Does generated data help a minority class? Methods x seeds, mean ± 95% CI, report.html."""
    from facelab.experiments.imbalance_study import ImbalanceStudyConfig, run_study, validate_study
    from facelab.report.imbalance_study import results_markdown

    flags = {"store": str(store) if store else None, "target": target, "seeds": seeds,
             "eval_data": str(eval_data) if eval_data else None, "p": p, "methods": methods}
    if resume is not None:
        _refuse_with_resume(resume, {"CONFIG": config, **{f"--{k.replace('_', '-')}": v for k, v in flags.items()},
                                     "-o": option})
        cfg = resume_config(ImbalanceStudyConfig, resume)
        summary = run_study(cfg, run_dir=resume, accept_changed_inputs=accept_changed_inputs)
    else:
        _accept_needs_resume(accept_changed_inputs)
        cfg = resolve_config(ImbalanceStudyConfig, yaml_file=config, flags=flags, options=option,
                             where=str(config or "study options"))
        validate_study(cfg)
        if dry_run:
            sys.stdout.write(cfg.to_yaml())
            return
        with _run_folder("imbalance", name=None, out=out, config=cfg, config_files=[config]) as run_dir:
            summary = run_study(cfg, run_dir=run_dir)
    if as_json:
        emit_json(summary)
    else:
        stdout_console().print(results_markdown(summary["aggregate"]), markup=False, highlight=False)
        console.print(f"report: {summary['report']}")


def _accept_needs_resume(accept: bool) -> None:
    if accept:
        raise typer.BadParameter("--accept-changed-inputs goes with --resume DIR (a new study records its inputs)")


experiment_app.command("imbalance")(experiment_imbalance)
# the study's former name, kept for scripts that use it (hidden from --help; typer marks it deprecated)
experiment_app.command("augment", hidden=True, deprecated=True)(experiment_imbalance)


@experiment_app.command("methods")
def experiment_methods() -> None:
    """List the balancing methods of the class-imbalance study."""
    from facelab.experiments.balancing import METHODS

    for name in METHODS.names():
        console.print(name)
