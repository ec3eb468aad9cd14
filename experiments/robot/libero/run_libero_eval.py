"""Evaluate a policy in the LIBERO simulator: upstream's protocol, resumable, optionally in parallel.

    python experiments/robot/libero/run_libero_eval.py --pretrained_checkpoint CKPT --task_suite_name libero_spatial

Each finished episode is appended to `{local_log_dir}/EVAL-{suite}-{run}.jsonl` (suite, task, trial, success, steps,
kept visual tokens, policy latency, error); running the same command again skips finished episodes. An exception
inside an episode is recorded and the run goes on. `--num_workers N` runs N simulators in separate processes, each
with its own copy of the policy or sharing one that batches their queries (`--policy_placement`). `--policy scripted`
runs the scripted expert through the same harness.
"""

from dataclasses import dataclass

import draccus

from experiments.robot.libero.episodes import EpisodeResult
from experiments.robot.libero.eval_config import EvalConfig, resolve_render_quality
from experiments.robot.libero.eval_reports import format_results
from experiments.robot.libero.eval_results import append_record, check_resume_settings, finished_episodes, save_artifacts
from experiments.robot.libero.eval_workers import planned_episodes, run_parallel, run_sequential


@dataclass
class GenerateConfig(EvalConfig):
    """Upstream's name for the evaluation's flags (``EvalConfig``), kept so its command lines and imports work."""


def evaluate(cfg: EvalConfig) -> list[dict]:
    from tqdm import tqdm

    cfg.render_quality = resolve_render_quality(cfg)
    path = cfg.results_path
    done = finished_episodes(path)
    check_resume_settings(cfg, path, resuming=bool(done))
    specs = [s for s in planned_episodes(cfg) if (s.task_id, s.trial) not in done]
    print(
        f"[eval] {cfg.task_suite_name}: {len(done)} episode(s) already in {path}, {len(specs)} to run "
        f"with {cfg.num_workers} worker(s), {cfg.render_quality} renders"
    )
    bar = tqdm(total=len(specs), desc="episodes", unit="episode")
    records, task_seen = list(done.values()), set()

    def on_result(result: EpisodeResult) -> None:
        record = result.record()
        append_record(path, record)
        save_artifacts(cfg, result, task_seen)
        records.append(record)
        wins = sum(r["success"] for r in records)
        bar.update(1)
        bar.set_postfix(success=f"{wins}/{len(records)}")

    if specs:
        (run_sequential if cfg.num_workers == 1 else run_parallel)(cfg, specs, on_result)
    bar.close()
    summary = format_results(records)
    print(summary)
    summary_path = path.with_suffix(".summary.txt")
    summary_path.write_text(summary + "\n")
    return records


@draccus.wrap()
def main(cfg: GenerateConfig) -> list[dict]:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
