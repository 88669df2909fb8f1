#!/usr/bin/env bash
# Birds, horses and the pegasus on CIFAR-10 (docs/results.md; AMD EPYC, 2026-11-23): the exact commands.
#
#   benchmarks/bench_pegasus.sh CIFAR_ROOT JUDGE_RUN OUT [MINUTES] [WIDTH]
#
# CIFAR_ROOT: the folder holding cifar10/{train,test}/<class>/ or cifar-10-batches-py/;
# JUDGE_RUN: a ten-class CIFAR-10 classifier run (`facelab train stores/cifar32 ...`), used as the FID/KID
# feature network and as the fidelity judge (a sample counts when its argmax over all ten classes is its class).
# Writes OUT/{fid,fidelity,sweep}.json and OUT/{bird,horse,pegasus,sweep}.png. A killed run resumes.
set -euo pipefail
root=$1 judge=$2 out=$3 minutes=${4:-110} width=${5:-32}
store=$out/birdhorse32 run=$out/gen-cgan-birdhorse-w$width
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
facelab data prepare cifar10 "$root" -o classes=bird,horse --size 32 --out "$store"
if [ -d "$run/checkpoints/last" ]; then
  facelab train-gen --resume "$run" --minutes "$minutes" --json > "$out/train.json"
else
  facelab train-gen "$store" --model cgan --cond label --minutes "$minutes" -o model_options.consistency_weight=1 \
    -o model_options.width="$width" -o "model_options.diffaug=[translation,color]" \
    --out "$out" --name "birdhorse-w$width" --json > "$out/train.json"
fi
facelab metrics fid "$run" --data "$store" --features "$judge" --split test --n 2000 --json > "$out/fid.json"
facelab metrics fidelity "$run" --classifier "$judge" --n-per-value 500 --json > "$out/fidelity.json"
for c in bird horse; do facelab sample "$run" --n 64 --cond "$c" --grid "$out/$c.png"; done
facelab blend "$run" --classes bird,horse --weight 0.5 --out "$out/pegasus.png"
facelab blend "$run" --classes bird,horse --sweep 5 --out "$out/sweep.png" --json > "$out/sweep.json"
