"""What the CelebA benchmark scripts share, free of side effects on import (celeba_ideas.py registers its
augmentation presets when imported; the scripts that only need to train and score import this instead)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from facelab.train.classifier import ClassifierConfig, train_classifier


def train_and_score(cfg: ClassifierConfig, run: Path, **training: Any) -> dict:
    """Train ``cfg`` into ``run`` (``training``: train_classifier's ``objective=`` / ``create_model=`` for a
    training variant); its time and validation figures."""
    t0 = time.monotonic()
    summary = train_classifier(cfg, run_dir=run, **training)
    final = summary["final"]
    return {"train_minutes": round((time.monotonic() - t0) / 60, 2),
            "val_mean_accuracy_last_epoch": final.get("val_mean_accuracy"),
            "val_mean_balanced_accuracy": final.get("val_mean_balanced_accuracy"),
            "val_majority_baseline": final.get("val_mean_majority_accuracy"),
            "best_epoch_val_mean_accuracy": summary["best"], "run_dir": str(run),
            "train_images": summary["train_rows"], "train_identities": summary.get("train_identities")}
