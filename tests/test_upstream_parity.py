"""Checkpoints written by the original LightVLA / OpenVLA-OFT code load unchanged and compute what it computed.

Fixture: tests/fixtures/upstream-tiny (see its README): two tiny models saved by upstream's own code, and the
processor outputs, actions, kept patches, action hidden states and training forward that upstream computed with them.
The tiny vocabulary needs ``empty_token_id=630`` (upstream's literal 29871 was mapped to the tiny "▁").
"""

import itertools

import numpy as np
import pytest
import torch
from conftest import recorded

from prismatic.policy.checkpoints import load_policy
from prismatic.vla.prompts import build_prompt

FIXTURE = recorded("upstream-tiny")
UNNORM_KEY = "libero_spatial_no_noops"
SETTINGS = {  # how each released variant is evaluated (see "Using released checkpoints" in the README)
    "lightvla": dict(prune_visual_tokens=True, action_readout="lightvla_tail"),
    "oft": dict(prune_visual_tokens=False),
}


@pytest.fixture(scope="module")
def inputs():
    return np.load(recorded("upstream-tiny", "inputs.npz"))


@pytest.fixture(scope="module", params=["lightvla", "oft"])
def variant(request):
    name = request.param
    policy = load_policy(FIXTURE / name / "checkpoint", num_images_in_input=2, empty_token_id=630, **SETTINGS[name])
    return name, policy, np.load(recorded("upstream-tiny", name, "expected.npz"))


def processed(policy, inputs, i):
    """Upstream's get_vla_action with center_crop=False on 224x224 images: the processor on each image."""
    images = [[inputs[f"obs{i}_full_image"], inputs[f"obs{i}_wrist_image"]]]
    return policy.processor([build_prompt(str(inputs["instructions"][i]))], images)


def normalized_proprio(policy, inputs, i):
    from prismatic.vla.normalization import normalize

    stats = policy.vla.norm_stats[UNNORM_KEY]["proprio"]
    return normalize(inputs[f"obs{i}_state"], stats, policy.vla.action_space.normalization_type)


def test_processor_outputs_equal_upstream(variant, inputs):
    _, policy, expected = variant
    for i in range(4):
        out = processed(policy, inputs, i)
        np.testing.assert_array_equal(out["input_ids"].numpy(), expected[f"obs{i}_input_ids"])
        np.testing.assert_array_equal(out["attention_mask"].numpy(), expected[f"obs{i}_attention_mask"])
        np.testing.assert_allclose(normalized_proprio(policy, inputs, i), expected[f"obs{i}_proprio"], atol=1e-12)
    pixel_values = processed(policy, inputs, 1)["pixel_values"].numpy()
    np.testing.assert_array_equal(pixel_values, expected["obs1_pixel_values"])


def test_actions_kept_patches_and_hidden_states_equal_upstream(variant, inputs):
    name, policy, expected = variant
    for i in range(4):
        actions, hidden = policy.vla.predict_action(
            **processed(policy, inputs, i), unnorm_key=UNNORM_KEY, proprio=normalized_proprio(policy, inputs, i),
            proprio_projector=policy.proprio_projector, action_head=policy.action_head,
        )  # fmt: skip
        np.testing.assert_allclose(actions, expected[f"obs{i}_actions"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(hidden.numpy(), expected[f"obs{i}_action_hidden"], atol=1e-4, rtol=0)
        if name == "lightvla":
            np.testing.assert_array_equal(policy.vla.pruner.last_stats.kept_indices[0].numpy(), expected[f"obs{i}_kept"])
        else:
            assert policy.vla.pruner.last_stats is None


# Two candidate patches whose scores differ by less than this are an fp32 tie: which one argmax picks depends on the
# summation order of the CPU's kernels (observation 0, pure noise, has one at a gap of 5e-7 on AVX2 machines).
SCORE_TIE = 1e-5


def _forward(policy, inputs, expected, rows, key):
    pixel_values = torch.cat([processed(policy, inputs, i)["pixel_values"] for i in rows])
    proprio = torch.as_tensor(np.stack([normalized_proprio(policy, inputs, i) for i in rows]), dtype=torch.float32)
    ids = torch.as_tensor(expected[f"{key}_input_ids"])
    mask = torch.as_tensor(expected[f"{key}_attention_mask"]) if f"{key}_attention_mask" in expected else None
    with torch.no_grad():
        out = policy.vla(ids, mask, pixel_values, torch.as_tensor(expected[f"{key}_labels"]), proprio=proprio,
                         proprio_projector=policy.proprio_projector)  # fmt: skip
        return out.action_hidden_states, policy.action_head.predict_action(out.action_hidden_states)


def training_forwards(policy, inputs, expected, rows, key, monkeypatch):
    """Upstream finetune.py's L1 forward in train mode at noise 0 on the recorded sequences: one (hidden, prediction)
    per way of breaking the fp32 ties among the pruner's scores (just one when there is none)."""
    from prismatic.models.pruning import TokenPruner

    score = TokenPruner.score
    recorded_scores = []
    record = lambda *args: recorded_scores.append(score(*args)) or recorded_scores[-1]  # noqa: E731
    monkeypatch.setattr(TokenPruner, "score", staticmethod(record))
    vla = policy.vla.train()
    vla.pruner.set_noise_scale(0.0)
    try:
        results = [_forward(policy, inputs, expected, rows, key)]
        if not recorded_scores:  # no pruner (OpenVLA-OFT)
            return results
        top = recorded_scores[0].topk(2, -1)
        ties = ((top.values[..., 0] - top.values[..., 1]) < SCORE_TIE).nonzero().tolist()  # [(sample, query)]
        assert len(ties) <= 4, f"{len(ties)} tied scores: not a rounding accident"
        for choice in itertools.product((0, 1), repeat=len(ties)) if ties else ():

            def tie_broken(*args, choice=choice):
                s = score(*args).clone()
                for (b, q), c in zip(ties, choice):
                    s[b, q, top.indices[b, q, c]] += 10 * SCORE_TIE
                return s

            monkeypatch.setattr(TokenPruner, "score", staticmethod(tie_broken))
            results.append(_forward(policy, inputs, expected, rows, key))
        return results
    finally:
        vla.eval()
        monkeypatch.setattr(TokenPruner, "score", score)


def assert_one_matches(results, check):
    """`check(hidden, predicted)` holds for one of the tie-breaking variants (the first failure is raised otherwise)."""
    errors = []
    for hidden, predicted in results:
        try:
            return check(hidden, predicted)
        except AssertionError as err:
            errors.append(err)
    raise errors[0]


def test_training_forward_at_noise_zero_equals_upstream(variant, inputs, monkeypatch):
    _, policy, expected = variant
    for i in range(4):

        def check(hidden, predicted, i=i):
            np.testing.assert_allclose(hidden.numpy(), expected[f"train{i}_action_hidden"], atol=1e-4, rtol=0)
            np.testing.assert_allclose(predicted.numpy(), expected[f"train{i}_pred"], atol=1e-4, rtol=0)
            loss = torch.nn.functional.l1_loss(predicted[0], torch.as_tensor(expected[f"train{i}_targets"]))
            assert float(loss) == pytest.approx(float(expected[f"train{i}_l1_loss"]), abs=1e-5)

        assert_one_matches(training_forwards(policy, inputs, expected, [i], f"train{i}", monkeypatch), check)


def test_padded_training_batch(variant, inputs, monkeypatch):
    """Observations 0 and 3 right-padded into one batch, as upstream's collator pads them. Ours equals each sample
    alone; upstream's pruner lets the padding tokens vote, so its padded sample differs from the same sample alone."""
    name, policy, expected = variant

    def check(_, predicted):
        np.testing.assert_allclose(predicted[0].numpy(), expected["trainpad_pred"][0], atol=1e-4, rtol=0)  # unpadded
        np.testing.assert_allclose(predicted[1].numpy(), expected["train3_pred"][0], atol=1e-4, rtol=0)  # = alone
        if name == "lightvla":
            assert np.abs(expected["trainpad_pred"][1] - expected["train3_pred"][0]).max() > 1e-3  # upstream's bug
        else:
            np.testing.assert_allclose(predicted[1].numpy(), expected["trainpad_pred"][1], atol=1e-4, rtol=0)

    assert_one_matches(training_forwards(policy, inputs, expected, [0, 3], "trainpad", monkeypatch), check)


def test_loading_a_released_folder_never_prompts():
    """Released folders carry `auto_map` (remote code). A fresh process with an open but silent standard input must
    load them without transformers' "Do you wish to run the custom code?" prompt (which would wait for an answer)."""
    import subprocess
    import sys
    import tempfile

    code = (
        "from prismatic.extern.hf.processing_prismatic import PrismaticProcessor\n"
        "from prismatic.policy.checkpoints import load_policy\n"
        "from transformers import AutoModelForImageTextToText\n"
        f"folder = {str(FIXTURE / 'lightvla' / 'checkpoint')!r}\n"
        "PrismaticProcessor.from_pretrained(folder)\n"
        "load_policy(folder, num_images_in_input=2, empty_token_id=630, prune_visual_tokens=False)\n"
        "AutoModelForImageTextToText.from_pretrained(folder)\n"
        "print('loaded')\n"
    )
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=log, stderr=log, text=True
        )
        try:
            process.wait(timeout=240)  # standard input stays open: a prompt would wait for an answer, then fail
        finally:
            process.kill()
            process.stdin.close()
        log.seek(0)
        output = log.read()
    assert process.returncode == 0 and "loaded" in output, output[-2000:]
    assert "custom code" not in output and "trust_remote_code" not in output, output[-2000:]


@pytest.mark.parametrize(
    "name,variant,expected_settings",
    [
        ("LightVLA-libero-spatial", "lightvla", (True, "lightvla_tail")),
        ("lightvla_spatial_40000_chkpt", "lightvla", (True, "lightvla_tail")),
        ("openvla-7b-oft-finetuned-libero-spatial", "oft", (False, "oft_aligned")),
    ],
)
def test_released_checkpoints_are_run_as_their_name_says(tmp_path, inputs, capsys, name, variant, expected_settings):
    (tmp_path / name).symlink_to(FIXTURE / variant / "checkpoint", target_is_directory=True)
    policy = load_policy(tmp_path / name, num_images_in_input=2, empty_token_id=630)
    config = policy.vla.config
    assert (config.prune_visual_tokens, config.action_readout) == expected_settings
    assert policy.vla.pruner.enabled == expected_settings[0]
    printed = capsys.readouterr().out
    assert f"action read-out {expected_settings[1]}" in printed and "from the name" in printed
    actions, _ = policy.vla.predict_action(
        **processed(policy, inputs, 0), unnorm_key=UNNORM_KEY, proprio=normalized_proprio(policy, inputs, 0),
        proprio_projector=policy.proprio_projector, action_head=policy.action_head,
    )  # fmt: skip
    expected = np.load(recorded("upstream-tiny", variant, "expected.npz"))
    np.testing.assert_allclose(actions, expected["obs0_actions"], atol=1e-5, rtol=0)


def test_an_ambiguous_released_checkpoint_needs_the_flags(tmp_path):
    from prismatic.policy.checkpoints import CheckpointError

    (tmp_path / "my-policy").symlink_to(FIXTURE / "lightvla" / "checkpoint", target_is_directory=True)
    with pytest.raises(CheckpointError, match=r"--prune_visual_tokens False.*--action_readout lightvla_tail"):
        load_policy(tmp_path / "my-policy", empty_token_id=630)
    with pytest.raises(CheckpointError, match="--action_readout"):
        load_policy(tmp_path / "my-policy", empty_token_id=630, prune_visual_tokens=True)
    oft = load_policy(tmp_path / "my-policy", empty_token_id=630, prune_visual_tokens=False)  # OFT needs no read-out
    assert (oft.vla.config.prune_visual_tokens, oft.vla.config.action_readout) == (False, "oft_aligned")


def test_flags_and_recorded_settings_win_over_the_name(tmp_path, tiny_checkpoint):
    (tmp_path / "LightVLA-libero-object").symlink_to(FIXTURE / "lightvla" / "checkpoint", target_is_directory=True)
    flagged = load_policy(tmp_path / "LightVLA-libero-object", empty_token_id=630, action_readout="oft_aligned")
    assert (flagged.vla.config.prune_visual_tokens, flagged.vla.config.action_readout) == (True, "oft_aligned")
    # a checkpoint written here records both settings: its name plays no part
    import shutil

    ours = shutil.copytree(tiny_checkpoint, tmp_path / "openvla-oft-but-pruned")
    loaded = load_policy(ours)
    assert (loaded.vla.config.prune_visual_tokens, loaded.vla.config.action_readout) == (True, "oft_aligned")


@pytest.mark.parametrize(
    "name,variant,expected_settings",
    [
        ("LightVLA-libero-spatial", "lightvla", (True, "lightvla_tail")),
        ("openvla-7b-oft-finetuned-libero-spatial", "oft", (False, "oft_aligned")),
    ],
)
def test_verify_checkpoint_runs_released_folders_as_their_name_says(
    tmp_path, inputs, capsys, monkeypatch, name, variant, expected_settings
):
    """vla-scripts/verify_checkpoint.py with no pruning flags: the released rules apply, and the chunk it prints is
    the one upstream computed on that observation."""
    import functools
    import importlib.util
    from pathlib import Path

    from prismatic.policy import inference

    script = Path(__file__).resolve().parents[1] / "vla-scripts" / "verify_checkpoint.py"
    spec = importlib.util.spec_from_file_location("verify_checkpoint", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / name).symlink_to(FIXTURE / variant / "checkpoint", target_is_directory=True)
    # the tiny vocabulary's "▁" (see the module docstring); everything else is what the script loads
    monkeypatch.setattr(inference, "load_policy", functools.partial(load_policy, empty_token_id=630))
    observation = {k: inputs[f"obs0_{k}"] for k in ("full_image", "wrist_image", "state")}
    np.savez(tmp_path / "obs0.npz", **observation)
    cfg = module.VerifyConfig(
        pretrained_checkpoint=str(tmp_path / name), observation=tmp_path / "obs0.npz", center_crop=False,
        task_description=str(inputs["instructions"][0]), unnorm_key=UNNORM_KEY, device="cpu",
    )  # fmt: skip
    actions = module.verify(cfg)
    printed = capsys.readouterr().out
    assert f"action read-out {expected_settings[1]}" in printed and "from the name" in printed
    assert ("pruning off" in printed) != expected_settings[0]
    expected = np.load(recorded("upstream-tiny", variant, "expected.npz"))
    np.testing.assert_allclose(actions, expected["obs0_actions"], atol=1e-5, rtol=0)
