"""Serve a policy over HTTP (upstream's `POST /act` protocol, plus batched requests and `GET /health`).

    python vla-scripts/deploy.py --pretrained_checkpoint runs/quickstart/runs/tiny-quickstart \
        --unnorm_key libero_object_no_noops --num_images_in_input 2 --port 8777

Clients post a json-numpy encoded observation (full_image, wrist image(s), state, instruction) and get the
un-normalised action chunk back; `experiments/robot/openvla_utils.get_action_from_server` is such a client. See
`prismatic/policy/serving.py` for the protocol and the error answers.
"""

import logging
from dataclasses import dataclass
from typing import Optional

import draccus

from prismatic.policy.options import PolicyOptions


@dataclass
class DeployConfig(PolicyOptions):
    """Upstream's deployment flags: the policy's (``PolicyOptions``) and the server's."""

    # fmt: off
    host: str = "0.0.0.0"
    port: int = 8777
    num_images_in_input: Optional[int] = None       # None: as the checkpoint's config says (upstream default: 3)
    unnorm_key: str = ""                            # required when the checkpoint has statistics for several datasets
    use_relative_actions: bool = False              # upstream flag (refused)
    max_batch_size: int = 32                        # observations per batched request
    log_level: str = "info"
    # fmt: on

    def __post_init__(self):
        super().__post_init__()
        self.require_checkpoint()
        if self.use_relative_actions:
            raise ValueError("--use_relative_actions is unused upstream and not supported here")
        if self.max_batch_size < 1:
            raise ValueError("--max_batch_size must be at least 1")


def build_server_state(cfg: DeployConfig):
    from prismatic.policy.serving import ServerState
    from prismatic.vla.normalization import resolve_unnorm_key

    policy = cfg.load_policy()
    unnorm_key = resolve_unnorm_key(policy.vla.norm_stats, cfg.unnorm_key or None)
    return ServerState(policy, unnorm_key, cfg.center_crop, cfg.max_batch_size, cfg.pretrained_checkpoint)


@draccus.wrap()
def deploy(cfg: DeployConfig) -> None:
    import uvicorn

    from prismatic.policy.serving import make_app

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
