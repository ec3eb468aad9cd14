"""The fine-tuning loop behind vla-scripts/finetune.py (command lines: its docstring and LIBERO.md): one process or
many under torchrun (NCCL on GPUs, gloo on the CPU). Checkpoints are released-style policy folders, written
atomically; `--resume True` continues the latest one of the run exactly (model, optimizer, scheduler, data order,
augmentation and every rank's RNG state). The embedded default (a preset `--vla_path` without data on disk) first
makes demonstrations with the scripted expert. `--precision` (bf16 on CUDA, fp32 elsewhere; bf16 also on the CPU when
asked) decides which weights are stored how and what runs under autocast: see `prismatic/precision.py`.
"""

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.policy.checkpoints import (
    CheckpointError,
    find_checkpoint_file,
    load_component_state_dict,
    load_heads,
    load_model_folder,
    require_model_folder,
    resolve_checkpoint,
    save_policy,
)
from prismatic.policy.presets import PRESETS, get_preset, make_config, make_heads, make_processor
from prismatic.precision import Precision, resolve_precision
from prismatic.training import run_state
from prismatic.training.config import FinetuneConfig
from prismatic.training.data import batches, make_loader, to_device
from prismatic.training.distributed import check_ranks_in_sync, gather_objects, gradient_sync, init_distributed
from prismatic.training.lora import apply_lora
from prismatic.training.metrics import MetricsLogger
from prismatic.training.policy import TrainablePolicy, base_vla, kept_visual_tokens
from prismatic.training.schedules import make_scheduler, noise_scale
from prismatic.vla.datasets.datasets import LiberoDataset, PaddedCollatorForActionPrediction, dataset_folders


def load_model(cfg: FinetuneConfig, precision: Precision):
    """(vla, processor, action head, proprio projector or None); the heads start fresh, as in LightVLA's recipe, unless
    ``--reuse_heads`` continues those of the checkpoint. The VLA is stored in bf16 only when bf16 LoRA leaves it frozen;
    the heads are always fp32 (``prismatic.precision``)."""
    dtype = precision.model_dtype(cfg.use_lora)
    overrides = {
        "prune_visual_tokens": cfg.prune_visual_tokens,
        "pruner_noise": cfg.pruner_noise,
        "pruner_train_duplicates": cfg.pruner_train_duplicates,
        "pruner_eval_duplicates": cfg.pruner_eval_duplicates,
    }
    if cfg.vla_path in PRESETS:
        config = make_config(cfg.vla_path, num_images_in_input=cfg.num_images_in_input, **overrides)
        vla, processor = OpenVLAForActionPrediction(config).to(dtype), make_processor(cfg.vla_path)
        head_hidden = get_preset(cfg.vla_path).head_hidden_dim
    else:
        try:
            folder = require_model_folder(resolve_checkpoint(cfg.vla_path))
        except CheckpointError as err:
            raise CheckpointError(f"--vla_path: {err}. Presets: {', '.join(PRESETS)}.") from None
        vla, processor = load_model_folder(folder, dtype, cfg.num_images_in_input, **overrides)
        if cfg.reuse_heads:  # --reuse_heads: continue the checkpoint's heads
            return vla, processor, *load_heads(folder, vla.action_space.num_actions_chunk, cfg.use_proprio)
        head_hidden = saved_head_width(folder)
    head, proprio = make_heads(vla.config, head_hidden, use_proprio=cfg.use_proprio)
    return vla, processor, head, proprio


def saved_head_width(folder: Path) -> int | None:
    """The hidden width of the action head saved in a checkpoint folder (fresh heads keep the architecture of the
    checkpoint's: the LLM width for released 7B ones, the preset's for ours), or None when it has none."""
    path = find_checkpoint_file(folder, "action_head")
    return None if path is None else int(load_component_state_dict(path)["model.fc1.weight"].shape[0])


def train(cfg: FinetuneConfig, prepare_data: Callable[[FinetuneConfig], None] | None = None) -> dict:
    """Fine-tune as ``cfg`` says; ``prepare_data(cfg)``, if given, runs on the main process before anything reads the
    data (``vla-scripts/finetune.py`` passes the embedded default's demo generator)."""
    process = init_distributed(cfg.distributed_timeout_minutes)
    precision = resolve_precision(cfg.precision, process.device)
    run_state.seed_everything(cfg.seed)  # identical initial LoRA/head weights on every rank
    run_dir = Path(cfg.run_root_dir) / cfg.run_id
    if process.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if process.main and prepare_data is not None:
        prepare_data(cfg)
    if process.main:  # a LeRobot folder is converted once, here, before every rank reads it
        dataset_folders(cfg.data_root_dir, cfg.dataset_name, cfg.lerobot_feature_names())
    process.barrier()

    vla, processor, head, proprio = load_model(cfg, precision)
    dataset = open_dataset(cfg, vla, processor)
    if process.main:
        (run_dir / "dataset_statistics.json").write_text(json.dumps(dataset.dataset_statistics, indent=2))
        if cfg.vla_path in PRESETS and not (run_dir / "base_model").exists():
            # a preset starts from seeded random weights: keep them, the LoRA adapter is relative to them
            save_policy(
                run_dir / "base_model", vla, processor, head, proprio, "base_checkpoint.pt", dataset.dataset_statistics
            )
    if cfg.gradient_checkpointing:
        vla.gradient_checkpointing_enable()
    if cfg.use_lora:
        vla = apply_lora(vla, cfg.lora_rank, cfg.lora_dropout)
    policy = TrainablePolicy(vla, head, proprio, precision).to(process.device)
    policy.train()
    run_state.seed_rank(cfg.seed, process.rank)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate)
    scheduler = make_scheduler(
        optimizer, cfg.lr_warmup_steps, cfg.num_steps_before_decay, cfg.lr_schedule, cfg.max_steps
    )
    start_step = resume(cfg, run_dir, policy, optimizer, scheduler, process) if cfg.resume else 0

    model = DDP(policy, find_unused_parameters=True) if process.world_size > 1 else policy
    collate = PaddedCollatorForActionPrediction(model_max_length=2048, pad_token_id=vla.config.pad_token_id)
    loader, sampler = make_loader(cfg, dataset, collate, process)
    stream = batches(loader, sampler, dataset, start_step * cfg.grad_accumulation_steps)
    logger = MetricsLogger(cfg, run_dir, process.main)
    pruner = base_vla(policy.vla).pruner
    if process.main:
        print(
            f"[finetune] run {cfg.run_id}: {len(dataset)} samples, {process.world_size} process(es) on {process.device.type}, "
            f"{sum(p.numel() for p in trainable):,} trainable parameters, precision {precision}, "
            f"steps {start_step} -> {cfg.max_steps}"
        )

    schedule = cfg.pruner_noise_schedule if cfg.prune_visual_tokens else "none"  # logs no noise when nothing is pruned
    history, kept, start_time = [], None, time.perf_counter()
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc="finetune", unit="step", disable=not process.main)
    last_step = min(cfg.max_steps, cfg.stop_at_step or cfg.max_steps)
    for step in range(start_step, last_step):
        pruner.set_noise_scale(noise_scale(step, cfg.max_steps, schedule))
        losses, batch = train_step(model, stream, optimizer, scheduler, cfg, process.device, precision, step)
        done = step + 1
        record = {**losses, "learning_rate": scheduler.get_last_lr()[0], "noise_scale": pruner.noise_scale or 0.0}
        if cfg.kept_tokens_log_freq and (done % cfg.kept_tokens_log_freq == 0 or done == 1):
            kept = record["kept_visual_tokens"] = kept_visual_tokens(policy, batch)
        history.append({"step": done, **record})
        report_step(cfg, done, record, kept, logger, bar, process.main)
        if done % cfg.save_freq == 0 or done == last_step:
            rng = gather_objects(run_state.rng_state(process.device), process)
            if process.main:
                folder = run_state.save_checkpoint(
                    cfg, run_dir, done, policy, processor, optimizer, scheduler, dataset.dataset_statistics, rng
                )
                tqdm.write(f"[finetune] saved {folder}")
            process.barrier()
    bar.close()
    logger.close()
    elapsed = time.perf_counter() - start_time
    check_ranks_in_sync(policy, process)
    if process.main and last_step > start_step:
        steps = last_step - start_step
        print(
            f"[finetune] {steps} steps in {elapsed:.1f} s ({steps / elapsed:.2f} steps/s, "
            f"{steps * cfg.batch_size * cfg.grad_accumulation_steps * process.world_size / elapsed:.1f} samples/s)"
        )
    if process.world_size > 1:
        dist.destroy_process_group()
    return {"run_dir": run_dir, "history": history, "policy": policy}


def open_dataset(cfg: FinetuneConfig, vla: OpenVLAForActionPrediction, processor) -> LiberoDataset:
    """The training data; the model records its statistics and the renderer its frames were made with (evaluation
    renders as they were)."""
    dataset = LiberoDataset(
        cfg.data_root_dir, cfg.dataset_name, processor, vla.config, cfg.num_images_in_input, cfg.use_proprio,
        image_aug=cfg.image_aug, seed=cfg.seed, lerobot_names=cfg.lerobot_feature_names(),
    )  # fmt: skip
    vla.norm_stats = vla.config.norm_stats = dataset.dataset_statistics
    vla.config.render_quality = dataset.render_quality
    return dataset


def resume(cfg: FinetuneConfig, run_dir: Path, policy: TrainablePolicy, optimizer, scheduler, process) -> int:
    """Restore the run's latest (or ``--resume_step``) checkpoint; the step to continue from."""
    folder = run_state.find_resumable(run_dir, cfg.resume_step)
    if folder is None:
        raise CheckpointError(
            f"--resume: no checkpoint{f' for step {cfg.resume_step}' if cfg.resume_step else ''} of run "
            f"{cfg.run_id} in {cfg.run_root_dir}. Resume uses the same flags as the original run."
        )
    start_step = run_state.restore_checkpoint(folder, policy, optimizer, scheduler, cfg, process)
    if process.main:
        print(f"[finetune] resuming {folder} at step {start_step}")
    return start_step


def train_step(model, stream, optimizer, scheduler, cfg: FinetuneConfig, device, precision: Precision, step: int):
    """One optimizer step over ``grad_accumulation_steps`` micro-batches: (losses averaged over them, the last
    micro-batch). Gradients are all-reduced on the last micro-batch only."""
    losses = {"loss": 0.0, "curr_action_l1_loss": 0.0, "next_actions_l1_loss": 0.0}
    for micro in range(cfg.grad_accumulation_steps):
        batch = to_device(next(stream), device, precision.model_dtype(cfg.use_lora))
        with gradient_sync(model, sync=micro == cfg.grad_accumulation_steps - 1):
            metrics = model(batch)  # under the policy's precision
            (metrics.loss / cfg.grad_accumulation_steps).backward()
        losses["loss"] += metrics.loss.item() / cfg.grad_accumulation_steps
        losses["curr_action_l1_loss"] += metrics.curr_action_l1_loss / cfg.grad_accumulation_steps
        losses["next_actions_l1_loss"] += metrics.next_actions_l1_loss / cfg.grad_accumulation_steps
    if not math.isfinite(losses["loss"]):
        raise FloatingPointError(f"loss became {losses['loss']} at step {step}; lower --learning_rate")
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return losses, batch


def report_step(cfg: FinetuneConfig, done: int, record: dict, kept, logger: MetricsLogger, bar, main: bool) -> None:
    """Metrics file (every ``tensorboard_log_freq`` steps, the last, and when kept tokens were counted), progress
    bar, and a printed line every ``log_freq`` steps."""
    if done % cfg.tensorboard_log_freq == 0 or done == cfg.max_steps or "kept_visual_tokens" in record:
        logger.log(done, record)
    bar.update(1)
    bar.set_postfix(
        loss=f"{record['loss']:.4f}", lr=f"{record['learning_rate']:.1e}", noise=f"{record['noise_scale']:.2f}",
        kept=kept,
    )  # fmt: skip
    if main and done % cfg.log_freq == 0:
        tqdm.write(
            f"step {done}: loss {record['loss']:.4f} (current {record['curr_action_l1_loss']:.4f}, "
            f"future {record['next_actions_l1_loss']:.4f}), lr {record['learning_rate']:.2e}, "
            f"noise {record['noise_scale']:.3f}, kept tokens {kept}"
        )
