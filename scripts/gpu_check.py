"""The prepared GPU check: the users' bf16 path at 7B scale, measured in one process, printed as one table.

    python scripts/gpu_check.py                                  # on a GPU: the 7B architecture, random bf16 weights
    python scripts/gpu_check.py --preset tiny --device cpu       # CPU mode (what CI runs): the same code, tiny size

What it measures, on weights drawn at random (no checkpoint or Hub needed; kept-token counts are those of an untrained
pruner, so the 7B latency ratio is the paper's only when the pruner keeps about as many tokens as a trained one):
  * `predict_action` (batch 1, two images, proprio) with the pruner on and off, and with the vision backbone in bf16
    as upstream runs it instead of fp32 (our bf16 default, `prismatic.precision`): median latency (CUDA events),
    peak memory, kept visual tokens;
  * which attention kernel each call site gets (vision backbone, pruner scores, LLM), read from the profiler;
  * host synchronisations per `predict_action` and per training step (`torch.cuda.set_sync_debug_mode`);
  * LoRA training steps (rank 32, bf16 base, fp32 adapters and heads, autocast) with and without gradient
    checkpointing: time per step, samples per second, peak memory.
`--llm_layers N` builds the LLM with fewer decoder layers when the full 32 do not fit.
"""

import json
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import draccus
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_latency import Clock, benchmark_statistics  # noqa: E402

from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction  # noqa: E402
from prismatic.files import write_text_atomic  # noqa: E402
from prismatic.policy.presets import get_preset, make_config, make_heads  # noqa: E402
from prismatic.precision import prepare_for_inference, resolve_precision  # noqa: E402
from prismatic.training.lora import apply_lora  # noqa: E402
from prismatic.training.policy import TrainablePolicy  # noqa: E402
from prismatic.vla.prompts import action_sequence  # noqa: E402

PROMPT_LENGTH = 24  # token ids of a LIBERO instruction prompt, about


@dataclass
class GPUCheckConfig:
    # fmt: off
    preset: str = "openvla-7b-oft"          # the released 7B layout; "tiny" for the CPU mode
    device: str = "auto"                    # auto: cuda when available, else cpu
    llm_layers: Optional[int] = None        # fewer LLM decoder layers (memory); None: the preset's
    repeats: int = 20
    warmup: int = 3
    train_steps: int = 3                    # timed LoRA steps per setting (after one warm-up step)
    train_batch_size: int = 4
    lora_rank: int = 32
    seed: int = 0
    output_json: Optional[str] = None
    # fmt: on


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: GPUCheckConfig, device: torch.device):
    """The preset's architecture with random weights, built directly on `device` in bf16; fp32 heads."""
    overrides = {"norm_stats": benchmark_statistics(), "num_images_in_input": 2, "prune_visual_tokens": True}
    config = make_config(cfg.preset, **overrides)
    if cfg.llm_layers is not None:
        config.text_config.num_hidden_layers = cfg.llm_layers
    torch.manual_seed(cfg.seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            vla = OpenVLAForActionPrediction(config)
    finally:
        torch.set_default_dtype(default)
    head, proprio = make_heads(config, get_preset(cfg.preset).head_hidden_dim)
    return vla, head.to(device), proprio.to(device)


def inference_inputs(vla, head, proprio, device: torch.device, batch: int = 1) -> dict:
    """Random pixels (two images) and prompt ids, as the processor would hand them over."""
    size = vla.vision_backbone.image_size
    channels = vla.vision_backbone.channels_per_image * vla.get_num_images_in_input()
    ids = torch.randint(3, 900, (batch, PROMPT_LENGTH), device=device)
    ids[:, 0] = 1  # BOS
    return dict(
        input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool),
        pixel_values=torch.randn(batch, channels, size, size, device=device),
        proprio=torch.zeros(batch, 8, device=device), proprio_projector=proprio, action_head=head,
        unnorm_key="benchmark",
    )  # fmt: skip


class Peak:
    """Peak memory of a phase: CUDA's allocator peak on a GPU, the process's resident peak on the CPU (cumulative)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def gib(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**30
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def count_host_syncs(fn, device: torch.device) -> Optional[int]:
    """Synchronising CUDA calls made by ``fn()`` (None on the CPU, where nothing is asynchronous)."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def attention_kernels(fn, num_llm_heads: int) -> dict[str, str]:
    """Call site -> the SDPA kernel(s) it ran, from the profiler (each call site has its own head count)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    sites: dict[str, set] = {}
    for event in prof.events():
        if event.name != "aten::scaled_dot_product_attention" or not event.input_shapes:
            continue
        heads = event.input_shapes[0][1]
        site = "pruner scores" if heads == 1 else "LLM" if heads == num_llm_heads else "vision backbone"
        kernels = {c.name.removeprefix("aten::") for c in event.cpu_children if "attention" in c.name}
        sites.setdefault(site, set()).update(kernels or {"(composite)"})
    return {site: ", ".join(sorted(k)) for site, k in sorted(sites.items())}


def time_predict(vla, inputs: dict, cfg: GPUCheckConfig, clock: Clock, peak: Peak) -> dict:
    with torch.no_grad():
        for _ in range(cfg.warmup):
            vla.predict_action(**inputs)
        peak.reset()
        times = []
        for _ in range(cfg.repeats):
            start = clock.start()
            vla.predict_action(**inputs)
            times.append(clock.stop(start))
    stats = vla.pruner.last_stats if vla.pruner.enabled else None
    kept = float(stats.kept_counts.float().mean()) if stats is not None else float(vla.get_num_patches())
    return {"median_ms": statistics.median(times), "peak_gib": peak.gib(), "kept_tokens": kept}


def training_batch(vla, batch_size: int, device: torch.device) -> dict:
    config = vla.config
    rows = [action_sequence(torch.randint(3, 900, (PROMPT_LENGTH,)), config) for _ in range(batch_size)]
    ids = torch.stack([r[0] for r in rows]).to(device)
    inputs = inference_inputs(vla, None, None, device, batch_size)
    return {
        "input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool),
        "labels": torch.stack([r[1] for r in rows]).to(device), "pixel_values": inputs["pixel_values"],
        "proprio": torch.randn(batch_size, 8, device=device),
        "actions": torch.rand(batch_size, vla.action_space.num_actions_chunk, vla.action_space.action_dim, device=device),
    }  # fmt: skip


def time_training(policy, batch: dict, checkpointing: bool, cfg: GPUCheckConfig, clock: Clock, peak: Peak) -> dict:
    base = policy.vla.get_base_model()
    # transformers >= 5.x renamed gradient_checkpointing_* to activation_checkpointing_*; older 5.x lack the new names
    verb = "enable" if checkpointing else "disable"
    (getattr(base, f"activation_checkpointing_{verb}", None) or getattr(base, f"gradient_checkpointing_{verb}"))()
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-5)

    def step():
        policy(batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    syncs = count_host_syncs(step, clock_device(clock))  # warm-up step, counted
    peak.reset()
    times = []
    for _ in range(cfg.train_steps):
        start = clock.start()
        step()
        times.append(clock.stop(start))
    median = statistics.median(times)
    return {"step_ms": median, "samples_per_s": cfg.train_batch_size / median * 1e3, "peak_gib": peak.gib(),
            "host_syncs": syncs}  # fmt: skip


def clock_device(clock: Clock) -> torch.device:
    return torch.device("cuda" if clock.cuda else "cpu")


def run_check(cfg: GPUCheckConfig) -> dict:
    device = device_of(cfg.device)
    clock, peak = Clock(device), Peak(device)
    precision = resolve_precision("bf16", device)
    vla, head, proprio = build_model(cfg, device)
    prepare_for_inference(vla, precision).eval()
    inputs = inference_inputs(vla, head, proprio, device)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "config": asdict(cfg)}
    result["llm_layers"] = vla.config.text_config.num_hidden_layers
    result["pruned"] = time_predict(vla, inputs, cfg, clock, peak)
    with torch.no_grad():
        result["predict_host_syncs"] = count_host_syncs(lambda: vla.predict_action(**inputs), device)
        result["kernels"] = attention_kernels(
            lambda: vla.predict_action(**inputs), vla.config.text_config.num_attention_heads
        )
    vla.pruner.enabled = False
    result["unpruned"] = time_predict(vla, inputs, cfg, clock, peak)
    vla.pruner.enabled = True
    vla.vision_backbone.to(torch.bfloat16)
    vla.projector.to(torch.bfloat16)
    result["pruned_bf16_vision"] = time_predict(vla, inputs, cfg, clock, peak)

    vla.train()
    policy = TrainablePolicy(apply_lora(vla, cfg.lora_rank), head.train(), proprio.train(), precision)
    batch = training_batch(vla, cfg.train_batch_size, device)
    result["train"] = {ckpt: time_training(policy, batch, ckpt, cfg, clock, peak) for ckpt in (False, True)}
    return result


def print_table(r: dict) -> None:
    pruned, unpruned, bf16_vision = r["pruned"], r["unpruned"], r["pruned_bf16_vision"]
    print(f"\nGPU check: {r['config']['preset']} ({r['llm_layers']} LLM layers), random weights, bf16, on {r['device']}")
    print("| measurement | value |\n|---|---|")
    rows = [
        ("predict_action, pruned (median ms)", f"{pruned['median_ms']:.2f}"),
        ("predict_action, unpruned (median ms)", f"{unpruned['median_ms']:.2f}"),
        ("speed-up pruned vs unpruned", f"{unpruned['median_ms'] / pruned['median_ms']:.2f}x"),
        ("predict_action, pruned, vision in bf16 as upstream (median ms)", f"{bf16_vision['median_ms']:.2f}"),
        ("kept visual tokens (pruned)", f"{pruned['kept_tokens']:.0f} of {unpruned['kept_tokens']:.0f}"),
        ("peak memory, inference pruned / unpruned (GiB)", f"{pruned['peak_gib']:.2f} / {unpruned['peak_gib']:.2f}"),
        ("host syncs per predict_action", str(r["predict_host_syncs"] if r["predict_host_syncs"] is not None else "n/a (CPU)")),
    ]
    rows += [(f"attention kernel: {site}", kernels) for site, kernels in r["kernels"].items()]
    for ckpt, t in r["train"].items():
        label = "with" if ckpt else "without"
        rows += [
            (f"LoRA step {label} grad. checkpointing (ms)", f"{t['step_ms']:.1f}"),
            (f"training throughput {label} grad. checkpointing (samples/s)", f"{t['samples_per_s']:.2f}"),
            (f"peak memory, training {label} grad. checkpointing (GiB)", f"{t['peak_gib']:.2f}"),
            (f"host syncs per training step {label} grad. checkpointing",
             str(t["host_syncs"]) if t["host_syncs"] is not None else "n/a (CPU)"),
        ]  # fmt: skip
    for name, value in rows:
        print(f"| {name} | {value} |")


@draccus.wrap()
def main(cfg: GPUCheckConfig) -> dict:
    start = time.perf_counter()
    result = run_check(cfg)
    result["wall_s"] = time.perf_counter() - start
    print_table(result)
    print(f"(wall time {result['wall_s']:.0f} s)")
    if cfg.output_json:
        write_text_atomic(Path(cfg.output_json), json.dumps(result, indent=1, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
