"""Convert an official RLDS LIBERO dataset (TFRecord shards) into LIBERO HDF5 files, without TensorFlow.

    python experiments/robot/libero/convert_rlds_to_hdf5.py \
        --rlds_dir modified_libero_rlds/libero_object_no_noops/1.0.0 \
        --out_dir datasets/libero/libero_object_no_noops

Episodes are grouped into one `{task}_demo.hdf5` per language instruction, written demo by demo (bounded memory)
and renamed into place when complete. The output reads through the same dataset as generated or regenerated data
(`--data_root_dir datasets/libero --dataset_name libero_object_no_noops`). RLDS stores no simulator states, so
converted demos train fine but cannot be replayed.
"""

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import draccus
from tqdm import tqdm

from prismatic.vla.datasets import libero_hdf5
from prismatic.vla.datasets.rlds_tfrecord import iter_rlds_episodes


@dataclass
class RldsToHdf5Config:
    rlds_dir: Path = Path("modified_libero_rlds/libero_object_no_noops/1.0.0")  # folder with *-train.tfrecord-*
    out_dir: Path = Path("datasets/libero/libero_object_no_noops")


@draccus.wrap()
def main(cfg: RldsToHdf5Config) -> dict[str, int]:
    counts: dict[str, int] = {}
    with ExitStack() as stack:
        writers: dict[str, libero_hdf5.DemoFileWriter] = {}
        for language, demo in tqdm(iter_rlds_episodes(cfg.rlds_dir), desc="episodes", unit="episode"):
            if language not in writers:
                path = Path(cfg.out_dir) / libero_hdf5.task_file_name(language.replace(" ", "_"))
                source = {"source": str(cfg.rlds_dir), "format": "rlds"}
                writers[language] = stack.enter_context(libero_hdf5.DemoFileWriter(path, language, source, ""))
            writers[language].append(demo)
            counts[language] = counts.get(language, 0) + 1
    for language, n in sorted(counts.items()):
        print(f"{n:4d} episodes  {language}")
    print(f"wrote {len(counts)} task files to {cfg.out_dir}")
    return counts


if __name__ == "__main__":
    main()
