"""The tiny preset end to end: forward/loss, predict_action, batching, read-out, bidirectionality, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PROMPT, UNNORM_KEY, random_image

from prismatic.policy.checkpoints import CheckpointError, load_policy, save_policy
from prismatic.vla.constants import IGNORE_INDEX
from prismatic.vla.normalization import unnormalize


def observation_inputs(processor, tasks, seeds):
    images = [[random_image(s), random_image(s + 100)] for s in seeds]
    return processor([PROMPT.format(t) for t in tasks], images)


def predict(vla, head, proprio_projector, inputs, proprio):
    return vla.predict_action(
        **inputs, unnorm_key=UNNORM_KEY, proprio=proprio, proprio_projector=proprio_projector, action_head=head
    )


def training_batch(processor, vla, batch=2):
    """Prompt + action token ids + STOP, labels only on actions and STOP, right padded (as the training collator)."""
    inputs = observation_inputs(
        processor, ["pick up the soup", "open the top drawer of the cabinet"][:batch], range(batch)
    )
    ids, mask, labels = vla.append_action_slots(inputs["input_ids"], inputs["attention_mask"])
    rng = torch.Generator().manual_seed(0)
    actions = labels > vla.action_token_begin_idx
    random_tokens = torch.randint(vla.action_token_begin_idx + 1, vla.action_token_begin_idx + 1 + vla.config.n_action_bins, ids.shape, generator=rng)
    ids = torch.where(actions, random_tokens, ids)
    labels = torch.where(actions, random_tokens, labels)
    return ids, mask, labels, inputs["pixel_values"]


def test_train_forward_gives_an_l1_loss_with_gradients(processor, tiny_policy):
    vla, head, proprio_projector = tiny_policy
    vla.train(), head.train(), proprio_projector.train()
    vla.pruner.set_noise_scale(1.0)
    ids, mask, labels, pixel_values = training_batch(processor, vla)
    out = vla(ids, mask, pixel_values, labels, proprio=torch.randn(2, 8), proprio_projector=proprio_projector)
    space = vla.action_space
    assert out.action_hidden_states.shape == (2, space.num_action_tokens, vla.llm_dim)
    assert out.last_hidden_state.shape[1] == ids.shape[1] + vla.get_num_patches() + 1  # nothing dropped in training
    predicted = head.predict_action(out.action_hidden_states)
    loss = torch.nn.functional.l1_loss(predicted, torch.rand(2, space.num_actions_chunk, space.action_dim))
    assert torch.isfinite(loss)
    loss.backward()
    for module in (vla.projector.fc1, vla.vision_backbone.featurizer.blocks[0].attn.qkv, head.model.fc1,
                   proprio_projector.fc1, vla.language_model.model.layers[0].self_attn.q_proj):  # fmt: skip
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0


def test_predict_action_returns_unnormalized_chunk_and_prunes(processor, tiny_policy):
    vla, head, proprio_projector = tiny_policy
    inputs = observation_inputs(processor, ["pick up the soup"], [0])
    actions, hidden = predict(vla, head, proprio_projector, inputs, np.zeros(8, np.float32))
    assert actions.shape == (8, 7) and actions.dtype == np.float32
    expected = unnormalize(
        head.predict_action(hidden).detach().numpy(),
        vla.norm_stats[UNNORM_KEY]["action"],
        vla.action_space.normalization_type,
    )[0]
    np.testing.assert_allclose(actions, expected, rtol=1e-6)
    assert not np.allclose(
        actions[:, :6], head.predict_action(hidden).detach().numpy()[0, :, :6]
    )  # statistics were applied
    kept = int(vla.pruner.last_stats.kept_counts[0])
    assert 1 <= kept < vla.get_num_patches() == 512


def test_batch_matches_each_sample_alone(processor, tiny_policy):
    vla, head, proprio_projector = tiny_policy
    tasks = ["pick up the soup", "put both the alphabet soup and the tomato sauce in the basket", "open the drawer"]
    proprio = np.random.default_rng(0).uniform(-1, 1, (3, 8)).astype(np.float32)
    batched, _ = predict(vla, head, proprio_projector, observation_inputs(processor, tasks, [0, 1, 2]), proprio)
    batch_counts = vla.pruner.last_stats.kept_counts.tolist()
    singles, single_counts = [], []
    for i, task in enumerate(tasks):
        actions, _ = predict(vla, head, proprio_projector, observation_inputs(processor, [task], [i]), proprio[i])
        singles.append(actions)
        single_counts.append(int(vla.pruner.last_stats.kept_counts[0]))
    assert batched.shape == (3, 8, 7)
    assert batch_counts == single_counts and len(set(single_counts)) > 1  # samples really kept different counts
    np.testing.assert_allclose(batched, np.stack(singles), atol=1e-5)


@pytest.mark.parametrize("readout,offset", [("oft_aligned", -1), ("lightvla_tail", 1)])
@pytest.mark.parametrize("prune", [False, True])
def test_action_readout_positions_with_proprio_and_padding(processor, tiny_policy, readout, offset, prune):
    """Each sample ends [..., "▁", a1..a56, STOP, PAD...]; the visual block (patches, or the kept ones, and the proprio
    token) sits after BOS. oft_aligned reads the position before each action slot, lightvla_tail the one after."""
    vla, _, proprio_projector = tiny_policy
    vla.pruner.enabled = prune
    inputs = observation_inputs(processor, ["pick up the soup", "put both the soup and the sauce in the basket"], [0, 1])
    ids, mask, labels = vla.append_action_slots(inputs["input_ids"], inputs["attention_mask"])
    lengths = mask.sum(1).tolist()
    assert lengths[0] < lengths[1]  # the first sample is right-padded
    out = vla(ids, mask, inputs["pixel_values"], labels, proprio=torch.rand(2, 8), proprio_projector=proprio_projector,
              action_readout=readout)  # fmt: skip
    visual = out.last_hidden_state.shape[1] - ids.shape[1]  # patch slots (after pruning) + 1 proprio token
    assert visual == (int(vla.pruner.last_stats.kept_counts.max()) if prune else vla.get_num_patches()) + 1
    n = vla.action_space.num_action_tokens
    for b, length in enumerate(lengths):
        stop = length - 1 + visual  # STOP's position in the multimodal sequence
        slots = torch.arange(stop - n, stop)
        torch.testing.assert_close(out.action_hidden_states[b], out.last_hidden_state[b, slots + offset])


def test_attention_is_bidirectional(processor, tiny_policy):
    vla, _, _ = tiny_policy
    vla.pruner.enabled = False
    inputs = observation_inputs(processor, ["pick up the soup"], [0])
    ids, mask, labels = vla.append_action_slots(inputs["input_ids"], inputs["attention_mask"])
    first = vla(ids, mask, inputs["pixel_values"], labels).last_hidden_state
    changed = ids.clone()
    changed[0, -1 - vla.action_space.num_action_tokens - 2] += 1  # a prompt token near the end
    second = vla(changed, mask, inputs["pixel_values"], labels).last_hidden_state
    assert not torch.allclose(first[:, 0], second[:, 0])  # BOS, the very first position, sees the later token
    assert not torch.allclose(first[:, 5], second[:, 5])  # and so does an early image patch


def test_padding_is_invisible(processor, tiny_policy):
    vla, _, _ = tiny_policy
    inputs = observation_inputs(processor, ["pick up the soup"], [0])
    ids, mask, labels = vla.append_action_slots(inputs["input_ids"], inputs["attention_mask"])
    pad = torch.full((1, 4), vla.config.pad_token_id)
    out = vla(ids, mask, inputs["pixel_values"], labels).action_hidden_states
    padded = vla(
        torch.cat([ids, pad], 1),
        torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)], 1),
        inputs["pixel_values"],
        torch.cat([labels, torch.full((1, 4), IGNORE_INDEX)], 1),
        action_readout="oft_aligned",
    ).action_hidden_states
    torch.testing.assert_close(out, padded, atol=1e-5, rtol=1e-5)


def test_pruning_switch_gives_plain_oft(processor, tiny_policy):
    vla, head, proprio_projector = tiny_policy
    inputs = observation_inputs(processor, ["pick up the soup"], [0])
    pruned, _ = predict(vla, head, proprio_projector, inputs, np.zeros(8, np.float32))
    vla.pruner.enabled = False
    full, hidden = predict(vla, head, proprio_projector, inputs, np.zeros(8, np.float32))
    assert vla(**_forward_args(vla, inputs)).pruning is None
    assert not np.allclose(pruned, full)


def _forward_args(vla, inputs):
    ids, mask, labels = vla.append_action_slots(inputs["input_ids"], inputs["attention_mask"])
    return dict(input_ids=ids, attention_mask=mask, pixel_values=inputs["pixel_values"], labels=labels)


def test_save_and_load_round_trip_predicts_identical_actions(processor, tiny_policy, tmp_path):
    vla, head, proprio_projector = tiny_policy
    inputs = observation_inputs(processor, ["pick up the soup"], [0])
    before, _ = predict(vla, head, proprio_projector, inputs, np.full(8, 0.3, np.float32))
    save_policy(tmp_path / "ckpt", vla, processor, head, proprio_projector, "5_checkpoint.pt")
    policy = load_policy(tmp_path / "ckpt")
    assert policy.vla.get_num_images_in_input() == 2 and policy.vla.norm_stats == vla.norm_stats
    reloaded_inputs = observation_inputs(policy.processor, ["pick up the soup"], [0])
    for key in inputs:
        assert torch.equal(inputs[key], reloaded_inputs[key])
    after, _ = predict(
        policy.vla, policy.action_head, policy.proprio_projector, reloaded_inputs, np.full(8, 0.3, np.float32)
    )
    np.testing.assert_array_equal(before, after)


def test_heads_load_with_and_without_ddp_prefix(tiny_policy, tmp_path):
    from prismatic.policy.checkpoints import load_action_head, load_proprio_projector

    _, head, proprio_projector = tiny_policy
    torch.save({f"module.{k}": v for k, v in head.state_dict().items()}, tmp_path / "action_head--1_checkpoint.pt")
    torch.save(proprio_projector.state_dict(), tmp_path / "proprio_projector--1_checkpoint.pt")
    loaded = load_action_head(tmp_path / "action_head--1_checkpoint.pt", 8)
    x = torch.randn(2, 56, 128)
    torch.testing.assert_close(loaded.predict_action(x), head.predict_action(x))
    assert load_proprio_projector(tmp_path / "proprio_projector--1_checkpoint.pt").proprio_dim == 8


def test_released_style_folder_loads_through_auto_classes(processor, tiny_policy, tmp_path):
    """Sharded weights + a config.json as the released ones write it (no keys of ours, 4.40-era extras)."""
    import json

    from transformers import AutoImageProcessor, AutoModelForImageTextToText

    from prismatic.extern.hf import register_auto_classes

    vla, head, proprio_projector = tiny_policy
    inputs = observation_inputs(processor, ["pick up the soup"], [0])
    before, _ = predict(vla, head, proprio_projector, inputs, np.zeros(8, np.float32))
    folder = tmp_path / "released"
    vla.save_pretrained(folder, max_shard_size="1MB")
    processor.save_pretrained(folder)
    torch.save({f"module.{k}": v for k, v in head.state_dict().items()}, folder / "action_head--150000_checkpoint.pt")
    torch.save({f"module.{k}": v for k, v in proprio_projector.state_dict().items()},
               folder / "proprio_projector--150000_checkpoint.pt")  # fmt: skip
    (folder / "dataset_statistics.json").write_text(json.dumps(vla.norm_stats))
    config = json.loads((folder / "config.json").read_text())
    for ours in ("action_space", "num_images_in_input", "prune_visual_tokens", "pruner_noise", "action_readout",
                 "timm_model_overrides", "empty_token_id", "norm_stats"):  # fmt: skip
        config.pop(ours)
    config.update(
        auto_map={"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                  "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
        torch_dtype="bfloat16", transformers_version="4.40.1",
    )  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    assert len(list(folder.glob("model-*-of-*.safetensors"))) > 1 and (folder / "model.safetensors.index.json").exists()

    # The tiny architecture needs its overrides back (the 7B one is the default); everything else is defaulted,
    # except how to run it, which a released config.json does not say (and this folder's name does not tell).
    overrides = dict(timm_model_overrides=vla.config.timm_model_overrides, empty_token_id=vla.config.empty_token_id)
    with pytest.raises(CheckpointError, match="--prune_visual_tokens"):
        load_policy(folder, num_images_in_input=2, **overrides)
    policy = load_policy(folder, num_images_in_input=2, prune_visual_tokens=True, action_readout="oft_aligned", **overrides)
    assert policy.vla.config.action_readout == "oft_aligned" and policy.vla.pruner.enabled
    after, _ = predict(policy.vla, policy.action_head, policy.proprio_projector, inputs, np.zeros(8, np.float32))
    np.testing.assert_allclose(after, before, atol=1e-6)

    register_auto_classes()
    model = AutoModelForImageTextToText.from_pretrained(folder, **overrides)
    assert type(model).__name__ == "OpenVLAForActionPrediction"
    assert type(AutoImageProcessor.from_pretrained(folder)).__name__ == "PrismaticImageProcessor"


def test_verify_checkpoint_script(processor, tiny_policy, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    vla, head, proprio_projector = tiny_policy
    folder = save_policy(tmp_path / "ckpt", vla, processor, head, proprio_projector, "7_checkpoint.pt")
    script = Path(__file__).parents[1] / "vla-scripts" / "verify_checkpoint.py"
    result = subprocess.run(
        [sys.executable, str(script), "--pretrained_checkpoint", str(folder), "--unnorm_key", "libero_object"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "action chunk (8, 7)" in result.stdout and "visual tokens kept:" in result.stdout
    bad = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--pretrained_checkpoint is required" in bad.stderr


def test_gradient_checkpointing_gives_the_same_gradients(processor, tiny_policy, monkeypatch):
    import prismatic.models.llama_bidirectional as llama_bidirectional

    vla, _, _ = tiny_policy
    vla.train()
    ids, mask, labels, pixel_values = training_batch(processor, vla)
    q_proj = vla.language_model.model.layers[0].self_attn.q_proj.weight

    def gradient():
        vla.zero_grad()
        torch.manual_seed(0)
        vla(ids, mask, pixel_values, labels).action_hidden_states.square().sum().backward()
        return q_proj.grad.clone()

    plain = gradient()
    calls = []
    original = llama_bidirectional.checkpoint
    monkeypatch.setattr(llama_bidirectional, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    vla.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = gradient()
    assert len(calls) == vla.config.text_config.num_hidden_layers
    torch.testing.assert_close(checkpointed, plain, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("train_duplicates, eval_duplicates", [("keep", "once"), ("unique", "once"), ("keep", "count")])
def test_training_and_inference_agree_when_duplicates_match(processor, tiny_policy, train_duplicates, eval_duplicates):
    """At noise 0 the train-mode forward (every slot kept) equals the eval-mode forward (pruned) when both treat a patch
    picked by several queries alike: repeats hidden in training (``unique``), or the kept patch weighted by its picks
    at inference (``count``). Upstream's pair (``keep`` in training, each kept patch once at inference) differs."""
    vla, _, proprio_projector = tiny_policy
    vla.pruner.train_duplicates, vla.pruner.eval_duplicates = train_duplicates, eval_duplicates
    ids, mask, labels, pixel_values = training_batch(processor, vla)
    assert not mask.all()  # right padding: the biased keys and the padding mask meet
    proprio = torch.rand(2, 8)

    def forward(train: bool):
        vla.train(train)
        vla.pruner.set_noise_scale(0.0)
        with torch.no_grad():
            return vla(ids, mask, pixel_values, labels, proprio=proprio, proprio_projector=proprio_projector,
                       action_readout="oft_aligned")  # fmt: skip

    trained, inferred = forward(True), forward(False)
    kept = vla.pruner.last_stats.kept_counts
    assert (kept < vla.get_num_patches()).all()
    assert inferred.last_hidden_state.shape[1] < trained.last_hidden_state.shape[1]  # inference really drops patches
    if (train_duplicates, eval_duplicates) == ("keep", "once"):
        assert (trained.action_hidden_states - inferred.action_hidden_states).abs().max() > 1e-3
    else:
        torch.testing.assert_close(trained.action_hidden_states, inferred.action_hidden_states, atol=1e-5, rtol=1e-4)
