"""TokenPruner: train/eval selection semantics, gradients, noise, padding-aware batching."""

from __future__ import annotations

import pytest
import torch

from prismatic.models.pruning import TokenPruner

B, P, T, D = 2, 16, 9, 32


def make_sequence(seed: int = 0, batch: int = B):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, 1 + P + T, D, generator=g)
    positions = torch.arange(1 + P + T).expand(batch, -1)
    mask = torch.ones(batch, 1 + P + T, dtype=torch.bool)
    return tokens, positions, mask


def test_has_no_parameters_or_buffers():
    pruner = TokenPruner()
    assert list(pruner.parameters()) == [] and list(pruner.buffers()) == [] and pruner.state_dict() == {}


def test_eval_keeps_exactly_the_union_of_argmaxes_in_order_with_original_positions():
    tokens, positions, mask = make_sequence()
    pruner = TokenPruner().eval()
    out = pruner(tokens, positions, mask, patch_start=1, num_patches=P)
    picks = TokenPruner.score(tokens[:, 1 : 1 + P], tokens[:, 1 + P :], None).argmax(-1)
    for b in range(B):
        expected = torch.unique(picks[b])  # sorted ascending
        kept = pruner.last_stats.kept_indices[b]
        assert torch.equal(kept, expected)
        k = len(kept)
        assert int(pruner.last_stats.kept_counts[b]) == k < P
        assert torch.equal(out.tokens[b, 1 : 1 + k], tokens[b, 1 + expected])
        assert torch.equal(out.position_ids[b, 1 : 1 + k], 1 + expected)  # gaps preserved
        assert (
            out.attention_mask[b, 1 : 1 + k].all() and not out.attention_mask[b, 1 + k : 1 + out.num_patch_slots].any()
        )
    # prefix and task tokens untouched, task positions keep their original ids
    assert torch.equal(out.tokens[:, 0], tokens[:, 0])
    assert torch.equal(out.tokens[:, -T:], tokens[:, -T:])
    assert torch.equal(out.position_ids[:, -T:], positions[:, -T:])
    assert out.tokens.shape[1] == 1 + out.num_patch_slots + T
    assert torch.equal(out.shift_task_positions(torch.tensor([1 + P])), torch.tensor([1 + out.num_patch_slots]))


def test_train_keeps_every_slot_as_a_copy_of_its_pick_with_its_position():
    tokens, positions, mask = make_sequence()
    pruner = TokenPruner().train()
    out = pruner(tokens, positions, mask, patch_start=1, num_patches=P)
    assert out.tokens.shape == tokens.shape and out.num_patch_slots == P
    picks = TokenPruner.score(tokens[:, 1 : 1 + P], tokens[:, 1 + P :], None).argmax(-1)
    for b in range(B):
        torch.testing.assert_close(out.tokens[b, 1 : 1 + P], tokens[b, 1 + picks[b]])
        assert torch.equal(out.position_ids[b, 1 : 1 + P], 1 + picks[b])
    assert int(pruner.last_stats.kept_counts[0]) == len(torch.unique(picks[0]))


def test_train_gradients_reach_patches_and_task_tokens():
    tokens, positions, mask = make_sequence()
    tokens.requires_grad_(True)
    pruner = TokenPruner().train()
    out = pruner(tokens, positions, mask, patch_start=1, num_patches=P)
    (out.tokens[:, 1 : 1 + P] * torch.randn_like(out.tokens[:, 1 : 1 + P])).sum().backward()
    grad = tokens.grad
    assert grad[:, 1 : 1 + P].abs().sum() > 0  # value path (STE) and score path
    assert grad[:, 1 + P :].abs().sum() > 0  # through the queries built from the task tokens


@pytest.mark.parametrize("noise", ["uniform", "gumbel"])
def test_noise_changes_training_picks_and_zero_noise_does_not(noise):
    tokens, positions, mask = make_sequence(batch=1)
    pruner = TokenPruner(noise=noise).train()
    pruner(tokens, positions, mask, 1, P)
    clean = pruner.last_stats.kept_indices[0]
    pruner.set_noise_scale(0.0)
    pruner(tokens, positions, mask, 1, P)
    assert torch.equal(pruner.last_stats.kept_indices[0], clean)
    pruner.set_noise_scale(1e3)  # dominates the scores, so picks become (nearly) random
    torch.manual_seed(0)
    pruner(tokens, positions, mask, 1, P)
    assert not torch.equal(pruner.last_stats.kept_indices[0], clean)


def test_eval_ignores_noise():
    tokens, positions, mask = make_sequence()
    pruner = TokenPruner().eval()
    a = pruner(tokens, positions, mask, 1, P).tokens
    pruner.set_noise_scale(1e3)
    assert torch.equal(pruner(tokens, positions, mask, 1, P).tokens, a)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_rejects_invalid_noise_scale(bad):
    with pytest.raises(ValueError, match="noise_scale"):
        TokenPruner().set_noise_scale(bad)


def test_padding_in_task_segment_does_not_change_the_selection():
    tokens, positions, mask = make_sequence(batch=1)
    pruner = TokenPruner().eval()
    pruner(tokens, positions, mask, 1, P)
    alone = pruner.last_stats.kept_indices[0]
    padded = torch.cat([tokens, torch.randn(1, 5, D) * 10], 1)
    padded_mask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.bool)], 1)
    pruner(padded, torch.arange(padded.shape[1])[None], padded_mask, 1, P)
    assert torch.equal(pruner.last_stats.kept_indices[0], alone)


def test_disabled_pruner_is_the_identity():
    tokens, positions, mask = make_sequence()
    out = TokenPruner(enabled=False).eval()(tokens, positions, mask, 1, P)
    assert out.tokens is tokens and out.num_patch_slots == P


def test_unknown_noise_distribution_is_rejected():
    with pytest.raises(ValueError, match="uniform"):
        TokenPruner(noise="gaussian")
