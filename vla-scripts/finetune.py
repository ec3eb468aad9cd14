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

import draccus

from prismatic.training.config import FinetuneConfig
from prismatic.training.trainer import train


@draccus.wrap()
def finetune(cfg: FinetuneConfig) -> dict:
    from experiments.robot.libero.generate_scripted_demos import make_missing_demos

    return train(cfg, prepare_data=make_missing_demos)


if __name__ == "__main__":
    finetune()
