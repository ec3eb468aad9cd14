"""LoRA adapters through peft, as upstream configures them, and the merged weights for released-style checkpoints."""

import torch
from torch import nn

ADAPTER = "default"


def apply_lora(vla: nn.Module, rank: int, dropout: float = 0.0) -> nn.Module:
    """Wrap `vla` with LoRA on all its linear layers: alpha = min(rank, 16), Gaussian A, zero B (spec §6.3).

    peft's "all-linear" leaves out the output embedding (`lm_head`), which the L1-regression path never uses.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=min(rank, 16),
        lora_dropout=dropout,
        target_modules="all-linear",
        init_lora_weights="gaussian",
    )
    return get_peft_model(vla, config)


def merged_state_dict(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict with every LoRA delta added in, under the original (un-wrapped) key names, on the
    CPU (in the base weights' dtype).

    Computed out of place: the training model keeps its separate base and adapter weights bit for bit (merging and
    unmerging in place would perturb them and break exact resumption). One layer's delta exists on the model's
    device at a time and each merged tensor goes straight to host memory, so saving a 7B model needs no second copy
    of it on the GPU.
    """
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    lora_layers = {
        f"{name}.base_layer.weight": module
        for name, module in base.named_modules()
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A
    }
    merged = {}
    with torch.no_grad():
        for key, value in base.state_dict().items():
            if ".lora_" in key:
                continue
            if key in lora_layers:
                value = value + lora_layers[key].get_delta_weight(ADAPTER).to(value.dtype)
            merged[key.replace(".base_layer.", ".")] = value.detach().to("cpu", copy=True)
    return merged
