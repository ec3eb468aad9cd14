"""TokenPruner: the score against an independent reference, train/eval selection, noise statistics, batching."""

from __future__ import annotations

import math

import pytest
import torch

from prismatic.models.pruning import TokenPruner, gumbel_from_uniform

B, P, T, D = 2, 16, 9, 32


def make_sequence(seed: int = 0, batch: int = B):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, 1 + P + T, D, generator=g)
    positions = torch.arange(1 + P + T).expand(batch, -1)
    mask = torch.ones(batch, 1 + P + T, dtype=torch.bool)
    return tokens, positions, mask


def reference_score(patches: torch.Tensor, task: torch.Tensor, task_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The documented formula written out in float64, sample by sample and patch by patch.

    RMS-normalise patches and task tokens; each patch's query is its single-head attention (scale 1/sqrt(D)) over
    the non-padding task tokens; RMS-normalise the queries; score[i, j] = query_i . patch_j / sqrt(D).
    """
    patches, task = patches.double(), task.double()
    batch, num_patches, width = patches.shape
    scale = 1 / math.sqrt(width)

    def rms(x):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)

    score = torch.zeros(batch, num_patches, num_patches, dtype=torch.float64)
    for b in range(batch):
        keys = rms(task[b] if task_mask is None else task[b][task_mask[b]])  # (T_b, D)
        p = rms(patches[b])
        for i in range(num_patches):
            logits = torch.einsum("d,td->t", p[i], keys) * scale
            weights = torch.exp(logits - logits.max())
            query = rms(torch.einsum("t,td->d", weights / weights.sum(), keys))
            score[b, i] = torch.einsum("d,jd->j", query, p) * scale
    return score


def reference_picks(tokens, mask=None):
    task_mask = None if mask is None else mask[:, 1 + P :]
    return reference_score(tokens[:, 1 : 1 + P], tokens[:, 1 + P :], task_mask).argmax(-1)


def test_has_no_parameters_or_buffers():
    pruner = TokenPruner()
    assert list(pruner.parameters()) == [] and list(pruner.buffers()) == [] and pruner.state_dict() == {}


def test_score_equals_the_reference_formula():
    tokens, _, _ = make_sequence()
    tokens = tokens * torch.linspace(0.2, 5.0, D)  # uneven scales: RMS normalisation matters
    got = TokenPruner.score(tokens[:, 1 : 1 + P], tokens[:, 1 + P :], None)
    torch.testing.assert_close(
        got.double(), reference_score(tokens[:, 1 : 1 + P], tokens[:, 1 + P :]), atol=1e-5, rtol=1e-5
    )
    # with padding: the masked task tokens take no part, whatever they hold
    task_mask = torch.ones(B, T, dtype=torch.bool)
    task_mask[0, -3:] = False
    task_mask[1, -1:] = False
    padded_task = torch.where(task_mask[..., None], tokens[:, 1 + P :], torch.randn(B, T, D) * 100)
    got = TokenPruner.score(tokens[:, 1 : 1 + P], padded_task, task_mask)
    expected = reference_score(tokens[:, 1 : 1 + P], padded_task, task_mask)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_eval_keeps_exactly_the_union_of_argmaxes_in_order_with_original_positions():
    tokens, positions, mask = make_sequence()
    pruner = TokenPruner().eval()
    out = pruner(tokens, positions, mask, patch_start=1, num_patches=P)
    picks = reference_picks(tokens)
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
    picks = reference_picks(tokens)
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


# --- noise ------------------------------------------------------------------------------------------------------------
# Fixed 4 x 4 score matrices (row = query, column = candidate patch), fed to the train-mode forward in place of the
# computed scores; a batch of N copies gives N independent draws. The picks are read from the output position ids.
GUMBEL_SCORES = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.5, 1.5, 0.2], [1.0, 1.0, 0.3, 0.9], [-0.5, 0.0, 0.5, 2.5]])
# Near-ties, so that uniform noise of scale 0.5 or 1 changes the picks and the scale is visible in the frequencies.
UNIFORM_SCORES = torch.tensor(
    [[0.0, 0.2, 0.5, 0.45], [0.3, 0.0, 0.1, 0.25], [0.9, 0.1, 0.6, 0.7], [0.0, 0.0, 0.05, 0.6]]
)
DRAWS = 40_000


def train_picks(pruner: TokenPruner, scores: torch.Tensor, draws: int) -> torch.Tensor:
    """(draws, Q) picks of the train-mode forward when the pruner's scores are ``scores`` (Q x Q)."""
    q = scores.shape[0]
    pruner.score = lambda patches, task, task_mask: scores.expand(patches.shape[0], -1, -1)
    tokens = torch.zeros(draws, 1 + q + 2, 4)
    positions = torch.arange(1 + q + 2).expand(draws, -1)
    out = pruner.train()(tokens, positions, torch.ones(draws, 1 + q + 2, dtype=torch.bool), 1, q)
    return out.position_ids[:, 1 : 1 + q] - 1


def frequencies(picks: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(N, Q) picks -> (Q, P): how often each query picked each patch."""
    return torch.nn.functional.one_hot(picks, num_patches).double().mean(0)


def binomial_tolerance(p: torch.Tensor, n_effective: float) -> torch.Tensor:
    """4.5 standard deviations of a frequency estimated from n draws (+2/n so impossible picks need not be exact):
    with 16 cells per test, a correct implementation fails with probability ~1e-4 (and the seeds are fixed)."""
    return 4.5 * torch.sqrt(p * (1 - p) / n_effective) + 2 / n_effective


def test_gumbel_noise_at_scale_one_samples_the_softmax():
    """Gumbel-max: argmax_j(s_ij + g_ij) with standard Gumbel g is distributed as softmax(s_i)."""
    pruner = TokenPruner(noise="gumbel")
    pruner.set_noise_scale(1.0)
    torch.manual_seed(0)
    observed = frequencies(train_picks(pruner, GUMBEL_SCORES, DRAWS), 4)
    expected = GUMBEL_SCORES.double().softmax(-1)
    deviation = (observed - expected).abs()
    assert (deviation <= binomial_tolerance(expected, DRAWS)).all(), f"observed\n{observed}\nexpected\n{expected}"


def test_gumbel_transform_is_finite_on_all_of_its_domain():
    below_one = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))
    u = torch.tensor([0.0, torch.finfo(torch.float32).tiny, 1e-30, 1e-7, 0.5, 0.999, float(below_one)])
    g = gumbel_from_uniform(u)
    assert torch.isfinite(g).all(), g
    assert g[0] == g[1] and torch.all(g[2:] > g[1:-1])  # u = 0 counts as the smallest normal; then increasing
    torch.testing.assert_close(g[4], -torch.log(torch.log(torch.tensor(2.0))))  # -log(-log(1/2))


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_uniform_noise_matches_an_independent_monte_carlo(scale):
    """upstream: argmax_j(s_ij + scale * U[0, 1)); compared with the same computed here from its own draws."""
    pruner = TokenPruner(noise="uniform")
    pruner.set_noise_scale(scale)
    torch.manual_seed(1)
    observed = frequencies(train_picks(pruner, UNIFORM_SCORES, DRAWS), 4)
    noise = torch.rand(DRAWS, 4, 4, generator=torch.Generator().manual_seed(2))
    expected = frequencies((UNIFORM_SCORES + scale * noise).argmax(-1), 4)
    pooled = (observed + expected) / 2
    deviation = (observed - expected).abs()
    assert (deviation <= binomial_tolerance(pooled, DRAWS / 2)).all(), f"observed\n{observed}\nexpected\n{expected}"


def test_uniform_noise_is_added_draw_for_draw():
    """Subtracting U gives the same pick frequencies (U and 1 - U are alike), so check the very draws: the noise is
    ``scale * torch.rand_like(scores)`` from torch's global generator, added to the scores."""
    pruner = TokenPruner(noise="uniform")
    pruner.set_noise_scale(0.5)
    torch.manual_seed(3)
    picks = train_picks(pruner, UNIFORM_SCORES, 500)
    torch.manual_seed(3)
    expected = (UNIFORM_SCORES + 0.5 * torch.rand(500, 4, 4)).argmax(-1)
    assert torch.equal(picks, expected)


def test_zero_noise_keeps_the_clean_picks():
    tokens, positions, mask = make_sequence(batch=1)
    pruner = TokenPruner().train()
    pruner.set_noise_scale(0.0)
    pruner(tokens, positions, mask, 1, P)
    assert torch.equal(pruner.last_stats.kept_indices[0], torch.unique(reference_picks(tokens)[0]))


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
    assert torch.equal(alone, torch.unique(reference_picks(tokens)[0]))
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


def test_unique_training_slots_show_each_pick_once():
    tokens, positions, mask = make_sequence()
    pruner = TokenPruner(train_duplicates="unique").train()
    out = pruner(tokens, positions, mask, patch_start=1, num_patches=P)
    picks = reference_picks(tokens)
    for b in range(B):
        visible = out.attention_mask[b, 1 : 1 + P]
        first = [i for i in range(P) if int(picks[b, i]) not in picks[b, :i].tolist()]
        assert visible.nonzero()[:, 0].tolist() == first  # the first slot of every distinct pick, nothing else
        assert sorted(out.position_ids[b, 1 : 1 + P][visible].tolist()) == (1 + torch.unique(picks[b])).tolist()
    with pytest.raises(ValueError, match="train_duplicates"):
        TokenPruner(train_duplicates="drop")


def test_count_weighting_biases_each_kept_patch_by_the_log_of_its_picks():
    tokens, positions, mask = make_sequence()
    mask[1, -3:] = False  # right padding in the task segment of one sample
    picks = reference_picks(tokens, mask)
    once = TokenPruner().eval()(tokens, positions, mask, patch_start=1, num_patches=P)
    counted = TokenPruner(eval_duplicates="count").eval()(tokens, positions, mask, patch_start=1, num_patches=P)
    assert once.key_bias is None
    torch.testing.assert_close(counted.tokens, once.tokens)  # the same patches are kept
    for b in range(B):
        kept = torch.unique(picks[b])
        expected = torch.tensor([math.log(int((picks[b] == j).sum())) for j in kept])
        slots = counted.key_bias[b, 1 : 1 + len(kept)]
        torch.testing.assert_close(slots, expected.float())
        assert counted.key_bias[b, 1 + len(kept) :].abs().sum() == 0 and counted.key_bias[b, 0] == 0
    with pytest.raises(ValueError, match="eval_duplicates"):
        TokenPruner(eval_duplicates="twice")
