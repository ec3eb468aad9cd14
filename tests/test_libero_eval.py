"""experiments/robot/libero/run_libero_eval.py in the real simulator: results, resumption, workers, errors."""

import json
import os

import numpy as np
import pytest
from conftest import UNNORM_KEY

from experiments.robot.libero import eval_workers as workers
from experiments.robot.libero import run_libero_eval as ev
from experiments.robot.libero.episodes import (
    ENSEMBLE_WEIGHT_DECAY,
    EpisodeSpec,
    invert_gripper_action,
    normalize_gripper_action,
    run_episode,
)


@pytest.fixture
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


def eval_config(tmp_path, checkpoint, **overrides):
    values = dict(
        pretrained_checkpoint=str(checkpoint), task_suite_name="libero_object", task_ids=[0], num_trials_per_task=2,
        max_steps=8, env_img_res=64, local_log_dir=str(tmp_path / "logs"), save_pruning_picture=True,
    )  # fmt: skip
    values.update(overrides)
    return ev.GenerateConfig(**values)


def test_gripper_post_processing():
    actions = np.array([[0.1] * 6 + [1.0], [0.1] * 6 + [0.0], [0.1] * 6 + [0.7]])  # policy: 1 open, 0 close
    env_actions = invert_gripper_action(normalize_gripper_action(actions))
    np.testing.assert_array_equal(env_actions[:, -1], [-1.0, 1.0, -1.0])  # LIBERO: -1 open, +1 close
    np.testing.assert_array_equal(env_actions[:, :6], actions[:, :6])


class StepRecordingEnv:
    """Just enough of a LIBERO env for `run_episode`: fixed observations, and every action it is sent recorded."""

    def __init__(self):
        self.actions = []
        image = np.zeros((8, 8, 3), np.uint8)
        self.obs = {
            "agentview_image": image, "robot0_eye_in_hand_image": image, "robot0_eef_pos": np.zeros(3),
            "robot0_eef_quat": np.array([0.0, 0.0, 0.0, 1.0]), "robot0_gripper_qpos": np.zeros(2),
        }  # fmt: skip

    def seed(self, seed):
        pass

    def reset(self):
        return self.obs

    def set_init_state(self, state):
        return self.obs

    def step(self, action):
        self.actions.append(np.asarray(action))
        return self.obs, 0.0, False, {}


@pytest.mark.parametrize(
    "ensembling, decay", [(False, ENSEMBLE_WEIGHT_DECAY), (True, ENSEMBLE_WEIGHT_DECAY), (True, -0.5)]
)
def test_temporal_ensembling_averages_every_chunk_guess_for_the_step(ensembling, decay):
    """Query q (made at step q) guesses 100 q + i for step q + i, and "close" only from its 4th action on; with
    ensembling, step t acts on the weighted mean of the guesses of queries t-7 .. t (weights exp(-m age rank),
    oldest first), computed here by looping over the queries."""
    queries = []

    def policy(observation, language, obs):
        q = len(queries)
        queries.append(q)
        chunk = np.zeros((8, 7))
        chunk[:, 0] = 100 * q + np.arange(8)
        chunk[:, 6] = np.where(np.arange(8) >= 3, 0.0, 1.0)  # policy gripper: 1 open, 0 close
        return chunk, {}

    env, steps = StepRecordingEnv(), 12
    spec = EpisodeSpec("libero_object", 0, 0, max_steps=steps, num_steps_wait=2, num_open_loop_steps=1,
                       temporal_ensembling=ensembling, ensemble_weight_decay=decay)  # fmt: skip
    task = type("Task", (), {"language": "pick"})()
    result = run_episode(env, task, spec, np.zeros(1), policy)
    assert result.error is None and result.queries == steps
    acted = np.array(env.actions[2:])  # after the 2 settling steps
    for t in range(steps):
        oldest = max(0, t - 7)
        guesses = [(100 * q + (t - q), 1.0 if t - q < 3 else 0.0) for q in range(oldest, t + 1)]
        if not ensembling:
            guesses = guesses[-1:]  # the newest query's first action only
        weights = [np.exp(-decay * k) for k in range(len(guesses))]
        expected_x = sum(w * g for w, (g, _) in zip(weights, guesses)) / sum(weights)
        expected_open = sum(w * o for w, (_, o) in zip(weights, guesses)) / sum(weights) > 0.5
        assert acted[t, 0] == pytest.approx(expected_x)
        assert acted[t, 6] == (-1.0 if expected_open else 1.0)  # LIBERO: -1 open
    if ensembling:
        assert acted[0, 0] == 0 and acted[7, 0] != 7  # mixed guesses
        # at step 11 five of eight guesses say close: ACT's near-uniform mean closes, the newest-first one opens
        assert acted[11, 6] == (1.0 if decay > 0 else -1.0)


def test_temporal_ensembling_needs_a_query_every_step_and_gets_its_own_results_file():
    with pytest.raises(ValueError, match="--num_open_loop_steps 1"):
        ev.GenerateConfig(policy="scripted", task_suite_name="libero_object", temporal_ensembling=True)
    plain = ev.GenerateConfig(policy="scripted", task_suite_name="libero_object", num_open_loop_steps=1)
    ensembled = ev.GenerateConfig(policy="scripted", task_suite_name="libero_object", num_open_loop_steps=1,
                                  temporal_ensembling=True)  # fmt: skip
    assert ensembled.results_path.name == plain.results_path.name.replace(".jsonl", "--temporal_ensembling.jsonl")
    newest = ev.GenerateConfig(policy="scripted", task_suite_name="libero_object", num_open_loop_steps=1,
                               temporal_ensembling=True, ensemble_weight_decay=-0.5)  # fmt: skip
    assert newest.results_path.name == plain.results_path.name.replace(".jsonl", "--temporal_ensembling-m-0.5.jsonl")


@pytest.mark.parametrize("num_workers", [1, 2])
def test_resume_runs_exactly_the_missing_episodes(tmp_path, monkeypatch, num_workers):
    """No simulator: the episode driver is replaced by one that records what it was asked to run."""
    cfg = ev.GenerateConfig(
        policy="scripted", task_suite_name="libero_object", task_ids=[0, 3], num_trials_per_task=3,
        local_log_dir=str(tmp_path), num_workers=num_workers,
    )  # fmt: skip
    earlier = [
        {"suite": "libero_object", "task_id": 0, "trial": 0, "task": "t0", "success": True},
        {"suite": "libero_object", "task_id": 3, "trial": 2, "task": "t3", "success": False},
        {"suite": "libero_object", "task_id": 0, "trial": 0, "task": "t0", "success": True},  # written twice
    ]
    lines = [json.dumps(r) for r in earlier] + ['{"suite": "libero_object", "task_id": 3, "tri']  # torn by a kill
    cfg.results_path.parent.mkdir(parents=True, exist_ok=True)
    cfg.results_path.write_text("\n".join(lines) + "\n")
    asked = []

    def driver(cfg, specs, on_result):
        for spec in specs:
            asked.append((spec.task_id, spec.trial))
            on_result(
                ev.EpisodeResult(spec.suite, spec.task_id, f"t{spec.task_id}", spec.trial, success=spec.trial == 1)
            )

    monkeypatch.setattr(ev, "run_sequential", driver)
    monkeypatch.setattr(ev, "run_parallel", driver)
    records = ev.evaluate(cfg)
    assert sorted(asked) == [(0, 1), (0, 2), (3, 0), (3, 1)]  # exactly the missing ones
    assert sorted((r["task_id"], r["trial"]) for r in records) == [(t, i) for t in (0, 3) for i in range(3)]
    summary = cfg.results_path.with_suffix(".summary.txt").read_text()
    assert "Overall success rate: 3/6" in summary  # (0, 0) once, (0, 1), (3, 1)
    assert ev.evaluate(cfg) and len(asked) == 4  # run again: nothing left to do


def test_resume_refuses_results_made_with_other_settings(tmp_path, monkeypatch):
    """Episodes executed with 4 actions per query must not be counted with ones executed with 1."""
    cfg = ev.GenerateConfig(policy="scripted", task_suite_name="libero_object", task_ids=[0], num_trials_per_task=2,
                            local_log_dir=str(tmp_path), num_open_loop_steps=4)  # fmt: skip

    def driver(cfg, specs, on_result):
        for spec in specs[:1]:  # interrupted after one episode
            on_result(ev.EpisodeResult(spec.suite, spec.task_id, "t0", spec.trial, success=True))

    monkeypatch.setattr(ev, "run_sequential", driver)
    ev.evaluate(cfg)
    cfg.num_open_loop_steps = 1
    with pytest.raises(ValueError, match=r"num_open_loop_steps: 4 then, 1 now.*--run_id_note"):
        ev.evaluate(cfg)
    assert len(cfg.results_path.read_text().splitlines()) == 1  # nothing added to the old results
    cfg.num_open_loop_steps = 4
    assert len(ev.evaluate(cfg)) == 2  # the same settings resume


@pytest.mark.slow
def test_evaluation_writes_results_and_resumes(tmp_path, checkpoint):
    cfg = eval_config(tmp_path, checkpoint, save_rollout_video=True)
    records = ev.evaluate(cfg)
    lines = cfg.results_path.read_text().splitlines()
    assert len(records) == len(lines) == 2
    first = json.loads(lines[0])
    assert (first["suite"], first["task_id"], first["trial"], first["steps"]) == ("libero_object", 0, 0, 8)
    assert first["queries"] == 1 and 0 < first["kept_tokens_mean"] <= 512 and first["latency_ms_mean"] > 0
    assert first["error"] is None and first["success"] is False
    assert "Overall success rate: 0/2" in cfg.results_path.with_suffix(".summary.txt").read_text()
    pictures = list((tmp_path / "logs" / "rollouts").rglob("*kept_patches.png"))
    assert len(pictures) == 1  # one per task
    import imageio.v2 as imageio

    videos = sorted((tmp_path / "logs" / "rollouts").rglob("*.mp4"))
    assert len(videos) == 4  # per episode: the camera, and the kept-patch overlay of both cameras
    overlay = [v for v in videos if v.name.endswith("kept_patches.mp4")]
    frames = [f for f in imageio.get_reader(overlay[0])]
    assert len(frames) == 8 and frames[0].shape == (224, 448, 3)  # one frame per step, two camera panels

    again = ev.evaluate(cfg)  # the same command: nothing to redo
    assert cfg.results_path.read_text().splitlines() == lines and len(again) == 2
    more = ev.evaluate(eval_config(tmp_path, checkpoint, num_trials_per_task=3))
    assert len(more) == 3 and len(cfg.results_path.read_text().splitlines()) == 3


def test_the_policy_gets_the_cores_the_simulators_leave(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    with workers.policy_threads_beside(2):
        assert torch.get_num_threads() == 2
    with workers.policy_threads_beside(4):
        assert torch.get_num_threads() == 1  # never none
    assert torch.get_num_threads() == before


def test_each_simulator_renders_with_its_share_of_the_cores(monkeypatch):
    from experiments.robot.libero import libero_utils as lu

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for simulators, threads in ((2, "2"), (4, "0"), (8, "0"), (1, "4")):  # 0: llvmpipe draws in the calling thread
        monkeypatch.delenv("LP_NUM_THREADS", raising=False)
        lu.share_cores_with_other_simulators(simulators)
        assert os.environ["LP_NUM_THREADS"] == threads, simulators
    monkeypatch.setenv("LP_NUM_THREADS", "3")  # the user's choice wins
    lu.share_cores_with_other_simulators(2)
    assert os.environ["LP_NUM_THREADS"] == "3"


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["workers", "shared"])
def test_two_workers_match_the_sequential_run(tmp_path, checkpoint, monkeypatch, placement):
    """With a policy in each worker (one thread each) or one shared policy answering both workers in batches."""
    common = dict(task_ids=[0, 1], num_trials_per_task=1, max_steps=12, save_pruning_picture=False)
    simulators = 2 if placement == "shared" else len(os.sched_getaffinity(0))  # -> the policy's threads, below
    with workers.policy_threads_beside(simulators):  # the policy's float sums in the same order as in the parallel run
        sequential = ev.evaluate(eval_config(tmp_path / "seq", checkpoint, **common))
    threads, real = [], workers.policy_threads_beside
    monkeypatch.setattr(workers, "policy_threads_beside", lambda n: threads.append(n) or real(n))
    loads, real_policy = [], workers.VLAPolicy
    monkeypatch.setattr(workers, "VLAPolicy", lambda cfg: loads.append(cfg) or real_policy(cfg))
    parallel = ev.evaluate(
        eval_config(tmp_path / "par", checkpoint, num_workers=2, policy_placement=placement, **common)
    )
    assert threads == [2]  # the parallel harness sizes the shared policy's threads to what the simulators leave
    assert len(loads) == (placement == "shared")  # with a policy per worker, this process loads none
    key = lambda r: (r["task_id"], r["trial"])  # noqa: E731
    for a, b in zip(sorted(sequential, key=key), sorted(parallel, key=key)):
        assert (a["task_id"], a["trial"], a["success"], a["steps"], a["queries"]) == (
            b["task_id"], b["trial"], b["success"], b["steps"], b["queries"]
        )  # fmt: skip
        assert a["kept_tokens_mean"] == b["kept_tokens_mean"]
        np.testing.assert_allclose(a["final_eef_pos"], b["final_eef_pos"], atol=1e-4)


@pytest.mark.slow
def test_scripted_policy_through_the_harness_and_a_failing_episode(tmp_path, monkeypatch):
    from experiments.robot.libero.scripted_expert import ScriptedPolicy

    real_call = ScriptedPolicy.__call__
    calls = {"n": 0}

    def flaky(self, observation, language, obs):
        calls["n"] += 1
        if calls["n"] == 5:  # inside the first episode
            raise RuntimeError("simulated simulator instability")
        return real_call(self, observation, language, obs)

    monkeypatch.setattr(ScriptedPolicy, "__call__", flaky)
    cfg = ev.GenerateConfig(policy="scripted", task_suite_name="libero_object", task_ids=[3], num_trials_per_task=2,
                            env_img_res=64, local_log_dir=str(tmp_path / "logs"))  # fmt: skip
    records = sorted(ev.evaluate(cfg), key=lambda r: r["trial"])
    assert records[0]["error"] == "RuntimeError: simulated simulator instability" and not records[0]["success"]
    assert records[1]["error"] is None and records[1]["success"]  # the run went on, and the expert succeeds


def test_bad_input_is_explained(tmp_path, checkpoint, processor):
    with pytest.raises(ValueError, match="Unknown LIBERO task suite 'libero_100'"):
        eval_config(tmp_path, checkpoint, task_suite_name="libero_100")
    with pytest.raises(ValueError, match="pretrained_checkpoint is required"):
        ev.GenerateConfig(pretrained_checkpoint="")
    with pytest.raises(ValueError, match="libero_spatial"):
        workers.VLAPolicy(eval_config(tmp_path, checkpoint, task_suite_name="libero_spatial"))  # no such statistics
    import shutil

    bare = tmp_path / "no-stats"
    shutil.copytree(checkpoint, bare)
    (bare / "dataset_statistics.json").unlink()
    config = json.loads((bare / "config.json").read_text())
    config["norm_stats"] = None
    (bare / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no dataset statistics"):
        workers.VLAPolicy(eval_config(tmp_path, bare))


def test_unnorm_key_defaults_to_the_suite_with_no_noops(tmp_path, checkpoint):
    assert workers.VLAPolicy(eval_config(tmp_path, checkpoint)).unnorm_key == UNNORM_KEY


@pytest.mark.slow
def test_a_baseline_pruner_selected_by_flag(tmp_path, checkpoint):
    from experiments.robot.libero.eval_reports import token_statistics

    cfg = eval_config(
        tmp_path, checkpoint, num_trials_per_task=1, max_steps=16, save_pruning_picture=False,
        visual_token_pruner="text_topk", visual_token_budget=30,
    )  # fmt: skip
    assert cfg.results_path.name == "EVAL-libero_object-tiny-policy--seed7--text_topk30.jsonl"
    [record] = ev.evaluate(cfg)
    assert record["error"] is None and record["queries"] == 2 and record["kept_tokens"] == [30, 30]
    [task, suite] = token_statistics([record])
    assert (task.queries, task.mean, task.min, task.max) == (2, 30.0, 30.0, 30.0) and suite.task_id == -1


def test_bad_pruner_flags_are_refused(tmp_path, checkpoint):
    with pytest.raises(ValueError, match="unknown visual token pruner"):
        eval_config(tmp_path, checkpoint, visual_token_pruner="sparsevlm", visual_token_budget=30)
    with pytest.raises(ValueError, match="needs a token budget"):
        eval_config(tmp_path, checkpoint, visual_token_pruner="fastv")


def test_count_weighting_flag_reaches_the_policy_and_gets_its_own_results_file(tmp_path, checkpoint):
    plain = eval_config(tmp_path, checkpoint)
    counted = eval_config(tmp_path, checkpoint, pruner_eval_duplicates="count")
    assert counted.results_path != plain.results_path and counted.results_path.name.endswith("--duplicates-count.jsonl")
    assert workers.VLAPolicy(counted).policy.vla.pruner.eval_duplicates == "count"
    assert workers.VLAPolicy(plain).policy.vla.pruner.eval_duplicates == "once"  # as the checkpoint says
