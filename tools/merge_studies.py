"""Merge class-imbalance studies run as one process per seed into one study folder, then aggregate it.

A study's cells are independent; on a multi-core machine the seeds can run as separate processes
(``facelab experiment imbalance CONFIG -o "seeds=[k]" --out OUT_k``). This script checks that the studies
differ only in their seeds, copies their per-seed folders and results into one folder whose config lists
every seed, and finishes it with the library's own resume path (every cell is done, so it only
aggregates and renders ``report.html``): the merged folder is what one process would have written.

    python tools/merge_studies.py --out bench-out/studies/utk-gender-p0.1 \\
        bench-out/studies-utk-seed0/imbalance-* bench-out/studies-utk-seed1/imbalance-* bench-out/studies-utk-seed2/imbalance-*
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from facelab.experiments.imbalance_study import ImbalanceStudyConfig, run_study
from facelab.utils.io import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("studies", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfgs = [ImbalanceStudyConfig.from_yaml(s / "config.yaml") for s in args.studies]
    base = cfgs[0].model_dump(mode="json")
    for s, c in zip(args.studies, cfgs):
        other = c.model_dump(mode="json")
        diff = sorted(k for k in base if k != "seeds" and base[k] != other[k])
        if diff:
            raise SystemExit(f"{s}: differs from {args.studies[0]} in {diff}, not only in its seeds")
    seeds = [seed for c in cfgs for seed in c.seeds]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"a seed appears in two studies: {seeds}")
    if args.out.exists():
        raise SystemExit(f"{args.out} exists")
    args.out.mkdir(parents=True)
    merged = ImbalanceStudyConfig.from_dict({**base, "seeds": sorted(seeds)})
    merged.save(args.out / "config.yaml")
    shutil.copyfile(args.studies[0] / "env.json", args.out / "env.json")
    lines, cell_seconds, walls = [], 0.0, {}
    for s in args.studies:
        for line in (s / "results.jsonl").read_text().splitlines():
            rec = json.loads(line)
            cell_seconds += rec["seconds"]
            rec["run_dir"] = rec["run_dir"].replace(str(s), str(args.out))
            lines.append(json.dumps(rec))
        for p_dir in s.glob("p*"):
            for seed_dir in p_dir.glob("seed*"):
                shutil.copytree(seed_dir, args.out / p_dir.name / seed_dir.name)
        summary = s / "summary.json"
        walls[str(s)] = json.loads(summary.read_text())["seconds"] if summary.is_file() else None
    (args.out / "results.jsonl").write_text("\n".join(lines) + "\n")
    out = run_study(merged, run_dir=args.out, progress=False)
    merge = {"merged_from": [str(s) for s in args.studies], "process_wall_seconds": walls,
             "cell_seconds_total": round(cell_seconds, 1)}
    atomic_write_json(args.out / "merge.json", merge)  # beside the study's own summary.json
    out.update(merge)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print(f"merged {len(lines)} cells into {args.out}; report: {out['report']}")


if __name__ == "__main__":
    main()
