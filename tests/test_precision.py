"""The users' GPU code path, on the CPU: bf16 training, evaluation, serving and merging (``prismatic.precision``).

Every branch that used to run only when ``device.type == "cuda"`` now runs whenever ``--precision bf16`` is asked for,
so these tests execute it here with CPU autocast. Expected values come from fp32 runs of the same code or from
independent computations.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import UNNORM_KEY, build_tiny_policy, finetune_config, recorded

from prismatic.models.pruning import TokenPruner
from prismatic.policy.checkpoints import load_policy, save_policy
from prismatic.policy.inference import load_inference_policy, predict_action_chunk
from prismatic.precision import prepare_for_inference, resolve_precision
from prismatic.training import run_state
from prismatic.training.distributed import TrainingProcess, gradient_sync
from prismatic.training.trainer import train

REPO = Path(__file__).resolve().parents[1]


def test_auto_precision_is_bf16_on_gpus_and_fp32_elsewhere():
    assert resolve_precision("auto", "cuda").name == "bf16" and resolve_precision(None, "cpu").name == "fp32"
    assert resolve_precision("bf16", "cpu").frozen_dtype == torch.bfloat16  # the CPU honours an explicit choice
    with pytest.raises(ValueError, match="--precision must be one of"):
        resolve_precision("fp16", "cpu")


@pytest.fixture(scope="module")
def bf16_weights_checkpoint(tmp_path_factory, processor):
    """A saved tiny policy whose model weights are bf16 numbers, as a released checkpoint's are."""
    vla, head, proprio = build_tiny_policy()
    vla.to(torch.bfloat16).float()
    folder = tmp_path_factory.mktemp("bf16ckpt") / "tiny-policy"
    save_policy(folder, vla, processor, head, proprio)
    return folder


# --- training ----------------------------------------------------------------------------------------------------------
# bf16 matmuls are emulated on CPUs without AVX-512 BF16 (~5x slower than fp32), so training tests use the libero-cpu
# preset (128 px images, 128 visual tokens): the same architecture, a quarter of the tokens.
@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A saved libero-cpu policy (random weights, statistics keyed UNNORM_KEY) to train from."""
    from conftest import fake_norm_stats

    from prismatic.policy.presets import make_policy

    policy = make_policy("libero-cpu", norm_stats=fake_norm_stats())
    folder = tmp_path_factory.mktemp("small") / "libero-cpu-policy"
    save_policy(folder, policy.vla, policy.processor, policy.action_head, policy.proprio_projector)
    return folder


def small_config(data_root, tmp_path, **overrides):
    values = dict(vla_path="libero-cpu", batch_size=2, max_steps=1, save_freq=1, precision="bf16")
    return finetune_config(data_root, tmp_path, **{**values, **overrides})


@pytest.mark.parametrize(
    "use_lora,reuse_heads,prune", [(True, False, True), (False, True, True), (True, True, False), (False, False, False)]
)
def test_bf16_training_from_a_checkpoint(data_root, tmp_path, small_checkpoint, use_lora, reuse_heads, prune):
    """Upstream's LightVLA recipe (fresh heads, pruning on, kept tokens logged at step 1) crashed here: bf16 hidden
    states met the fp32 head outside autocast. Every combination trains, logs, saves and reloads."""
    cfg = small_config(
        data_root, tmp_path, vla_path=str(small_checkpoint), use_lora=use_lora, reuse_heads=reuse_heads,
        prune_visual_tokens=prune, kept_tokens_log_freq=1, grad_accumulation_steps=2,
    )  # fmt: skip
    result = train(cfg)
    history = result["history"]
    assert [h["step"] for h in history] == [1] and np.isfinite(history[0]["loss"])
    assert 0 < history[0]["kept_visual_tokens"] <= 128 if prune else history[0]["kept_visual_tokens"] == 128
    policy = result["policy"]
    trained = {name: p.dtype for name, p in policy.named_parameters() if p.requires_grad}
    assert set(trained.values()) == {torch.float32}  # adapters, full weights, heads: fp32 master weights
    frozen = {p.dtype for p in policy.parameters() if not p.requires_grad}
    assert frozen == ({torch.bfloat16} if use_lora else set())
    loaded = load_policy(result["run_dir"].with_name(result["run_dir"].name + "--1_chkpt"), num_images_in_input=2)
    assert loaded.vla.pruner.enabled == prune


def weight_changes(result, initial):
    return [
        (p.detach().float() - initial[name]).abs()
        for name, p in result["policy"].vla.named_parameters()
        if name in initial
    ]


def test_bf16_full_finetuning_moves_weights_like_fp32(data_root, tmp_path, small_checkpoint):
    """AdamW steps of lr 1e-5 on weights near 1 are below bf16's resolution (2**-7): with bf16 weights they vanish
    (the weight stays exactly 1.0). fp32 master weights move them as fp32 training does."""
    initial = {name: value.float() for name, value in load_policy(small_checkpoint).vla.state_dict().items()}
    changes = {}
    for precision in ("fp32", "bf16"):
        cfg = small_config(
            data_root, tmp_path / precision, vla_path=str(small_checkpoint), precision=precision, use_lora=False,
            prune_visual_tokens=False, learning_rate=1e-5, max_steps=2, save_freq=2, kept_tokens_log_freq=0,
            image_aug=False,
        )  # fmt: skip
        changes[precision] = weight_changes(train(cfg), initial)
    moved = {k: np.mean([float((c > 0).float().mean()) for c in v]) for k, v in changes.items()}
    size = {k: float(torch.cat([c.flatten() for c in v]).mean()) for k, v in changes.items()}
    assert moved["bf16"] > 0.9 * moved["fp32"]  # as many weights move ...
    assert 0.5 < size["bf16"] / size["fp32"] < 2  # ... by as much (Adam steps are ~lr each)


def test_resume_is_bit_exact_in_bf16(data_root, tmp_path):
    """Pruning noise 1 -> 0 and augmentation on: the resumed steps are the uninterrupted run's, to the bit."""
    common = dict(max_steps=3, save_freq=1, lr_warmup_steps=2, kept_tokens_log_freq=0)
    full = train(small_config(data_root, tmp_path / "a", **common))
    train(small_config(data_root, tmp_path / "b", stop_at_step=1, **common))
    second = train(small_config(data_root, tmp_path / "b", resume=True, **common))
    assert [h["loss"] for h in second["history"]] == [h["loss"] for h in full["history"][1:]]  # exactly


def test_gpu_random_state_travels_with_the_checkpoint(monkeypatch):
    """On a GPU the pruning noise draws from the device's generator: it is saved per rank and restored."""
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.tensor([7, int(device.index or 0)]))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((state.tolist(), device)))
    gpu = torch.device("cuda", 1)
    saved = [run_state.rng_state(torch.device("cuda", 0)), run_state.rng_state(gpu)]  # as gathered from 2 ranks
    assert [s["cuda"].tolist() for s in saved] == [[7, 0], [7, 1]]
    run_state.restore_rng(saved, TrainingProcess(rank=1, world_size=2, device=gpu), seed=7, step=3)
    assert calls == [([7, 1], gpu)]  # rank 1 continues its own stream
    with pytest.raises(Exception, match="without GPU random state"):
        run_state.restore_rng([run_state.rng_state(torch.device("cpu"))], TrainingProcess(device=gpu), seed=7, step=3)


def test_each_rank_draws_its_own_noise_and_a_changed_world_size_says_so(capsys):
    draws = []
    for rank in (0, 1):
        run_state.seed_rank(7, rank)
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1])
    saved = [run_state.rng_state(torch.device("cpu"))]
    run_state.restore_rng(saved, TrainingProcess(rank=0, world_size=2), seed=7, step=3)
    assert "not bit-identical" in capsys.readouterr().out


# --- distributed plumbing --------------------------------------------------------------------------------------------
@pytest.fixture
def gloo_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_gradient_accumulation_all_reduces_once_per_optimizer_step(gloo_group):
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(torch.nn.Linear(4, 2))
    reductions = []

    def counting_hook(state, bucket):
        reductions.append(1)
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    model.register_comm_hook(None, counting_hook)
    accumulation = 4
    for micro in range(accumulation):
        with gradient_sync(model, sync=micro == accumulation - 1):
            model(torch.randn(3, 4)).sum().backward()
    assert len(reductions) == 1


def test_collectives_wait_as_long_as_configured(monkeypatch):
    import torch.distributed as dist

    from prismatic.training.distributed import init_distributed

    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    process = init_distributed(timeout_minutes=90)
    try:
        backend = dist.distributed_c10d._get_default_group()._get_backend(process.device)
        assert backend.options._timeout.total_seconds() == 90 * 60
    finally:
        dist.destroy_process_group()


def test_persistent_workers_keep_their_state_and_follow_the_epoch(data_root, tmp_path, processor):
    """Workers live across epochs (their frame caches with them), and each epoch still augments as that epoch says:
    every batch of two epochs equals the dataset's own samples for those indices with ``set_epoch`` of that epoch."""
    from prismatic.policy.presets import make_config
    from prismatic.training.data import batches, make_loader
    from prismatic.vla.datasets.datasets import LiberoDataset, PaddedCollatorForActionPrediction

    config = make_config("tiny")
    dataset = LiberoDataset(data_root, UNNORM_KEY, processor, config, 2, True, image_aug=True, seed=3)
    collate = PaddedCollatorForActionPrediction(2048, config.pad_token_id)
    cfg = finetune_config(data_root, tmp_path, num_workers=1, batch_size=16)
    loader, sampler = make_loader(cfg, dataset, collate, TrainingProcess())
    stream = batches(loader, sampler, dataset, start=0)
    per_epoch = len(loader)
    got = [next(stream)["pixel_values"] for _ in range(2 * per_epoch)]
    assert loader.persistent_workers and loader._iterator is not None  # one iterator, reused for every epoch

    reference = LiberoDataset(data_root, UNNORM_KEY, processor, config, 2, True, image_aug=True, seed=3)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        reference.set_epoch(epoch)
        order = list(sampler)
        for b in range(per_epoch):
            indices = order[b * 16 : (b + 1) * 16]
            expected = collate(reference.__getitems__(indices))["pixel_values"]
            torch.testing.assert_close(got[epoch * per_epoch + b], expected, rtol=0, atol=0)


def assert_bf16_rounding_apart(value: torch.Tensor, reference: torch.Tensor) -> None:
    """Equal up to bf16 rounding of the merged weight or of its LoRA delta (peft rounds the delta to bf16 before
    adding it, we after): 2**-7 of the value, or 2**-8 of the tensor's scale for values near 0."""
    scale = float(reference.float().abs().max())
    torch.testing.assert_close(value.float(), reference.float(), atol=2**-8 * scale, rtol=2**-7)


def test_merged_weights_are_made_on_the_host(data_root, tmp_path):
    """The LoRA-merged state dict goes to host memory (on a GPU: no second copy of the model there) and equals peft's
    own merge, in the base weights' dtype."""
    from prismatic.training.lora import merged_state_dict

    result = train(small_config(data_root, tmp_path, learning_rate=5e-2))
    peft_model = result["policy"].vla
    merged = merged_state_dict(peft_model)
    assert {v.device.type for v in merged.values()} == {"cpu"}
    reference = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    for key, value in merged.items():
        assert value.dtype == reference[key].dtype == torch.bfloat16
        assert_bf16_rounding_apart(value, reference[key])


def test_the_lora_merge_script_in_bf16(data_root, tmp_path):
    from safetensors.torch import load_file

    result = train(small_config(data_root, tmp_path, precision="fp32", max_steps=2, save_freq=2, learning_rate=5e-2))
    folder = result["run_dir"].with_name(result["run_dir"].name + "--2_chkpt")
    fp32 = load_file(folder / "model.safetensors")
    spec = importlib.util.spec_from_file_location("merge", REPO / "vla-scripts" / "merge_lora_weights_and_save.py")
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    merge.merge(str(result["run_dir"] / "base_model"), folder, precision="bf16")
    bf16 = load_file(folder / "model.safetensors")
    for key, value in bf16.items():
        assert value.dtype == torch.bfloat16
        assert_bf16_rounding_apart(value, fp32[key])
    assert load_policy(folder, num_images_in_input=2, precision="bf16").vla.language_model.dtype == torch.bfloat16


# --- the pruner --------------------------------------------------------------------------------------------------------
def test_straight_through_slots_are_exact_copies_in_bf16():
    """Under bf16 autocast each train-mode slot is bit for bit the patch it picked (upstream's bf16 sum
    hard + soft - soft.detach() is off by up to 0.7%), and the softmax gradient still reaches the patches."""
    torch.manual_seed(0)
    batch, num_patches, dim = 2, 64, 32
    tokens = torch.randn(batch, 1 + num_patches + 10, dim, dtype=torch.bfloat16, requires_grad=True)
    positions = torch.arange(tokens.shape[1]).expand(batch, -1)
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    pruner = TokenPruner().train()
    pruner.set_noise_scale(0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pruned = pruner(tokens, positions, mask, patch_start=1, num_patches=num_patches)
    picked = pruned.position_ids[:, 1 : 1 + num_patches]  # a slot carries the position id of the patch it copies
    copies = torch.gather(tokens, 1, picked[..., None].expand(-1, -1, dim))
    assert pruned.tokens.dtype == torch.bfloat16
    assert torch.equal(pruned.tokens[:, 1 : 1 + num_patches], copies)
    pruned.tokens[:, 1 : 1 + num_patches].float().pow(2).sum().backward()
    assert tokens.grad[:, 1 : 1 + num_patches].abs().sum() > 0


def test_scores_are_fp32_whatever_the_tokens():
    torch.manual_seed(0)
    patches, task = torch.randn(1, 16, 32), torch.randn(1, 5, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = TokenPruner.score(patches.bfloat16(), task.bfloat16(), None)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, TokenPruner.score(patches.bfloat16().float(), task.bfloat16().float(), None))


def libero_observations():
    """Real LIBERO frames (agentview + wrist of three tasks, upright) and the upstream-tiny observations."""
    raw = np.load(recorded("upstream-image-pipeline", "inputs.npz"))["raw"]
    tiny = np.load(recorded("upstream-tiny", "inputs.npz"))
    observations = [
        {"full_image": raw[i][::-1, ::-1].copy(), "wrist_image": raw[i + 1][::-1, ::-1].copy(), "state": np.zeros(8)}
        for i in range(0, 6, 2)
    ]
    observations += [
        {"full_image": tiny[f"obs{i}_full_image"], "wrist_image": tiny[f"obs{i}_wrist_image"], "state": tiny[f"obs{i}_state"]}
        for i in range(4)
    ]  # fmt: skip
    return observations


INSTRUCTIONS = (
    "put the black bowl on the plate",
    "pick up the alphabet soup and place it in the basket",
    "open the drawer",
)


def test_bf16_inference_keeps_what_fp32_keeps(bf16_weights_checkpoint):
    """bf16 vs fp32 inference of one (bf16-stored) checkpoint on 21 real and synthetic observations: the kept sets
    agree (mean Jaccard >= 0.99; computing the pruner's inputs in bf16 gave 0.98), and the actions differ only by
    the LLM's bf16 rounding: <= 5% of the chunk's largest action (measured 2.1%; with bf16 vision 43%)."""
    fp32 = load_inference_policy(str(bf16_weights_checkpoint), precision="fp32")
    bf16 = load_inference_policy(str(bf16_weights_checkpoint), precision="bf16")
    assert (
        bf16.vla.language_model.dtype == torch.bfloat16
        and bf16.vla.vision_backbone.featurizer.cls_token.dtype == torch.float32
    )
    assert {p.dtype for p in itertools.chain(bf16.action_head.parameters(), bf16.proprio_projector.parameters())} == {
        torch.float32
    }
    overlaps, errors = [], []
    for observation, instruction in itertools.product(libero_observations(), INSTRUCTIONS):
        a32, s32 = predict_action_chunk(fp32, [observation], [instruction], UNNORM_KEY)
        a16, s16 = predict_action_chunk(bf16, [observation], [instruction], UNNORM_KEY)
        k32, k16 = set(s32.kept_indices[0].tolist()), set(s16.kept_indices[0].tolist())
        overlaps.append(len(k32 & k16) / len(k32 | k16))
        errors.append(np.abs(a16 - a32).max() / np.abs(a32).max())
    assert np.mean(overlaps) >= 0.99, overlaps
    assert max(errors) <= 0.05, errors


def test_bf16_evaluation_policy(tiny_checkpoint):
    """The evaluation harness's policy (what run_libero_eval.py queries every step) in bf16."""
    from experiments.robot.libero.eval_config import EvalConfig
    from experiments.robot.libero.eval_workers import VLAPolicy

    cfg = EvalConfig(pretrained_checkpoint=str(tiny_checkpoint), precision="bf16", unnorm_key=UNNORM_KEY)
    policy = VLAPolicy(cfg)
    assert policy.policy.vla.language_model.dtype == torch.bfloat16
    observation = libero_observations()[0]
    ((actions, info),) = policy.batch([observation], [INSTRUCTIONS[0]])
    assert actions.shape == (8, 7) and np.isfinite(actions).all() and info["kept_tokens"] > 0
    with pytest.raises(ValueError, match="--precision must be one of"):
        EvalConfig(pretrained_checkpoint=str(tiny_checkpoint), precision="half")


def test_server_answers_in_bf16(tiny_checkpoint):
    """deploy.py --precision bf16 as a real server, asked by the real client, answers what bf16 inference computes."""
    from experiments.robot.openvla_utils import get_action_from_server

    spec = importlib.util.spec_from_file_location("benchmark_server", REPO / "scripts" / "benchmark_server.py")
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)
    port = server.free_port()
    process = server.start_server(str(tiny_checkpoint), port, "--unnorm_key", UNNORM_KEY, "--precision", "bf16")
    observation = server.observation(0)
    try:
        answered = get_action_from_server(observation, f"http://127.0.0.1:{port}/act", timeout=120)
    finally:
        process.terminate()
        process.wait(30)
    local = load_inference_policy(str(tiny_checkpoint), precision="bf16")
    expected, _ = predict_action_chunk(
        local, [{k: v for k, v in observation.items() if k != "instruction"}], [observation["instruction"]], UNNORM_KEY
    )
    np.testing.assert_allclose(answered, expected[0], rtol=0, atol=1e-6)


def test_prepare_for_inference_keeps_the_pruner_inputs_fp32(tiny_policy):
    vla, _, _ = tiny_policy
    prepare_for_inference(vla, resolve_precision("bf16", "cpu"))
    assert vla.language_model.dtype == torch.bfloat16
    assert {p.dtype for p in vla.vision_backbone.parameters()} | {p.dtype for p in vla.projector.parameters()} == {
        torch.float32
    }
