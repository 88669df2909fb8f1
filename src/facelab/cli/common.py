"""What the command modules share: the stderr console, ``--json`` output, the options several commands take,
run folders, ``--resume``, and training in one or several processes (``--nproc``, torchrun)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import typer

from facelab.config import StrictConfig, resume_config
from facelab.errors import FacelabError
from facelab.utils.console import stderr_console
from facelab.utils.io import finite_or_none

console = stderr_console()  # whole lines off a terminal, never cut at 80 columns (utils/console.py)
JSON_OPT = typer.Option(False, "--json", help="Print the figures as JSON on stdout.")
OPTION_OPT = typer.Option(None, "-o", "--option", help="Any config key, dotted, value in YAML: -o trainer.epochs=3 "
                          "-o labels=Male,Smiling (repeatable).")
DEVICE_OPT = typer.Option("cpu", help="cpu | cuda | cuda:N | auto")
CHECKPOINT_OPT = typer.Option("best", "--checkpoint", help="Checkpoint of each run folder: best (by its validation "
                              "metric) or last (the last epoch's).")
FACES_OPT = typer.Option("auto", "--faces", help="Photos: auto (find and align every face when the model was trained "
                         "on aligned faces, e.g. CelebA) | detect | aligned (each photo is one aligned face).")
# (facelab align and data prepare --align take their own --detector, in cli/data.py: no checkpoint to default to)
ACCEPT_CHANGED_OPT = typer.Option(False, "--accept-changed-inputs", help="Go on although an input of the run "
                                  "(store, labels file, --config file, --pretrained checkpoint, teacher) changed since "
                                  "the run recorded its hash; the acceptance is recorded in the run's inputs.json.")
#: set by a command that starts its processes through torchrun: the --config files the user gave (the processes
#: read the resolved config from a temporary file, which is not the run's input)
CONFIG_FILES_ENV = "FACELAB_CONFIG_FILES"
DETECTOR_OPT = typer.Option(None, "--detector", help="Face detector instead of the checkpoint's: mtcnn | retinaface "
                            "(faster, coarser landmarks).")


def emit_json(obj: Any) -> None:
    """Print ``obj`` as strict JSON on stdout (the machine-readable channel; progress goes to stderr)."""
    sys.stdout.write(json.dumps(finite_or_none(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return finite_or_none(o.to_dict())
    return str(o)


def _refuse_with_resume(run_dir: Path, given: dict[str, Any], *, allowed: str = "") -> None:
    """--resume continues with the saved config: any other option would be silently ignored, so it is refused."""
    named = [k for k, v in given.items() if v not in (None, False, [], ())]
    if named:
        extra = f"; only {allowed} can change (to extend training)" if allowed else ""
        raise typer.BadParameter(f"--resume continues {run_dir} with its saved config.yaml{extra}; "
                                 f"drop {', '.join(named)}")


@contextlib.contextmanager
def _run_folder(kind: str, *, name: str | None, out: Path, config: StrictConfig,
                config_files: Sequence[Path | None] = ()) -> Iterator[Path]:
    """A new run folder for the command's work, recording the hashes of its ``--config`` files
    (:mod:`facelab.runs.inputs`); removed again if the command fails before anything in it was trained (a bad
    --pretrained file, a kill before the first checkpoint), so failed starts leave nothing."""
    from facelab.runs.folder import create_run_dir, remove_if_nothing_ran
    from facelab.runs.inputs import file_input, record_inputs

    run_dir = create_run_dir(kind, name=name, root=out, config=config)
    console.print(f"run folder: {run_dir}")
    try:
        files = [Path(f) for f in _config_files(config_files) if f is not None]
        if files:
            record_inputs(run_dir, [file_input(f"config:{k}", "config file", f) for k, f in enumerate(files)])
        yield run_dir
    except BaseException:
        remove_if_nothing_ran(run_dir)
        raise


# ---- several processes (--nproc, torchrun) ---------------------------------------------------------
def _torchrun_env(nproc: int | None) -> Any:
    """This process's place when torchrun started it (None otherwise); the other ranks than 0 print nothing.

    Raises:
        FacelabError: ``--nproc`` given under torchrun with another number of processes on this machine.
    """
    from facelab.train.distributed import TorchrunEnv

    env = TorchrunEnv.from_environ()
    console.quiet = env is not None and env.rank != 0  # rank 0 speaks for the run
    if env is None:
        return None
    if nproc is not None and nproc != env.local_world_size:
        raise FacelabError(f"--nproc {nproc} in a process that torchrun started with {env.local_world_size} "
                           "process(es) on this machine; drop --nproc (torchrun's --nproc_per_node decides)")
    return env


def _launch_needed(nproc: int | None, env: Any, device: str) -> int:
    """How many processes train: torchrun's world, or ``--nproc`` (checked against this machine: 1 or more,
    no more than its GPUs on CUDA) when this command is to start them."""
    from facelab.train.distributed import check_nproc

    if env is not None:
        return env.world_size
    if nproc is None:
        return 1
    check_nproc(nproc, device)
    return nproc


def _config_files(given: Sequence[Path | None]) -> list[Path | None]:
    """The run's --config files: ``given``, or in a process that a command started through torchrun, the files
    that command was given (:data:`CONFIG_FILES_ENV`)."""
    import os

    passed = os.environ.get(CONFIG_FILES_ENV)
    return [Path(p) for p in json.loads(passed)] if passed is not None else list(given)


def _relaunch(nproc: int, command: str, cfg: StrictConfig | None, args: list[str],
              config_files: Sequence[Path | None] = ()) -> None:
    """Run ``facelab COMMAND`` in ``nproc`` processes (torchrun) with ``cfg`` (the resolved config, written to
    a temporary YAML file that they read as --config) and ``args``, then exit with torchrun's status."""
    import os
    import tempfile

    from facelab.train.launch import run_torchrun

    if cfg is None:
        raise SystemExit(run_torchrun(nproc, [command, *args]))
    fd, path = tempfile.mkstemp(prefix="facelab-config-", suffix=".yaml")
    os.environ[CONFIG_FILES_ENV] = json.dumps([str(Path(f).resolve()) for f in config_files if f is not None])
    try:
        with os.fdopen(fd, "w") as f:
            f.write(cfg.to_yaml())
        code = run_torchrun(nproc, [command, "--config", path, *args])
    finally:
        os.environ.pop(CONFIG_FILES_ENV, None)
        os.unlink(path)
    raise SystemExit(code)


def _new_run_args(*, out: Path, name: str | None, as_json: bool) -> list[str]:
    return ["--out", str(out), *(["--name", name] if name else []), *(["--json"] if as_json else [])]


@contextlib.contextmanager
def _processes(env: Any, device: str) -> Iterator[Any]:
    """The process group of a torchrun launch (``Distributed()`` alone without one), left at the end."""
    from facelab.train.distributed import Distributed, init_distributed

    dist = Distributed() if env is None else init_distributed(env, device)
    try:
        yield dist
    finally:
        dist.close()


@contextlib.contextmanager
def _shared_run_folder(kind: str, *, name: str | None, out: Path, config: StrictConfig, dist: Any,
                       config_files: Sequence[Path | None] = ()) -> Iterator[Path]:
    """:func:`_run_folder` made by rank 0 alone, its path sent to the others; a failure to make it (an existing
    --name) reaches every process, so none waits for a folder that will not come."""
    with contextlib.ExitStack() as stack:
        made: Path | None = None
        error: Exception | None = None
        if dist.is_main:
            try:
                made = stack.enter_context(_run_folder(kind, name=name, out=out, config=config,
                                                       config_files=config_files))
            except Exception as e:  # noqa: BLE001 - sent to the other processes, then raised here
                error = e
        path, message = dist.broadcast((None if made is None else str(made), None if error is None else str(error)))
        if error is not None:
            raise error
        if message is not None:
            raise FacelabError(f"rank 0 could not make the run folder: {message}")
        yield Path(path)


def _fit(command: str, fit: Callable[..., dict[str, Any]], cfg: StrictConfig, *, check: Callable[..., Any],
         env: Any, nproc: int | None, resume: Path | None, kind: str, out: Path, name: str | None, as_json: bool,
         dry_run: bool, config_files: Sequence[Path | None] = (), accept_changed_inputs: bool = False,
         ) -> dict[str, Any] | None:
    """Train ``cfg`` with ``fit`` (``train_classifier`` / ``train_generative``): in this process, in the
    processes of a torchrun launch, or, for ``--nproc N`` outside one, by starting N processes that run
    ``facelab COMMAND`` (this process then exits with their status). A new run is checked (``check``) for
    that many processes first; its folder is made by rank 0 and records the hashes of ``config_files``.
    ``accept_changed_inputs`` (with ``resume`` only) resumes although an input changed. Returns the summary
    (None for --dry-run)."""
    processes = _launch_needed(nproc, env, cfg.device)
    if resume is not None:
        accept = ["--accept-changed-inputs"] if accept_changed_inputs else []
        if env is None and processes > 1:
            _relaunch(processes, command, None, ["--resume", str(resume), *accept, *(["--json"] if as_json else [])])
        with _processes(env, cfg.device) as dist:
            return fit(cfg, run_dir=resume, resume=True, dist=dist, accept_changed_inputs=accept_changed_inputs)
    if accept_changed_inputs:
        raise typer.BadParameter("--accept-changed-inputs goes with --resume RUN (a new run records its inputs)")
    check(cfg, processes=processes)
    if dry_run:
        console.quiet or sys.stdout.write(cfg.to_yaml())
        return None
    if env is None and processes > 1:
        _relaunch(processes, command, cfg, _new_run_args(out=out, name=name, as_json=as_json), config_files)
    with _processes(env, cfg.device) as dist, \
            _shared_run_folder(kind, name=name, out=out, config=cfg, dist=dist, config_files=config_files) as run_dir:
        return fit(cfg, run_dir=run_dir, dist=dist)


def _resumed(config_cls: Any, run_dir: Path, *, epochs: int | None = None, minutes: float | None = None) -> Any:
    """The saved config of the run to resume, its budgets raised by ``--epochs`` / ``--minutes`` (time budgets
    count training time over every resume)."""
    cfg = resume_config(config_cls, run_dir, changes={"trainer.epochs": epochs, "trainer.time_budget_minutes": minutes})
    if epochs is not None and cfg.trainer.schedule.name != "constant":
        console.print(f"[yellow]note[/]: the {cfg.trainer.schedule.name} learning-rate schedule is stretched to "
                      f"{epochs} epochs from the resumed step on")
    return cfg


# ---- run folders given to eval, predict, export, serve -------------------------------------------
def _checkpoint_choice(value: str) -> str:
    if value not in ("best", "last"):
        raise FacelabError(f"--checkpoint {value!r}: choose best or last")
    return value


def _one_or_many(runs: list[Path]) -> Path | list[Path]:
    return runs if len(runs) > 1 else runs[0]
