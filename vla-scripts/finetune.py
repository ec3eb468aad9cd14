"""Fine-tune a VLA with LoRA, an L1 action head and LightVLA's decaying pruning noise. Run it under torchrun:

    torchrun --standalone --nnodes 1 --nproc-per-node 8 vla-scripts/finetune.py \
        --vla_path moojink/openvla-7b-oft-finetuned-libero-object --data_root_dir datasets/libero \
        --dataset_name libero_object_no_noops --use_l1_regression True --num_images_in_input 2 --use_proprio True \
        --batch_size 8 --learning_rate 5e-4 --num_steps_before_decay 30000 --max_steps 40005 --lora_rank 32

(plain `python vla-scripts/finetune.py ...` runs one process). Several nodes: `--nnodes N --node-rank I
--rdzv-backend c10d --rdzv-endpoint HOST:PORT` instead of `--standalone`. NCCL on GPUs, gloo on the CPU.

The embedded default, `--vla_path tiny` without data on disk, first makes demonstrations with the scripted expert.
Checkpoints are released-style policy folders, written atomically; `--resume True` continues the latest one of the
run exactly (model, optimizer, scheduler, data order, augmentation and RNG state).
"""

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import draccus
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.extern.hf.processing_prismatic import PrismaticProcessor
from prismatic.models.checkpoints import (
    CheckpointError,
    find_checkpoint_file,
    load_action_head,
    load_proprio_projector,
    resolve_checkpoint,
    save_policy,
)
from prismatic.presets import PRESETS, get_preset, make_config, make_heads, make_processor
from prismatic.training import run_state
from prismatic.training.lora import apply_lora, merged_state_dict
from prismatic.training.policy import TrainablePolicy, base_vla, kept_visual_tokens
from prismatic.training.schedules import make_scheduler, noise_scale
from prismatic.vla.datasets.datasets import DatasetError, LiberoDataset, PaddedCollatorForActionPrediction

# Files of the run folder itself, kept when that folder is also the latest checkpoint (--save_latest_checkpoint_only)
RUN_FILES = ("metrics.jsonl", "base_model")
WANDB_PLACEHOLDERS = {"", "your-wandb-entity", "your-wandb-project"}


@dataclass
class FinetuneConfig:
    # fmt: off
    # Model and data (upstream names)
    vla_path: str = "tiny"                          # checkpoint folder, Hub id, or a preset name ("tiny": fresh, CPU size)
    data_root_dir: Path = Path("datasets/libero")   # holds one folder of LIBERO HDF5 files per dataset name
    dataset_name: str = "libero_object_no_noops"    # also "libero_4_task_suites_no_noops" (the four suites)
    run_root_dir: Path = Path("runs")
    shuffle_buffer_size: int = 100_000              # accepted for upstream command lines; the sampler shuffles fully

    # Architecture
    use_l1_regression: bool = True
    use_diffusion: bool = False                     # not implemented (L1 regression only)
    num_diffusion_steps_train: int = 50
    use_film: bool = False                          # not implemented
    num_images_in_input: int = 1
    use_proprio: bool = False

    # Optimisation
    batch_size: int = 8                             # per process
    learning_rate: float = 5e-4
    lr_warmup_steps: int = 0                        # linear warmup from 0.1x to 1x the LR; the decay still applies
    num_steps_before_decay: int = 100_000           # LR x0.1 from this optimizer step on
    grad_accumulation_steps: int = 1
    max_steps: int = 200_000                        # optimizer steps
    use_val_set: bool = False                       # there is no validation split in LIBERO HDF5 data
    val_freq: int = 10_000
    val_time_limit: int = 180
    save_freq: int = 10_000
    save_latest_checkpoint_only: bool = False
    resume: bool = False                            # continue the latest checkpoint of this run (same run id)
    resume_step: Optional[int] = None               # ... or this step's checkpoint
    image_aug: bool = True
    diffusion_sample_freq: int = 50

    # LoRA
    use_lora: bool = True                           # False: full fine-tuning of every parameter (upstream train.py)
    lora_rank: int = 32
    lora_dropout: float = 0.0
    merge_lora_during_training: bool = True         # checkpoints always hold the merged model (and the adapter)

    # Pruning (LightVLA)
    prune_visual_tokens: bool = True                # False: plain OpenVLA-OFT
    pruner_noise: str = "uniform"                   # uniform (upstream code) | gumbel (the paper's text)
    kept_tokens_log_freq: int = 100                 # measure kept visual tokens in eval mode every N steps
    stop_at_step: Optional[int] = None              # save and stop after this step (time-limited jobs; then --resume)

    # Logging and runtime
    log_freq: int = 100                             # console line every N steps
    tensorboard_log_dir: Optional[Path] = None      # accepted for upstream command lines (metrics.jsonl is written)
    tensorboard_log_freq: int = 10
    run_id_note: Optional[str] = None
    run_id_override: Optional[str] = None
    wandb_entity: str = "your-wandb-entity"
    wandb_project: str = "your-wandb-project"       # set it to log to Weights & Biases (offline without credentials)
    wandb_log_freq: int = 10
    seed: int = 7
    num_workers: int = 2                            # DataLoader worker processes per training process
    gradient_checkpointing: bool = False

    # Embedded default: demonstrations made by the scripted expert when the dataset is missing (preset models only)
    generate_demos_if_missing: bool = True
    demo_task_ids: str = "0"                        # comma-separated task ids of the dataset's suite
    demos_per_task: int = 10
    demo_resolution: int = 128
    # fmt: on

    def __post_init__(self):
        if self.use_diffusion or self.use_film:
            raise ValueError("Only the L1 regression head is implemented: pass --use_diffusion False --use_film False.")
        if not self.use_l1_regression:
            raise ValueError("Discrete-token training is not implemented: pass --use_l1_regression True.")
        for name in ("batch_size", "grad_accumulation_steps", "max_steps", "save_freq", "log_freq"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.use_val_set:
            raise ValueError("--use_val_set: LIBERO HDF5 datasets have no validation split; train without it.")

    @property
    def run_id(self) -> str:
        if self.run_id_override:
            return self.run_id_override
        parts = [
            Path(self.vla_path).name,
            self.dataset_name,
            f"b{self.batch_size * self.grad_accumulation_steps}",
            f"lr-{self.learning_rate}",
        ]
        if self.use_lora:
            parts.append(f"lora-r{self.lora_rank}+dropout-{self.lora_dropout}")
        run_id = "+".join(parts)
        if self.image_aug:
            run_id += "--image_aug"
        if not self.prune_visual_tokens:
            run_id += "--no_pruning"
        if self.run_id_note:
            run_id += f"--{self.run_id_note}"
        return run_id


# --- distributed ----------------------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def init_distributed() -> Dist:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*) -> process group; plain python: one process."""
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ:
        return Dist(device=torch.device("cuda", 0) if cuda else torch.device("cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device)


# --- model and data -------------------------------------------------------------------------------------------------
def load_model(cfg: FinetuneConfig, device: torch.device):
    """(vla, processor, action head, proprio projector or None); heads start fresh as in LightVLA's recipe."""
    overrides = {"prune_visual_tokens": cfg.prune_visual_tokens, "pruner_noise": cfg.pruner_noise}
    if cfg.vla_path in PRESETS:
        config = make_config(cfg.vla_path, num_images_in_input=cfg.num_images_in_input, **overrides)
        vla, processor = OpenVLAForActionPrediction(config), make_processor(cfg.vla_path)
        head_hidden = get_preset(cfg.vla_path).head_hidden_dim
    else:
        try:
            folder = resolve_checkpoint(cfg.vla_path)
        except CheckpointError as err:
            raise CheckpointError(f"--vla_path: {err}. Presets: {', '.join(PRESETS)}.") from None
        if not (folder / "config.json").exists():
            raise CheckpointError(f"--vla_path {folder} has no config.json: it is not a model checkpoint folder.")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        vla = OpenVLAForActionPrediction.from_pretrained(folder, dtype=dtype, **overrides)
        vla.set_num_images_in_input(cfg.num_images_in_input)
        vla.config.num_images_in_input = cfg.num_images_in_input
        processor = PrismaticProcessor.from_pretrained(folder)
        head_hidden = None
    head, proprio = make_heads(vla.config, head_hidden, use_proprio=cfg.use_proprio)
    return vla, processor, head, proprio


def ensure_dataset(cfg: FinetuneConfig, main: bool, barrier) -> None:
    """The embedded default: make scripted demonstrations when a preset model is trained on a missing dataset."""
    folder = Path(cfg.data_root_dir) / cfg.dataset_name
    if folder.is_dir() or not (cfg.generate_demos_if_missing and cfg.vla_path in PRESETS):
        return
    suite = cfg.dataset_name.removesuffix("_no_noops")
    if main:
        from experiments.robot.libero import generate_scripted_demos as gen

        print(f"[finetune] {folder} does not exist: generating scripted demonstrations for {suite} first")
        gen_cfg = gen.GenerateDemosConfig(
            task_suite_name=suite,
            num_demos_per_task=cfg.demos_per_task,
            out_dir=folder,
            task_ids=[int(t) for t in cfg.demo_task_ids.split(",")],
            resolution=cfg.demo_resolution,
        )
        gen.print_summary(gen_cfg, [gen.generate_task(gen_cfg, t) for t in gen_cfg.task_ids])
    barrier()


def make_loader(cfg: FinetuneConfig, dataset, collate, d: Dist) -> tuple[DataLoader, DistributedSampler]:
    sampler = DistributedSampler(
        dataset, num_replicas=d.world_size, rank=d.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    if len(sampler) < cfg.batch_size:
        raise DatasetError(
            f"--batch_size {cfg.batch_size} is larger than the {len(sampler)} samples each of the {d.world_size} "
            f"process(es) gets from {cfg.dataset_name} ({len(dataset)} in all): lower --batch_size or add data."
        )
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate,
        drop_last=True, pin_memory=d.device.type == "cuda", persistent_workers=False, generator=_loader_generator(cfg.seed),
    )  # fmt: skip
    return loader, sampler


def _loader_generator(seed: int) -> torch.Generator:
    """DataLoaders draw worker seeds from this, not from the global RNG, whose state (pruning noise) a checkpoint
    restores: otherwise creating the resumed iterator would shift every later random draw."""
    return torch.Generator().manual_seed(seed)


def batches(loader: DataLoader, sampler: DistributedSampler, dataset, start: int):
    """Micro-batches from global index `start` on, epoch after epoch; resuming continues the very same sequence."""
    per_epoch = len(loader)
    epoch, skip = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        iterator = iter(loader) if skip == 0 else _skipped(loader, sampler, skip)
        yield from iterator
        epoch, skip = epoch + 1, 0


def _skipped(loader: DataLoader, sampler: DistributedSampler, skip: int):
    """The rest of an epoch after `skip` batches, without loading the skipped samples."""
    indices = list(sampler)[skip * loader.batch_size :]
    rest = DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=indices, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, drop_last=True, pin_memory=loader.pin_memory, generator=loader.generator,
    )  # fmt: skip
    return iter(rest)


def to_device(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if value.is_floating_point() and key == "pixel_values":
                value = value.to(dtype)
        out[key] = value
    return out


# --- logging --------------------------------------------------------------------------------------------------------
class Logger:
    """Console, metrics.jsonl in the run folder, and Weights & Biases when a project is configured (never fatal)."""

    def __init__(self, cfg: FinetuneConfig, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.wandb = None
        if enabled and cfg.wandb_project not in WANDB_PLACEHOLDERS:
            self.wandb = self._init_wandb(cfg)

    @staticmethod
    def _init_wandb(cfg: FinetuneConfig):
        try:
            import wandb

            has_key = bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _read(Path.home() / ".netrc")
            mode = os.environ.get("WANDB_MODE", "online" if has_key else "offline")
            entity = None if cfg.wandb_entity in WANDB_PLACEHOLDERS else cfg.wandb_entity
            return wandb.init(
                project=cfg.wandb_project, entity=entity, name=cfg.run_id, config=asdict(cfg), mode=mode,
                settings=wandb.Settings(init_timeout=30),
            )  # fmt: skip
        except Exception as err:
            print(f"[finetune] Weights & Biases disabled ({type(err).__name__}: {err})")
            return None

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.wandb is not None:
            try:
                self.wandb.log({f"VLA Train/{k.replace('_', ' ').title()}": v for k, v in metrics.items()}, step=step)
            except Exception as err:
                print(f"[finetune] Weights & Biases logging failed, continuing without it ({err})")
                self.wandb = None

    def close(self) -> None:
        if self.wandb is not None:
            with contextlib.suppress(Exception):  # a failing upload must not turn a finished run into a crash
                self.wandb.finish()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# --- checkpoints ----------------------------------------------------------------------------------------------------
def save_checkpoint(cfg, run_dir, step, policy: TrainablePolicy, processor, optimizer, scheduler, dataset_statistics):
    folder = run_state.checkpoint_folder(run_dir, step, cfg.save_latest_checkpoint_only)
    suffix = run_state.step_suffix(step, cfg.save_latest_checkpoint_only)
    vla = policy.vla
    model = base_vla(vla)
    state_dict = merged_state_dict(vla) if cfg.use_lora else None

    def extra(target: Path) -> None:
        if cfg.use_lora:
            vla.save_pretrained(target / "lora_adapter")
        torch.save(
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": run_state.rng_state(),
                "config": asdict(cfg),
            },
            target / run_state.TRAINING_STATE,
        )

    model.config.norm_stats = dataset_statistics
    save_policy(
        folder, model, processor, policy.action_head, policy.proprio_projector, suffix, dataset_statistics,
        vla_state_dict=state_dict, extra_writer=extra, preserve=RUN_FILES,
    )  # fmt: skip
    return folder


def restore_checkpoint(folder: Path, policy: TrainablePolicy, optimizer, scheduler, cfg: FinetuneConfig) -> int:
    """Load adapter (or full weights), heads, optimizer, scheduler and RNG; returns the step to continue from."""
    state = torch.load(folder / run_state.TRAINING_STATE, map_location="cpu", weights_only=False)
    if cfg.use_lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(policy.vla, load_file(folder / "lora_adapter" / "adapter_model.safetensors"))
    else:
        loaded = OpenVLAForActionPrediction.from_pretrained(folder, dtype=next(policy.vla.parameters()).dtype)
        policy.vla.load_state_dict(loaded.state_dict())
    head = load_action_head(
        find_checkpoint_file(folder, "action_head"), base_vla(policy.vla).action_space.num_actions_chunk
    )
    policy.action_head.load_state_dict(head.state_dict())
    if policy.proprio_projector is not None:
        projector = load_proprio_projector(find_checkpoint_file(folder, "proprio_projector"))
        policy.proprio_projector.load_state_dict(projector.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    run_state.set_rng_state(state["rng"])
    return int(state["step"])


# --- training -------------------------------------------------------------------------------------------------------
def check_ranks_in_sync(policy: TrainablePolicy, d: Dist) -> None:
    """Data parallelism must leave every rank with the same weights; say so (or fail loudly) at the end of a run."""
    if d.world_size == 1:
        return
    checksum = torch.stack([p.detach().double().sum() for p in policy.parameters()]).sum().to(d.device)
    gathered = [torch.zeros_like(checksum) for _ in range(d.world_size)]
    dist.all_gather(gathered, checksum)
    values = [float(v) for v in gathered]
    if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
        raise RuntimeError(f"ranks diverged: parameter checksums {values}")
    if d.main:
        print(f"[finetune] parameters identical on all {d.world_size} ranks (checksum {values[0]:.6f})")


def train(cfg: FinetuneConfig) -> dict:
    d = init_distributed()
    run_state.seed_everything(cfg.seed)  # identical initial LoRA/head weights on every rank
    run_dir = Path(cfg.run_root_dir) / cfg.run_id
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ensure_dataset(cfg, d.main, d.barrier)

    vla, processor, head, proprio = load_model(cfg, d.device)
    dataset = LiberoDataset(
        cfg.data_root_dir, cfg.dataset_name, processor, vla.config, cfg.num_images_in_input, cfg.use_proprio,
        image_aug=cfg.image_aug, seed=cfg.seed,
    )  # fmt: skip
    dataset_statistics = dataset.dataset_statistics
    vla.norm_stats = vla.config.norm_stats = dataset_statistics
    if d.main:
        (run_dir / "dataset_statistics.json").write_text(json.dumps(dataset_statistics, indent=2))
        if cfg.vla_path in PRESETS and not (run_dir / "base_model").exists():
            # a preset starts from seeded random weights: keep them, the LoRA adapter is relative to them
            save_policy(run_dir / "base_model", vla, processor, head, proprio, "base_checkpoint.pt", dataset_statistics)
    if cfg.gradient_checkpointing:
        vla.gradient_checkpointing_enable()
    if cfg.use_lora:
        vla = apply_lora(vla, cfg.lora_rank, cfg.lora_dropout)
    policy = TrainablePolicy(vla, head, proprio).to(d.device)
    policy.train()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate)
    scheduler = make_scheduler(optimizer, cfg.lr_warmup_steps, cfg.num_steps_before_decay)

    start_step = 0
    if cfg.resume:
        folder = run_state.find_resumable(run_dir, cfg.resume_step)
        if folder is None:
            raise CheckpointError(
                f"--resume: no checkpoint{f' for step {cfg.resume_step}' if cfg.resume_step else ''} of run "
                f"{cfg.run_id} in {cfg.run_root_dir}. Resume uses the same flags as the original run."
            )
        start_step = restore_checkpoint(folder, policy, optimizer, scheduler, cfg)
        if d.main:
            print(f"[finetune] resuming {folder} at step {start_step}")

    model = DDP(policy, find_unused_parameters=True) if d.world_size > 1 else policy
    collate = PaddedCollatorForActionPrediction(model_max_length=2048, pad_token_id=vla.config.pad_token_id)
    loader, sampler = make_loader(cfg, dataset, collate, d)
    stream = batches(loader, sampler, dataset, start_step * cfg.grad_accumulation_steps)
    dtype = torch.bfloat16 if d.device.type == "cuda" else torch.float32
    logger = Logger(cfg, run_dir, d.main)
    pruner = base_vla(policy.vla).pruner
    if d.main:
        n_train = sum(p.numel() for p in trainable)
        print(
            f"[finetune] run {cfg.run_id}: {len(dataset)} samples, {d.world_size} process(es) on {d.device.type}, "
            f"{n_train:,} trainable parameters, steps {start_step} -> {cfg.max_steps}"
        )

    history, kept, start_time = [], None, time.perf_counter()
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc="finetune", unit="step", disable=not d.main)
    last_step = min(cfg.max_steps, cfg.stop_at_step or cfg.max_steps)
    for step in range(start_step, last_step):
        pruner.set_noise_scale(noise_scale(step, cfg.max_steps))
        totals = {"loss": 0.0, "curr_action_l1_loss": 0.0, "next_actions_l1_loss": 0.0}
        for _ in range(cfg.grad_accumulation_steps):
            batch = to_device(next(stream), d.device, dtype)
            with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=d.device.type == "cuda"):
                metrics = model(batch)
            (metrics.loss / cfg.grad_accumulation_steps).backward()
            totals["loss"] += metrics.loss.item() / cfg.grad_accumulation_steps
            totals["curr_action_l1_loss"] += metrics.curr_action_l1_loss / cfg.grad_accumulation_steps
            totals["next_actions_l1_loss"] += metrics.next_actions_l1_loss / cfg.grad_accumulation_steps
        if not math.isfinite(totals["loss"]):
            raise FloatingPointError(f"loss became {totals['loss']} at step {step}; lower --learning_rate")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        record = {**totals, "learning_rate": scheduler.get_last_lr()[0], "noise_scale": pruner.noise_scale or 0.0}
        if cfg.kept_tokens_log_freq and (done % cfg.kept_tokens_log_freq == 0 or done == 1):
            kept = kept_visual_tokens(policy, batch)
            record["kept_visual_tokens"] = kept
        history.append({"step": done, **record})
        if done % cfg.tensorboard_log_freq == 0 or done == cfg.max_steps or "kept_visual_tokens" in record:
            logger.log(done, record)
        bar.update(1)
        bar.set_postfix(
            loss=f"{totals['loss']:.4f}",
            lr=f"{record['learning_rate']:.1e}",
            noise=f"{record['noise_scale']:.2f}",
            kept=kept,
        )
        if d.main and done % cfg.log_freq == 0:
            tqdm.write(
                f"step {done}: loss {totals['loss']:.4f} (current {totals['curr_action_l1_loss']:.4f}, "
                f"future {totals['next_actions_l1_loss']:.4f}), lr {record['learning_rate']:.2e}, "
                f"noise {record['noise_scale']:.3f}, kept tokens {kept}"
            )
        if done % cfg.save_freq == 0 or done == last_step:
            if d.main:
                folder = save_checkpoint(cfg, run_dir, done, policy, processor, optimizer, scheduler, dataset_statistics)
                tqdm.write(f"[finetune] saved {folder}")
            d.barrier()
    bar.close()
    logger.close()
    elapsed = time.perf_counter() - start_time
    check_ranks_in_sync(policy, d)
    if d.main and last_step > start_step:
        steps = last_step - start_step
        print(
            f"[finetune] {steps} steps in {elapsed:.1f} s ({steps / elapsed:.2f} steps/s, "
            f"{steps * cfg.batch_size * cfg.grad_accumulation_steps * d.world_size / elapsed:.1f} samples/s)"
        )
    if d.world_size > 1:
        dist.destroy_process_group()
    return {"run_dir": run_dir, "history": history, "policy": policy}


@draccus.wrap()
def finetune(cfg: FinetuneConfig) -> dict:
    return train(cfg)


if __name__ == "__main__":
    finetune()
