"""Fine-tuning parts used by vla-scripts/finetune.py: schedules, LoRA, the loss step, resumable checkpoints."""
