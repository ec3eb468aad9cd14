"""Merge a checkpoint's LoRA adapter into its base model and save the merged weights into the checkpoint folder.

    python vla-scripts/merge_lora_weights_and_save.py --base_checkpoint moojink/openvla-7b-oft-finetuned-libero-object \
        --lora_finetuned_checkpoint_dir runs/RUN--40000_chkpt

The base must be the model training started from (for LightVLA: the OFT checkpoint of the same suite; for a preset
run: `runs/RUN/base_model`, which finetune.py writes). finetune.py already saves merged weights with every
checkpoint; this re-merges, e.g. on the GPU type used for evaluation (OFT's advice). The folder's model files are
replaced atomically: the other files (heads, statistics, adapter) stay.
"""

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import draccus
import torch

from prismatic.extern.hf import register_auto_classes
from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.policy.checkpoints import CheckpointError, resolve_checkpoint
from prismatic.precision import resolve_precision

MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json")


@dataclass
class MergeLoraConfig:
    base_checkpoint: str = ""  # folder or Hub id of the model LoRA was trained on
    lora_finetuned_checkpoint_dir: Path = Path("")  # checkpoint folder with lora_adapter/
    precision: str = "auto"  # merged weights in bf16 | fp32 | auto (bf16 on a GPU, fp32 on the CPU)


def merge(base_checkpoint: str, checkpoint_dir: Path, device: str = "cpu", precision: str = "auto") -> Path:
    from peft import PeftModel

    register_auto_classes()
    adapter = Path(checkpoint_dir) / "lora_adapter"
    if not (adapter / "adapter_config.json").exists():
        raise CheckpointError(f"{checkpoint_dir} has no lora_adapter/adapter_config.json: nothing to merge.")
    base_dir = resolve_checkpoint(base_checkpoint)
    dtype = resolve_precision(precision, device).frozen_dtype
    base = OpenVLAForActionPrediction.from_pretrained(base_dir, dtype=dtype)
    trained_config = OpenVLAForActionPrediction.config_class.from_pretrained(checkpoint_dir)
    # the adapter loads in fp32 (peft's default) and each delta is rounded once, into the base weights' dtype
    merged = PeftModel.from_pretrained(base, adapter).to(device).merge_and_unload()
    merged.config.norm_stats = trained_config.norm_stats  # the fine-tuning data's statistics, not the base's
    merged.config.num_images_in_input = trained_config.num_images_in_input
    staging = Path(tempfile.mkdtemp(prefix=".merge.", dir=checkpoint_dir))
    try:
        merged.save_pretrained(staging)
        new = {path.name for path in staging.iterdir()}
        old = set(MODEL_FILES) | {path.name for path in Path(checkpoint_dir).glob("model-*.safetensors")}
        for name in sorted(new, key=lambda n: n.endswith(".json")):  # weights first, the index that names them last
            os.replace(staging / name, Path(checkpoint_dir) / name)
        for name in old - new:  # shards of a different sharding, no longer referenced
            (Path(checkpoint_dir) / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Path(checkpoint_dir)


@draccus.wrap()
def main(cfg: MergeLoraConfig) -> None:
    start = time.perf_counter()
    folder = merge(
        cfg.base_checkpoint, cfg.lora_finetuned_checkpoint_dir, "cuda" if torch.cuda.is_available() else "cpu",
        cfg.precision,
    )
    print(
        f"merged {cfg.lora_finetuned_checkpoint_dir}/lora_adapter into {cfg.base_checkpoint} -> {folder} "
        f"({time.perf_counter() - start:.1f} s)"
    )


if __name__ == "__main__":
    main()
