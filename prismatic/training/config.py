"""The fine-tuning configuration: upstream finetune.py's flags (same names and defaults where upstream has them) plus
ours for pruning, resumption, logging and the embedded default. ``vla-scripts/finetune.py`` parses it with draccus."""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from prismatic.precision import check_precision
from prismatic.training.schedules import LR_SCHEDULES, NOISE_SCHEDULES
from prismatic.vla.datasets.lerobot_format import FeatureNames


@dataclass
class FinetuneConfig:
    # fmt: off
    # Model and data (upstream names)
    vla_path: str = "tiny"                          # checkpoint folder, Hub id, or a preset name ("tiny": fresh, CPU size)
    data_root_dir: Path = Path("datasets/libero")   # holds one folder of LIBERO HDF5 files per dataset name
    dataset_name: str = "libero_object_no_noops"    # also "libero_4_task_suites_no_noops" (the four suites)
    run_root_dir: Path = Path("runs")
    shuffle_buffer_size: int = 100_000              # accepted for upstream command lines; the sampler shuffles fully
    # A LeRobot dataset folder as dataset_name (v3.0 or v2.x) is converted to LIBERO HDF5 once, cached. Its features
    # are found by the known LIBERO namings (lerobot/libero, HuggingFaceVLA/libero, physical-intelligence/libero);
    # these map other names (all four, or none)
    lerobot_image_key: Optional[str] = None         # third-person camera, e.g. observation.images.image
    lerobot_wrist_image_key: Optional[str] = None   # wrist camera, e.g. observation.images.image2
    lerobot_state_key: Optional[str] = None         # 8-D state: eef position, axis-angle, two gripper fingers
    lerobot_action_key: Optional[str] = None        # 7-D action

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
    num_steps_before_decay: int = 100_000           # LR x0.1 from this optimizer step on (lr_schedule "step")
    lr_schedule: str = "step"                       # "step" (upstream) or "cosine": to 0.01x the LR at max_steps
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
    reuse_heads: bool = False                       # continue the --vla_path folder's action head and proprio projector

    # Pruning (LightVLA)
    prune_visual_tokens: bool = True                # False: plain OpenVLA-OFT
    pruner_noise: str = "uniform"                   # uniform (upstream code) | gumbel (the paper's text)
    pruner_noise_schedule: str = "decay"            # decay: 1 -> 0 over the run (LightVLA) | fixed: 1 | none: 0
    pruner_train_duplicates: str = "keep"           # keep (upstream) | unique: slots repeating a pick are masked
    pruner_eval_duplicates: str = "once"            # recorded for inference: once (upstream) | count (= training, keep)
    kept_tokens_log_freq: int = 100                 # measure kept visual tokens in eval mode every N steps
    stop_at_step: Optional[int] = None              # save and stop after this step (time-limited jobs; then --resume)

    # Logging and runtime
    log_freq: int = 100                             # console line every N steps
    tensorboard_log_dir: Optional[Path] = None      # accepted for upstream command lines (metrics.jsonl is written)
    tensorboard_log_freq: int = 10                  # upstream (LightVLA) flag: metrics go to metrics.jsonl (and
                                                    # W&B when configured) every N steps
    run_id_note: Optional[str] = None
    run_id_override: Optional[str] = None
    wandb_entity: str = "your-wandb-entity"
    wandb_project: str = "your-wandb-project"       # set it to log to Weights & Biases (offline without credentials)
    wandb_log_freq: int = 10                        # upstream (OpenVLA-OFT) flag, accepted: tensorboard_log_freq rules
    seed: int = 7                                   # rank r draws its random numbers (pruning noise) from seed + r
    num_workers: int = 2                            # DataLoader worker processes per training process (persistent)
    gradient_checkpointing: bool = False
    precision: str = "auto"                         # bf16 | fp32 | auto (bf16 on CUDA as upstream, fp32 elsewhere)
    distributed_timeout_minutes: int = 60           # collectives wait this long (rank 0 writes ~15 GB checkpoints)

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
        check_precision(self.precision)
        for name in ("batch_size", "grad_accumulation_steps", "max_steps", "save_freq", "log_freq",
                     "distributed_timeout_minutes"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.pruner_noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(
                f"--pruner_noise_schedule must be one of {NOISE_SCHEDULES}, got {self.pruner_noise_schedule!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"--lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule == "cosine" and self.max_steps <= self.lr_warmup_steps:
            raise ValueError(f"--lr_schedule cosine needs --max_steps > --lr_warmup_steps ({self.lr_warmup_steps})")
        keys = [self.lerobot_image_key, self.lerobot_wrist_image_key, self.lerobot_state_key, self.lerobot_action_key]
        if any(keys) and not all(keys):
            raise ValueError(
                "--lerobot_image_key, --lerobot_wrist_image_key, --lerobot_state_key and --lerobot_action_key map a "
                "LeRobot dataset's features together: pass all four, or none to use the known LIBERO names"
            )
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

    def lerobot_feature_names(self) -> FeatureNames | None:
        if not self.lerobot_image_key:
            return None
        return FeatureNames(
            self.lerobot_image_key, self.lerobot_wrist_image_key, self.lerobot_state_key, self.lerobot_action_key
        )
