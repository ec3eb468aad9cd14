"""FLOPs per component (prismatic/policy/efficiency.py, behind scripts/count_flops.py) against a hand count, and its
7B figure (meta device, no weights)."""

import pytest

from prismatic.policy.efficiency import FlopsSetup, component_flops


def llm_by_hand(layers: int, dim: int, intermediate: int, seq: int) -> int:
    """Per layer: q, k, v, o projections (4 x 2 S D^2), gate/up/down (3 x 2 S D I), QK^T and AV (2 x 2 S^2 D)."""
    return layers * (8 * seq * dim * dim + 6 * seq * dim * intermediate + 4 * seq * seq * dim)


@pytest.mark.parametrize("kept", [None, 40])
def test_llm_flops_match_the_hand_count(kept):
    cfg = FlopsSetup(preset="tiny", prompt_tokens=20)
    result = component_flops(cfg, kept)
    # tiny preset: 4 layers, width 128, MLP 344, 4 heads with full key/value heads
    assert result["llm"] == llm_by_hand(4, 128, 344, result["llm_sequence_length"])
    expected_len = 1 + (512 if kept is None else kept) + 1 + (20 - 1) + 56 + 1
    assert result["llm_sequence_length"] == expected_len
    parts = [v for k, v in result.items() if k not in ("total", "llm_sequence_length")]
    assert result["total"] == sum(parts)


def test_released_7b_configuration():
    cfg = FlopsSetup(preset="openvla-7b-oft")
    unpruned, pruned = component_flops(cfg, None), component_flops(cfg, 78)
    assert unpruned["total"] / 1e12 == pytest.approx(8.8, abs=0.1)  # the paper's figure for OpenVLA-OFT
    assert pruned["vision_backbone"] == unpruned["vision_backbone"]  # pruning happens after the vision encoder
    assert pruned["llm_sequence_length"] == unpruned["llm_sequence_length"] - (512 - 78)
    assert 0.3 < pruned["total"] / unpruned["total"] < 0.45


def test_fastv_flops_count_the_full_layers_and_its_attention_recompute():
    cfg = FlopsSetup(preset="tiny", prompt_tokens=20, pruner="fastv", fastv_layer=1)
    result = component_flops(cfg, 40)
    full = 1 + 512 + 1 + (20 - 1) + 56 + 1
    short = full - 512 + 40
    task = full - 1 - 512  # FastV's queries: the tokens after the patches
    # q for the task queries, k for every token, QK^T of those queries (width 128)
    attention = 2 * task * 128 * 128 + 2 * full * 128 * 128 + 2 * task * full * 128
    assert result["llm"] == llm_by_hand(1, 128, 344, full) + llm_by_hand(3, 128, 344, short) + attention
    assert result["llm_sequence_length"] == short and "pruner_scoring" not in result


def test_unknown_pruner_is_refused():
    with pytest.raises(ValueError, match="--pruner must be one of"):
        FlopsSetup(pruner="sparsevlm")
