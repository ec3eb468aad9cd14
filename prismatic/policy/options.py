"""The flags that say how a checkpoint is loaded and queried, defined once for every command that runs a policy.

Light on purpose (no torch at import): command-line configs subclass it, and ``--help`` should not wait for torch.
"""

from dataclasses import dataclass
from typing import Optional


@dataclass
class PolicyOptions:
    """How a checkpoint is loaded and queried: the flags evaluation (``run_libero_eval.py``), deployment
    (``deploy.py``) and verification (``verify_checkpoint.py``) share, under upstream's names. Flags marked "upstream"
    are accepted so that upstream's command lines run; what they would switch on that this code does not have is
    refused with a message rather than ignored."""

    # fmt: off
    model_family: str = "openvla"                   # upstream flag (one family)
    pretrained_checkpoint: str = ""                 # checkpoint folder or Hub id
    use_l1_regression: bool = True                  # upstream flag: the L1 regression head is the one implemented
    use_diffusion: bool = False                     # upstream flag (refused)
    num_diffusion_steps_train: int = 50             # upstream flag (diffusion only)
    num_diffusion_steps_inference: int = 50         # upstream flag (diffusion only)
    use_film: bool = False                          # upstream flag (refused)
    num_images_in_input: Optional[int] = 2          # None: as the checkpoint's config says
    use_proprio: bool = True
    center_crop: bool = True                        # the 90%-area center crop (the model was trained with crops)
    lora_rank: int = 32                             # upstream flag (checkpoints here hold merged weights)
    unnorm_key: str = ""                            # dataset statistics to un-normalise with
    load_in_8bit: bool = False                      # upstream flag (refused)
    load_in_4bit: bool = False                      # upstream flag (refused)
    prune_visual_tokens: Optional[bool] = None      # None: as the checkpoint (or a released one's name) says
    action_readout: Optional[str] = None            # oft_aligned | lightvla_tail (parity with released LightVLA)
    pruner_eval_duplicates: Optional[str] = None    # once | count (a kept patch weighs as its picks); None: checkpoint's
    visual_token_pruner: Optional[str] = None       # lightvla | none | random_k | text_topk | fastv (training-free)
    visual_token_budget: Optional[int] = None       # patches the baselines keep (LightVLA chooses its own count)
    fastv_layer: int = 2                            # FastV: decoder layers run on every token before pruning
    precision: str = "auto"                         # bf16 | fp32 | auto (bf16 on a GPU, fp32 on the CPU)
    seed: int = 7
    # fmt: on

    def __post_init__(self) -> None:
        if self.use_diffusion or self.use_film or not self.use_l1_regression:
            raise ValueError("only the L1 regression head is implemented: --use_l1_regression True, no diffusion/FiLM")
        if self.load_in_8bit or self.load_in_4bit:
            raise ValueError("8/4-bit loading is not supported; the policy runs in bf16 on GPUs and fp32 on CPUs")
        from prismatic.precision import check_precision

        check_precision(self.precision)
        if self.visual_token_pruner is not None:
            from prismatic.models.pruning_baselines import make_pruner

            make_pruner(self.visual_token_pruner, self.visual_token_budget, self.fastv_layer)  # validates the choice

    def require_checkpoint(self, alternative: str = "") -> None:
        if not self.pretrained_checkpoint:
            raise ValueError(f"--pretrained_checkpoint is required (a checkpoint folder or Hub id){alternative}")

    def load_policy(self, device: str | None = None):
        """The checkpoint as a ``prismatic.policy.checkpoints.Policy`` (device None: the GPU when there is one)."""
        from prismatic.policy.inference import load_inference_policy

        return load_inference_policy(
            self.pretrained_checkpoint, self.num_images_in_input, self.use_proprio, self.prune_visual_tokens,
            self.action_readout, self.visual_token_pruner, self.visual_token_budget, self.fastv_layer, self.seed,
            pruner_eval_duplicates=self.pruner_eval_duplicates, precision=self.precision, device=device,
        )  # fmt: skip
