#!/usr/bin/env bash
# The documented transfer recipe for a CelebA attribute classifier trained on few people (docs/pretraining.md,
# "The recipe, end to end"), from the datasets as downloaded to the scored classifiers: the exact commands.
#
#   benchmarks/celeba_transfer_recipe.sh CELEBA_ROOT UTK_ROOT OUT [SEEDS]
#
# CELEBA_ROOT: CelebA as downloaded (img_align_celeba/ and the annotation files); UTK_ROOT: UTKFace's chips.
# Steps, each skipped when finished; rerun after a kill to go on (a training step that was killed resumes from its
# last checkpoint with --resume):
#   1. the stores: CelebA at 64 px; UTKFace aligned into CelebA's frame (MTCNN) with six age groups;
#   2. a backbone supervised on UTKFace's gender, race and age group (5 epochs);
#   3. three teachers: that backbone fine-tuned on CelebA's training partition (12 epochs, seeds 0-2);
#   4. distillation: the teachers' ensemble labels UTKFace's faces and CelebA's training images with the 40
#      attributes, and a fresh backbone learns those labels (10 epochs);
#   5. the classifier: the distilled backbone fine-tuned on CelebA's training partition, 12 epochs at learning
#      rate LR (default 1e-3, chosen by benchmarks/sweeps/celeba64_finetune_distilled.yaml), per seed (default
#      "0 1 2");
#   6. each classifier, the teachers' ensemble and the classifiers' ensemble scored on CelebA's official val
#      partition (last checkpoint; people never trained on); OUT/summary.json collects the figures.
# Environment: EPOCHS_UTK (5), EPOCHS_FT (12), EPOCHS_DISTILL (10), LR (0.001), TEACHERS ("0 1 2"),
# SCORE_SPLIT (val; test where the store has CelebA's test partition).
# On a 2-vCPU AMD EPYC (2026-12-01) steps 2-5 took about 19 + 3 x 5 + 27 + 5 minutes per seed.
set -euo pipefail
celeba_root=$1 utk_root=$2 out=$3 seeds=${4:-"0 1 2"}
epochs_utk=${EPOCHS_UTK:-5} epochs_ft=${EPOCHS_FT:-12} epochs_distill=${EPOCHS_DISTILL:-10}
lr=${LR:-0.001} teachers=${TEACHERS:-"0 1 2"} split=${SCORE_SPLIT:-val}
mkdir -p "$out"
celeba=$out/stores/celeba64 utk=$out/stores/utk64-aligned

# 1. stores (a rerun finishes an interrupted build)
[ -f "$celeba/manifest.json" ] || facelab data prepare celeba "$celeba_root" --size 64 --out "$celeba" --json > "$out/prepare-celeba.json"
[ -f "$utk/manifest.json" ] || facelab data prepare utkface "$utk_root" --size 64 --out "$utk" --align \
  -o age_bins=20,30,40,50,60 --json > "$out/prepare-utk.json"

step() {  # command name [args...]: facelab train/pretrain once into OUT/COMMAND-NAME, resumed if it was killed
  local cmd=$1 name=$2; shift 2
  local dir=$out/$cmd-$name
  if [ -f "$dir/summary.json" ]; then return; fi
  if [ -f "$dir/metrics.jsonl" ]; then
    facelab "$cmd" --resume "$dir" --json > "$out/$cmd-$name.json"
  else
    facelab "$cmd" "$@" --out "$out" --name "$name" --json > "$out/$cmd-$name.json"
  fi
}

# 2. supervised backbone on UTKFace
step train utk "$utk" --labels gender,race,age_group --epochs "$epochs_utk"
# 3. teachers
teacher_list=""
for s in $teachers; do
  step train "teacher-s$s" "$celeba" --pretrained "$out/train-utk" --epochs "$epochs_ft" -o "seed=$s"
  teacher_list="$teacher_list${teacher_list:+, }$out/train-teacher-s$s"
done
# 4. distillation onto UTKFace's faces and CelebA's training images (CelebA's val and test rows are left out)
step pretrain distill "$utk" "$celeba" --objective distill --batch-size 128 --epochs "$epochs_distill" \
  -o "objective_kwargs.teacher=[$teacher_list]"
# 5. the classifiers
finals=()
for s in $seeds; do
  step train "final-s$s" "$celeba" --pretrained "$out/pretrain-distill" --epochs "$epochs_ft" \
    -o "trainer.optim.lr=$lr" -o "seed=$s"
  finals+=("$out/train-final-s$s")
done
# 6. scores on people never trained on
score() {  # name run...
  local name=$1; shift
  facelab eval "$@" --data "$celeba" --split "$split" --checkpoint last --json > "$out/eval-$name.json"
}
for s in $seeds; do score "final-s$s" "$out/train-final-s$s"; done
teacher_runs=()
for s in $teachers; do teacher_runs+=("$out/train-teacher-s$s"); done
score teachers "${teacher_runs[@]}"
[ "${#finals[@]}" -gt 1 ] && score finals "${finals[@]}"
python3 - "$out" "$split" <<'PY'
import json, sys
from pathlib import Path
out, split = Path(sys.argv[1]), sys.argv[2]
rows = {f.stem.removeprefix("eval-"): json.loads(f.read_text())["summary"]["mean_accuracy"]
        for f in sorted(out.glob("eval-*.json"))}
singles = [v for k, v in rows.items() if k.startswith("final-s")]
summary = {"split": split, "mean_accuracy": rows,
           "final_mean": sum(singles) / len(singles) if singles else None}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
PY
