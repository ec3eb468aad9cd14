"""Bidirectional forward pass over a stock ``transformers`` Llama model.

OpenVLA-OFT decodes all action slots in one pass with *bidirectional* attention; upstream gets it from a fork of
transformers 4.40.1 whose SDPA path drops the causal mask (a stock install silently turns the model causal). Here the
attention is computed in our own code from the stock modules' weights (q/k/v/o projections, RMSNorms, MLP, rotary
embedding), so any current transformers release works and peft's LoRA wrappers on those projections still apply.

Attention: every query sees every key whose ``attention_mask`` is True (key-side padding mask), with RoPE from
explicit ``position_ids`` that may have gaps (pruned patches) or repeats (train-mode pruning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q, k: (B, H, S, hd); cos, sin: (B, S, hd)."""
    cos, sin = cos[:, None], sin[:, None]
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def decoder_layer_forward(
    layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """One Llama decoder layer with full (non-causal) attention. hidden: (B, S, D) -> (B, S, D)."""
    attn = layer.self_attn
    batch, seq, _ = hidden.shape
    x = layer.input_layernorm(hidden)
    q = attn.q_proj(x).view(batch, seq, -1, attn.head_dim).transpose(1, 2)  # (B, H, S, hd)
    k = attn.k_proj(x).view(batch, seq, -1, attn.head_dim).transpose(1, 2)  # (B, H_kv, S, hd)
    v = attn.v_proj(x).view(batch, seq, -1, attn.head_dim).transpose(1, 2)
    q, k = apply_rope(q, k, cos.to(q.dtype), sin.to(q.dtype))
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=key_mask,
        dropout_p=attn.attention_dropout if attn.training else 0.0,
        is_causal=False,
        enable_gqa=k.shape[1] != q.shape[1],
    )
    hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def bidirectional_llama_forward(
    llama: nn.Module,
    inputs_embeds: torch.Tensor,
    position_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    output_hidden_states: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Run ``LlamaModel`` layers bidirectionally.

    Returns the final-normed hidden states (B, S, D) and, when asked, the HF-style tuple
    ``(embeddings, layer_0_out, ..., final_normed)`` of length ``num_layers + 1``.
    """
    hidden = inputs_embeds
    cos, sin = llama.rotary_emb(hidden, position_ids)  # (B, S, hd) each
    # None: no padding (also what FLOP counting on the meta device passes, where masks cannot be inspected)
    mask = attention_mask.bool() if attention_mask is not None else None
    key_mask = None if mask is None or bool(mask.all()) else mask[:, None, None, :]  # (B, 1, 1, S): True = attend
    collected = [hidden] if output_hidden_states else None
    for layer in llama.layers:
        if getattr(layer, "gradient_checkpointing", False) and torch.is_grad_enabled() and layer.training:
            hidden = checkpoint(decoder_layer_forward, layer, hidden, cos, sin, key_mask, use_reentrant=False)
        else:
            hidden = decoder_layer_forward(layer, hidden, cos, sin, key_mask)
        if collected is not None:
            collected.append(hidden)
    hidden = llama.norm(hidden)
    if collected is not None:
        collected[-1] = hidden
    return hidden, (tuple(collected) if collected is not None else None)
