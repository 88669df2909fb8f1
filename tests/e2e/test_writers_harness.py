"""Every command of the CLI that writes, run against a folder that holds a person's own files, and on a full disk.

:data:`WRITERS` says how to run each writing command with the tiniest settings, its outputs directed into
HERE, a folder that already holds a person's files (:data:`PERSON`; commands that write into a run folder get
a copy of one in HERE, with a person's note inside it). Checked for each:

- beside a person's files: the command succeeds, every one of the person's files is unchanged (by hash), no
  temporary file is left;
- on a full disk (simulated: every Python-level write under HERE fails with ENOSPC; and real: a tiny tmpfs
  filled to the brim, where mounting is allowed): exit code 2 with one line ``error: no space left ...``, no
  traceback, no temporary file, and nothing new in HERE that a later run could take as finished work.

:data:`WRITERS` and :data:`NOT_WRITING` together must name every command ``facelab --help`` lists (checked
against the CLI's own command tree), so a new writing command cannot be left out.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from PIL import Image

from facelab.cli import app, main
from facelab.sweeps import create_sweep, load_spec, run_worker, sweep_report
from facelab.utils.io import is_temporary_name
from tests.e2e.conftest import TINY_CLASSIFIER, TINY_GEN, TINY_SSL, cli_json, write_sweep_spec
from tests.fixtures.faces import FACE_SEEDS, paste_face
from tests.fixtures.full_disk import fill, full_tmpfs, simulate_full_disk

#: a person's own files, planted in HERE before each command runs (none named like an output)
PERSON: dict[str, bytes] = {
    "notes.txt": b"my notes\n",
    "thesis.tex": b"\\documentclass{article}\n",
    "src/main.py": b"print('hello')\n",
    "config.yaml": b"mine: true\n",
    "report.html": b"<p>my report</p>\n",
    ".settings/editor.json": b"{\"tabs\": 4}\n",
}
NOTE = "my_note.txt"  # planted inside a facelab folder the command writes into
SQLITE_DB = "study.db"  # a sweep's study database (and its -wal, -shm files)


@dataclass
class Inputs:
    """What the commands read, made once per module (outside HERE)."""

    store: Path  # the session's synthetic store
    faces_store: Path  # a small synthetic store with landmarks (label auto)
    photos: Path  # one photo with one face (align)
    clf_run: Path
    dcgan_run: Path
    cvae_run: Path  # conditioned on Male
    hair_run: Path  # a cvae conditioned on hair_color (blend needs a categorical condition)
    sweep_dir: Path  # a finished one-trial sweep


def copy_into(here: Path, folder: Path, *, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the facelab folder ``folder`` in HERE without its files ``drop`` (which the command is to
    write again), with a person's note inside it."""
    dest = here / folder.name
    shutil.copytree(folder, dest, symlinks=True)
    for name in drop:
        (dest / name).unlink()
    (dest / NOTE).write_text("a person's note kept beside facelab's files\n")
    return dest


Argv = Callable[[Inputs, Path], list[Any]]
#: how to run each writing command: (inputs, HERE) -> its arguments, every output in HERE
WRITERS: dict[str, Argv] = {
    "data prepare": lambda i, here: ["data", "prepare", "synthetic", "--out", here / "store", "--size", 16,
                                     "--workers", 2, "-o", "n=40"],
    "data stats": lambda i, here: ["data", "stats", i.store, "--plots", here / "plots"],
    "align": lambda i, here: ["align", i.photos, "--out", here / "aligned"],
    "label auto": lambda i, here: ["label", "auto", i.faces_store, "--out", here / "labels.csv"],
    "train": lambda i, here: ["train", i.store, "--epochs", 1, "--labels", "Male", *TINY_CLASSIFIER, "--out", here],
    "train-gen": lambda i, here: ["train-gen", i.store, "--model", "dcgan", "--epochs", 1, *TINY_GEN, "--out", here],
    "pretrain": lambda i, here: ["pretrain", i.store, "--epochs", 1, *TINY_SSL, "--out", here],
    "eval": lambda i, here: ["eval", copy_into(here, i.clf_run), "--data", i.store],
    "predict": lambda i, here: ["predict", i.clf_run, i.store, "--out", here / "predictions.csv"],
    "export": lambda i, here: ["export", i.clf_run, "--out", here / "model.onnx", "--exporter", "torchscript",
                               "--check-batch", 2],
    "sample": lambda i, here: ["sample", i.dcgan_run, "--n", 4, "--grid", here / "grid.png", "--images", here / "each"],
    "interpolate": lambda i, here: ["interpolate", i.dcgan_run, "--out", here / "strip.png", "--steps", 3, "--rows",
                                    1],
    "blend": lambda i, here: ["blend", i.hair_run, "--classes", "black,blond", "--n", 2, "--out", here / "blend.png"],
    "report": lambda i, here: ["report", copy_into(here, i.clf_run, drop=("report.html",))],
    "demo": lambda i, here: ["demo", "--out", here, "--n", 200, "--size", 32, "--seeds", 1, "-o", "classifier_epochs=1",
                             "-o", "study_epochs=1", "-o", "generator_epochs=1", "-o", "p=0.5",
                             "-o", "target_prevalence=0.5", "-o", "methods=[none]"],
    "experiment batch-schedule": lambda i, here: ["experiment", "batch-schedule", i.store, "-o", "epochs=2",
                                                  "-o", "milestones=[0.5]", "-o", "batch_size=32",
                                                  "-o", "model_kwargs={channels: [8, 16, 16]}", "--out", here],
    "experiment imbalance": lambda i, here: ["experiment", "imbalance", "--store", i.store, "--target", "Male",
                                             "--p", 0.5, "--methods", "none", "--seeds", 1, *TINY_STUDY, "--out", here],
    "experiment augment": lambda i, here: ["experiment", "augment", "--store", i.store, "--target", "Male",
                                           "--p", 0.5, "--methods", "none", "--seeds", 1, *TINY_STUDY, "--out", here],
    "metrics fid": lambda i, here: ["metrics", "fid", i.dcgan_run, "--data", i.store, "--features", i.clf_run,
                                    "--n", 10],
    "metrics cas": lambda i, here: ["metrics", "cas", i.cvae_run, "--data", i.store, "--label", "Male",
                                    "--n-train", 16, "--epochs", 1, "--out", here],
    "sweep run": lambda i, here: ["sweep", "run", _spec(i, here), "--workers", 1, "--n-trials", 1, "--out", here],
    "sweep worker": lambda i, here: ["sweep", "worker", *_study_wanting_a_trial(i, here), "--dir", here / "trials"],
    "sweep report": lambda i, here: ["sweep", "report", copy_into(here, i.sweep_dir, drop=("report.html",))],
}
#: commands that write nothing a person names, and why they are not run here
NOT_WRITING: dict[str, str] = {
    "data sources": "prints the registered sources",
    "runs": "lists run folders",
    "serve": "a server: it writes only what a request asks (tested in test_serve.py and test_review.py)",
    "label review": "a server: each decision is written into the labels file (tested in test_review.py)",
    "experiment methods": "prints the balancing methods",
    "metrics fidelity": "prints a score; writes no file",
}
TINY_STUDY = ("-o", "classifier.trainer.epochs=1", "-o", "classifier.batch_size=32",
              "-o", "classifier.model_kwargs={channels: [8, 16, 16]}")


def _study_wanting_a_trial(i: Inputs, here: Path) -> list[Any]:
    """--study and --storage of a copy of the inputs' sweep (outside HERE) that wants one trial more."""
    from facelab.sweeps.folder import open_sweep, raise_n_trials
    from facelab.sweeps.storage import default_storage

    copy = shutil.copytree(i.sweep_dir, here.parent / f"{here.name}-sweep")
    sweep = raise_n_trials(open_sweep(copy, storage=default_storage(copy)), 2)
    return ["--study", sweep.study_name, "--storage", sweep.url]


def _spec(i: Inputs, here: Path) -> Path:
    """A one-trial sweep spec, outside HERE (it is an input)."""
    return write_sweep_spec(here.parent / f"{here.name}-spec.yaml", i.store, n_trials=1)


# ---- the command tree ------------------------------------------------------------------------------
def command_names() -> set[str]:
    """Every command of the CLI, groups spelled out ("data prepare"), from typer's own command tree."""
    def walk(cmd: Any, prefix: tuple[str, ...]) -> Iterator[str]:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            yield " ".join(prefix)
            return
        for name, sub in subs.items():
            yield from walk(sub, (*prefix, name))

    return set(walk(typer.main.get_command(app), ()))


def test_the_harness_names_every_command_of_the_cli() -> None:
    names = command_names()
    assert not set(WRITERS) & set(NOT_WRITING)
    assert names == set(WRITERS) | set(NOT_WRITING), (
        f"commands the harness does not know (add them to WRITERS, or to NOT_WRITING with the reason): "
        f"{sorted(names - set(WRITERS) - set(NOT_WRITING))}; names that are no command: "
        f"{sorted(set(WRITERS) | set(NOT_WRITING) - names)}")


# ---- inputs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(store: Path, clf_run, dcgan_run: Path, cvae_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("harness-inputs")
    faces = root / "faces-store"
    cli_json("data", "prepare", "synthetic", "--out", faces, "--size", 32, "--workers", 1, "-o", "n=24",
             "-o", "landmarks=true")
    photos = root / "photos"
    photos.mkdir()
    Image.fromarray(paste_face(FACE_SEEDS[0], angle=0.0, scale=1.2).image).save(photos / "face.png")
    hair = cli_json("train-gen", store, "--model", "cvae", "--cond", "hair_color", "--epochs", 1, *TINY_GEN,
                    "--out", root, "--name", "hair")
    sweep = create_sweep(load_spec(write_sweep_spec(root / "spec.yaml", store, n_trials=1)), out=root, name="h")
    run_worker(sweep.url, sweep.study_name, sweep_dir=sweep.dir, threads=1)  # in this process: no start-up
    sweep_report(sweep.dir, storage=sweep.url)
    return Inputs(store=store, faces_store=faces, photos=photos, clf_run=clf_run[0], dcgan_run=dcgan_run,
                  cvae_run=cvae_run, hair_run=Path(hair["run_dir"]), sweep_dir=sweep.dir)


# ---- running a command as a person does -----------------------------------------------------------
@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


def run_facelab(args: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Ran:
    """``facelab ARGS`` through its entry point (:func:`facelab.cli.main`, with its error handling)."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["facelab", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return Ran(code, out.out, out.err)


def plant(here: Path) -> dict[str, str]:
    """Write :data:`PERSON` into ``here``; the sha256 of every file of the person's under it."""
    for rel, data in PERSON.items():
        (here / rel).parent.mkdir(parents=True, exist_ok=True)
        (here / rel).write_bytes(data)
    return persons_files(here)


def persons_files(here: Path) -> dict[str, str]:
    """sha256 of the person's files under ``here``: :data:`PERSON` and the notes inside copied folders."""
    found = {p.relative_to(here).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in here.rglob("*")
             if p.is_file() and (p.relative_to(here).as_posix() in PERSON or p.name == NOTE)}
    return dict(sorted(found.items()))


def leftovers(here: Path) -> list[str]:
    """Temporary files under ``here`` (of an atomic writer, or any other ``*.tmp``)."""
    return sorted(p.relative_to(here).as_posix() for p in here.rglob("*")
                  if is_temporary_name(p.name) or ".tmp" in p.name)


def all_files(here: Path) -> dict[str, str]:
    """sha256 of every file under ``here``."""
    return {p.relative_to(here).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in here.rglob("*")
            if p.is_file()}


def _fast_env(monkeypatch: pytest.MonkeyPatch, here: Path) -> None:
    monkeypatch.setenv("FACELAB_CACHE", str(here / "cache"))  # metrics fid's real-feature cache


# ---- beside a person's files ----------------------------------------------------------------------
@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_persons_files_are_never_changed(command: str, inputs: Inputs, tmp_path: Path, monkeypatch, capsys) -> None:
    here = tmp_path / "mine"
    here.mkdir()
    _fast_env(monkeypatch, here)
    args = WRITERS[command](inputs, here)
    before = plant(here)
    files_before = all_files(here)
    ran = run_facelab(args, monkeypatch, capsys)
    assert ran.code == 0, f"facelab {command} exited {ran.code}:\n{ran.stderr[-3000:]}"
    assert persons_files(here) == before
    assert leftovers(here) == []
    assert all_files(here) != files_before, f"facelab {command} wrote nothing into {here}"


# ---- on a full disk, or where writing is not allowed --------------------------------------------
ERRORS = {errno.ENOSPC: "no space left", errno.EACCES: "permission denied"}  # the line main() prints for each


#: SQLite cannot open a study database whose folder is full (it needs room for its -wal and -shm files) and
#: says "disk I/O error" without an errno: the sweep's storage names the database instead
SQLITE_FULL = "cannot reach the study database"


def _check_failure(command: str, ran: Ran, here: Path, before: dict[str, str], files_before: dict[str, str], *,
                   says: str = ERRORS[errno.ENOSPC]) -> None:
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert ran.code == 2, f"facelab {command} exited {ran.code}:\n{ran.stderr[-3000:]}"
    assert len(errors) == 1, ran.stderr[-3000:]
    assert says in errors[0] or (command.startswith("sweep") and SQLITE_FULL in errors[0]), errors[0]
    assert "Traceback" not in ran.stderr
    assert persons_files(here) == before
    assert leftovers(here) == []
    now = {k: v for k, v in all_files(here).items() if not Path(k).name.startswith(SQLITE_DB)}
    new = sorted(set(now) - set(files_before))  # (SQLite's own database files change when it opens them)
    assert new == [], f"facelab {command} left files that a later run could take as its work: {new}"
    changed = sorted(k for k in files_before if now.get(k) != files_before[k]
                     and not Path(k).name.startswith(SQLITE_DB))
    assert changed == [], f"facelab {command} changed or removed files it had: {changed}"


@pytest.mark.parametrize("code", sorted(ERRORS), ids=[errno.errorcode[c] for c in sorted(ERRORS)])
@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_full_disk_or_no_permission_is_one_clear_line(command: str, code: int, inputs: Inputs, tmp_path: Path,
                                                       monkeypatch, capsys) -> None:
    here = tmp_path / "full"
    here.mkdir()
    _fast_env(monkeypatch, here)
    args = WRITERS[command](inputs, here)
    before = plant(here)
    files_before = all_files(here)
    simulate_full_disk(monkeypatch, here, code)
    ran = run_facelab(args, monkeypatch, capsys)
    monkeypatch.undo()
    _check_failure(command, ran, here, before, files_before, says=ERRORS[code])


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_really_full_disk_is_one_clear_line(command: str, inputs: Inputs, tmp_path: Path, monkeypatch,
                                             capsys) -> None:
    with full_tmpfs(tmp_path / "disk", size="16m", filled=False) as here:
        _fast_env(monkeypatch, here)
        args = WRITERS[command](inputs, here)
        before = plant(here)
        fill(here)
        files_before = all_files(here)
        ran = run_facelab(args, monkeypatch, capsys)
        _check_failure(command, ran, here, before, files_before)


# ---- a file or folder of facelab's, or a person's, where an output would go -------------------------
def test_predict_never_writes_into_a_store_a_run_or_over_an_input(inputs: Inputs, tmp_path: Path, monkeypatch,
                                                                 capsys) -> None:
    store = tmp_path / "stores" / "x"
    shutil.copytree(inputs.store, store)
    run = copy_into(tmp_path, inputs.clf_run)
    before = {"store": all_files(store), "run": all_files(run)}
    for out, says in ((store / "labels.npy", "inside the store folder"),
                      (store / "stats" / "p.csv", "inside the store"),
                      (run / "predictions.csv", "inside the run folder"), (tmp_path / "stores", "is a folder")):
        ran = run_facelab(["predict", run, store, "--out", out], monkeypatch, capsys)
        assert ran.code == 2 and says in ran.stderr, ran.stderr
    assert {"store": all_files(store), "run": all_files(run)} == before


def test_predict_replaces_its_own_csv_but_never_a_persons(inputs: Inputs, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("name,score\nada,0.9\n")
    ran = run_facelab(["predict", inputs.clf_run, inputs.store, "--out", out], monkeypatch, capsys)
    assert ran.code == 2 and "exists and facelab did not write it" in ran.stderr
    assert out.read_text() == "name,score\nada,0.9\n"
    out.unlink()
    for _ in range(2):  # the second run replaces the first one's CSV
        assert run_facelab(["predict", inputs.clf_run, inputs.store, "--out", out], monkeypatch, capsys).code == 0


def test_images_never_replace_a_persons_png(inputs: Inputs, tmp_path: Path, monkeypatch, capsys) -> None:
    mine = tmp_path / "mine.png"
    Image.new("RGB", (4, 4), "red").save(mine)
    (tmp_path / "each").mkdir()
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "each" / "sample_0001.png")
    before = all_files(tmp_path)
    for args, says in ((["sample", inputs.dcgan_run, "--n", 2, "--grid", mine], "--grid"),
                       (["sample", inputs.dcgan_run, "--n", 2, "--images", tmp_path / "each"], "sample_0001.png"),
                       (["interpolate", inputs.dcgan_run, "--out", mine, "--steps", 2], "--out"),
                       (["blend", inputs.hair_run, "--classes", "black,blond", "--n", 1, "--out", mine], "--out")):
        ran = run_facelab(args, monkeypatch, capsys)
        assert ran.code == 2 and says in ran.stderr and "facelab did not write" in ran.stderr, ran.stderr
    assert all_files(tmp_path) == before
    own = tmp_path / "own.png"
    for _ in range(2):  # facelab's own PNG is replaced
        assert run_facelab(["interpolate", inputs.dcgan_run, "--out", own, "--steps", 2], monkeypatch, capsys).code == 0


def test_image_outputs_never_go_into_a_run_or_store_folder(inputs: Inputs, tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    run = copy_into(tmp_path, inputs.dcgan_run)
    before = all_files(run)
    for args in (["sample", run, "--n", 2, "--grid", run / "samples" / "latest.png"],
                 ["sample", run, "--n", 2, "--images", run / "checkpoints"],
                 ["interpolate", run, "--out", run / "strip.png", "--steps", 2],
                 ["blend", inputs.hair_run, "--classes", "black,blond", "--out", inputs.store / "blend.png"]):
        ran = run_facelab(args, monkeypatch, capsys)
        assert ran.code == 2 and "that facelab made" in ran.stderr, ran.stderr
    assert all_files(run) == before and not (inputs.store / "blend.png").exists()


def test_sample_is_bounded_and_makes_its_images_chunk_by_chunk(inputs: Inputs, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    """The replay: sample --n 2000000 held every image at once and grew until the OOM killer ended it."""
    import facelab.eval.sampling as sampling

    ran = run_facelab(["sample", inputs.dcgan_run, "--n", 2_000_000, "--grid", tmp_path / "g.png"], monkeypatch,
                      capsys)
    assert ran.code == 2 and "a grid shows at most 1024 images" in ran.stderr and "--images" in ran.stderr
    assert not (tmp_path / "g.png").exists()
    made: list[int] = []
    real = sampling.save_images
    monkeypatch.setattr(sampling, "CHUNK", 4)
    monkeypatch.setattr(sampling, "save_images",
                        lambda images, *a, **k: made.append(len(images)) or real(images, *a, **k))
    ran = run_facelab(["sample", inputs.dcgan_run, "--n", 10, "--grid", tmp_path / "g.png", "--images",
                       tmp_path / "each", "--json"], monkeypatch, capsys)
    assert ran.code == 0 and made == [4, 4, 2]
    res = json.loads(ran.stdout)
    assert res["images_written"] == 10 and len(res["images"]) == 4
    assert sorted(os.listdir(tmp_path / "each")) == [f"sample_{i:04d}.png" for i in range(10)]


def test_a_read_only_home_is_one_line_naming_the_cache_fix(inputs: Inputs, tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    """The replay: metrics fid with a read-only home ended in a PermissionError traceback creating ~/.cache."""
    monkeypatch.delenv("FACELAB_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    real = Path.mkdir

    def read_only(self, *args, **kwargs):  # noqa: ANN001
        if str(self).startswith(str(tmp_path / "home")):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    ran = run_facelab(WRITERS["metrics fid"](inputs, tmp_path), monkeypatch, capsys)
    assert ran.code == 2 and "Traceback" not in ran.stderr
    (line,) = [x for x in ran.stderr.splitlines() if x.startswith("error:")]
    assert "feature cache folder" in line and "Permission denied" in line and "FACELAB_CACHE" in line


LONG = "n" * 300  # longer than any file system's NAME_MAX


@pytest.mark.parametrize("command", ["data prepare", "align", "train", "predict", "sample", "label auto", "demo"])
def test_a_name_too_long_is_one_clear_line(command: str, inputs: Inputs, tmp_path: Path, monkeypatch,
                                           capsys) -> None:
    here = tmp_path / LONG
    args = WRITERS[command](inputs, here)
    ran = run_facelab(args, monkeypatch, capsys)
    assert ran.code == 2 and "Traceback" not in ran.stderr
    (line,) = [x for x in ran.stderr.splitlines() if x.startswith("error:")]
    assert "file name too long" in line and "300 bytes" in line, line
    assert os.listdir(tmp_path) == []


def test_a_named_run_folder_a_person_made_is_never_reused(inputs: Inputs, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    """A folder with only the names of a run's first files (config.yaml, splits.json) passed for the start of
    a run that failed, and was reused (its config.yaml replaced) or deleted."""
    theirs = tmp_path / "train-x"
    theirs.mkdir()
    (theirs / "config.yaml").write_text("my: own config\n")
    (theirs / "splits.json").write_text("[1, 2, 3]\n")
    before = all_files(tmp_path)
    ran = run_facelab(WRITERS["train"](inputs, tmp_path)[:-2] + ["--out", tmp_path, "--name", "x"], monkeypatch, capsys)
    assert ran.code == 2 and "holds files facelab did not make" in ran.stderr
    assert all_files(tmp_path) == before
