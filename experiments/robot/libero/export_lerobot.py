"""Export LIBERO HDF5 demonstrations (scripted, regenerated or converted) as a LeRobot v3.0 dataset, with the feature
names of LeRobot's LIBERO environment, for LeRobot and openpi users:

    python experiments/robot/libero/export_lerobot.py \
        --hdf5_dir runs/quickstart-libero_object-0/data/libero_object_no_noops --out_dir runs/lerobot/libero_object

The export reads back for training here too (`finetune.py --data_root_dir runs/lerobot --dataset_name
libero_object`); `prismatic/vla/datasets/lerobot_format.py` says what is written and how.
"""

from dataclasses import dataclass
from pathlib import Path

import draccus

from prismatic.vla.datasets.lerobot_format import export_hdf5_folder


@dataclass
class ExportLeRobotConfig:
    hdf5_dir: Path = Path("datasets/libero/libero_object_no_noops")  # a folder of {task}_demo.hdf5 files
    out_dir: Path = Path("datasets/lerobot/libero_object")  # the LeRobot dataset folder to write (replaced)


@draccus.wrap()
def main(cfg: ExportLeRobotConfig) -> dict:
    info = export_hdf5_folder(cfg.hdf5_dir, cfg.out_dir)
    print(
        f"wrote {cfg.out_dir}: LeRobot {info['codebase_version']}, {info['total_episodes']} episodes, "
        f"{info['total_frames']} frames, {info['total_tasks']} task(s)"
    )
    return info


if __name__ == "__main__":
    main()
