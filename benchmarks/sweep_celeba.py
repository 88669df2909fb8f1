"""Does pruning pay? The same sweep on the CelebA subset with and without pruning, then the best recipe against
today's default, both re-trained with other seeds.

1. ``benchmarks/sweeps/celeba32.yaml`` (lr, weight decay, dropout, width, augmentation; 24 trials, TPE, today's
   default recipe enqueued as trial 0) runs twice with 2 local workers: with its percentile pruner, and with
   pruning off (``pruner: none``), everything else identical. Reported per arm: the best validation mean accuracy
   (official validation partition), the default recipe's (trial 0), and the CPU time of the trials (summed over
   the workers' trials) and of the worker processes (start-up included).
2. The best arm's best.yaml and the default recipe are re-trained at the same proxy budget with seeds 1..``--seeds``
   (two runs at a time, one torch thread each): the best of 24 trials is flattered by its own seed; other seeds
   say whether the recipe itself is better.

    nice -n 10 python benchmarks/sweep_celeba.py --store stores/celeba32 --out runs/bench-sweeps --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from facelab.sweeps import create_sweep, load_spec, run_sweep
from facelab.sweeps.algorithms import NoPruner

SPEC = Path(__file__).parent / "sweeps" / "celeba32.yaml"


def run_arm(name: str, *, store: str, out: Path, workers: int, pruning: bool, n_trials: int | None,
            options: Sequence[str] = ()) -> dict[str, Any]:
    spec = load_spec(SPEC, options=[f"base.store={store}", *options], flags={"n_trials": n_trials})
    if not pruning:
        spec = spec.model_copy(update={"pruner": NoPruner()})
    sweep = create_sweep(spec, out=out, name=name)
    print(f"[{name}] sweep folder {sweep.dir}", file=sys.stderr, flush=True)
    r = run_sweep(sweep, workers=workers, on_trial=lambda t: print(
        f"[{name}] trial {t.number} {t.state.name} {t.value if t.state.name == 'COMPLETE' else ''} "
        f"{t.user_attrs.get('cpu_seconds', 0):.0f} s CPU", file=sys.stderr, flush=True))
    return {"sweep_dir": str(sweep.dir), "best_value": r["best_value"], "best_trial": r["best_trial"],
            "best_params": r["best_params"], "best_config": r["best_config"], "states": r["states"],
            "default_value": next((t["value"] for t in r["trials"] if t["number"] == 0), None),
            "trial_cpu_seconds": r["cpu_seconds"], "worker_cpu_seconds": r["launch"]["cpu_seconds"],
            "wall_seconds": r["launch"]["wall_seconds"],
            "epochs_trained": sum(t["epochs"] or 0 for t in r["trials"])}


def default_config(arm: dict[str, Any], out: Path, stamp: str) -> str:
    """Trial 0's config (the enqueued default recipe, under the sweep's proxy budget), for re-training."""
    src = Path(arm["sweep_dir"]) / "trial-0000" / "config.yaml"
    dst = out / f"default-recipe-{stamp}.yaml"
    dst.write_text(src.read_text())
    return str(dst)


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def retrain(jobs: list[tuple[str, list[str]]], *, out: Path, parallel: int) -> dict[str, dict[str, Any]]:
    """``facelab train`` for each (label, args), ``parallel`` at a time on one torch thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results: dict[str, dict[str, Any]] = {}
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            label, args = pending.pop(0)
            cmd = [sys.executable, "-m", "facelab.cli", "train", *args, "--out", str(out), "--name", label, "--json"]
            print(f"[retrain] {label}: {' '.join(args)}", file=sys.stderr, flush=True)
            running.append((label, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                                     text=True), time.monotonic()))
        time.sleep(2)
        for item in list(running):
            label, p, t0 = item
            if p.poll() is None:
                continue
            running.remove(item)
            out_text = p.stdout.read() if p.stdout else ""
            if p.returncode != 0:
                raise SystemExit(f"retrain {label} failed ({p.returncode})")
            s = json.loads(out_text)
            results[label] = {"val_mean_accuracy": s["best"],
                              "final_val_mean_accuracy": s["final"].get("val_mean_accuracy"),
                              "epochs": s["epochs"], "fit_seconds": s["fit_seconds"], "run_dir": s["run_dir"]}
            print(f"[retrain] {label}: {s['best']:.4f}", file=sys.stderr, flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="The CelebA subset store at 32 px.")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-sweeps"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-trials", type=int, default=None, help="Override the spec's 24 trials.")
    ap.add_argument("-o", "--option", action="append", default=[], dest="options",
                    help="A spec override for both arms (the pruning arm's pruner, e.g. -o pruner.name=hyperband "
                         "-o pruner.min_resource=3), as `facelab sweep -o`.")
    ap.add_argument("--seeds", type=int, default=2, help="Seeds of each re-trained recipe (0 skips the re-training).")
    ap.add_argument("--machine", default=platform.processor() or platform.machine(),
                    help="The machine, as the figures should name it (e.g. '2-vCPU AMD EPYC').")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    arms = {}
    for arm, pruning in (("pruning", True), ("no_pruning", False)):
        arms[arm] = run_arm(f"celeba32-{arm.replace('_', '')}-{stamp}", store=args.store, out=args.out,
                            workers=args.workers, pruning=pruning, n_trials=args.n_trials, options=args.options)
    p, n = arms["pruning"], arms["no_pruning"]
    saving = {k: 1 - p[k] / n[k] for k in ("trial_cpu_seconds", "worker_cpu_seconds")}
    best_arm = max(arms, key=lambda a: arms[a]["best_value"])
    report: dict[str, Any] = {"machine": args.machine, "options": args.options, "arms": arms, "cpu_saving": saving,
                              "best_value_difference": p["best_value"] - n["best_value"]}
    if args.seeds:
        best_cfg = arms[best_arm]["best_config"]
        jobs = []
        for seed in range(1, args.seeds + 1):
            jobs.append((f"best-{stamp}-s{seed}", ["--config", best_cfg, "-o", f"seed={seed}"]))
            # the default recipe: the same config with every swept field back at its default (trial 0's values)
            jobs.append((f"default-{stamp}-s{seed}", ["--config", default_config(arms[best_arm], args.out, stamp),
                                                      "-o", f"seed={seed}"]))
        cpu0 = _children_cpu()
        runs = retrain(jobs, out=args.out, parallel=2)
        mean = {r: sum(v["val_mean_accuracy"] for k, v in runs.items() if k.startswith(r)) / args.seeds
                for r in ("best", "default")}
        report["retrain"] = {"from_arm": best_arm, "recipe": arms[best_arm]["best_params"],
                             "seeds": list(range(1, args.seeds + 1)),
                             "runs": runs, "mean": mean, "difference": mean["best"] - mean["default"],
                             "cpu_seconds": round(_children_cpu() - cpu0, 1)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("| arm | best val mean acc | trials (complete/pruned) | epochs trained | trial CPU s | worker CPU s "
          "| wall s |")
    print("|---|---|---|---|---|---|---|")
    for arm, r in arms.items():
        st = r["states"]
        print(f"| {arm} | {r['best_value']:.4f} | {st.get('COMPLETE', 0)}/{st.get('PRUNED', 0)} | "
              f"{r['epochs_trained']} | "
              f"{r['trial_cpu_seconds']:.0f} | {r['worker_cpu_seconds']:.0f} | {r['wall_seconds']:.0f} |")
    print(f"\npruning saves {saving['trial_cpu_seconds']:.1%} of the trials' CPU time "
          f"({saving['worker_cpu_seconds']:.1%} of the workers'); best value difference "
          f"{report['best_value_difference']:+.4f}")
    if "retrain" in report:
        rt = report["retrain"]
        print(f"\nre-trained with seeds {rt['seeds']}: best recipe ({rt['from_arm']}: {rt['recipe']}) "
              f"{rt['mean']['best']:.4f} vs default {rt['mean']['default']:.4f} ({rt['difference']:+.4f})")
        for k, v in rt["runs"].items():
            print(f"  {k}: {v['val_mean_accuracy']:.4f}")


if __name__ == "__main__":
    main()
