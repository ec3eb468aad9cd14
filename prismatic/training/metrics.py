"""Training metrics: metrics.jsonl in the run folder and Weights & Biases when a project is configured (never fatal);
reading them back as tables and plots."""

import contextlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from prismatic.plotting import pyplot, save_figure
from prismatic.training.config import FinetuneConfig

WANDB_PLACEHOLDERS = {"", "your-wandb-entity", "your-wandb-project"}
METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Console, metrics.jsonl in the run folder, and Weights & Biases when a project is configured (never fatal)."""

    def __init__(self, cfg: FinetuneConfig, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.wandb = None
        if enabled and cfg.wandb_project not in WANDB_PLACEHOLDERS:
            self.wandb = self._init_wandb(cfg)

    @staticmethod
    def _init_wandb(cfg: FinetuneConfig):
        try:
            import wandb

            has_key = bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _read(Path.home() / ".netrc")
            mode = os.environ.get("WANDB_MODE", "online" if has_key else "offline")
            entity = None if cfg.wandb_entity in WANDB_PLACEHOLDERS else cfg.wandb_entity
            return wandb.init(
                project=cfg.wandb_project, entity=entity, name=cfg.run_id, config=asdict(cfg), mode=mode,
                settings=wandb.Settings(init_timeout=30),
            )  # fmt: skip
        except Exception as err:
            print(f"[finetune] Weights & Biases disabled ({type(err).__name__}: {err})")
            return None

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.wandb is not None:
            try:
                self.wandb.log({f"VLA Train/{k.replace('_', ' ').title()}": v for k, v in metrics.items()}, step=step)
            except Exception as err:
                print(f"[finetune] Weights & Biases logging failed, continuing without it ({err})")
                self.wandb = None

    def close(self) -> None:
        if self.wandb is not None:
            with contextlib.suppress(Exception):  # a failing upload must not turn a finished run into a crash
                self.wandb.finish()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# --- reading runs back -----------------------------------------------------------------------------------------------
def read_metrics(run: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a run folder or the file itself), one per logged step, in step order."""
    path = Path(run)
    path = path / METRICS_FILE if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"no training metrics at {path}; finetune.py writes {METRICS_FILE} in the run folder")
    records = {}
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line torn by a kill
            record = json.loads(line)
            records[record["step"]] = {**records.get(record["step"], {}), **record}
    return [records[step] for step in sorted(records)]


def format_curves(name: str, records: list[dict], rows: int = 12) -> str:
    """A table of about `rows` evenly spaced logged steps (the last included)."""
    if not records:
        return f"{name}: no records"
    kept = [r for r in records if "kept_visual_tokens" in r]
    chosen = kept if kept else records
    picks = sorted({round(i * (len(chosen) - 1) / max(rows - 1, 1)) for i in range(rows)})
    lines = [f"{name}", f"{'step':>7} {'loss':>8} {'lr':>9} {'noise':>6} {'kept tokens':>12}"]
    for record in (chosen[i] for i in picks):
        kept_text = f"{record['kept_visual_tokens']:.1f}" if "kept_visual_tokens" in record else "-"
        lines.append(
            f"{record['step']:>7} {record.get('loss', float('nan')):>8.4f} {record.get('learning_rate', 0):>9.2e} "
            f"{record.get('noise_scale', 0):>6.2f} {kept_text:>12}"
        )
    return "\n".join(lines)


def plot_curves(curves: dict[str, list[dict]], path: str | Path) -> Path:
    """Loss (left) and kept visual tokens (right) against the step, one line per run; written atomically."""
    fig, (loss_ax, kept_ax) = pyplot().subplots(1, 2, figsize=(9, 3.3))
    for name, records in curves.items():
        label = Path(name).name
        loss_ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=label, lw=1)
        kept = [r for r in records if "kept_visual_tokens" in r]
        if kept:
            kept_ax.plot([r["step"] for r in kept], [r["kept_visual_tokens"] for r in kept], marker=".", label=label)
    loss_ax.set(xlabel="step", ylabel="L1 loss (normalised actions)", yscale="log", title="training loss")
    kept_ax.set(xlabel="step", ylabel="kept visual tokens (eval mode)", title="kept tokens")
    for ax in (loss_ax, kept_ax):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
