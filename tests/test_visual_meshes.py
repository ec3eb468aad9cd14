"""Render quality "fast" (experiments/robot/libero/visual_meshes.py): decimated visual meshes, physics untouched."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from experiments.robot.libero import visual_meshes as vm


def textured_grid(n: int = 60) -> vm.Mesh:
    """An unwelded (3 vertices per triangle, as LIBERO's files) wavy n x n grid with texture coordinates."""
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    positions = np.stack([u, v, 0.05 * np.sin(6 * u) * np.cos(4 * v)], -1).reshape(-1, 3).astype(np.float32)
    texcoords = np.stack([u, v], -1).reshape(-1, 2).astype(np.float32)
    quads = np.array([[i * n + j, (i + 1) * n + j, i * n + j + 1, (i + 1) * n + j + 1]
                      for i in range(n - 1) for j in range(n - 1)])  # fmt: skip
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [2, 1, 3]]])
    corners = faces.reshape(-1)
    return vm.Mesh(positions[corners], np.arange(len(corners), dtype=np.uint32).reshape(-1, 3), None, texcoords[corners])


@pytest.mark.parametrize("suffix", [".msh", ".obj", ".stl"])
def test_simplified_copy_keeps_original_vertices_and_their_texture_coordinates(tmp_path, suffix):
    read, write = vm.FORMATS[suffix]
    source = tmp_path / f"grid{suffix}"
    write(textured_grid(), source)
    original = read(source)
    simplified = vm.simplify(original)
    assert len(simplified.faces) <= max(vm.MIN_TRIANGLES, vm.TARGET_RATIO * len(original.faces)) < len(original.faces)
    attributes = lambda m: m.positions if m.texcoords is None else np.concatenate([m.positions, m.texcoords], 1)  # noqa: E731
    known = {tuple(row) for row in attributes(original)}
    assert all(tuple(row) in known for row in attributes(simplified))  # a subset: (position, uv) pairs unchanged
    if suffix != ".stl":
        assert simplified.texcoords is not None
    copy = tmp_path / f"copy{suffix}"
    write(simplified, copy)
    again = read(copy)
    np.testing.assert_array_equal(again.faces.shape, simplified.faces.shape)
    assert {tuple(r) for r in attributes(again)} == {tuple(r) for r in attributes(simplified)}


def _build(source: str, cache: str) -> str:
    os.environ["LIGHTVLA_CACHE"] = cache
    return str(vm.cached_copy(source))


def test_cache_is_keyed_by_content_and_survives_concurrent_builders(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTVLA_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "grid.msh"
    vm.write_msh(textured_grid(80), source)
    with multiprocessing.get_context("spawn").Pool(3) as pool:  # three processes build the same copy at once
        built = pool.starmap(_build, [(str(source), str(tmp_path / "cache"))] * 3)
    assert len(set(built)) == 1
    first = vm.read_msh(built[0])
    reference = vm.simplify(vm.read_msh(source))
    np.testing.assert_array_equal(first.positions, reference.positions)
    np.testing.assert_array_equal(first.faces, reference.faces)
    assert not list((tmp_path / "cache" / "meshes").glob(".*"))  # no staging files left behind
    assert vm.cached_copy(str(source)) == Path(built[0])  # reused

    vm.write_msh(textured_grid(50), source)  # the asset changes: a new copy, from the new content
    rebuilt = vm.cached_copy(str(source))
    assert rebuilt != Path(built[0])
    assert len(vm.read_msh(rebuilt).faces) < len(first.faces)


def test_only_drawn_visual_geoms_draw_simplified_meshes_and_large_textures_shrink(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("LIGHTVLA_CACHE", str(tmp_path / "cache"))
    source, only_drawn = tmp_path / "grid.msh", tmp_path / "only_drawn.msh"
    vm.write_msh(textured_grid(), source)
    vm.write_msh(textured_grid(), only_drawn)
    pixels = np.random.default_rng(0).integers(0, 256, (700, 1100, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "large.png")
    Image.fromarray(pixels[:64, :64]).save(tmp_path / "small.png")
    xml = f"""<mujoco><default><material reflectance="0.2"/></default>
      <asset><mesh name="m" file="{source}" scale="2 2 2"/><mesh name="d" file="{only_drawn}"/>
      <material name="x" reflectance="0.3" rgba="1 0 0 1"/><material name="y"/>
      <texture name="large" type="2d" file="{tmp_path / 'large.png'}"/>
      <texture name="small" type="2d" file="{tmp_path / 'small.png'}"/>
      <texture name="grid" type="cube" gridsize="1 1" file="{tmp_path / 'large.png'}"/></asset>
      <worldbody><body name="b">
      <geom name="vis" type="mesh" mesh="m" contype="0" conaffinity="0" group="1" density="100" material="x"/>
      <geom name="col" type="mesh" mesh="m" group="0"/>
      <geom name="undrawn" type="mesh" mesh="m" contype="0" conaffinity="0" mass="1"/>
      <geom name="drawn" type="mesh" mesh="d" contype="0" conaffinity="0" group="2"/></body></worldbody></mujoco>"""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(vm.fast_render_xml(xml, show_progress=False))
    geoms = root.find("worldbody/body").findall("geom")
    assert [(g.get("name"), g.get("mesh"), g.get("group")) for g in geoms] == [
        ("vis", "m__fast", "1"), ("col", "m", "0"), ("undrawn", "m", None), ("drawn", "d__fast", "2"),
    ]  # fmt: skip  # a group-0 geom is never drawn and may weigh in robosuite's inertias: left alone
    assert geoms[0].get("density") == "100" and geoms[0].get("material") == "x"  # nothing else about it changes
    meshes = {m.get("name"): m for m in root.find("asset").findall("mesh")}
    assert sorted(meshes) == ["d__fast", "m", "m__fast"]  # "d" drew nothing any more: not uploaded
    assert meshes["m__fast"].get("scale") == "2 2 2" and Path(meshes["m__fast"].get("file")).exists()
    textures = {t.get("name"): t.get("file") for t in root.find("asset").findall("texture")}
    assert textures["small"] == str(tmp_path / "small.png") and textures["grid"] == str(tmp_path / "large.png")
    shrunk = np.asarray(Image.open(textures["large"]))
    assert shrunk.shape == (234, 367, 3)  # 1100 px -> a factor of 3 brings it under MAX_TEXTURE_SIDE (512)
    blocks = pixels[:699, :1098].reshape(233, 3, 366, 3, 3).mean(axis=(1, 3))  # an independent block mean
    assert np.abs(shrunk[:233, :366].astype(float) - blocks).max() < 1  # rounding only
    Image.fromarray(255 - pixels).save(tmp_path / "large.png")  # the texture changes: a new copy, from the new content
    changed = ET.fromstring(vm.fast_render_xml(xml, show_progress=False)).find("asset/texture[@name='large']")
    assert changed.get("file") != textures["large"] and np.asarray(Image.open(changed.get("file")))[0, 0, 0] != shrunk[0, 0, 0]
    assert root.find("visual/quality").get("offsamples") == "0"  # multisampling off: part of "fast"
    materials = [(m.get("name"), m.get("reflectance"), m.get("rgba")) for m in root.iter("material")]
    assert materials == [(None, "0", None), ("x", "0", "1 0 0 1"), ("y", "0", None)]  # nothing reflects, else as is


# --- in the simulator ----------------------------------------------------------------------------------------------------
def rollout(quality: str, steps: int = 40, monkeypatch=None):
    """qpos+qvel per step, frames and success checks; with ``monkeypatch``, robosuite compiles the model itself
    (LIBERO as shipped) instead of simulating a copy of this process's compiled one (libero_utils)."""
    from experiments.robot.libero import libero_utils as lu

    task = lu.get_task("libero_object", 0)
    state = lu.get_initial_states("libero_object", 0)[3]
    env = lu.make_env(task, resolution=64, render_quality=quality)
    if monkeypatch is not None:
        import mujoco
        from robosuite.utils import binding_utils

        compile_now = classmethod(lambda cls, xml: cls(mujoco.MjModel.from_xml_string(xml)))
        monkeypatch.setattr(binding_utils.MjSim, "from_xml_string", compile_now)
    try:
        env.seed(5)
        env.reset()
        env.set_init_state(state)
        rng = np.random.default_rng(0)
        physics, frames, successes = [], [], []
        for t in range(steps):
            action = np.concatenate([rng.uniform(-0.5, 0.5, 6), [-1.0 if t < steps // 2 else 1.0]])
            obs, _, _, _ = env.step(action)
            sim = env.env.sim
            physics.append(np.concatenate([sim.data.qpos, sim.data.qvel]).copy())
            frames.append((obs["agentview_image"].copy(), obs["robot0_eye_in_hand_image"].copy()))
            successes.append(env.check_success())
        return np.array(physics), frames, successes, env.env.sim.model.ngeom
    finally:
        lu.close_env(env)


@pytest.mark.slow
def test_fast_rendering_leaves_the_physics_bit_identical(tmp_path, monkeypatch):
    """From an official initial state, the same actions give the same qpos and qvel at every step, and the same
    success checks, under fast and full renders and with robosuite compiling the model itself at the reset; the
    frames still look alike (textures map: small mean difference)."""
    monkeypatch.setenv("LIGHTVLA_CACHE", str(tmp_path / "cache"))
    full, full_frames, full_success, full_geoms = rollout("full")
    fast, fast_frames, fast_success, fast_geoms = rollout("fast")
    assert fast_geoms == full_geoms
    np.testing.assert_array_equal(fast, full)
    shipped, _, shipped_success, _ = rollout("full", monkeypatch=monkeypatch)  # compiled by robosuite at the reset
    np.testing.assert_array_equal(full, shipped)
    assert shipped_success == full_success
    assert fast_success == full_success
    for camera in (0, 1):
        difference = np.abs(np.stack([f[camera] for f in fast_frames]).astype(int) - np.stack([f[camera] for f in full_frames]))
        assert difference.mean() < 6, (camera, difference.mean())


def test_checkpoints_record_their_render_quality_and_evaluation_follows_it(tmp_path, capsys, tiny_checkpoint):
    import shutil

    from experiments.robot.libero.eval_config import EvalConfig, resolve_render_quality

    folder = shutil.copytree(tiny_checkpoint, tmp_path / "ours")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "render_quality": "fast"}))
    make = lambda q: EvalConfig(pretrained_checkpoint=str(folder), render_quality=q)  # noqa: E731
    assert resolve_render_quality(make("auto")) == "fast"
    assert resolve_render_quality(make("full")) == "full"
    assert "trained on 'fast' renders" in capsys.readouterr().out
    assert resolve_render_quality(EvalConfig(pretrained_checkpoint=str(tiny_checkpoint))) == "full"  # released


def test_training_records_the_datasets_render_quality(data_root, tmp_path):
    """A dataset's files say how their frames were rendered; mixed datasets are refused; training records it."""
    import h5py
    from conftest import UNNORM_KEY, finetune_config, write_task

    from prismatic.training.trainer import train
    from prismatic.vla.datasets.datasets import DatasetError

    for path in (data_root / UNNORM_KEY).glob("*.hdf5"):
        with h5py.File(path, "r+") as f:
            f["data"].attrs["env_args"] = json.dumps({"render_quality": "fast"})
    result = train(finetune_config(data_root, tmp_path, vla_path="libero-cpu", max_steps=1, save_freq=1, batch_size=2))
    saved = result["run_dir"].with_name(result["run_dir"].name + "--1_chkpt")
    assert json.loads((saved / "config.json").read_text())["render_quality"] == "fast"

    write_task(data_root / UNNORM_KEY, "task_c", [20], first_seed=9)  # no env_args: rendered "full"
    with pytest.raises(DatasetError, match="mixes frames rendered at different qualities"):
        train(finetune_config(data_root, tmp_path / "mixed", vla_path="libero-cpu", max_steps=1, batch_size=2))


@pytest.mark.slow
def test_simulation_benchmark_runs_end_to_end(tmp_path):
    """scripts/benchmark_simulation.py at a toy size: every row is measured (its numbers are in the README)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_simulation.py"
    command = [sys.executable, str(script), "--steps", "3", "--queries", "2", "--episodes", "2", "--episode_steps", "5"]
    env = {**os.environ, "LIGHTVLA_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = ("render quality full", "render quality fast", "physics only", "policy query", "(workers) vs 1", "(shared) vs 1")
    for row in rows:
        assert row in proc.stdout, row
