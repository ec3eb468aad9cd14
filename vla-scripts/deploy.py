"""Serve a policy over HTTP (upstream's `POST /act` protocol, plus batched requests and `GET /health`).

    python vla-scripts/deploy.py --pretrained_checkpoint runs/quickstart/runs/tiny-quickstart \
        --unnorm_key libero_object_no_noops --num_images_in_input 2 --port 8777

Clients post a json-numpy encoded observation (full_image, wrist image(s), state, instruction) and get the
un-normalised action chunk back; `experiments/robot/openvla_utils.get_action_from_server` is such a client. See
`prismatic/vla/serving.py` for the protocol and the error answers.
"""

import logging
from dataclasses import dataclass
from typing import Optional

import draccus


@dataclass
class DeployConfig:
    # fmt: off
    host: str = "0.0.0.0"
    port: int = 8777

    model_family: str = "openvla"
    pretrained_checkpoint: str = ""                 # checkpoint folder or Hub id
    use_l1_regression: bool = True
    use_diffusion: bool = False
    num_diffusion_steps_train: int = 50
    num_diffusion_steps_inference: int = 50
    use_film: bool = False
    num_images_in_input: Optional[int] = None       # None: as the checkpoint's config says (upstream default: 3)
    use_proprio: bool = True
    center_crop: bool = True
    lora_rank: int = 32
    unnorm_key: str = ""                            # required when the checkpoint has statistics for several datasets
    use_relative_actions: bool = False
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    seed: int = 7

    prune_visual_tokens: Optional[bool] = None      # None: as the checkpoint says
    action_readout: Optional[str] = None            # oft_aligned | lightvla_tail
    pruner_eval_duplicates: Optional[str] = None    # once | count; None: as the checkpoint says
    visual_token_pruner: Optional[str] = None       # lightvla | none | random_k | text_topk | fastv
    visual_token_budget: Optional[int] = None
    fastv_layer: int = 2
    precision: str = "auto"                         # bf16 | fp32 | auto (bf16 on a GPU, fp32 on the CPU)
    max_batch_size: int = 32                        # observations per batched request
    log_level: str = "info"
    # fmt: on

    def __post_init__(self):
        if not self.pretrained_checkpoint:
            raise ValueError("--pretrained_checkpoint is required (a checkpoint folder or Hub id)")
        if self.use_diffusion or self.use_film or not self.use_l1_regression:
            raise ValueError("only the L1 regression head is implemented: --use_l1_regression True, no diffusion/FiLM")
        if self.load_in_8bit or self.load_in_4bit:
            raise ValueError("8/4-bit loading is not supported; the policy runs in bf16 on GPUs and fp32 on CPUs")
        if self.use_relative_actions:
            raise ValueError("--use_relative_actions is unused upstream and not supported here")
        if self.max_batch_size < 1:
            raise ValueError("--max_batch_size must be at least 1")
        from prismatic.precision import check_precision

        check_precision(self.precision)


def build_server_state(cfg: DeployConfig):
    from prismatic.vla.inference import load_inference_policy
    from prismatic.vla.normalization import resolve_unnorm_key
    from prismatic.vla.serving import ServerState

    policy = load_inference_policy(
        cfg.pretrained_checkpoint, cfg.num_images_in_input, cfg.use_proprio, cfg.prune_visual_tokens,
        cfg.action_readout, cfg.visual_token_pruner, cfg.visual_token_budget, cfg.fastv_layer, cfg.seed,
        pruner_eval_duplicates=cfg.pruner_eval_duplicates, precision=cfg.precision,
    )  # fmt: skip
    unnorm_key = resolve_unnorm_key(policy.vla.norm_stats, cfg.unnorm_key or None)
    return ServerState(policy, unnorm_key, cfg.center_crop, cfg.max_batch_size, cfg.pretrained_checkpoint)


@draccus.wrap()
def deploy(cfg: DeployConfig) -> None:
    import uvicorn

    from prismatic.vla.serving import make_app

    logging.basicConfig(level=cfg.log_level.upper(), format="[deploy] %(message)s")
    state = build_server_state(cfg)
    vla = state.policy.vla
    print(
        f"[deploy] serving {cfg.pretrained_checkpoint} on http://{cfg.host}:{cfg.port}/act ({vla.device}, LLM {vla.language_model.dtype}, "
        f"{vla.get_num_images_in_input()} image(s), unnorm_key {state.unnorm_key!r}); health: /health"
    )
    uvicorn.run(make_app(state), host=cfg.host, port=cfg.port, log_level=cfg.log_level)


if __name__ == "__main__":
    deploy()
