"""The report of an auto-labelling: contact sheets per class and the confidence histogram, in one HTML file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facelab.data.labels_file import LABEL_TASKS, LabelsFile, path_kind
from facelab.data.store import Store
from facelab.errors import ConfigError, DataError
from facelab.eval.grids import save_grid
from facelab.report.html import esc, image, page, section, table
from facelab.utils.io import atomic_write_text

SHEET = 40  # faces per contact sheet
TITLE = "facelab labels: "  # the report's title, before the labels file's name


def report_path(labels: Path) -> Path:
    """Where the report of the labels file ``labels`` goes: beside it, ``.html`` for its suffix."""
    return Path(labels).with_suffix(".html")


def report_folder(labels: Path) -> Path:
    """The folder of the report's images: ``<labels stem>_report`` beside the labels file."""
    return Path(labels).with_name(Path(labels).stem + "_report")


def check_report_path(labels: Path) -> None:
    """ConfigError when the report of ``labels`` would replace the labels file itself, an HTML file that is
    not a labels report facelab wrote (a person's own page), or files in its image folder that are not the
    report's images."""
    folder = report_folder(labels)
    kind = path_kind(folder)
    strays = [] if kind != "folder" else [p.name for p in folder.iterdir()
                                          if not (p.suffix == ".png" and p.name.split("-")[0] in LABEL_TASKS)]
    if kind in ("file", "other") or strays:
        raise ConfigError(f"--out {labels}: the report's images go to {folder}, which holds "
                          f"{strays[0] if strays else 'something other than a folder'} that facelab did not write "
                          "there; choose another --out (or move it)")
    out = report_path(labels)
    if out == Path(labels):
        raise ConfigError(f"--out {labels}: the report is written beside the labels as {out.name}; name the labels "
                          f"CSV otherwise, e.g. {Path(labels).with_suffix('.csv')}")
    if path_kind(out) == "missing":
        return
    try:
        with open(out, "rb") as f:
            head = f.read(len(_REPORT_HEAD) + 20)
    except OSError:
        head = b""
    if not head.startswith(_REPORT_HEAD):
        raise ConfigError(f"--out {labels}: its report would replace {out}, which is not a labels report facelab "
                          "wrote; choose another --out (or move that file)")


_REPORT_HEAD = page(TITLE, []).split(TITLE)[0].encode() + TITLE.encode()


def label_report(store: Store, labels: LabelsFile, *, seed: int = 0) -> Path:
    """Write ``<labels>.html`` (and its PNGs in ``<labels stem>_report/``): per task, the counts per class, a
    contact sheet of up to 40 faces of each class drawn at random (seeded), the least confident faces, and
    the confidence histogram. Returns the HTML path.

    Raises:
        DataError: the report cannot be written (a file where its folder goes, a full disk).
    """
    try:
        return _write_report(store, labels, seed)
    except OSError as e:
        raise DataError(f"{labels.path} is written, but not its report {report_path(labels.path)} "
                        f"({e.strerror}: {e.filename}); free the space or the name and run again") from None


def _write_report(store: Store, labels: LabelsFile, seed: int) -> Path:
    folder = report_folder(labels.path)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    parts = [section("Store", f"<p>{esc(str(store.path))}: {len(store)} images, {len(labels.rows)} rows in "
                              f"{esc(labels.path.name)}</p>")]
    for task in labels.tasks:
        rows = labels.rows
        classes = sorted({r[task] for r in rows if r[task]})
        conf = {c: np.array([_confidence(r, task) for r in rows if r[task] == c]) for c in classes}
        conf = {c: v[np.isfinite(v)] for c, v in conf.items()}  # a person's class on a face never measured has none
        n = {c: sum(r[task] == c for r in rows) for c in classes}
        counts = table(["class", "images", "share", "median confidence"],
                       [[c, n[c], f"{n[c] / max(1, len(rows)):.1%}",
                         f"{np.median(conf[c]):.3f}" if len(conf[c]) else "-"] for c in classes]
                       + [["(no label)", sum(not r[task] for r in rows), "", ""]])
        sheets = []
        for c in classes:
            keys = [r["key"] for r in rows if r[task] == c]
            pick = sorted(rng.choice(len(keys), size=min(SHEET, len(keys)), replace=False))
            sheets.append(image(_sheet(store, labels, [keys[i] for i in pick], folder / f"{task}-{c}.png"),
                                f"{c}: {len(pick)} of {len(keys)} at random"))
        ranked = sorted((r for r in rows if r[task] and r[f"{task}_confidence"]), key=lambda r: _confidence(r, task))[:SHEET]
        sheets.append(image(_sheet(store, labels, [r["key"] for r in ranked], folder / f"{task}-least-confident.png"),
                            "the least confident (what the review page shows first)"))
        hist = _histogram(conf, folder / f"{task}-confidence.png", task)
        parts.append(section(f"{task}", counts, "<div class='row'>" + "".join(sheets) + "</div>", image(hist)))
    out = report_path(labels.path)
    atomic_write_text(out, page(f"{TITLE}{labels.path.name}", parts))
    return out


def _confidence(row: dict[str, str], task: str) -> float:
    return float(row[f"{task}_confidence"]) if row[f"{task}_confidence"] else float("nan")


def _sheet(store: Store, labels: LabelsFile, keys: list[str], path: Path) -> Path:
    rows = np.sort(np.array([_store_row(store, k) for k in keys], dtype=np.int64)) if keys else np.zeros(0, np.int64)
    images = np.asarray(store.images[rows]) if len(rows) else np.zeros((1, store.image_size, store.image_size, 3), np.uint8)
    return save_grid(images, path, nrow=8, scale=max(1, 64 // store.image_size))


def _store_row(store: Store, key: str) -> int:
    cache = getattr(store, "_row_of_key", None)
    if cache is None:
        cache = {str(k): i for i, k in enumerate(store.keys)}
        object.__setattr__(store, "_row_of_key", cache)
    return cache[key]


def _histogram(conf: dict[str, np.ndarray], path: Path, task: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist([conf[c] for c in conf], bins=20, range=(0, 1), stacked=True, label=list(conf))
    ax.set_xlabel(f"{task} confidence")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
