"""OpenVLA-OFT with LightVLA's visual token pruner, on stock ``transformers`` and ``timm``.

Architecture (7B): fused DINOv2-L/14 + SigLIP-So400m/14 featurizers (second-to-last block, patch tokens only)
-> 3-layer GELU MLP projector -> [optional proprio token] -> TokenPruner -> Llama-2 with bidirectional attention ->
hidden states at the action slots -> L1 regression head (outside this module, as in upstream checkpoints).

State-dict keys and shapes are those of the released OpenVLA-OFT / LightVLA checkpoints; the pruner has no weights.

Sequence layout (B = batch, P = 256 * num_images, D = LLM width):
    [BOS] [P patches] [proprio] [prompt ... "▁"] [chunk * action_dim action slots (zero embeddings)] [STOP] [PAD...]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import timm
import torch
from timm.layers import LayerScale
from torch import nn
from transformers import LlamaForCausalLM, PreTrainedModel
from transformers.utils import ModelOutput

from prismatic.extern.hf.configuration_prismatic import OpenVLAConfig, PrismaticConfig
from prismatic.models.llama_bidirectional import bidirectional_llama_forward
from prismatic.models.pruning import PruningStats, TokenPruner
from prismatic.vla.constants import IGNORE_INDEX
from prismatic.vla.normalization import resolve_unnorm_key, unnormalize
from prismatic.vla.prompts import action_sequence


# === Vision backbone ===
class ScaleFactor(nn.Module):
    """timm's LayerScale with its parameter named ``scale_factor``.

    The released checkpoints were saved through HF, which renamed every key containing ``gamma``; upstream patched
    timm at runtime to match. Swapping the module keeps timm untouched.
    """

    def __init__(self, gamma: torch.Tensor) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(gamma.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


def _rename_layer_scales(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LayerScale):
                setattr(parent, name, ScaleFactor(child.gamma))


def make_featurizer(timm_id: str, img_size: int, act_layer: str | None, overrides: dict[str, Any] | None) -> nn.Module:
    """A timm ViT built without weights; ``overrides`` (e.g. embed_dim, depth) shrink it for small presets."""
    kwargs = dict(overrides or {})
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    vit = timm.create_model(timm_id, pretrained=False, num_classes=0, img_size=img_size, **kwargs)
    _rename_layer_scales(vit)
    return vit


def featurize(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> patch tokens of the second-to-last block, no final norm: (B, num_patches, embed_dim)."""
    return vit.get_intermediate_layers(images, n=[len(vit.blocks) - 2])[0]


class PrismaticVisionBackbone(nn.Module):
    """One or two featurizers; with two ("fused"), each image carries 6 channels and the features are concatenated."""

    def __init__(
        self,
        use_fused_vision_backbone: bool,
        image_sizes: list[int],
        timm_model_ids: list[str],
        timm_override_act_layers: list[str | None],
        timm_model_overrides: list[dict[str, Any]] | None = None,
        num_images_in_input: int = 1,
    ) -> None:
        super().__init__()
        overrides = timm_model_overrides or [None] * len(timm_model_ids)
        self.use_fused_vision_backbone = use_fused_vision_backbone
        self.num_images_in_input = num_images_in_input
        self.image_size = image_sizes[0]
        self.featurizer = make_featurizer(timm_model_ids[0], image_sizes[0], timm_override_act_layers[0], overrides[0])
        self.embed_dim = self.featurizer.embed_dim
        if use_fused_vision_backbone:
            self.fused_featurizer = make_featurizer(
                timm_model_ids[1], image_sizes[1], timm_override_act_layers[1], overrides[1]
            )
            self.embed_dim += self.fused_featurizer.embed_dim

    @property
    def channels_per_image(self) -> int:
        return 6 if self.use_fused_vision_backbone else 3

    def get_num_patches(self) -> int:
        return self.featurizer.patch_embed.num_patches

    def get_num_images_in_input(self) -> int:
        return self.num_images_in_input

    def set_num_images_in_input(self, num_images_in_input: int) -> None:
        self.num_images_in_input = num_images_in_input

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C * n, H, W) -> (B, num_patches * n, embed_dim); images in order [third-person, wrist, ...].

        Upstream runs each featurizer once per image; here the n images go through it as one batch (B * n), the same
        numbers (per-sample results do not depend on the batch) for half the calls with two images: a libero-cpu
        query's vision took 18 -> 10 ms on one CPU thread."""
        batch = pixel_values.shape[0]
        images = torch.cat(torch.split(pixel_values, self.channels_per_image, dim=1), dim=0)  # (n * B, C, H, W)
        vits = [self.featurizer, self.fused_featurizer] if self.use_fused_vision_backbone else [self.featurizer]
        parts = torch.split(images, 3, dim=1)  # [DINOv2-normalised, SigLIP-normalised]
        features = torch.cat([featurize(v, x) for v, x in zip(vits, parts)], dim=2)  # (n * B, patches, embed_dim)
        return torch.cat(torch.split(features, batch, dim=0), dim=1)


# === Projector ===
class PrismaticProjector(nn.Module):
    def __init__(self, use_fused_vision_backbone: bool, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.use_fused_vision_backbone = use_fused_vision_backbone
        if use_fused_vision_backbone:
            initial_dim = 4 * vision_dim
            self.fc1 = nn.Linear(vision_dim, initial_dim, bias=True)
            self.fc2 = nn.Linear(initial_dim, llm_dim, bias=True)
            self.fc3 = nn.Linear(llm_dim, llm_dim, bias=True)
            self.act_fn1, self.act_fn2 = nn.GELU(), nn.GELU()
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim, bias=True)
            self.fc2 = nn.Linear(llm_dim, llm_dim, bias=True)
            self.act_fn1 = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act_fn1(self.fc1(features)))
        if self.use_fused_vision_backbone:
            x = self.fc3(self.act_fn2(x))
        return x


# === Outputs ===
@dataclass
class PrismaticActionOutput(ModelOutput):
    """What the policy forward returns.

    ``action_hidden_states`` (B, chunk * action_dim, D): LLM outputs read at the action slots (see ``action_readout``).
    ``pruning`` holds the kept-token statistics, or None when pruning is off.
    """

    last_hidden_state: torch.Tensor | None = None
    action_hidden_states: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    projector_features: torch.Tensor | None = None
    pruning: PruningStats | None = None


# === Models ===
class PrismaticPreTrainedModel(PreTrainedModel):
    config_class = PrismaticConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["PrismaticProjector"]
    _skip_keys_device_placement = "past_key_values"

    def _init_weights(self, module: nn.Module) -> None:
        # Only for layers that the checkpoint does not provide (and for the from-scratch tiny preset).
        std = self.config.text_config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()


class PrismaticForConditionalGeneration(PrismaticPreTrainedModel):
    def __init__(self, config: PrismaticConfig) -> None:
        super().__init__(config)
        self.vision_backbone = PrismaticVisionBackbone(
            config.use_fused_vision_backbone,
            config.image_sizes,
            config.timm_model_ids,
            config.timm_override_act_layers,
            config.timm_model_overrides,
            getattr(config, "num_images_in_input", 1),
        )
        self.llm_dim = config.text_config.hidden_size
        self.projector = PrismaticProjector(
            config.use_fused_vision_backbone, self.vision_backbone.embed_dim, self.llm_dim
        )
        self.language_model = LlamaForCausalLM(config.text_config)
        self.pruner = TokenPruner(
            enabled=getattr(config, "prune_visual_tokens", False),
            noise=getattr(config, "pruner_noise", "uniform"),
            train_duplicates=getattr(config, "pruner_train_duplicates", "keep"),
            eval_duplicates=getattr(config, "pruner_eval_duplicates", "once"),
        )
        self.vocab_size = config.text_config.vocab_size
        self.post_init()

    # --- HF boilerplate delegating to the LLM ---
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # --- images ---
    def get_num_patches(self) -> int:
        """Visual tokens before pruning: patches per image x images (no proprio token)."""
        return self.vision_backbone.get_num_patches() * self.vision_backbone.get_num_images_in_input()

    def get_num_images_in_input(self) -> int:
        return self.vision_backbone.get_num_images_in_input()

    def set_num_images_in_input(self, num_images_in_input: int) -> None:
        if num_images_in_input > 1 and not self.vision_backbone.use_fused_vision_backbone:
            raise ValueError("several input images need the fused (DINOv2 + SigLIP) vision backbone")
        self.vision_backbone.set_num_images_in_input(num_images_in_input)
        self.config.num_images_in_input = num_images_in_input

    def _check_pixel_values(self, pixel_values: torch.Tensor | None, batch: int) -> None:
        vb = self.vision_backbone
        n, c, size = vb.num_images_in_input, vb.channels_per_image, vb.image_size
        expected = f"(B, {c * n}, {size}, {size}) = {n} image(s) x {c} channels"
        if pixel_values is None:
            raise ValueError(f"pixel_values is required: a tensor of shape {expected}, made by PrismaticProcessor")
        if pixel_values.ndim != 4 or pixel_values.shape[-2:] != (size, size):
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}, expected {expected}; "
                f"resize images to {size}x{size} with PrismaticProcessor"
            )
        channels = pixel_values.shape[1]
        if channels % c:
            raise ValueError(
                f"pixel_values has {channels} channels, not a multiple of {c} per image; expected {expected}"
            )
        if channels != c * n:
            raise ValueError(
                f"pixel_values holds {channels // c} image(s) ({channels} channels) but the model is set for "
                f"num_images_in_input={n}: pass {n} image(s) per sample or call set_num_images_in_input({channels // c})"
            )
        if pixel_values.shape[0] != batch:
            raise ValueError(f"pixel_values has batch size {pixel_values.shape[0]} but input_ids has {batch}")

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C * n, H, W) -> projected patch tokens (B, P, D)."""
        features = self.vision_backbone(pixel_values.to(self.projector.fc1.weight.dtype))
        return self.projector(features)


class OpenVLAForActionPrediction(PrismaticForConditionalGeneration):
    config_class = OpenVLAConfig

    def __init__(self, config: OpenVLAConfig) -> None:
        super().__init__(config)
        self.norm_stats = config.norm_stats
        self.action_space = config.get_action_space()
        self.action_token_begin_idx = config.action_token_begin_idx

    # --- sequence construction ---
    def action_slot_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: positions whose label is an action token (STOP, prompt and padding excluded)."""
        mask = labels > self.action_token_begin_idx
        counts = mask.sum(-1)
        expected = self.action_space.num_action_tokens
        if not bool((counts == expected).all()):
            raise ValueError(
                f"every sample needs exactly {expected} action tokens ({self.action_space.num_actions_chunk} actions x "
                f"{self.action_space.action_dim} dims) in labels, got {counts.tolist()}"
            )
        return mask

    def append_action_slots(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompt ids (right-padded) -> ids, mask and labels with the action slots and STOP appended per sample.

        The prompt ends in the empty token ("▁") as at training time; it is appended when missing.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        rows = [action_sequence(ids[mask], self.config) for ids, mask in zip(input_ids, attention_mask.bool())]
        length = max(len(ids) for ids, _ in rows)
        out_ids = input_ids.new_full((len(rows), length), self.config.pad_token_id)
        labels = input_ids.new_full((len(rows), length), IGNORE_INDEX)
        out_mask = torch.zeros((len(rows), length), dtype=torch.bool, device=input_ids.device)
        for b, (ids, row_labels) in enumerate(rows):
            out_ids[b, : len(ids)] = ids
            labels[b, : len(ids)] = row_labels
            out_mask[b, : len(ids)] = True
        return out_ids, out_mask, labels

    # --- forward ---
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
        proprio_projector: nn.Module | None = None,
        output_hidden_states: bool = False,
        output_projector_features: bool = False,
        action_readout: str | None = None,
        **kwargs: Any,
    ) -> PrismaticActionOutput:
        """Multimodal bidirectional forward.

        ``labels`` mark the action slots (ids above ``action_token_begin_idx``); their embeddings are zeroed.
        ``action_readout``: "oft_aligned" reads the position before each action slot (how every model is trained);
        "lightvla_tail" reads one after each slot (upstream LightVLA's eval slice, i.e. the last 56 positions of an
        unpadded sequence). Default: aligned in train mode, ``config.action_readout`` in eval mode.
        """
        if kwargs.get("use_film") or kwargs.get("noisy_actions") is not None:
            raise NotImplementedError("FiLM and diffusion action heads are not implemented; use the L1 regression head")
        batch = input_ids.shape[0]
        self._check_pixel_values(pixel_values, batch)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        attention_mask = attention_mask.bool()

        embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)
        action_mask = self.action_slot_mask(labels) if labels is not None else torch.zeros_like(attention_mask)
        embeds = embeds * ~action_mask[..., None]

        patches = self.embed_images(pixel_values)  # (B, P, D)
        visual = [patches]
        if proprio is not None:
            visual.append(self._project_proprio(proprio, proprio_projector, batch, patches.dtype))
        visual = torch.cat(visual, dim=1)  # (B, P [+1], D)
        n_visual, n_patches = visual.shape[1], patches.shape[1]

        # (B, S, D), visual block after BOS; in the wider of the two dtypes (fp32 visual tokens reach the pruner as such)
        dtype = torch.promote_types(embeds.dtype, visual.dtype)
        tokens = torch.cat([embeds[:, :1].to(dtype), visual.to(dtype), embeds[:, 1:].to(dtype)], dim=1)
        mask = torch.cat([attention_mask[:, :1], attention_mask.new_ones(batch, n_visual), attention_mask[:, 1:]], 1)
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand(batch, -1)

        hidden, all_hidden, pruned = self._run_llm(tokens, positions, mask, n_patches, output_hidden_states)

        action_hidden = None
        if labels is not None:
            readout = action_readout or ("oft_aligned" if self.training else self.config.action_readout)
            offset = {"oft_aligned": -1, "lightvla_tail": 1}[readout]
            slots = action_mask.nonzero()[:, 1].view(batch, -1) + n_visual  # positions in the multimodal sequence
            index = pruned.shift_task_positions(slots) + offset
            action_hidden = torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1]))

        return PrismaticActionOutput(
            last_hidden_state=hidden,
            action_hidden_states=action_hidden,
            hidden_states=all_hidden,
            projector_features=patches if output_projector_features else None,
            pruning=self.pruner.last_stats if self.pruner.enabled else None,
        )

    def _run_llm(self, tokens, positions, mask, n_patches: int, output_hidden_states: bool):
        """Pruner + bidirectional LLM -> (hidden, all hidden states or None, the PrunedSequence that was kept).

        The pruner acts on the projected patches before the LLM, or, for pruners with ``prune_after_layer = K > 0``
        (FastV), on the hidden states after the first K decoder layers.
        """
        llama, layer = self.language_model.model, self.pruner.prune_after_layer
        llm_dtype = llama.embed_tokens.weight.dtype  # tokens may arrive wider (fp32 visual tokens at bf16 inference)
        if not layer:
            pruned = self.pruner(tokens, positions, mask, patch_start=1, num_patches=n_patches)
            hidden, all_hidden = bidirectional_llama_forward(
                llama, pruned.tokens.to(llm_dtype), pruned.position_ids, pruned.attention_mask, output_hidden_states,
                key_bias=pruned.key_bias,
            )
            return hidden, all_hidden, pruned
        kept = []

        def select(hidden, position_ids, attention_mask, attention):
            kept.append(self.pruner(hidden, position_ids, attention_mask, 1, n_patches, attention=attention))
            return kept[0]

        hidden, all_hidden = bidirectional_llama_forward(
            llama, tokens.to(llm_dtype), positions, mask, output_hidden_states, prune_after=(layer, select)
        )
        return hidden, all_hidden, kept[0]

    def _project_proprio(self, proprio, projector, batch: int, dtype: torch.dtype) -> torch.Tensor:
        if projector is None:
            raise ValueError("proprio was given without proprio_projector; pass both or neither")
        proprio = torch.as_tensor(proprio).reshape(batch, -1)
        if proprio.shape[1] != projector.proprio_dim:
            raise ValueError(
                f"proprio has {proprio.shape[1]} values per sample, but the proprio projector expects "
                f"{projector.proprio_dim} (action space: {self.action_space})"
            )
        weight = projector.fc1.weight
        return projector(proprio.to(weight.device, weight.dtype)).to(dtype)[:, None, :]  # (B, 1, D)

    # --- inference ---
    @torch.no_grad()  # not inference_mode: returned tensors stay usable in later autograd code
    def predict_action(
        self,
        input_ids: torch.Tensor,
        unnorm_key: str | None = None,
        proprio: np.ndarray | torch.Tensor | None = None,
        proprio_projector: nn.Module | None = None,
        action_head: nn.Module | None = None,
        noisy_action_projector: nn.Module | None = None,
        use_film: bool = False,
        **kwargs: Any,
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Predict an un-normalised action chunk.

        Returns ``(actions, action_hidden_states)``: actions are (chunk, action_dim) for one sample, as upstream, and
        (B, chunk, action_dim) for a batch. The pruner's kept-token statistics are on ``self.pruner.last_stats``.
        """
        if noisy_action_projector is not None or use_film:
            raise NotImplementedError("diffusion and FiLM heads are not implemented; use the L1 regression head")
        if action_head is None:
            raise ValueError("predict_action needs the L1 regression action_head (action_head--*_checkpoint.pt)")
        key = resolve_unnorm_key(self.norm_stats, unnorm_key)
        ids, mask, labels = self.append_action_slots(input_ids, kwargs.get("attention_mask"))
        output = self(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=kwargs.get("pixel_values"),
            labels=labels,
            proprio=proprio,
            proprio_projector=proprio_projector,
        )
        head_dtype = next(action_head.parameters()).dtype
        normalized = action_head.predict_action(output.action_hidden_states.to(head_dtype)).float().cpu().numpy()
        actions = unnormalize(normalized, self.norm_stats[key]["action"], self.action_space.normalization_type)
        return (actions[0] if actions.shape[0] == 1 else actions), output.action_hidden_states

    def get_action_dim(self, unnorm_key: str | None = None) -> int:
        """Upstream's helper on the released model class (kept for code written against it; unused here)."""
        return len(self.get_action_stats(unnorm_key)["min"])

    def get_action_stats(self, unnorm_key: str | None = None) -> dict[str, Any]:
        return self.norm_stats[resolve_unnorm_key(self.norm_stats, unnorm_key)]["action"]
