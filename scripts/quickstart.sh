#!/usr/bin/env bash
# The main job on the embedded default, end to end on the CPU, as the paper trains LightVLA:
#   1. scripted demonstrations of one LIBERO task in the real simulator;
#   2. stage 1: OpenVLA-OFT (the libero-cpu preset, pruning off) trained from scratch, every parameter;
#   3. stage 2: LightVLA from the stage-1 checkpoint: pruning on, selection noise decaying 1 -> 0; the action head
#      and proprio projector are carried over from stage 1 (fresh heads, as upstream, measured worse here: README);
#   4. both policies evaluated in LIBERO from the official initial states (2 simulator workers, a query every step);
#   5. success, kept visual tokens and latency side by side, kept tokens over stage-2 training, pictures.
# Every stage resumes: run it again to continue after an interruption.
# Knobs (environment): SUITE (libero_object), TASK (0), DEMOS (40), STAGE1_STEPS (1800), STAGE2_STEPS (500),
# TRIALS (10 episodes per policy), TEMPORAL_ENSEMBLING (True: query every step and act on the mean of every chunk's
# guess for the step; False: act on the newest chunk's first action), MAX_STEPS (episode length cap; default the
# suite's), RENDER_QUALITY (fast: decimated visual meshes, same physics; evaluation renders as the demos were),
# DATA_FORMAT (hdf5, or lerobot: the demos are also written as a LeRobot v3.0 dataset with AV1 video and both stages
# train from that folder), QUICKSTART_DIR (runs/quickstart-SUITE-TASK), VENV (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
SUITE="${SUITE:-libero_object}"
TASK="${TASK:-0}"
OUT="${QUICKSTART_DIR:-runs/quickstart-$SUITE-$TASK}"  # one folder per task: runs never mix
DEMOS="${DEMOS:-40}"
STAGE1_STEPS="${STAGE1_STEPS:-1800}"
STAGE2_STEPS="${STAGE2_STEPS:-500}"
TRIALS="${TRIALS:-10}"
TEMPORAL_ENSEMBLING="${TEMPORAL_ENSEMBLING:-True}"
case "$TEMPORAL_ENSEMBLING" in
  True) RESULTS="seed7--temporal_ensembling" ;;  # the evaluation names its results after the setting
  False) RESULTS="seed7" ;;
  *) echo "TEMPORAL_ENSEMBLING must be True or False, not '$TEMPORAL_ENSEMBLING'" >&2; exit 2 ;;
esac
MAX_STEPS="${MAX_STEPS:-}"
RENDER_QUALITY="${RENDER_QUALITY:-fast}"
DATA_FORMAT="${DATA_FORMAT:-hdf5}"
DATASET="${SUITE}_no_noops"
EXPORT=()
case "$DATA_FORMAT" in
  hdf5) DATA_ROOT="$OUT/data" ;;
  lerobot) DATA_ROOT="$OUT/lerobot"; EXPORT=(--lerobot_out_dir "$OUT/lerobot/$DATASET") ;;  # training converts it once
  *) echo "DATA_FORMAT must be hdf5 or lerobot, not '$DATA_FORMAT'" >&2; exit 2 ;;
esac
START=$(date +%s)
LAST=$START
stage_done() {  # print the wall time of the stage that just finished
  local now
  now=$(date +%s)
  echo "   [$1: $(( (now - LAST) / 60 )) min $(( (now - LAST) % 60 )) s]"
  LAST=$now
}

bash scripts/setup_venv.sh "$VENV" test
PY="$VENV/bin/python"
stage_done "setup"

echo "== 1/5 scripted demonstrations ($SUITE task $TASK, $DEMOS demos, 128 px, $RENDER_QUALITY renders)"
"$PY" experiments/robot/libero/generate_scripted_demos.py --task_suite_name "$SUITE" --task_ids "[$TASK]" \
  --num_demos_per_task "$DEMOS" --resolution 128 --num_workers 2 --out_dir "$OUT/data/$DATASET" \
  --render_quality "$RENDER_QUALITY" "${EXPORT[@]}"
stage_done "demos"

train() {  # train RUN_ID [finetune.py flags...]: resumes when a checkpoint of the run exists
  local run=$1
  shift 1
  local resume=False
  [ -f "$OUT/runs/$run/training_state.pt" ] && resume=True
  "$PY" vla-scripts/finetune.py --data_root_dir "$DATA_ROOT" --dataset_name "$DATASET" --run_root_dir "$OUT/runs" \
    --run_id_override "$run" --num_images_in_input 2 --use_proprio True --batch_size 64 \
    --save_freq 200 --save_latest_checkpoint_only True --log_freq 100 --num_workers 0 --resume "$resume" "$@"
}
recipe() {  # the two-stage recipe's flags, defined once in prismatic/training/recipes.py (the study reads it too)
  "$PY" -m prismatic.training.recipes "$@"
}

echo "== 2/5 stage 1: OpenVLA-OFT from scratch ($STAGE1_STEPS steps, pruning off, full fine-tuning)"
# shellcheck disable=SC2046  # the recipe's flags are words
train oft $(recipe stage1 "$STAGE1_STEPS") --kept_tokens_log_freq 0
stage_done "stage 1"

echo "== 3/5 stage 2: LightVLA from the stage-1 checkpoint ($STAGE2_STEPS steps, pruning on, noise 1 -> 0)"
# shellcheck disable=SC2046
train lightvla $(recipe stage2 "$STAGE2_STEPS" "$OUT/runs/oft") --kept_tokens_log_freq 25
stage_done "stage 2"

echo "== 4/5 evaluate both in LIBERO ($TRIALS episodes each, official initial states)"
for RUN in oft lightvla; do
  "$PY" experiments/robot/libero/run_libero_eval.py --pretrained_checkpoint "$OUT/runs/$RUN" \
    --task_suite_name "$SUITE" --task_ids "[$TASK]" --num_trials_per_task "$TRIALS" --env_img_res 128 \
    --num_open_loop_steps 1 --temporal_ensembling "$TEMPORAL_ENSEMBLING" --num_workers 2 --local_log_dir "$OUT/eval" \
    ${MAX_STEPS:+--max_steps "$MAX_STEPS"}
done
stage_done "evaluation"

echo "== 5/5 summary"
"$PY" scripts/compare_eval_runs.py "$OUT/eval/EVAL-$SUITE-oft--$RESULTS.jsonl" \
  "$OUT/eval/EVAL-$SUITE-lightvla--$RESULTS.jsonl"
"$PY" scripts/token_statistics.py "$OUT/eval/EVAL-$SUITE-lightvla--$RESULTS.jsonl" --plot "$OUT/eval/kept_tokens.png"
"$PY" scripts/training_curves.py "$OUT/runs/oft" "$OUT/runs/lightvla" --plot "$OUT/training_curves.png"
echo "kept-patch pictures: $OUT/eval/rollouts/lightvla--$RESULTS/"
echo "quickstart wall time: $(( ($(date +%s) - START) / 60 )) min $(( ($(date +%s) - START) % 60 )) s"
