"""Bidirectional forward pass over a stock ``transformers`` Llama model.

OpenVLA-OFT decodes all action slots in one pass with *bidirectional* attention; upstream gets it from a fork of
transformers 4.40.1 whose SDPA path drops the causal mask (a stock install silently turns the model causal). Here the
attention is computed in our own code from the stock modules' weights (q/k/v/o projections, RMSNorms, MLP, rotary
embedding), so any current transformers release works and peft's LoRA wrappers on those projections still apply.

Attention: every query sees every key whose ``attention_mask`` is True (key-side padding mask), with RoPE from
explicit ``position_ids`` that may have gaps (pruned patches) or repeats (train-mode pruning); an optional per-key
bias is added to the attention logits (a kept patch that stands for several picks, ``pruning.count_bias``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

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


def attention_probabilities(
    layer: nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    key_mask: torch.Tensor | None,
    query_start: int = 0,
) -> torch.Tensor:
    """The attention weights ``layer`` computes on its input ``hidden`` for the queries from ``query_start`` on,
    averaged over heads: (B, S - query_start, S) (query, key).

    The fused SDPA kernel does not return weights, so they are recomputed here (for FastV-style scoring only).
    """
    attn = layer.self_attn
    batch, seq, _ = hidden.shape
    x = layer.input_layernorm(hidden)
    q = attn.q_proj(x[:, query_start:]).view(batch, seq - query_start, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(batch, seq, -1, attn.head_dim).transpose(1, 2)  # (B, H_kv, S, hd)
    q, _ = apply_rope(q, q, cos[:, query_start:].to(q.dtype), sin[:, query_start:].to(q.dtype))
    _, k = apply_rope(k, k, cos.to(k.dtype), sin.to(k.dtype))
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # grouped-query attention: share each K head
    logits = (q @ k.transpose(-1, -2)).float() * attn.head_dim**-0.5  # (B, H, S_q, S)
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask, float("-inf"))
    return logits.softmax(-1).mean(1)


# Selects tokens between two decoder layers: (hidden, position_ids, attention_mask, a callable giving the last
# full-length layer's attention weights averaged over heads, ``attention(query_start=0)``) -> PrunedSequence.
LayerSelect = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Callable[..., torch.Tensor]], Any]


def bidirectional_llama_forward(
    llama: nn.Module,
    inputs_embeds: torch.Tensor,
    position_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    output_hidden_states: bool = False,
    prune_after: tuple[int, LayerSelect] | None = None,
    key_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Run ``LlamaModel`` layers bidirectionally.

    Returns the final-normed hidden states (B, S, D) and, when asked, the HF-style tuple
    ``(embeddings, layer_0_out, ..., final_normed)`` of length ``num_layers + 1``.

    ``prune_after=(K, select)`` shortens the sequence after the first K layers (FastV): ``select`` gets the hidden
    states, positions, mask and a callable for layer K's attention weights, and returns the kept sequence, which the
    remaining layers run on (hidden states collected after that point are shorter). ``key_bias`` (B, S) is added to
    every query's logit of each key (not with ``prune_after``).
    """
    if key_bias is not None and prune_after is not None:
        raise ValueError("key_bias applies to the input sequence; it cannot be combined with prune_after")
    hidden = inputs_embeds
    cos, sin = llama.rotary_emb(hidden, position_ids)  # (B, S, hd) each
    # None: no padding (also what FLOP counting on the meta device passes, where masks cannot be inspected)
    mask = attention_mask.bool() if attention_mask is not None else None
    key_mask = _key_mask(mask, key_bias, hidden.dtype)
    collected = [hidden] if output_hidden_states else None
    prune_layer, select = prune_after if prune_after is not None else (-1, None)
    for index, layer in enumerate(llama.layers, start=1):
        layer_input = hidden
        if getattr(layer, "gradient_checkpointing", False) and torch.is_grad_enabled() and layer.training:
            hidden = checkpoint(decoder_layer_forward, layer, hidden, cos, sin, key_mask, use_reentrant=False)
        else:
            hidden = decoder_layer_forward(layer, hidden, cos, sin, key_mask)
        if index == prune_layer:
            if mask is None:
                mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
            # Lazy, so that the cost of recomputing the weights is part of the selection's own cost.
            attention = partial(attention_probabilities, layer, layer_input, cos, sin, key_mask)
            kept = select(hidden, position_ids, mask, attention)
            hidden, position_ids, mask = kept.tokens, kept.position_ids, kept.attention_mask
            cos, sin = llama.rotary_emb(hidden, position_ids)
            key_mask = _key_mask(mask)
        if collected is not None:
            collected.append(hidden)
    hidden = llama.norm(hidden)
    if collected is not None:
        collected[-1] = hidden
    return hidden, (tuple(collected) if collected is not None else None)


def _key_mask(
    mask: torch.Tensor | None, bias: torch.Tensor | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor | None:
    """(B, S) bool [+ (B, S) bias] -> (B, 1, 1, S) for SDPA: bool (True = attend) without a bias, else the additive
    float mask (bias, -inf on masked keys); None when nothing is masked or biased."""
    if bias is not None:
        bias = bias.to(dtype)
        return (bias if mask is None else bias.masked_fill(~mask, float("-inf")))[:, None, None, :]
    if mask is None or (mask.device.type != "meta" and bool(mask.all())):
        return None
    return mask[:, None, None, :]
