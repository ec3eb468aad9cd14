"""Training-free baselines (random_k, text_topk, fastv): budget, order and positions, batching, the model path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_model import observation_inputs, predict

from prismatic.models.pruning_baselines import (
    BASELINE_PRUNERS,
    FastVPruner,
    RandomKPruner,
    TextTopKPruner,
    make_pruner,
    set_visual_token_pruner,
)

B, P, T, D = 3, 16, 9, 32
TASKS = ["pick up the soup", "put both the alphabet soup and the tomato sauce in the basket", "open the drawer"]


def make_sequence(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(B, 1 + P + T, D, generator=g)
    positions = torch.arange(1 + P + T).expand(B, -1)
    return tokens, positions, torch.ones(B, 1 + P + T, dtype=torch.bool)


def fake_attention(seed: int = 1):
    """A stand-in for the LLM's attention weights (B, S_q, S), returned for the queries from ``query_start`` on."""
    weights = torch.rand(B, 1 + P + T, 1 + P + T, generator=torch.Generator().manual_seed(seed)).softmax(-1)
    return lambda query_start=0: weights[:, query_start:], weights


@pytest.mark.parametrize("name", BASELINE_PRUNERS)
def test_budget_order_and_positions(name):
    tokens, positions, mask = make_sequence()
    attention, _ = fake_attention()
    pruner = make_pruner(name, budget=5)
    out = pruner(tokens, positions, mask, 1, P, attention=attention if name == "fastv" else None)
    assert out.num_patch_slots == 5 and out.tokens.shape == (B, 1 + 5 + T, D)
    assert pruner.last_stats.kept_counts.tolist() == [5] * B
    for b in range(B):
        kept = pruner.last_stats.kept_indices[b]
        assert torch.equal(kept, torch.sort(torch.unique(kept)).values) and len(kept) == 5  # sorted, distinct
        assert torch.equal(out.tokens[b, 1:6], tokens[b, 1 + kept])  # original order
        assert torch.equal(out.position_ids[b, 1:6], 1 + kept)  # original position ids, gaps kept
    assert torch.equal(out.tokens[:, -T:], tokens[:, -T:]) and torch.equal(out.position_ids[:, -T:], positions[:, -T:])
    assert out.attention_mask.all()


def test_text_topk_keeps_the_patches_the_task_attends_to_most():
    tokens, positions, mask = make_sequence()
    tokens[:, 1 + P :] = tokens[:, 1 + 7 : 1 + 8].expand(-1, T, -1)  # every task token equals patch 7
    tokens[:, 1 + 3] = 2 * tokens[:, 1 + 7]  # patch 3 points the same way (RMS norm ignores the scale)
    pruner = TextTopKPruner(2)
    pruner(tokens, positions, mask, 1, P)
    assert all(k.tolist() == [3, 7] for k in pruner.last_stats.kept_indices)


def test_text_topk_ignores_padding_tokens():
    tokens, positions, mask = make_sequence()
    pruner = TextTopKPruner(6)
    pruner(tokens, positions, mask, 1, P)
    expected = pruner.last_stats.kept_indices
    padded = torch.cat([tokens, torch.randn(B, 4, D) * 50], 1)
    pad_mask = torch.cat([mask, torch.zeros(B, 4, dtype=torch.bool)], 1)
    pruner(padded, torch.arange(padded.shape[1]).expand(B, -1), pad_mask, 1, P)
    assert all(torch.equal(a, b) for a, b in zip(expected, pruner.last_stats.kept_indices))


def test_fastv_ranks_patches_by_the_attention_the_task_tokens_give_them():
    tokens, positions, mask = make_sequence()
    attention, weights = fake_attention()
    pruner = FastVPruner(4)
    pruner(tokens, positions, mask, 1, P, attention=attention)
    received = weights[:, 1 + P :, 1 : 1 + P].mean(1)  # task queries -> patch keys
    expected = received.topk(4, dim=1).indices.sort(dim=1).values
    assert torch.equal(torch.stack(pruner.last_stats.kept_indices), expected)
    with pytest.raises(ValueError, match="inside the LLM"):
        pruner(tokens, positions, mask, 1, P)


def test_random_k_is_reproducible_per_seed_and_differs_across_calls():
    tokens, positions, mask = make_sequence()
    pruner = RandomKPruner(5, seed=3)
    pruner(tokens, positions, mask, 1, P)
    first = pruner.last_stats.kept_indices
    pruner(tokens, positions, mask, 1, P)
    assert any(not torch.equal(a, b) for a, b in zip(first, pruner.last_stats.kept_indices))
    pruner.reseed()
    pruner(tokens, positions, mask, 1, P)
    assert all(torch.equal(a, b) for a, b in zip(first, pruner.last_stats.kept_indices))


@pytest.mark.parametrize("name", ["text_topk", "fastv"])
def test_batch_matches_each_sample_alone(processor, tiny_policy, name):
    vla, head, proprio_projector = tiny_policy
    set_visual_token_pruner(vla, make_pruner(name, budget=40))
    proprio = np.random.default_rng(0).uniform(-1, 1, (3, 8)).astype(np.float32)
    batched, _ = predict(vla, head, proprio_projector, observation_inputs(processor, TASKS, [0, 1, 2]), proprio)
    batch_kept = vla.pruner.last_stats.kept_indices
    for i, task in enumerate(TASKS):
        single, _ = predict(vla, head, proprio_projector, observation_inputs(processor, [task], [i]), proprio[i])
        np.testing.assert_allclose(batched[i], single, atol=1e-5)
        assert torch.equal(vla.pruner.last_stats.kept_indices[0], batch_kept[i])
    assert vla.pruner.last_stats.kept_counts.tolist() == [40]


def test_random_k_batch_matches_the_first_sample_alone(processor, tiny_policy):
    vla, head, proprio_projector = tiny_policy
    pruner = make_pruner("random_k", budget=40, seed=5)
    set_visual_token_pruner(vla, pruner)
    proprio = np.zeros((3, 8), dtype=np.float32)
    batched, _ = predict(vla, head, proprio_projector, observation_inputs(processor, TASKS, [0, 1, 2]), proprio)
    pruner.reseed()
    single, _ = predict(vla, head, proprio_projector, observation_inputs(processor, TASKS[:1], [0]), proprio[0])
    np.testing.assert_allclose(batched[0], single, atol=1e-5)


@pytest.mark.parametrize("name", BASELINE_PRUNERS)
def test_a_budget_of_every_patch_is_the_unpruned_model(processor, tiny_policy, name):
    vla, head, proprio_projector = tiny_policy
    inputs = observation_inputs(processor, TASKS[:2], [0, 1])
    proprio = np.zeros((2, 8), dtype=np.float32)
    set_visual_token_pruner(vla, make_pruner("none"))
    unpruned, _ = predict(vla, head, proprio_projector, inputs, proprio)
    set_visual_token_pruner(vla, make_pruner(name, budget=vla.get_num_patches()))
    everything, _ = predict(vla, head, proprio_projector, inputs, proprio)
    np.testing.assert_allclose(everything, unpruned, atol=1e-5)


def test_fastv_runs_the_first_k_layers_on_every_token(processor, tiny_policy):
    vla, _, _ = tiny_policy
    inputs = observation_inputs(processor, TASKS[:1], [0])
    ids, mask, labels = vla.append_action_slots(inputs["input_ids"], inputs["attention_mask"])
    set_visual_token_pruner(vla, make_pruner("none"))
    full = vla(ids, mask, inputs["pixel_values"], labels, output_hidden_states=True).hidden_states
    set_visual_token_pruner(vla, make_pruner("fastv", budget=30, fastv_layer=2))
    pruned = vla(ids, mask, inputs["pixel_values"], labels, output_hidden_states=True).hidden_states
    kept = vla.pruner.last_stats.kept_indices[0]
    # (embeddings, layer 1, layer 2 = pruned here, layer 3, final): up to layer 2 the values are the unpruned ones
    torch.testing.assert_close(pruned[1], full[1])
    task = full[2].shape[1] - 1 - 512
    torch.testing.assert_close(pruned[2], torch.cat([full[2][:, :1], full[2][:, 1 + kept], full[2][:, -task:]], 1))
    assert pruned[-1].shape[1] == 1 + 30 + task
    assert not torch.allclose(pruned[-1][:, -task:], full[-1][:, -task:])  # the later layers see fewer tokens


def test_bad_settings_are_refused_with_a_message(tiny_policy):
    vla, _, _ = tiny_policy
    with pytest.raises(ValueError, match="unknown visual token pruner 'fastvv'"):
        make_pruner("fastvv", 10)
    with pytest.raises(ValueError, match="needs a token budget"):
        make_pruner("random_k")
    with pytest.raises(ValueError, match="at least 1"):
        make_pruner("text_topk", 0)
    with pytest.raises(ValueError, match="the LLM has 4 layers"):
        set_visual_token_pruner(vla, make_pruner("fastv", 10, fastv_layer=4))
    with pytest.raises(RuntimeError, match="training-free"):
        make_pruner("random_k", 10).set_noise_scale(0.5)
