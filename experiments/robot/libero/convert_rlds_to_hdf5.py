"""Convert an official RLDS LIBERO dataset (TFRecord shards) into LIBERO HDF5 files, without TensorFlow.

    python experiments/robot/libero/convert_rlds_to_hdf5.py \
        --rlds_dir modified_libero_rlds/libero_object_no_noops/1.0.0 \
        --out_dir datasets/libero/libero_object_no_noops

Episodes are grouped into one `{task}_demo.hdf5` per language instruction, written demo by demo (bounded memory)
and renamed into place when complete. The output reads through the same dataset as generated or regenerated data
(`--data_root_dir datasets/libero --dataset_name libero_object_no_noops`). RLDS stores no simulator states, so
converted demos train fine but cannot be replayed.
"""

from dataclasses import dataclass
from pathlib import Path

import draccus

from prismatic.vla.datasets import libero_hdf5
from prismatic.vla.datasets.rlds_tfrecord import iter_rlds_episodes


@dataclass
class RldsToHdf5Config:
    rlds_dir: Path = Path("modified_libero_rlds/libero_object_no_noops/1.0.0")  # folder with *-train.tfrecord-*
    out_dir: Path = Path("datasets/libero/libero_object_no_noops")


@draccus.wrap()
def main(cfg: RldsToHdf5Config) -> dict[str, int]:
    counts = libero_hdf5.write_task_files(
        cfg.out_dir, iter_rlds_episodes(cfg.rlds_dir), {"source": str(cfg.rlds_dir), "format": "rlds"}
    )
    for language, n in sorted(counts.items()):
        print(f"{n:4d} episodes  {language}")
    print(f"wrote {len(counts)} task files to {cfg.out_dir}")
    return counts


if __name__ == "__main__":
    main()
