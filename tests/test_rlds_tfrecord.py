"""The TensorFlow-free TFRecord / tf.train.Example reader, checked against messages serialised by protobuf itself."""

import io
import struct

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from PIL import Image

from prismatic.vla.datasets.rlds_tfrecord import (
    TFRecordError,
    crc32c,
    iter_rlds_episodes,
    iter_tfrecord,
    masked_crc32c,
    parse_example,
)


def example_class():
    """tf.train.Example (tensorflow/core/example/{example,feature}.proto) built at run time, without TensorFlow."""
    fdp = descriptor_pb2.FileDescriptorProto(name="example_test.proto", package="tensorflow", syntax="proto3")
    label_rep = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    label_opt = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    t = descriptor_pb2.FieldDescriptorProto
    for name, kind in (("BytesList", t.TYPE_BYTES), ("FloatList", t.TYPE_FLOAT), ("Int64List", t.TYPE_INT64)):
        msg = fdp.message_type.add(name=name)
        msg.field.add(name="value", number=1, label=label_rep, type=kind)
    feature = fdp.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate(
        (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), start=1
    ):
        feature.field.add(
            name=name,
            number=number,
            label=label_opt,
            type=t.TYPE_MESSAGE,
            type_name=f".tensorflow.{type_name}",
            oneof_index=0,
        )
    features = fdp.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=label_opt, type=t.TYPE_STRING)
    entry.field.add(name="value", number=2, label=label_opt, type=t.TYPE_MESSAGE, type_name=".tensorflow.Feature")
    features.field.add(
        name="feature", number=1, label=label_rep, type=t.TYPE_MESSAGE, type_name=".tensorflow.Features.FeatureEntry"
    )
    example = fdp.message_type.add(name="Example")
    example.field.add(name="features", number=1, label=label_opt, type=t.TYPE_MESSAGE, type_name=".tensorflow.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def rlds_episode(steps: int, language: str, seed: int) -> tuple[bytes, dict]:
    rng = np.random.default_rng(seed)
    truth = {
        "action": rng.uniform(-1, 1, (steps, 7)).astype(np.float32),
        "state": rng.normal(size=(steps, 8)).astype(np.float32),
        "joint_state": rng.normal(size=(steps, 7)).astype(np.float32),
        # smooth images survive JPEG nearly unchanged
        "image": np.stack([np.full((16, 16, 3), 40 * i, np.uint8) for i in range(steps)]),
    }
    truth["image"][:, :8] += 100  # top half brighter: tells upright from upside down
    msg = example_class()()
    f = msg.features.feature
    f["steps/action"].float_list.value.extend(truth["action"].ravel().tolist())
    f["steps/observation/state"].float_list.value.extend(truth["state"].ravel().tolist())
    f["steps/observation/joint_state"].float_list.value.extend(truth["joint_state"].ravel().tolist())
    f["steps/observation/image"].bytes_list.value.extend([jpeg(im) for im in truth["image"]])
    f["steps/observation/wrist_image"].bytes_list.value.extend([jpeg(im) for im in truth["image"]])
    f["steps/language_instruction"].bytes_list.value.extend([language.encode()] * steps)
    f["steps/is_first"].int64_list.value.extend([1] + [0] * (steps - 1))
    f["steps/reward"].float_list.value.extend([0.0] * (steps - 1) + [1.0])
    f["episode_metadata/file_path"].bytes_list.value.append(b"/data/x.hdf5")
    f["test/negative"].int64_list.value.extend([-5, 2**40])
    return msg.SerializeToString(), truth


def write_tfrecord(path, records: list[bytes]) -> None:
    with open(path, "wb") as out:
        for data in records:
            length = struct.pack("<Q", len(data))
            out.write(length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data)))


def test_crc32c_reference_value():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value


def test_parse_example_reads_every_feature_kind():
    record, truth = rlds_episode(3, "pick up the soup", 0)
    features = parse_example(record)
    np.testing.assert_array_equal(features["steps/action"], truth["action"].ravel())
    np.testing.assert_array_equal(features["steps/is_first"], [1, 0, 0])
    np.testing.assert_array_equal(features["test/negative"], [-5, 2**40])
    assert features["steps/language_instruction"] == [b"pick up the soup"] * 3
    assert features["episode_metadata/file_path"] == [b"/data/x.hdf5"]


def test_rlds_folder_to_demos_and_through_the_converter(tmp_path):
    shard_dir = tmp_path / "libero_object_no_noops" / "1.0.0"
    shard_dir.mkdir(parents=True)
    episodes = [
        rlds_episode(5, "pick up the soup", 0),
        rlds_episode(9, "pick up the milk", 1),
        rlds_episode(10, "pick up the soup", 2),
    ]
    write_tfrecord(shard_dir / "libero_object_no_noops-train.tfrecord-00000-of-00002", [e[0] for e in episodes[:2]])
    write_tfrecord(shard_dir / "libero_object_no_noops-train.tfrecord-00001-of-00002", [episodes[2][0]])
    demos = list(iter_rlds_episodes(shard_dir))
    assert [language for language, _ in demos] == ["pick up the soup", "pick up the milk", "pick up the soup"]
    demo, truth = demos[0][1], episodes[0][1]
    np.testing.assert_allclose(demo.actions, truth["action"])
    np.testing.assert_allclose(np.concatenate([demo.ee_pos, demo.ee_ori, demo.gripper_states], 1), truth["state"])
    stored = demo.images["agentview_rgb"]
    assert stored.shape == (5, 16, 16, 3)
    assert stored[0, 12:].mean() > stored[0, :4].mean() + 50  # kept as rendered: the bright half is at the bottom
    np.testing.assert_allclose(stored[:, ::-1, ::-1].astype(int), truth["image"].astype(int), atol=6)

    from experiments.robot.libero.convert_rlds_to_hdf5 import RldsToHdf5Config, main

    counts = main.__wrapped__(RldsToHdf5Config(rlds_dir=shard_dir, out_dir=tmp_path / "hdf5" / "libero_object_no_noops"))
    assert counts == {"pick up the soup": 2, "pick up the milk": 1}
    from prismatic.policy.presets import make_config, make_processor
    from prismatic.vla.datasets.datasets import LiberoDataset

    ds = LiberoDataset(tmp_path / "hdf5", "libero_object_no_noops", make_processor("tiny"), make_config("tiny"))
    assert sorted(e.length for e in ds.episodes) == [5, 9, 10]
    assert len(ds) == 0 + 2 + 3  # episodes shorter than a chunk give no samples
    sample = ds[0]
    assert sample["pixel_values"].shape == (12, 224, 224) and sample["proprio"].shape == (8,)


def test_truncated_and_corrupt_files_are_reported(tmp_path):
    record, _ = rlds_episode(2, "x", 0)
    path = tmp_path / "d-train.tfrecord-00000-of-00001"
    write_tfrecord(path, [record])
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(TFRecordError, match="truncated"):
        list(iter_tfrecord(path))
    path.write_bytes(data[:8] + b"\0\0\0\0" + data[12:])
    with pytest.raises(TFRecordError, match="corrupt record header"):
        list(iter_tfrecord(path))
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(TFRecordError, match="payload"):
        list(iter_tfrecord(path, verify_data=True))


def test_missing_shards_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="No TFRecord shards"):
        list(iter_rlds_episodes(tmp_path))
