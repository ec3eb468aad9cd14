"""Pushing a checkpoint folder to the Hugging Face Hub with a model card (pulling is `checkpoints.resolve_checkpoint`).

What is uploaded is what `load_policy` needs (config, weights, processor, heads, statistics) plus the LoRA adapter
and the training metrics when present; the optimizer state (`training_state.pt`) stays local. The card is generated
from the folder (architecture, pruner, action chunk, datasets, training step) and uploaded in the same commit; the
folder itself is not modified.
"""

import json
import os
from pathlib import Path

from prismatic.policy.checkpoints import CheckpointError, find_checkpoint_file, load_dataset_statistics

UPLOAD_IGNORE = ("training_state.pt", "*.tmp")  # file name patterns
UPLOAD_IGNORE_DIRS = ("base_model", "__pycache__")  # top-level folders (a preset run keeps its base weights there)


class HubError(RuntimeError):
    """The Hub could not be reached or refused the upload; the message says what to check."""


def files_to_upload(folder: Path) -> list[Path]:
    """Paths relative to ``folder`` that a push uploads, sorted."""
    folder = Path(folder)
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        hidden = any(part.startswith(".") for part in rel.parts)
        ignored = rel.parts[0] in UPLOAD_IGNORE_DIRS or any(rel.match(p) for p in UPLOAD_IGNORE)
        if path.is_file() and not hidden and not ignored:
            files.append(rel)
    return files


def check_checkpoint_folder(folder: Path) -> dict:
    """The folder's config.json, after checking that the folder holds a loadable policy."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json; pass a checkpoint folder written by finetune.py")
    if find_checkpoint_file(folder, "action_head") is None:
        raise CheckpointError(f"{folder} has no action_head--*_checkpoint.pt; it would not load after the push")
    if not list(folder.glob("*.safetensors")):
        raise CheckpointError(f"{folder} has no *.safetensors weights; it would not load after the push")
    return json.loads((folder / "config.json").read_text())


def model_card(folder: Path, repo_id: str) -> str:
    folder = Path(folder)
    config = check_checkpoint_folder(folder)
    text = config.get("text_config", {})
    stats = load_dataset_statistics(folder) or {}
    head = find_checkpoint_file(folder, "action_head")
    step = head.name.split("--")[1].removesuffix("_checkpoint.pt")
    proprio = find_checkpoint_file(folder, "proprio_projector") is not None
    pruning = config.get("prune_visual_tokens", True)
    datasets = ", ".join(f"`{k}`" for k in sorted(stats)) or "(no dataset_statistics.json)"
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: robotics",
        "tags: [lightvla, openvla-oft, vision-language-action, robotics, libero]",
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        "A LightVLA policy: OpenVLA-OFT (fused DINOv2 + SigLIP vision, MLP projector, Llama-2 with bidirectional "
        "attention, L1-regression action head) with LightVLA's parameter-free visual token pruner "
        "([arXiv 2509.12594](https://arxiv.org/abs/2509.12594)).",
        "",
        "| | |",
        "|---|---|",
        f"| LLM | {config.get('llm_backbone_id')}: {text.get('num_hidden_layers', 32)} layers, "
        f"width {text.get('hidden_size', 4096)} |",
        f"| vision backbone | {config.get('vision_backbone_id')} |",
        f"| images per observation | {config.get('num_images_in_input', 1)} |",
        f"| proprio | {'yes' if proprio else 'no'} |",
        f"| visual token pruning | {'LightVLA pruner' if pruning else 'off (plain OpenVLA-OFT)'} |",
        f"| action read-out | {config.get('action_readout', 'oft_aligned')} |",
        f"| training step | {step} |",
        f"| datasets (unnorm keys) | {datasets} |",
        "",
        "## Use",
        "",
        "```python",
        "from prismatic.policy.checkpoints import load_policy",
        f'policy = load_policy("{repo_id}")  # model, processor, action head, proprio projector, statistics',
        "```",
        "",
        "```bash",
        f"python experiments/robot/libero/run_libero_eval.py --pretrained_checkpoint {repo_id} "
        f"--task_suite_name <suite> --num_images_in_input {config.get('num_images_in_input', 1)}"
        f"{'' if proprio else ' --use_proprio False'}",
        f"python vla-scripts/deploy.py --pretrained_checkpoint {repo_id}",
        "```",
        "",
    ]
    return "\n".join(lines)


def push_checkpoint(
    folder: Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload the folder and its model card in one commit; returns the commit URL.

    ``endpoint``: another Hub than HF_ENDPOINT / huggingface.co (a mirror, a private Hub).
    """
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    folder = Path(folder)
    card = model_card(folder, repo_id)
    if constants.HF_HUB_OFFLINE:
        raise HubError("HF_HUB_OFFLINE is set: unset it to push to the Hugging Face Hub")
    api = HfApi(endpoint=endpoint, token=token or os.environ.get("HF_TOKEN"))
    operations = [CommitOperationAdd(str(rel), str(folder / rel)) for rel in files_to_upload(folder)]
    operations.append(CommitOperationAdd("README.md", card.encode()))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(
            repo_id, operations, commit_message=commit_message or f"Upload LightVLA checkpoint {folder.name}"
        )
    except Exception as err:  # noqa: BLE001 - network, auth and permission errors all get the same guidance
        raise HubError(
            f"could not push {folder} to {repo_id} on {api.endpoint} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Check network access to the Hub, HF_ENDPOINT, and "
            "that HF_TOKEN (or `hf auth login`) has write access."
        ) from err
    return info.commit_url
