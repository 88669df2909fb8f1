"""Add the judgement of generated minority samples to study cells that were run without it.

Since the judgement was added (``facelab.experiments.balancing.synthetic_fidelity``), every generative
cell of ``facelab experiment imbalance`` records how many of its minority samples the study's own ``none``
classifier of the same seed calls minority. Cells of studies run before then lack it; this script
computes it with the same library function from each cell's saved generator and judge (no training),
adds it to the cell's record and re-aggregates the study through the library's resume path (every cell
is done, so it only aggregates and renders ``report.html``).

    python tools/judge_synthetic.py bench-out/studies/utk-gender-p0.1 --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facelab.data.store import Store
from facelab.data.views import load_view
from facelab.experiments.imbalance_study import ImbalanceStudyConfig, run_study, validate_study
from facelab.experiments.balancing import GENERATIVE_METHODS, StudyContext, synthetic_fidelity
from facelab.utils.io import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfg = ImbalanceStudyConfig.from_yaml(args.study / "config.yaml")
    _, _, _, minority = validate_study(cfg)
    store = Store.open(cfg.store)
    records = [json.loads(line) for line in (args.study / "results.jsonl").read_text().splitlines() if line.strip()]
    added = []
    for rec in records:
        if rec["method"] not in GENERATIVE_METHODS or "synthetic_fidelity" in rec.get("notes", {}):
            continue
        cell = args.study / f"p{rec['p']:g}" / f"seed{rec['seed']}"
        view = load_view(cell / "rows.json", store)
        ctx = StudyContext(store=store, target=cfg.target, minority=minority, train_rows=view["train"],
                           val_rows=view["val"], seed=rec["seed"], work_dir=cell, synthetic_amount=cfg.synthetic_amount,
                           generator=cfg.generator, device=cfg.device)
        rec.setdefault("notes", {}).update(synthetic_fidelity(ctx, cell / f"gen-{rec['method']}"))
        added.append({k: rec[k] for k in ("p", "seed", "method")} | {"notes": rec["notes"]})
    atomic_write_text(args.study / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    summary = run_study(cfg, run_dir=args.study, progress=False)
    out = {"study": str(args.study), "judged": added, "aggregate": summary["aggregate"], "report": summary["report"]}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
    else:
        for a in added:
            print(a["p"], a["seed"], a["method"], a["notes"].get("synthetic_fidelity"), a["notes"].get("judge_minority_recall_val"))
        print("report:", summary["report"])


if __name__ == "__main__":
    main()
