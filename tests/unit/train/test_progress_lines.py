"""A training whose progress is off (a study's cell) still prints its epochs into a log while a study runs it."""

from __future__ import annotations

import io

from facelab.train import progress
from facelab.utils import console as consoles

REC = {"epoch": 2, "train_loss": 0.51234, "val_loss": 0.4, "val_mean_accuracy": 0.9305555, "train_seconds": 12.0}


def test_quiet_trainings_print_epochs_inside_a_study_cell_off_a_terminal(capsys):
    progress.print_epoch(REC, epochs=5, monitor="val_mean_accuracy", enabled=False)
    assert capsys.readouterr().err == ""  # progress off, and no study around it
    with progress.epoch_lines_inside("p=0.1 seed=0 cvae"):
        progress.print_epoch(REC, epochs=5, monitor="val_mean_accuracy", enabled=False)
    progress.print_epoch(REC, epochs=5, monitor="val_mean_accuracy", enabled=False)
    assert capsys.readouterr().err.splitlines() == [
        "p=0.1 seed=0 cvae: epoch 2/5 (12 s): train_loss=0.5123 val_loss=0.4 val_mean_accuracy=0.9306"]


def test_on_a_terminal_they_stay_quiet_under_the_study_bar(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(consoles, "_STDERR", consoles.FacelabConsole(file=buf, force_terminal=True))
    with progress.epoch_lines_inside("p=0.1 seed=0 cvae"):
        progress.print_epoch(REC, epochs=5, monitor="val_mean_accuracy", enabled=False)
    assert buf.getvalue() == ""
