"""The report of ``facelab demo``: the synthetic store, and links to its classifier's and study's reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facelab.report.html import fmt, image, section, table
from facelab.report.kinds import RUN_KINDS, RunKind
from facelab.runs.summary import DemoSummary


def demo_sections(run_dir: Path, summary: DemoSummary) -> list[str]:
    store = table(["store", "images", "seconds"],
                  [[summary.store, summary.stats["splits"]["all"]["count"], summary.build["seconds"]]])
    plots = "<div class='row'>" + "".join(image(p, Path(p).stem) for p in summary.plots) + "</div>"
    parts = [section("Synthetic store", store, plots)]
    for title, part in (("Classifier", summary.classifier), ("Augmentation study", summary.study)):
        link = Path(part["run_dir"]) / "report.html"
        href = link.relative_to(run_dir) if link.is_relative_to(run_dir) else link
        parts.append(section(title, f"<p><a href='{href}'>{link}</a></p>", "<pre>" + fmt(_short(part)) + "</pre>"))
    return parts


def _short(d: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in d.items() if not isinstance(v, (dict, list))}, indent=1)


RUN_KINDS.register("demo")(RunKind(
    sections=demo_sections,
    key_metric=lambda s: ("test mean accuracy (classifier)", s.classifier.get("test_mean_accuracy"))))
