"""Self-contained HTML reports of run folders (images embedded, no external assets)."""

from facelab.report.html import REPORTERS, render_report

__all__ = ["REPORTERS", "render_report"]
