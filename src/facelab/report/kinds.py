"""One hook per kind of run: how its report is laid out and which figure sums it up in ``facelab runs``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelab.registry import Registry


@dataclass(frozen=True)
class RunKind:
    """What the reports and the run listing need to know about one kind of run.

    Attributes:
        sections: (run folder, its typed summary) -> the HTML sections of its report.html.
        key_metric: its typed summary -> (metric name, value or None) shown by ``facelab runs``.
    """

    sections: Callable[[Path, Any], list[str]]
    key_metric: Callable[[Any], tuple[str, float | None]]


#: summary.json "kind" -> its RunKind (registered by the modules of facelab.report)
RUN_KINDS: Registry[RunKind] = Registry("run kind")
