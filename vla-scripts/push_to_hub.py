"""Push a fine-tuned checkpoint folder to the Hugging Face Hub with a generated model card.

    python vla-scripts/push_to_hub.py --checkpoint runs/<run>--<step>_chkpt --repo_id <user>/<name> [--private True]
    python vla-scripts/push_to_hub.py --checkpoint ... --repo_id ... --dry_run True   # card and file list only

The optimizer state (training_state.pt) and a preset run's base_model/ stay local. Authentication: HF_TOKEN or
`hf auth login`. Pull with `load_policy("<user>/<name>")` or `--pretrained_checkpoint <user>/<name>`.
"""

from dataclasses import dataclass
from pathlib import Path

import draccus

from prismatic.policy.checkpoints import CheckpointError
from prismatic.policy.hub import HubError, files_to_upload, model_card, push_checkpoint


@dataclass
class PushConfig:
    checkpoint: str = ""
    repo_id: str = ""
    private: bool = False
    commit_message: str = ""
    dry_run: bool = False  # print the model card and the files that would be uploaded; no network

    def __post_init__(self):
        if not self.checkpoint or not self.repo_id:
            raise ValueError("pass --checkpoint <folder> and --repo_id <user>/<name>")
        if self.repo_id.count("/") != 1:
            raise ValueError(f"--repo_id must look like <user or org>/<name>, got {self.repo_id!r}")


@draccus.wrap()
def main(cfg: PushConfig) -> str | None:
    folder = Path(cfg.checkpoint)
    try:
        if cfg.dry_run:
            print(model_card(folder, cfg.repo_id))
            print("files:", *[f"  {rel}" for rel in files_to_upload(folder)], sep="\n")
            return None
        url = push_checkpoint(folder, cfg.repo_id, cfg.private, commit_message=cfg.commit_message or None)
    except (CheckpointError, HubError) as err:
        raise SystemExit(f"push_to_hub: {err}") from None
    print(f"pushed {folder} to {url}")
    return url


if __name__ == "__main__":
    main()
