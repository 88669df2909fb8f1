"""The report of a generative run: summary, sample grids over training, curves and losses per epoch."""

from __future__ import annotations

from pathlib import Path

from facelab.report.html import fmt, image, metrics_table, section, table
from facelab.report.kinds import RUN_KINDS, RunKind
from facelab.runs.summary import GenerativeSummary


def generative_sections(run_dir: Path, summary: GenerativeSummary) -> list[str]:
    grids = sorted((run_dir / "samples").glob("epoch_*.png"))
    shown = [grids[0], grids[len(grids) // 2], grids[-1]] if len(grids) >= 3 else grids
    head = table(["model", "conditions", "params", "train rows", "epochs", "seconds"],
                 [[summary.model, ", ".join(summary.conditions) or "-", f"{summary.params:,}", summary.train_rows,
                   summary.epochs, fmt(summary.fit_seconds, 3)]])
    samples = "<div class='row'>" + "".join(image(g, g.stem.replace("_", " ")) for g in dict.fromkeys(shown)) + "</div>"
    return [section("Summary", head), section("Samples", samples),
            section("Training curves", image(run_dir / "curves.png")),
            section("Losses per epoch", metrics_table(run_dir))]


def generative_key_metric(summary: GenerativeSummary) -> tuple[str, float | None]:
    """The validation loss of an autoencoder, else its (or a GAN's) last training loss."""
    final = summary.final
    losses = [k for k in final if k.startswith("train_") and k.endswith("loss")]  # GANs: train_generator/g_loss
    key = next((k for k in ("val_loss", "train_loss", *sorted(losses)) if k in final), None)
    return (key or "-"), (final.get(key) if key else None)


RUN_KINDS.register("generative")(RunKind(sections=generative_sections, key_metric=generative_key_metric))
