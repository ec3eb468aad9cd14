"""Read the official RLDS LIBERO datasets (`modified_libero_rlds`, TFDS TFRecord shards) without TensorFlow.

A TFRecord file is a sequence of records: ``uint64 length | uint32 masked CRC32C(length) | data | uint32 masked
CRC32C(data)``. Each record of an RLDS/TFDS dataset is one episode, serialised as a ``tf.train.Example`` protobuf
whose features are the episode's fields flattened with "/" (``steps/action``, ``steps/observation/image``, ...):
images as one JPEG per step in a bytes list, vectors as flat float lists, flags as int64 lists.

We decode the few protobuf wire types that ``tf.train.Example`` uses by hand, which keeps TensorFlow (1.6 GB and an
h5py downgrade) out of the install. `rlds_episode_to_demo` turns an episode into the LIBERO HDF5 layout so that the
converted data goes through the same dataset code as everything else.
"""

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from prismatic.vla.datasets.libero_hdf5 import Demo


class TFRecordError(ValueError):
    """A TFRecord file is truncated or corrupt, or a record is not a tf.train.Example."""


# --- CRC32C (Castagnoli), as TFRecord uses it ---------------------------------------------------------------------
def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def iter_tfrecord(path: Path, verify_data: bool = False) -> Iterator[bytes]:
    """Yield the records of one TFRecord file. The length header is always checked; the (much larger) payload's
    checksum only with `verify_data` (pure Python: slow for image-heavy episodes)."""
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise TFRecordError(f"{path}: truncated record header")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                raise TFRecordError(f"{path}: corrupt record header (length checksum mismatch)")
            data, footer = f.read(length), f.read(4)
            if len(data) < length or len(footer) < 4:
                raise TFRecordError(f"{path}: truncated record (file cut short?)")
            if verify_data and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise TFRecordError(f"{path}: corrupt record payload (checksum mismatch)")
            yield data


# --- tf.train.Example -------------------------------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFRecordError("truncated protobuf varint")
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message: ints for varint/fixed, bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            raise TFRecordError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_feature(buf: bytes) -> list | np.ndarray:
    """Feature { oneof: BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3 }."""
    for number, _, payload in _fields(buf):
        if number == 1:
            return [value for _, _, value in _fields(payload)]
        if number == 2:
            # packed (one length-delimited run) or not (one 4-byte field per value): the bytes are the same floats
            floats = [np.frombuffer(value, dtype="<f4") for _, _, value in _fields(payload)]
            return np.concatenate(floats) if floats else np.zeros(0, np.float32)
        if number == 3:
            ints = []
            for _, wire, value in _fields(payload):
                if wire == 2:  # packed
                    pos = 0
                    while pos < len(value):
                        item, pos = _varint(value, pos)
                        ints.append(_signed64(item))
                else:
                    ints.append(_signed64(value))
            return np.array(ints, dtype=np.int64)
    return []


def parse_example(buf: bytes) -> dict[str, list | np.ndarray]:
    """Example { Features features = 1 } -> {feature name: bytes list | float32 array | int64 array}."""
    features = {}
    for number, _, payload in _fields(buf):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(payload):  # Features { map<string, Feature> feature = 1 }
            if entry_number != 1:
                continue
            key, value = None, b""
            for field, _, item in _fields(entry):
                if field == 1:
                    key = item.decode()
                elif field == 2:
                    value = item
            if key is None:
                raise TFRecordError("protobuf map entry without a key: not a tf.train.Example")
            features[key] = _parse_feature(value)
    return features


# --- RLDS LIBERO episodes ---------------------------------------------------------------------------------------
def list_tfrecord_files(folder: Path) -> list[Path]:
    """TFDS shards under `folder` (e.g. `modified_libero_rlds/libero_object_no_noops/1.0.0`), train split only."""
    files = sorted(p for p in Path(folder).rglob("*.tfrecord*") if "train" in p.name)
    if not files:
        raise FileNotFoundError(
            f"No TFRecord shards (*-train.tfrecord-*) under {folder}. Point at the version folder of an RLDS dataset, "
            "e.g. modified_libero_rlds/libero_object_no_noops/1.0.0."
        )
    return files


def _decode_jpeg_rotated_back(data: bytes) -> np.ndarray:
    """RLDS images are stored upright (turned 180°); the LIBERO HDF5 layout keeps frames as rendered."""
    return np.ascontiguousarray(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[::-1, ::-1])


def rlds_episode_to_demo(features: dict) -> tuple[str, Demo]:
    """(language instruction, Demo) from one parsed RLDS LIBERO episode (spec §5.1 step features)."""
    required = ("steps/action", "steps/observation/state", "steps/observation/image", "steps/language_instruction")
    missing = [key for key in required if key not in features]
    if missing:
        raise TFRecordError(f"not a LIBERO RLDS episode: missing {', '.join(missing)}")
    actions = np.asarray(features["steps/action"], dtype=np.float64).reshape(-1, 7)
    steps = len(actions)
    state = np.asarray(features["steps/observation/state"], dtype=np.float64).reshape(steps, 8)
    joints = features.get("steps/observation/joint_state")
    joints = np.asarray(joints, np.float64).reshape(steps, 7) if joints is not None else np.zeros((steps, 7))
    images = {"agentview_rgb": np.stack([_decode_jpeg_rotated_back(b) for b in features["steps/observation/image"]])}
    wrist = features.get("steps/observation/wrist_image")
    if wrist is not None:
        images["eye_in_hand_rgb"] = np.stack([_decode_jpeg_rotated_back(b) for b in wrist])
    language = features["steps/language_instruction"][0].decode()
    demo = Demo(
        actions=actions,
        states=np.zeros((steps, 0)),  # RLDS keeps no simulator states: these demos cannot be replayed
        robot_states=np.zeros((steps, 9)),
        ee_pos=state[:, :3],
        ee_ori=state[:, 3:6],
        gripper_states=state[:, 6:],
        joint_states=joints,
        images=images,
    )
    return language, demo


def iter_rlds_episodes(folder: Path) -> Iterator[tuple[str, Demo]]:
    for path in list_tfrecord_files(folder):
        for record in iter_tfrecord(path):
            yield rlds_episode_to_demo(parse_example(record))
