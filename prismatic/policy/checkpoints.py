"""Checkpoint folders: finding, loading and saving a whole policy.

A policy folder is laid out like the released OpenVLA-OFT / LightVLA checkpoints::

    config.json, generation_config.json, model*.safetensors[, model.safetensors.index.json]
    preprocessor_config.json, tokenizer files            (PrismaticProcessor)
    action_head--{step}_checkpoint.pt                    (state dict, keys with or without DDP's "module.")
    proprio_projector--{step}_checkpoint.pt              (when the policy uses proprio)
    dataset_statistics.json                              (norm_stats used to un-normalise actions)

A Hugging Face Hub id is downloaded to the local cache first; where the Hub cannot be reached the error says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prismatic.extern.hf import register_auto_classes
from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.extern.hf.processing_prismatic import PrismaticProcessor
from prismatic.models.action_heads import L1RegressionActionHead
from prismatic.models.projectors import ProprioProjector
from prismatic.precision import prepare_for_inference, resolve_precision

DATASET_STATISTICS = "dataset_statistics.json"


class CheckpointError(ValueError):
    """A checkpoint folder or Hub id that cannot be used; the message says what to do."""


def resolve_checkpoint(path_or_id: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hub id, downloaded (or taken from the local Hub cache)."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    backup = path.with_name(f".{path.name}.old")
    if backup.is_dir():  # a save was interrupted between moving the old folder aside and moving the new one in
        warnings.warn(f"{path} is missing but its previous version {backup} exists (interrupted save); using it")
        return backup
    if path.exists():
        raise CheckpointError(f"{path} is a file; pass the checkpoint folder that contains config.json")
    name = str(path_or_id)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise CheckpointError(f"checkpoint folder {name} does not exist (and it is not a Hugging Face Hub id)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name))
    except Exception as error:  # offline, unknown repo, gated repo: all end here with the cause attached
        raise CheckpointError(
            f"{name} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(error).__name__}: {str(error).splitlines()[0]}). On a machine with Hub access run "
            f"`hf download {name} --local-dir DIR`, copy DIR here and pass DIR instead."
        ) from error


def find_checkpoint_file(folder: Path, component: str) -> Path | None:
    """The one ``{component}--*checkpoint.pt`` file in ``folder``; None if absent, an error if ambiguous."""
    matches = sorted(p for p in folder.iterdir() if p.name.startswith(f"{component}--") and "checkpoint" in p.name)
    if len(matches) > 1:
        raise CheckpointError(
            f"{folder} holds several {component} checkpoints ({', '.join(p.name for p in matches)}); "
            "keep the one of the step you want to load"
        )
    return matches[0] if matches else None


def load_component_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A head's state dict with DDP's ``module.`` prefixes removed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read {path}: {error}; the file is corrupt or not a torch state dict") from error
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_action_head(path: Path, num_actions_chunk: int) -> L1RegressionActionHead:
    """Build the L1 head with the sizes its weights have (so 7B and small heads load alike)."""
    state = load_component_state_dict(path)
    hidden, flat_input = state["model.fc1.weight"].shape
    action_dim = state["model.fc2.weight"].shape[0]
    head = L1RegressionActionHead(flat_input // action_dim, hidden, action_dim, num_actions_chunk)
    head.load_state_dict(state)
    return head


def load_proprio_projector(path: Path) -> ProprioProjector:
    state = load_component_state_dict(path)
    llm_dim, proprio_dim = state["fc1.weight"].shape
    projector = ProprioProjector(llm_dim, proprio_dim)
    projector.load_state_dict(state)
    return projector


def load_heads(
    folder: Path, num_actions_chunk: int, use_proprio: bool
) -> tuple[L1RegressionActionHead, ProprioProjector | None]:
    """The action head and (with ``use_proprio``) the proprio projector saved in a checkpoint folder, fp32 on the CPU
    whatever the model's dtype (``prismatic.precision``)."""
    head_file = find_checkpoint_file(folder, "action_head")
    if head_file is None:
        raise CheckpointError(f"{folder} has no action_head--*_checkpoint.pt; the L1 regression head is required")
    proprio = None
    if use_proprio:
        proprio_file = find_checkpoint_file(folder, "proprio_projector")
        if proprio_file is None:
            raise CheckpointError(
                f"{folder} has no proprio_projector--*_checkpoint.pt; a policy trained without proprio loads with "
                "use_proprio=False (--use_proprio False)"
            )
        proprio = load_proprio_projector(proprio_file)
    return load_action_head(head_file, num_actions_chunk), proprio


def require_model_folder(folder: Path) -> Path:
    if not (folder / "config.json").exists():
        raise CheckpointError(
            f"{folder} has no config.json: it is not a model checkpoint folder; pass one written by save_policy, "
            "a released checkpoint or a Hub id"
        )
    return folder


def load_model_folder(
    folder: Path, dtype: torch.dtype, num_images_in_input: int | None = None, **config_overrides: Any
) -> tuple[OpenVLAForActionPrediction, PrismaticProcessor]:
    """The VLA (weights in ``dtype``, config fields overridden for this load) and processor of a checkpoint folder."""
    vla = OpenVLAForActionPrediction.from_pretrained(require_model_folder(folder), dtype=dtype, **config_overrides)
    if num_images_in_input is not None:
        vla.set_num_images_in_input(num_images_in_input)
    return vla, PrismaticProcessor.from_pretrained(folder)


def load_dataset_statistics(folder: Path) -> dict[str, Any] | None:
    path = folder / DATASET_STATISTICS
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); restore it from the training run folder") from error


# How the released checkpoints were evaluated. Their config.json says neither, and cannot tell an OpenVLA-OFT
# checkpoint from a LightVLA one (LightVLA adds no weights), so the choice comes from a flag or the checkpoint's name.
RELEASED_VARIANTS = {
    "lightvla": {"prune_visual_tokens": True, "action_readout": "lightvla_tail"},  # upstream LightVLA's eval slice
    "oft": {"prune_visual_tokens": False, "action_readout": "oft_aligned"},
}
PRUNING_SETTINGS = ("prune_visual_tokens", "action_readout")


def released_variant(name: str) -> str | None:
    """ "lightvla" or "oft" when the checkpoint's name says so unambiguously (TTJiang/LightVLA-libero-spatial,
    moojink/openvla-7b-oft-finetuned-libero-spatial), else None."""
    name = Path(str(name).rstrip("/")).name.lower()
    if "lightvla" in name:
        return "lightvla"
    return "oft" if re.search(r"(^|[^a-z])oft([^a-z]|$)", name) else None


def pruning_settings(folder: Path, name: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(prune_visual_tokens and action_readout for this load, where they came from).

    Explicit overrides first, then what config.json records (checkpoints written here record both), then the
    released checkpoint's name; when none of these decides, an error names the flags to pass.
    """
    recorded = json.loads((folder / "config.json").read_text())
    settings = {key: overrides[key] for key in PRUNING_SETTINGS if overrides.get(key) is not None}
    source = "flags" if settings else ""
    for key in PRUNING_SETTINGS:
        if key not in settings and key in recorded:
            settings[key], source = recorded[key], source or "config.json"
    if len(settings) == len(PRUNING_SETTINGS):
        return settings, source
    variant = released_variant(name)
    if variant is not None:
        return {**RELEASED_VARIANTS[variant], **settings}, f"the name {Path(str(name)).name!r} ({variant})"
    if settings.get("prune_visual_tokens") is False:  # plain OpenVLA-OFT reads the training-aligned positions
        return {"action_readout": "oft_aligned", **settings}, source
    raise CheckpointError(
        f"{name}: its config.json does not say how to run it (a released checkpoint: OpenVLA-OFT and LightVLA ones look "
        "alike) and its name does not tell. Pass --prune_visual_tokens False for OpenVLA-OFT, or "
        "--prune_visual_tokens True --action_readout lightvla_tail for a released LightVLA checkpoint "
        "(--action_readout oft_aligned reads the positions it was trained on); in Python, the keyword arguments "
        "prune_visual_tokens= and action_readout=."
    )


@dataclass
class Policy:
    """Everything inference needs, loaded from one folder."""

    vla: OpenVLAForActionPrediction
    processor: PrismaticProcessor
    action_head: L1RegressionActionHead
    proprio_projector: ProprioProjector | None
    folder: Path | None  # None for a policy built in memory from a preset


def load_policy(
    path_or_id: str | os.PathLike,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    num_images_in_input: int | None = None,
    use_proprio: bool = True,
    **config_overrides: Any,
) -> Policy:
    """Load model, processor, heads and statistics of a checkpoint folder (or Hub id) in eval mode.

    ``config_overrides`` set fields such as ``prune_visual_tokens`` or ``action_readout`` for this load; for a
    released checkpoint that records neither, see ``pruning_settings``. The effective settings are printed.
    ``precision`` (``prismatic.precision``): the model's weights in bf16 or fp32 (default: bf16 on CUDA, fp32
    elsewhere); the action head and proprio projector stay fp32.
    """
    register_auto_classes()
    folder = require_model_folder(resolve_checkpoint(path_or_id))
    settings, source = pruning_settings(folder, str(path_or_id), config_overrides)
    precision = resolve_precision(precision, device)
    vla, processor = load_model_folder(
        folder, precision.frozen_dtype, num_images_in_input, **{**config_overrides, **settings}
    )
    vla = prepare_for_inference(vla, precision).to(device).eval()
    stats = load_dataset_statistics(folder)
    if stats is not None:  # the run's statistics take precedence over the (possibly stale) config copy
        vla.norm_stats = vla.config.norm_stats = stats
    head, proprio = load_heads(folder, vla.action_space.num_actions_chunk, use_proprio)
    size = vla.vision_backbone.image_size
    pruning = "off (OpenVLA-OFT)"
    if settings["prune_visual_tokens"]:
        weighted = vla.config.pruner_eval_duplicates == "count"
        pruning = f"on (LightVLA{', kept patches weighted by their picks' if weighted else ''})"
    print(
        f"[policy] {path_or_id}: pruning {pruning}, "
        f"action read-out {settings['action_readout']} (from {source}); {vla.get_num_images_in_input()} image(s) at "
        f"{size} px through upstream's image pipeline (JPEG round trip + lanczos3 to {size} px, then the 90% center "
        f"crop unless disabled); {precision} (LLM {vla.language_model.dtype}; vision, projector, pruner scores and "
        "heads float32)"
    )
    proprio = None if proprio is None else proprio.to(device).eval()
    return Policy(vla, processor, head.to(device).eval(), proprio, folder)


def _write_folder(folder: Path, write: Any, preserve: tuple[str, ...] = ()) -> None:
    """Write into a sibling temp folder, then swap it in, so a crash never leaves a half-written checkpoint.

    Entries named in ``preserve`` move from the old folder into the new one once it is in place (a run folder that
    is also its own latest checkpoint keeps its metrics and base weights); until then they stay in the old folder,
    so a crash at any point loses none of them.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(staging)
        backup = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            shutil.rmtree(backup, ignore_errors=True)
            folder.rename(backup)
        staging.rename(folder)
        for name in preserve:
            if (backup / name).exists() and not (folder / name).exists():
                (backup / name).rename(folder / name)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_policy(
    folder: str | os.PathLike,
    vla: OpenVLAForActionPrediction,
    processor: PrismaticProcessor,
    action_head: nn.Module,
    proprio_projector: nn.Module | None = None,
    step_suffix: str = "latest_checkpoint.pt",
    dataset_statistics: dict[str, Any] | None = None,
    vla_state_dict: dict[str, torch.Tensor] | None = None,
    extra_writer: Any = None,
    preserve: tuple[str, ...] = (),
) -> Path:
    """Save a policy folder in the released layout (atomically: the old folder stays until the new one is whole).

    ``vla_state_dict`` replaces the model's own weights (training saves LoRA-merged weights this way);
    ``extra_writer(folder)`` adds files (adapter, optimizer state) inside the same atomic write.
    """
    folder = Path(folder)

    def write(target: Path) -> None:
        vla.save_pretrained(target, state_dict=vla_state_dict)
        processor.save_pretrained(target)
        torch.save(action_head.state_dict(), target / f"action_head--{step_suffix}")
        if proprio_projector is not None:
            torch.save(proprio_projector.state_dict(), target / f"proprio_projector--{step_suffix}")
        stats = dataset_statistics if dataset_statistics is not None else vla.norm_stats
        if stats:
            (target / DATASET_STATISTICS).write_text(json.dumps(stats, indent=2))
        if extra_writer is not None:
            extra_writer(target)

    _write_folder(folder, write, preserve)
    return folder
