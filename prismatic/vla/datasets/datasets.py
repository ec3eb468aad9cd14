"""Training data from LIBERO HDF5 demonstrations: one sample per step, streamed from disk.

`data_root_dir / dataset_name` is a folder of `{task}_demo.hdf5` files (see `libero_hdf5.py`); the mixture
`libero_4_task_suites_no_noops` reads the four suite folders together. A sample is what upstream's
`RLDSBatchTransform` yields (spec §5.4): the (augmented) camera images through the processor, the prompt with 56
action placeholder slots and STOP as labels, the normalised (8, 7) action chunk and the normalised 8-D proprio.

Samples are made a batch at a time (``__getitems__``, which DataLoader calls with a batch's indices), so the image
work is vectorised over the batch. Actions and proprio are read once per episode and kept; camera frames are kept too,
after the deterministic part of the pipeline (upright, JPEG round trip, resize), when they fit in ``frame_cache_gb``,
and are otherwise read from disk for every sample, so the dataset size is bounded by the disk, not the memory.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from prismatic.vla.constants import IGNORE_INDEX
from prismatic.vla.datasets import libero_hdf5, statistics
from prismatic.vla.datasets.lerobot_format import FeatureNames, ensure_hdf5_copy, is_lerobot_dataset
from prismatic.vla.image_pipeline import ImageAugmentation, resize_image_for_policy
from prismatic.vla.normalization import normalize
from prismatic.vla.prompts import ModelSettings, action_sequence, build_prompt

LIBERO_SUITE_DATASETS = tuple(f"libero_{s}_no_noops" for s in ("spatial", "object", "goal", "10"))
DATASET_MIXTURES = {"libero_4_task_suites_no_noops": LIBERO_SUITE_DATASETS}
STATISTICS_VERSION = "libero-hdf5-v1"  # bump when the statistics' definition changes, to invalidate caches


class DatasetError(ValueError):
    """The requested dataset cannot be read; the message says what to do."""


def dataset_folders(data_root_dir: Path, dataset_name: str, lerobot_names: FeatureNames | None = None) -> list[Path]:
    """The folders that make up `dataset_name`, checked to exist: a named mixture, folders joined by "+" (trained as
    one dataset, with one set of statistics under the joined name), or one folder. A LeRobot dataset folder stands for
    its HDF5 copy, converted on first use (``lerobot_format.ensure_hdf5_copy``; ``lerobot_names`` maps its features)."""
    root = Path(data_root_dir)
    names = DATASET_MIXTURES.get(dataset_name) or dataset_name.split("+")
    folders = [root / name for name in names]
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        available = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DatasetError(
            f"Dataset {dataset_name!r} not found: {', '.join(map(str, missing))} does not exist"
            + (f" (folders in {root}: {', '.join(available)})" if available else f" ({root} does not exist)")
            + ". Make demonstrations with `python experiments/robot/libero/generate_scripted_demos.py "
            f"--task_suite_name libero_object --out_dir {root}/libero_object_no_noops`, or regenerate the official "
            "LIBERO files with experiments/robot/libero/regenerate_libero_dataset.py."
        )
    return [ensure_hdf5_copy(f, lerobot_names) if is_lerobot_dataset(f) else f for f in folders]


def standardize_gripper(actions: np.ndarray) -> np.ndarray:
    """LIBERO's gripper command (-1 open, +1 close) -> the policy's (1 open, 0 close), as `libero_dataset_transform`."""
    actions = np.array(actions, dtype=np.float32)
    actions[..., -1] = 1.0 - np.clip(actions[..., -1], 0.0, 1.0)
    return actions


@dataclass(frozen=True)
class Episode:
    file_index: int
    demo: str
    length: int
    language: str


def chunk_indices(t: int, length: int, chunk: int) -> np.ndarray:
    """Steps t .. t+chunk-1, clamped to the last step (upstream's `chunk_act_obs` with a future window)."""
    return np.minimum(np.arange(t, t + chunk), length - 1)


class LiberoDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        data_root_dir: Path,
        dataset_name: str,
        processor,
        vla_config: ModelSettings,
        num_images_in_input: int = 2,
        use_proprio: bool = True,
        image_aug: bool = True,
        seed: int = 7,
        frame_cache_gb: float = 4.0,
        lerobot_names: FeatureNames | None = None,
    ) -> None:
        if num_images_in_input not in (1, 2):
            raise DatasetError(f"LIBERO has two cameras; num_images_in_input must be 1 or 2, got {num_images_in_input}")
        self.dataset_name = dataset_name
        self.processor = processor
        self.vla_config = vla_config
        self.action_space = vla_config.get_action_space()
        self.image_keys = libero_hdf5.IMAGE_KEYS[:num_images_in_input]
        self.use_proprio = use_proprio
        self.augment = ImageAugmentation() if image_aug else None
        self.image_size = vla_config.image_sizes[0]
        self.seed, self.epoch = seed, 0
        folders = dataset_folders(data_root_dir, dataset_name, lerobot_names)
        self.files = [f for folder in folders for f in libero_hdf5.list_demo_files(folder)]
        if not self.files:
            raise DatasetError(
                f"Dataset {dataset_name!r} has no .hdf5 files in {data_root_dir}; generate some with "
                "experiments/robot/libero/generate_scripted_demos.py."
            )
        self.episodes = self._index_episodes()
        self._episode_ids = {episode: e for e, episode in enumerate(self.episodes)}
        # Samples stop `chunk - 1` steps before each episode's end, so every chunk holds real future actions.
        usable = np.array([max(e.length - (self.action_space.num_actions_chunk - 1), 0) for e in self.episodes])
        if usable.sum() == 0:
            raise DatasetError(f"Dataset {dataset_name!r} has no episode longer than one action chunk.")
        self._starts = np.concatenate([[0], np.cumsum(usable)])
        self.dataset_statistics = {dataset_name: self._statistics()}
        self._handles: dict[int, object] = {}
        self._handles_pid = os.getpid()
        self._low_dim: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # episode -> (actions, proprio), normalised
        frame_bytes = sum(e.length for e in self.episodes) * len(self.image_keys) * 3 * self.image_size**2
        self._frames: dict[tuple[int, int], np.ndarray] | None = {} if frame_bytes <= frame_cache_gb * 2**30 else None

    # -- index and statistics ---------------------------------------------------------------------------------------
    def _index_episodes(self) -> list[Episode]:
        import h5py

        episodes, qualities = [], {}
        for i, path in enumerate(self.files):
            try:
                f = h5py.File(path, "r")
            except OSError as err:
                raise DatasetError(f"{path} cannot be opened as HDF5 ({err}); delete or regenerate it.") from err
            with f:
                language = libero_hdf5.read_language(f)
                qualities.setdefault(libero_hdf5.read_render_quality(f), path)
                for name in libero_hdf5.demo_names(f):
                    libero_hdf5.check_demo_group(f, name)
                    episodes.append(Episode(i, name, len(f["data"][name]["actions"]), language))
        if not episodes:
            raise DatasetError(f"Dataset {self.dataset_name!r}: its files hold no demonstrations (no data/demo_*).")
        if len(qualities) > 1:
            raise DatasetError(
                f"Dataset {self.dataset_name!r} mixes frames rendered at different qualities ({qualities}): a policy "
                "would learn two looks of one scene. Regenerate one part with the other's --render_quality."
            )
        self.render_quality = next(iter(qualities))  # recorded in trained checkpoints: evaluation renders the same way
        return episodes

    def _statistics(self) -> dict:
        key = statistics.fingerprint(self.files, f"{STATISTICS_VERSION}|{self.dataset_name}")
        cache_dir = Path(self.files[0]).parent
        cached = statistics.load_cached(cache_dir, key)
        if cached is not None:
            return cached
        mask = [True] * (self.action_space.action_dim - 1) + [False]  # the gripper stays in {0, 1}
        computed = statistics.compute_statistics(self._episode_arrays(), mask)
        statistics.save_cached(cache_dir, key, computed)
        return computed

    def _episode_arrays(self):
        import h5py

        for path in self.files:
            with h5py.File(path, "r") as f:
                for name in libero_hdf5.demo_names(f):
                    group = f["data"][name]
                    yield standardize_gripper(group["actions"][()]), libero_hdf5.read_proprio(group["obs"])

    # -- samples ----------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[Episode, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        episode = int(np.searchsorted(self._starts, index, side="right") - 1)
        return self.episodes[episode], int(index - self._starts[episode])

    def _file(self, file_index: int):
        import h5py

        if self._handles_pid != os.getpid():  # a forked DataLoader worker: never share HDF5 handles across processes
            self._handles, self._handles_pid = {}, os.getpid()
        if file_index not in self._handles:
            self._handles[file_index] = h5py.File(self.files[file_index], "r")
        return self._handles[file_index]

    def set_epoch(self, epoch: int) -> None:
        """Augmentations depend on (seed, epoch, sample, camera) only: not on workers, order or resumption. This sets
        the epoch of plain indices; an ``(epoch, index)`` pair (what training's sampler yields) carries its own."""
        self.epoch = epoch

    def _low_dim_data(self, e: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Normalised actions (T, action_dim) and proprio (T, 8) of episode ``e``, read once."""
        if e not in self._low_dim:
            episode = self.episodes[e]
            group = self._file(episode.file_index)["data"][episode.demo]
            stats, norm = self.dataset_statistics[self.dataset_name], self.action_space.normalization_type
            actions = normalize(standardize_gripper(group["actions"][()]), stats["action"], norm)
            proprio = (
                normalize(libero_hdf5.read_proprio(group["obs"]), stats["proprio"], norm) if self.use_proprio else None
            )
            self._low_dim[e] = (
                np.asarray(actions, np.float32),
                None if proprio is None else np.asarray(proprio, np.float32),
            )
        return self._low_dim[e]

    def _frame(self, e: int, t: int, camera: int) -> np.ndarray:
        """Frame ``t`` of episode ``e`` as upstream makes it from its RLDS frames, before the random augmentation:
        upright, through the JPEG codec the RLDS files were written with, lanczos3 to the model's size."""
        episode = self.episodes[e]
        obs = self._file(episode.file_index)["data"][episode.demo]["obs"][self.image_keys[camera]]
        if self._frames is None:
            return resize_image_for_policy(obs[t][::-1, ::-1], self.image_size)  # stored as rendered: turn upright
        if (e, camera) not in self._frames:
            self._frames[(e, camera)] = np.stack(
                [resize_image_for_policy(f[::-1, ::-1], self.image_size) for f in obs[()]]
            )
        return self._frames[(e, camera)][t]

    def _images(self, located: list[tuple[int, int]], tagged: list[tuple[int, int]], camera: int) -> torch.Tensor:
        """(B, 3 * featurizers, H, W) processor inputs of one camera for a batch of (epoch, index) samples."""
        frames = np.stack([self._frame(e, t, camera) for e, t in located])
        if self.augment is not None:
            seeds = [hash((self.seed, epoch, index, camera)) & 0x7FFF_FFFF_FFFF_FFFF for epoch, index in tagged]
            frames = self.augment.batch(frames, [torch.Generator().manual_seed(seed) for seed in seeds])
        return self.processor.image_processor.normalize_images(frames)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int | tuple[int, int]]) -> list[dict]:
        """Samples by index, or by ``(epoch, index)`` (the epoch of the augmentation; plain ints use ``set_epoch``'s)."""
        tagged = [item if isinstance(item, tuple) else (self.epoch, item) for item in indices]
        located = []
        for _, index in tagged:
            episode, t = self.locate(index)
            located.append((self._episode_ids[episode], t))
        pixel_values = torch.cat([self._images(located, tagged, k) for k in range(len(self.image_keys))], dim=1)
        samples = []
        for (e, t), pixels in zip(located, pixel_values):
            episode = self.episodes[e]
            actions, proprio = self._low_dim_data(e)
            prompt_ids = self.processor.tokenizer(build_prompt(episode.language)).input_ids
            input_ids, labels = action_sequence(torch.as_tensor(prompt_ids), self.vla_config)
            sample = {
                "pixel_values": pixels,
                "input_ids": input_ids,
                "labels": labels,
                "actions": torch.as_tensor(
                    actions[chunk_indices(t, episode.length, self.action_space.num_actions_chunk)]
                ),
                "dataset_name": self.dataset_name,
            }
            if proprio is not None:
                sample["proprio"] = torch.as_tensor(proprio[t])
            samples.append(sample)
        return samples

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}  # open HDF5 files cannot be pickled to spawned workers
        return state


@dataclass
class PaddedCollatorForActionPrediction:
    """Right-pads token sequences and stacks everything else into a batch (spec §5.4, without the B=1 squeeze bug)."""

    model_max_length: int
    pad_token_id: int
    padding_side: str = "right"

    def __post_init__(self):
        if self.padding_side != "right":
            raise ValueError("action prediction needs right padding: the action slots follow each prompt")

    def __call__(self, instances: list[dict]) -> dict:
        input_ids = pad_sequence([x["input_ids"] for x in instances], batch_first=True, padding_value=self.pad_token_id)
        labels = pad_sequence([x["labels"] for x in instances], batch_first=True, padding_value=IGNORE_INDEX)
        input_ids, labels = input_ids[:, : self.model_max_length], labels[:, : self.model_max_length]
        batch = {
            "pixel_values": torch.stack([x["pixel_values"] for x in instances]),
            "input_ids": input_ids,
            "attention_mask": input_ids.ne(self.pad_token_id),
            "labels": labels,
            "actions": torch.stack([x["actions"] for x in instances]),
            "dataset_names": [x["dataset_name"] for x in instances],
        }
        if "proprio" in instances[0]:
            batch["proprio"] = torch.stack([x["proprio"] for x in instances])
        return batch
