#!/usr/bin/env bash
# One change at a time to the default CelebA recipe (docs/results.md; AMD EPYC, 2026-11-24): the exact
# commands behind the "learning rate, weight decay, batch, dropout, schedule" rows. Each run is the default
# recipe for 20 epochs (20 epochs end where 30 do for this model), seed 0, with one setting moved;
# the control is the default itself (0.9050 at seed 0, 0.9030 at seed 1, AMD EPYC, 2026-11-24).
#
#   benchmarks/celeba_recipe_grid.sh STORE OUT [JOBS]
#
# STORE: a CelebA store with the official partitions (`facelab data prepare celeba ...`); OUT: where the run
# folders and OUT/<name>.json (`facelab train --json`) go; JOBS: runs at a time (default 2, one thread each).
# A finished run (its .json exists) is skipped when the script is run again.
set -euo pipefail
store=$1 out=$2 jobs=${3:-2}
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} STORE=$store OUT=$out
grid() {
  cat <<'ROWS'
lr1.5e-3 --lr 1.5e-3
lr6e-3 --lr 6e-3
wd0.2 -o trainer.optim.weight_decay=0.2
wd0.01 -o trainer.optim.weight_decay=0.01
bs32 --batch-size 32
drop0.3 -o model_kwargs.drop_rate=0.3
drop0.65 -o model_kwargs.drop_rate=0.65
cosine --schedule cosine
ROWS
}
one() {
  name=$1; shift
  [ -s "$OUT/$name.json" ] && exit 0
  facelab train "$STORE" --epochs 20 --seed 0 --out "$OUT" --name "$name" --json "$@" > "$OUT/$name.json.partial" \
    2> "$OUT/$name.log" || { echo "$name failed; see $OUT/$name.log" >&2; exit 1; }
  mv "$OUT/$name.json.partial" "$OUT/$name.json"
}
export -f one
grid | xargs -P "$jobs" -L 1 bash -c 'one "$@"' _
