#!/usr/bin/env bash
# The main job on the embedded default, end to end on the CPU: install, make scripted LIBERO demonstrations, fine-tune
# the tiny preset, evaluate it in the LIBERO simulator with and without token pruning, and compare.
# About 25 minutes on 2 cores from a fresh machine. Every stage resumes: run it again to continue after an interruption.
# Knobs (environment): DEMOS (demos per task, 12), STEPS (training steps, 600), TRIALS (eval episodes, 3),
# QUICKSTART_DIR (runs/quickstart), VENV (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
OUT="${QUICKSTART_DIR:-runs/quickstart}"
DEMOS="${DEMOS:-12}"
STEPS="${STEPS:-600}"
TRIALS="${TRIALS:-3}"
RUN="$OUT/runs/tiny-quickstart"
START=$(date +%s)

bash scripts/setup_venv.sh "$VENV" test
PY="$VENV/bin/python"

echo "== 1/4 scripted demonstrations (libero_object task 0, $DEMOS demos)"
"$PY" experiments/robot/libero/generate_scripted_demos.py --task_suite_name libero_object --task_ids '[0]' \
  --num_demos_per_task "$DEMOS" --resolution 128 --out_dir "$OUT/data/libero_object_no_noops"

echo "== 2/4 fine-tune the tiny preset ($STEPS steps)"
RESUME=False
[ -f "$RUN/training_state.pt" ] && RESUME=True
"$PY" vla-scripts/finetune.py --vla_path tiny --data_root_dir "$OUT/data" --dataset_name libero_object_no_noops \
  --run_root_dir "$OUT/runs" --run_id_override tiny-quickstart --num_images_in_input 2 --use_proprio True \
  --batch_size 8 --learning_rate 5e-4 --max_steps "$STEPS" --num_steps_before_decay $((STEPS * 3 / 4)) \
  --save_freq 200 --save_latest_checkpoint_only True --log_freq 100 --kept_tokens_log_freq 100 --resume "$RESUME"

echo "== 3/4 evaluate in LIBERO ($TRIALS episodes, with and without pruning)"
for PRUNE in True False; do
  "$PY" experiments/robot/libero/run_libero_eval.py --pretrained_checkpoint "$RUN" \
    --task_suite_name libero_object --task_ids '[0]' --num_trials_per_task "$TRIALS" --env_img_res 128 \
    --local_log_dir "$OUT/eval" --prune_visual_tokens "$PRUNE" --run_id_note "prune_$PRUNE" \
    --save_pruning_picture "$PRUNE"
done

echo "== 4/4 summary"
"$PY" scripts/compare_eval_runs.py "$OUT"/eval/EVAL-libero_object-tiny-quickstart--seed7--prune_True.jsonl \
  "$OUT"/eval/EVAL-libero_object-tiny-quickstart--seed7--prune_False.jsonl
"$PY" scripts/token_statistics.py "$OUT"/eval/EVAL-libero_object-tiny-quickstart--seed7--prune_True.jsonl \
  --plot "$OUT/eval/kept_tokens.png"
echo "kept-patch pictures: $OUT/eval/rollouts/   training metrics: $RUN/metrics.jsonl"
echo "quickstart wall time: $(( ($(date +%s) - START) / 60 )) min $(( ($(date +%s) - START) % 60 )) s"
