#!/usr/bin/env bash
# Orientation and light classifiers on auto labels, scored on held-out people (docs/labels.md, "Classifiers on
# the labels"; AMD EPYC, 2026-12-01): the exact commands.
#
#   benchmarks/bench_label_classifiers.sh CELEBA_STORE UTK_STORE OUT [SEEDS]
#
# CELEBA_STORE: the CelebA subset prepared with landmarks (stores/celeba64-aligned: official partitions, so val
# is 780 faces of people never trained on); UTK_STORE: UTKFace prepared with --align (stores/utk64-aligned).
# Per seed (default "0 1 2"): orientation and light from scratch (20 epochs), and light fine-tuned 8 epochs from
# a light network trained on UTKFace's own auto labels. Every run is scored on the val partition, last
# checkpoint, with and without flip averaging; OUT/summary.json collects accuracy and flip consistency.
set -euo pipefail
celeba=$1 utk=$2 out=$3 seeds=${4:-"0 1 2"}
mkdir -p "$out"
facelab label auto "$celeba" --task orientation,light --out "$out/celeba-labels.csv" --json > "$out/label-celeba.json"
facelab label auto "$utk" --task light --out "$out/utk-light.csv" --json > "$out/label-utk.json"
train() {  # name store labels-file label epochs [extra args]
  local name=$1 store=$2 labels=$3 label=$4 epochs=$5; shift 5
  [ -f "$out/$name.json" ] || facelab train "$store" --labels-file "$labels" --labels "$label" --epochs "$epochs" \
    "$@" --out "$out" --name "$name" --json > "$out/$name.json"
}
score() {  # name
  for tta in --no-tta-flip --tta-flip; do
    facelab eval "$out/train-$1" --data "$celeba" --labels-file "$out/celeba-labels.csv" --split val \
      --checkpoint last $tta --json > "$out/$1-eval$tta.json"
  done
}
train light-utk "$utk" "$out/utk-light.csv" light 8
for s in $seeds; do
  train "orientation-s$s" "$celeba" "$out/celeba-labels.csv" orientation 20 -o "seed=$s"
  train "light-s$s" "$celeba" "$out/celeba-labels.csv" light 20 -o "seed=$s"
  train "light-from-utk-s$s" "$celeba" "$out/celeba-labels.csv" light 8 --pretrained "$out/train-light-utk" -o "seed=$s"
  for n in "orientation-s$s" "light-s$s" "light-from-utk-s$s"; do score "$n"; done
done
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for f in sorted(out.glob("*-eval--*.json")):
    name, tta = f.stem.split("-eval--")
    r = json.loads(f.read_text())
    rows.setdefault(name, {})[tta] = {"accuracy": r["summary"]["mean_accuracy"],
                                      "flip_consistency": r.get("flip_consistency")}
(out / "summary.json").write_text(json.dumps(rows, indent=2))
print(json.dumps(rows, indent=2))
PY
