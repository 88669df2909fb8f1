"""Self-contained HTML reports of run folders (images embedded, no external assets), and the run listing.

Each kind of run (``summary.json["kind"]``) registers one :class:`~facelab.report.kinds.RunKind` in
``RUN_KINDS``: the sections of its report and its key metric. Reporters read only what the run folder holds,
so a report can be re-rendered any time (``facelab report RUN``).
"""

from facelab.report import (  # noqa: F401  (register the kinds)
    batch_schedule,
    classifier,
    demo,
    generative,
    imbalance_study,
    pretrain,
    sweep,
)
from facelab.report.html import render_report
from facelab.report.kinds import RUN_KINDS, RunKind
from facelab.report.listing import list_runs

__all__ = ["RUN_KINDS", "RunKind", "list_runs", "render_report"]
