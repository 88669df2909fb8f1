"""The auto-labelers measured: against truth on synthetic faces, against hand calls on real faces, their speed,
and the review page's time from a key press to the next face.

1. Synthetic faces (exact yaw and light): yaw error of the pose fit (with each face's own 3D points, and with
   the mean human face the labeler uses), class accuracy, and whether a mirrored face gets exactly the
   mirrored class and the negated value.
2. ``--store`` (with landmarks, e.g. CelebA): ``facelab label auto`` speed in images/s.
3. ``--hand-calls FILE`` (lines ``key orientation light`` with classes l/c/r, or ``-`` for no call) and
   ``--labels`` (the auto labels of ``--store``): each call is entered through the review page's session (the
   code path of a key press on the page) into a copy of the labels file written to ``--reviewed-out``; then
   the agreement of the auto labels with the hand calls, overall and per hand class.
4. ``--second-labels FILE``: the auto labels of the same images aligned with another detector (an independent
   landmark model): agreement of the classes and correlation of the values.
5. ``--page N``: the review page in chromium (playwright), N key presses on ``--store``'s labels; the
   latency from each key press to the next face on screen (``window.facelabLatencies`` of review.js).

    python benchmarks/bench_labels.py --store ~/stores/celeba64-aligned --labels labels/celeba.csv \\
        --hand-calls calls.txt --reviewed-out labels/celeba-reviewed.csv --page 60 --json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from facelab.data.labels_file import LabelsFile
from facelab.data.render_face import face_landmarks, landmark_model, render_face
from facelab.data.sources import create_source
from facelab.data.store import Store
from facelab.labelers import create_labeler, flip_landmarks
from facelab.labelers.orientation import head_pose
from facelab.labelers.table import auto_label

CLASSES = ("left", "center", "right")
CALL = {"l": "left", "c": "center", "r": "right"}


def synthetic(n: int, size: int, seed: int) -> dict:
    """Labelers against the rendered truth."""
    src = create_source("synthetic", None, n=n, seed=seed, landmarks=True)
    names = [s.name for s in src.label_specs()]
    orient, orient15, light = create_labeler("orientation"), create_labeler("orientation", threshold=15), create_labeler("light")
    true_yaw, own_yaw, mean_yaw, yaw_ok, light_ok, flip_ok = [], [], [], [], [], []
    mirror = {"left": "right", "right": "left", "center": "center"}
    for r in src.index().records:
        p = src.face_params(r)
        img, pts = render_face(p, size), face_landmarks(p, size)
        true_yaw.append(math.degrees(p.yaw))
        own_yaw.append(head_pose(pts, landmark_model(p))[0])
        mean_yaw.append(orient.label(img, pts).value)
        yaw_ok.append(orient15.label(img, pts).cls == CLASSES[r.labels[names.index("yaw")]])
        lab = light.label(img, pts)
        light_ok.append(lab.cls == CLASSES[r.labels[names.index("light")]])
        fimg, fpts = np.ascontiguousarray(img[:, ::-1]), flip_landmarks(pts, size)
        flip_ok.append(all(
            (b := lb.label(fimg, fpts)).cls == mirror[(a := lb.label(img, pts)).cls] and abs(b.value + a.value) < 1e-9
            for lb in (orient, light)))
    t, own, mean = map(np.asarray, (true_yaw, own_yaw, mean_yaw))
    slope = float(np.polyfit(t, mean, 1)[0])
    return {"faces": n, "size": size,
            "yaw_abs_error_own_model_deg": round(float(np.mean(np.abs(own - t))), 6),
            "yaw_abs_error_mean_face_deg": round(float(np.mean(np.abs(mean - t))), 3),
            "yaw_mean_face_slope": round(slope, 3), "yaw_mean_face_corr": round(float(np.corrcoef(t, mean)[0, 1]), 4),
            "yaw_class_accuracy_threshold_15": round(float(np.mean(yaw_ok)), 4),
            "light_class_accuracy": round(float(np.mean(light_ok)), 4),
            "flip_exact_share": round(float(np.mean(flip_ok)), 4)}


def read_calls(path: Path) -> dict[str, dict[str, str]]:
    """``key orientation light`` per line (an optional leading index is ignored); ``-`` is no call."""
    calls = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        key, o, li = parts[-3:]
        calls[key] = {t: CALL[c] for t, c in (("orientation", o), ("light", li)) if c != "-"}
    return calls


def enter_calls(store: Store, labels: Path, calls: dict, out: Path) -> None:
    """Each hand call entered through the review session into a copy of the labels file."""
    from facelab.serve.review import Decision, ReviewSession

    shutil.copy(labels, out)
    session = ReviewSession(store, LabelsFile.read(out, store=store))
    for key, per_task in calls.items():
        for task, cls in per_task.items():
            session.decide(Decision(key=key, task=task, cls=cls))


def agreement(auto: LabelsFile, reviewed: LabelsFile) -> dict:
    """Auto labels against the reviewed rows: overall, per hand class, and the confusion (hand -> auto)."""
    out = {}
    auto_rows = {r["key"]: r for r in auto.rows}
    for task in reviewed.tasks:
        pairs = [(r[task], auto_rows[r["key"]][task]) for r in reviewed.rows if r[f"{task}_reviewed"] == "1"]
        if not pairs:
            continue
        conf = {h: {a: sum(1 for x, y in pairs if x == h and y == a) for a in CLASSES} for h in CLASSES}
        out[task] = {"reviewed": len(pairs), "agreement": round(float(np.mean([h == a for h, a in pairs])), 4),
                     "per_hand_class": {h: {"n": sum(conf[h].values()),
                                            "agreement": round(conf[h][h] / sum(conf[h].values()), 4) if sum(conf[h].values()) else None}
                                        for h in CLASSES},
                     "confusion_hand_to_auto": conf}
    return out


def second_detector(auto: LabelsFile, other: LabelsFile) -> dict:
    """The same labelers on landmarks from another detector (a store built with ``--align --detector X``):
    class agreement per class of ``auto`` and the correlation of the yaw and light contrast, on common keys."""
    theirs = {r["key"]: r for r in other.rows if not r["note"]}
    mine = [r for r in auto.rows if not r["note"] and r["key"] in theirs]
    out = {"common_images": len(mine)}
    for task, value in (("orientation", "orientation_yaw"), ("light", "light_contrast")):
        a = [r[task] for r in mine]
        b = [theirs[r["key"]][task] for r in mine]
        va = np.asarray([float(r[value]) for r in mine])
        vb = np.asarray([float(theirs[r["key"]][value]) for r in mine])
        out[task] = {"agreement": round(float(np.mean([x == y for x, y in zip(a, b)])), 4),
                     "per_class": {c: round(float(np.mean([y == c for x, y in zip(a, b) if x == c])), 4)
                                   for c in CLASSES if c in a},
                     f"{value}_corr": round(float(np.corrcoef(va, vb)[0, 1]), 4),
                     f"{value}_median_abs_diff": round(float(np.median(np.abs(va - vb))), 4)}
    return out


def page_latency(store: Store, labels: Path, presses: int) -> dict:
    """Key press -> next face on screen in chromium, on a scratch copy of the labels file."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    from facelab.serve.app import create_app
    from facelab.serve.review import ReviewSession

    chromium = shutil.which("chromium")
    if chromium is None:
        return {"skipped": "no chromium (apt-get install chromium)"}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / labels.name
        shutil.copy(labels, copy)
        session = ReviewSession(store, LabelsFile.read(copy, store=store))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(None, review=session), host="127.0.0.1", port=port,
                                              log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/review")
                page.wait_for_function("document.getElementById('auto').textContent.includes('auto')")
                for i in range(presses):
                    page.keyboard.press(("ArrowLeft", "2", "ArrowRight")[i % 3])
                    page.wait_for_function(f"window.facelabLatencies.length >= {i + 1}")
                ms = np.asarray(page.evaluate("window.facelabLatencies"), dtype=float)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    return {"presses": presses, "p50_ms": round(float(np.median(ms)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "max_ms": round(float(ms.max()), 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=300, help="synthetic faces")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--store", type=Path, help="a store with landmarks (speed, hand calls, page)")
    ap.add_argument("--labels", type=Path, help="the auto labels of --store (facelab label auto)")
    ap.add_argument("--hand-calls", type=Path)
    ap.add_argument("--reviewed-out", type=Path, help="where the reviewed copy of --labels is written")
    ap.add_argument("--second-labels", type=Path,
                    help="auto labels of the same images aligned with another detector's landmarks")
    ap.add_argument("--page", type=int, default=0, help="key presses on the review page (0: skip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res: dict = {"synthetic": synthetic(args.faces, args.size, seed=11)}
    if args.store:
        store = Store.open(args.store)
        with tempfile.TemporaryDirectory() as tmp:
            r = auto_label(store, ["orientation", "light"], Path(tmp) / "labels.csv", progress=False)
        res["auto_label"] = {"store": str(args.store), "images": r["images"], "images_per_s": r["images_per_s"]}
        if args.hand_calls and args.labels:
            out = args.reviewed_out or args.labels.with_name(args.labels.stem + "-reviewed.csv")
            enter_calls(store, args.labels, read_calls(args.hand_calls), out)
            res["hand_check"] = {"reviewed_file": str(out),
                                 **agreement(LabelsFile.read(args.labels, store=store), LabelsFile.read(out, store=store))}
        if args.second_labels and args.labels:
            res["second_detector"] = second_detector(LabelsFile.read(args.labels, store=store),
                                                     LabelsFile.read(args.second_labels))
        if args.page and args.labels:
            res["page_latency"] = page_latency(store, args.labels, args.page)
    print(json.dumps(res, indent=None if args.json else 2))
    return res


if __name__ == "__main__":
    sys.exit(main() and 0)
