"""Fine-tuning (prismatic.training, behind vla-scripts/finetune.py) on the tiny preset: learning, checkpoints, exact
resumption, torchrun, schedules, errors."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import UNNORM_KEY
from conftest import finetune_config as config

from prismatic.policy.checkpoints import CheckpointError, load_policy, save_policy
from prismatic.training import trainer
from prismatic.training.policy import kept_visual_tokens
from prismatic.training.schedules import lr_factor, make_scheduler, noise_scale
from prismatic.training.trainer import train
from prismatic.vla.datasets.datasets import DatasetError

REPO = Path(__file__).resolve().parents[1]


def losses(result):
    return [h["loss"] for h in result["history"]]


def test_without_pruning_the_logged_kept_tokens_are_every_patch_of_every_image(data_root, tmp_path):
    from prismatic.policy.presets import make_config

    preset = make_config("tiny")
    patches_per_image = (preset.image_sizes[0] // preset.timm_model_overrides[0].get("patch_size", 14)) ** 2
    result = train(config(data_root, tmp_path, max_steps=1, prune_visual_tokens=False, kept_tokens_log_freq=1))
    assert result["history"][0]["kept_visual_tokens"] == 2 * patches_per_image  # two images per sample


def test_training_learns_writes_checkpoints_and_reloads_identically(data_root, tmp_path, monkeypatch):
    measured = []  # (batch, value) of every kept-token measurement, in order

    def record(policy, batch):
        measured.append((batch, kept_visual_tokens(policy, batch)))
        return measured[-1][1]

    monkeypatch.setattr(trainer, "kept_visual_tokens", record)
    cfg = config(data_root, tmp_path, max_steps=30, save_freq=15, image_aug=False, learning_rate=3e-3)
    result = train(cfg)
    history = losses(result)
    assert np.mean(history[-5:]) < 0.8 * np.mean(history[:5])
    assert [h["noise_scale"] for h in result["history"]][:2] == [1.0, pytest.approx(1 - 1 / 30)]
    logged = {h["step"]: h["kept_visual_tokens"] for h in result["history"] if "kept_visual_tokens" in h}
    assert list(logged) == [1, *range(3, 31, 3)] and list(logged.values()) == [v for _, v in measured]

    run_dir = result["run_dir"]
    folder = run_dir.with_name(run_dir.name + "--30_chkpt")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "dataset_statistics.json",
            "action_head--30_checkpoint.pt", "proprio_projector--30_checkpoint.pt", "lora_adapter",
            "training_state.pt"} <= names  # fmt: skip
    assert (run_dir.with_name(run_dir.name + "--15_chkpt") / "action_head--15_checkpoint.pt").exists()
    stats = json.loads((folder / "dataset_statistics.json").read_text())
    assert set(stats) == {UNNORM_KEY} and stats[UNNORM_KEY]["num_trajectories"] == 3
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 30

    # the saved (LoRA-merged) policy predicts what the in-memory one does
    policy = result["policy"].eval()
    from prismatic.vla.datasets.datasets import LiberoDataset, PaddedCollatorForActionPrediction

    loaded = load_policy(folder, num_images_in_input=2)
    ds = LiberoDataset(data_root, UNNORM_KEY, loaded.processor, loaded.vla.config, 2, True, image_aug=False)
    batch = PaddedCollatorForActionPrediction(2048, loaded.vla.config.pad_token_id)([ds[0], ds[10], ds[30]])
    with torch.no_grad():
        expected = policy.predict_normalized(batch)
        out = loaded.vla(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            labels=batch["labels"],
            proprio=batch["proprio"],
            proprio_projector=loaded.proprio_projector,
        )
        got = loaded.action_head.predict_action(out.action_hidden_states)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)

    # the kept tokens logged at the saves are what the saved policies keep at inference (eval mode, no noise; the
    # step-15 model still trained with noise 0.53) on the batch of that step
    for step in (15, 30):
        saved = load_policy(run_dir.with_name(f"{run_dir.name}--{step}_chkpt"), num_images_in_input=2)
        batch = measured[list(logged).index(step)][0]
        with torch.no_grad():
            out = saved.vla(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            pixel_values=batch["pixel_values"], labels=batch["labels"], proprio=batch["proprio"],
                            proprio_projector=saved.proprio_projector)  # fmt: skip
        assert logged[step] == pytest.approx(float(out.pruning.kept_counts.float().mean())) and logged[step] < 512


def test_resume_continues_the_uninterrupted_run_exactly(data_root, tmp_path):
    # the interruption falls inside the LR warmup, and the resumed part crosses its end and the decay milestone
    schedule = dict(lr_warmup_steps=4, num_steps_before_decay=5)
    full = train(config(data_root, tmp_path / "a", **schedule))
    first = train(config(data_root, tmp_path / "b", stop_at_step=3, **schedule))
    second = train(config(data_root, tmp_path / "b", resume=True, **schedule))
    assert [h["step"] for h in second["history"]] == [4, 5, 6]
    resumed = first["history"] + second["history"]
    for key in ("loss", "learning_rate", "noise_scale"):
        np.testing.assert_allclose([h[key] for h in resumed], [h[key] for h in full["history"]], rtol=1e-5, err_msg=key)
    # independently: the LR after each step (warmup 10% -> 100% over 4 steps, x0.1 from step 5), the noise 1 - step/6
    lr = 1e-3 * np.array([0.325, 0.55, 0.775, 1.0, 0.1, 0.1])
    np.testing.assert_allclose([h["learning_rate"] for h in resumed], lr, rtol=1e-6)
    assert [h["noise_scale"] for h in second["history"]] == pytest.approx([0.5, 1 / 3, 1 / 6])


def test_latest_only_checkpoints_keep_the_run_files_and_resume(data_root, tmp_path):
    common = dict(save_latest_checkpoint_only=True, tensorboard_log_freq=1)
    train(config(data_root, tmp_path, stop_at_step=3, **common))
    result = train(config(data_root, tmp_path, resume=True, **common))
    run_dir = result["run_dir"]
    assert (run_dir / "action_head--latest_checkpoint.pt").exists() and (run_dir / "base_model").is_dir()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # every step, none lost to the saves that replaced the run folder


def test_merge_script_reproduces_the_saved_merged_weights(data_root, tmp_path):
    result = train(config(data_root, tmp_path, max_steps=3, save_freq=3))
    folder = result["run_dir"].with_name(result["run_dir"].name + "--3_chkpt")
    from safetensors.torch import load_file

    saved = load_file(folder / "model.safetensors")
    spec_merge = importlib.util.spec_from_file_location("merge", REPO / "vla-scripts" / "merge_lora_weights_and_save.py")
    merge = importlib.util.module_from_spec(spec_merge)
    spec_merge.loader.exec_module(merge)
    merge.merge(str(result["run_dir"] / "base_model"), folder)
    remerged = load_file(folder / "model.safetensors")
    assert saved.keys() == remerged.keys()
    for key in saved:
        torch.testing.assert_close(remerged[key], saved[key], atol=1e-6, rtol=1e-5)
    assert load_policy(folder, num_images_in_input=2).vla.norm_stats.keys() == {UNNORM_KEY}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, tiny_policy, processor):
    vla, head, proprio = tiny_policy
    folder = tmp_path / "ckpt"
    save_policy(folder, vla, processor, head, proprio)
    before = folder_bytes(folder)
    with torch.no_grad():  # the save that dies would write other weights
        for module in (vla, head, proprio):
            for p in module.parameters():
                p.add_(1.0)

    def crash(target):
        raise KeyboardInterrupt("killed while saving")

    with pytest.raises(KeyboardInterrupt):
        save_policy(folder, vla, processor, head, proprio, extra_writer=crash)
    assert folder_bytes(folder) == before  # every file of the previous checkpoint intact, byte for byte
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no half-written folder left behind


def test_crash_between_the_folder_swaps_keeps_the_old_checkpoint_reachable(
    tmp_path, tiny_policy, processor, monkeypatch
):
    vla, head, proprio = tiny_policy
    folder = tmp_path / "ckpt"
    save_policy(folder, vla, processor, head, proprio)
    real_rename = Path.rename

    def rename(self, target):
        if Path(target) == folder:  # the new folder never arrives: power cut
            raise KeyboardInterrupt("killed between the renames")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        save_policy(folder, vla, processor, head, proprio)
    monkeypatch.undo()
    assert not folder.exists()
    with pytest.warns(UserWarning, match="interrupted save"):
        assert load_policy(folder).vla is not None


def test_noise_and_learning_rate_schedules():
    assert [noise_scale(s, 4) for s in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]  # never negative
    assert [noise_scale(s, 4, "fixed") for s in (0, 3)] == [1.0, 1.0] and noise_scale(2, 4, "none") == 0.0
    with pytest.raises(ValueError, match="decay"):
        noise_scale(0, 4, "cosine")
    with pytest.raises(ValueError):
        noise_scale(0, 0)
    # warmup 10% -> 100% over 4 steps, then constant, then x0.1 from step 10: the decay survives the warmup
    factors = [lr_factor(s, warmup_steps=4, decay_step=10) for s in range(12)]
    assert factors[0] == pytest.approx(0.1) and factors[4:10] == [1.0] * 6
    assert factors[2] == pytest.approx(0.55)
    assert factors[10:] == [pytest.approx(0.1)] * 2
    assert lr_factor(5, 0, 5) == pytest.approx(0.1) and lr_factor(4, 0, 5) == 1.0
    # cosine: the same warmup, then 1 -> 0.01 along half a cosine between step 4 and max_steps 14 (decay_step unused)
    cosine = [lr_factor(s, 4, decay_step=6, schedule="cosine", max_steps=14) for s in range(16)]
    assert cosine[:5] == [pytest.approx(f) for f in factors[:5]]
    assert cosine[9] == pytest.approx(0.505) and cosine[14:] == [pytest.approx(0.01)] * 2
    assert all(a > b for a, b in zip(cosine[4:14], cosine[5:15]))
    with pytest.raises(ValueError, match="cosine"):
        lr_factor(0, 0, 0, schedule="linear")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler, rates = make_scheduler(optimizer, 4, 6, "cosine", 14), []
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    assert rates == cosine[1:4]


def test_bad_input_is_explained(data_root, tmp_path):
    with pytest.raises(DatasetError, match="libero_spatial_no_noops.*not found"):
        train(config(data_root, tmp_path, dataset_name="libero_spatial_no_noops"))
    not_a_checkpoint = tmp_path / "empty"
    not_a_checkpoint.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        train(config(data_root, tmp_path, vla_path=str(not_a_checkpoint)))
    with pytest.raises(CheckpointError, match="does not exist.*Presets: tiny, libero-cpu"):
        train(config(data_root, tmp_path, vla_path=str(tmp_path / "missing")))
    with pytest.raises(DatasetError, match="--batch_size 64 is larger"):
        train(config(data_root, tmp_path, batch_size=64))
    with pytest.raises(CheckpointError, match="--resume: no checkpoint"):
        train(config(data_root, tmp_path / "fresh", resume=True))
    with pytest.raises(ValueError, match="use_diffusion False"):
        config(data_root, tmp_path, use_diffusion=True)
    with pytest.raises(ValueError, match="--lr_schedule must be one of"):
        config(data_root, tmp_path, lr_schedule="linear")
    with pytest.raises(ValueError, match="--max_steps > --lr_warmup_steps"):
        config(data_root, tmp_path, lr_schedule="cosine", max_steps=5, lr_warmup_steps=5)


def test_weights_and_biases_trouble_never_stops_training(data_root, tmp_path, monkeypatch, capsys):
    """A configured W&B project with W&B missing or failing: the run logs a message and trains on."""
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    result = train(config(data_root, tmp_path, max_steps=2, save_freq=2, wandb_project="lightvla-test"))
    assert len(result["history"]) == 2
    assert "Weights & Biases disabled" in capsys.readouterr().out


@pytest.mark.slow
def test_torchrun_two_processes_on_gloo(data_root, tmp_path):
    """The users' command on two processes, in bf16 (as on GPUs), with gradient accumulation (all-reduce once per
    step): ranks end identical, and the checkpoint holds each rank's own random state (distinct pruning noise)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun), "--standalone", "--nnodes", "1", "--nproc-per-node", "2", str(REPO / "vla-scripts" / "finetune.py"),
        "--vla_path", "libero-cpu", "--data_root_dir", str(data_root), "--dataset_name", UNNORM_KEY,
        "--run_root_dir", str(tmp_path / "runs"), "--num_images_in_input", "2", "--use_proprio", "True",
        "--batch_size", "2", "--max_steps", "4", "--save_freq", "4", "--lora_rank", "4", "--num_workers", "1",
        "--generate_demos_if_missing", "False", "--precision", "bf16", "--grad_accumulation_steps", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LIGHTVLA_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "parameters identical on all 2 ranks" in proc.stdout
    assert "2 process(es)" in proc.stdout
    checkpoints = list((tmp_path / "runs").glob("*--4_chkpt"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "action_head--4_checkpoint.pt").exists()
    rng = torch.load(checkpoints[0] / "training_state.pt", weights_only=False)["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])


@pytest.mark.slow
def test_embedded_default_generates_demonstrations_first(tmp_path, monkeypatch):
    monkeypatch.setattr("prismatic.vla.datasets.statistics.CACHE_DIR", tmp_path / "cache")
    cfg = config(
        tmp_path / "fresh_data", tmp_path, generate_demos_if_missing=True, demos_per_task=1, demo_resolution=64,
        max_steps=2, save_freq=2, batch_size=2,
    )  # fmt: skip
    from experiments.robot.libero.generate_scripted_demos import make_missing_demos

    result = train(cfg, prepare_data=make_missing_demos)  # what vla-scripts/finetune.py passes
    files = list((tmp_path / "fresh_data" / UNNORM_KEY).glob("*_demo.hdf5"))
    assert [f.name for f in files] == ["pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"]
    assert len(result["history"]) == 2


def test_two_stage_recipe_from_our_own_checkpoint(data_root, tmp_path):
    """Stage 1 (OpenVLA-OFT, pruning off, every parameter) -> stage 2 (LightVLA from its folder, with or without LoRA,
    fresh heads of the same architecture, or the stage-1 heads continued)."""
    from prismatic.policy.checkpoints import load_action_head

    stage1 = train(config(data_root, tmp_path, run_id_override="oft", use_lora=False, prune_visual_tokens=False,
                          max_steps=3, save_freq=3, save_latest_checkpoint_only=True))  # fmt: skip
    folder = stage1["run_dir"]
    stage1_head = load_action_head(folder / "action_head--latest_checkpoint.pt", 8).state_dict()
    assert json.loads((folder / "config.json").read_text())["prune_visual_tokens"] is False

    def stage2(run_id, **overrides):
        values = dict(vla_path=str(folder), run_id_override=run_id, max_steps=2, save_freq=2, learning_rate=0.0,
                      save_latest_checkpoint_only=True, prune_visual_tokens=True)  # fmt: skip
        result = train(config(data_root, tmp_path, **{**values, **overrides}))
        policy = load_policy(result["run_dir"], num_images_in_input=2)
        return result, policy

    for use_lora in (True, False):
        result, policy = stage2(f"lightvla-lora{use_lora}", use_lora=use_lora)
        assert policy.vla.pruner.enabled and policy.vla.config.prune_visual_tokens is True
        head = policy.action_head.state_dict()
        assert head.keys() == stage1_head.keys()
        assert all(head[k].shape == stage1_head[k].shape for k in head)  # fresh, but the stage-1 architecture
        assert not torch.equal(head["model.fc1.weight"], stage1_head["model.fc1.weight"])
        assert all(h["kept_visual_tokens"] < 512 for h in result["history"] if "kept_visual_tokens" in h)
    _, continued = stage2("lightvla-reuse", use_lora=False, reuse_heads=True)
    for key, value in continued.action_head.state_dict().items():
        torch.testing.assert_close(value, stage1_head[key])  # learning rate 0: the stage-1 head, continued
