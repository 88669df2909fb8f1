"""Passwords never reach what facelab records or prints: one masking function for URLs, parameters and command
lines, and the run folder's env.json written through it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from facelab.runs.folder import create_run_dir
from facelab.sweeps.storage import strip_password, without_password
from facelab.utils.secrets import mask_argv, mask_secrets

SECRET = "s3cr3t-Pw"


@pytest.mark.parametrize("text, shown", [
    (f"postgresql+psycopg://ann:{SECRET}@db:5432/sweeps", "postgresql+psycopg://ann:***@db:5432/sweeps"),
    (f"error: cannot reach mysql://:{SECRET}@h/db; check", "error: cannot reach mysql://:***@h/db; check"),
    (f"postgresql://ann:{SECRET}@x@host/db", "postgresql://ann:***@host/db"),  # a raw '@' in the password
    (f"postgresql://ann:se/cr:{SECRET}@host/db", "postgresql://ann:***@host/db"),
    (f"postgresql://ann@h/db?sslmode=require&password={SECRET}", "postgresql://ann@h/db?sslmode=require&password=***"),
    (f"host=db password='{SECRET}' user=ann", "host=db password=*** user=ann"),
    (f"PGPASSWORD={SECRET} facelab sweep", "PGPASSWORD=*** facelab sweep"),
    (f"storage: postgresql://a:{SECRET}@c/d\n", "storage: postgresql://a:***@c/d\n"),
])
def test_passwords_are_masked_wherever_they_sit(text: str, shown: str) -> None:
    assert mask_secrets(text) == shown and SECRET not in mask_secrets(text)


@pytest.mark.parametrize("text", ["sqlite:////runs/sweep-a@b/study.db", "https://user@host:8080/x", "tokens=3",
                                  "postgresql+psycopg://ann@db:5432/sweeps", "lr=0.01 batch_size=32"])
def test_text_without_a_password_is_left_alone(text: str) -> None:
    assert mask_secrets(text) == text


def test_a_command_line_is_masked_argument_by_argument() -> None:
    argv = ["facelab", "sweep", "s.yaml", "--storage", f"postgresql://ann:{SECRET}@db/sweeps", "--password", SECRET,
            f"--token={SECRET}"]
    masked = mask_argv(argv)
    assert masked[:4] == argv[:4] and SECRET not in " ".join(masked)
    assert masked[4:] == ["postgresql://ann:***@db/sweeps", "--password", "***", "--token=***"]


@pytest.mark.parametrize("url, recorded", [
    (f"postgresql+psycopg://ann:{SECRET}@db:5432/sweeps", "postgresql+psycopg://ann@db:5432/sweeps"),
    (f"postgresql://ann@h/db?password={SECRET}&sslmode=require", "postgresql://ann@h/db?sslmode=require"),
    (f"postgresql://ann:{SECRET}@x@host/db", "postgresql://ann:***@host/db"),  # SQLAlchemy misreads it: masked
    ("sqlite:////x/study.db", "sqlite:////x/study.db"),
])
def test_a_recorded_url_has_no_password(url: str, recorded: str) -> None:
    assert strip_password(url) == recorded and SECRET not in without_password(url)


def test_env_json_records_the_command_line_without_its_password(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["facelab", "sweep", "worker", "--storage", f"postgresql://ann:{SECRET}@db/s"])
    run_dir = create_run_dir("trial", name="0000", root=tmp_path)
    env = json.loads((run_dir / "env.json").read_text())
    assert env["argv"][-1] == "postgresql://ann:***@db/s" and SECRET not in (run_dir / "env.json").read_text()
