"""Render quality "fast": LIBERO draws simplified meshes and textures; the physics is untouched.

Software rendering (Mesa llvmpipe) spends its time on vertices: LIBERO's scenes draw ~840 k mesh vertices (the basket
alone 199 k) into 128 px cameras, and every (hard) reset uploads all meshes and ~147 MB of textures into a new GL
context. Under ``fast``:

* every geom that only draws (``contype="0" conaffinity="0"``, in a drawn group 1 or 2) and shows a mesh draws a
  decimated copy of it instead; robosuite's compiler (``inertiagrouprange="0 0"``) computes masses and inertias from
  group 0 alone and such a geom never collides, so no mass, inertia, contact or solver parameter changes (tested: the
  same qpos and qvel step for step). A shipped mesh that only such geoms drew leaves the model;
* textures larger than ``MAX_TEXTURE_SIDE`` are shrunk by a whole factor with a box filter (a 128 px camera
  samples a mipmap level far below it anyway);
* off-screen frames are drawn without multisampling (``offsamples="0"``);
* no material reflects (``reflectance="0"``): MuJoCo draws every reflecting surface's mirror image in an extra pass
  over the scene, ~25% of a LIBERO step with two 128 px cameras (README); the floors and tables lose their sheen.

Decimation (meshoptimizer) collapses edges onto existing vertices, so the copy keeps a subset of the original
vertices with their texture coordinates and normals (labels still map). Copies are built once, with a progress bar,
and cached on disk (``$LIGHTVLA_CACHE/meshes``, default ``~/.cache/lightvla/meshes``), keyed by the source file's
content and the simplification settings: a second run or worker reuses them, a changed asset gets a new copy, and a
copy is written beside its final name and renamed into place, so processes building at once never see half a file.
"""

from __future__ import annotations

import hashlib
import math
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prismatic.files import cache_root, staged

RENDER_QUALITIES = ("full", "fast")
DRAWN_GROUPS = ("1", "2")  # robosuite's cameras draw visual groups 1 and 2 (group 0 holds collision geoms)
# Simplification target: this fraction of a mesh's triangles, but never fewer than MIN_TRIANGLES; meshoptimizer also
# stops where the next collapse would move the surface by more than TARGET_ERROR of the mesh's extent.
TARGET_RATIO = 0.05
MIN_TRIANGLES = 200
TARGET_ERROR = 0.02
FAST_OFFSAMPLES = 0  # multisampling off: measured below (README)
MAX_TEXTURE_SIDE = 512  # larger textures (2D, single-file cube) shrink: their upload took ~0.8 s of a reset
SETTINGS = f"meshopt|ratio={TARGET_RATIO}|min={MIN_TRIANGLES}|error={TARGET_ERROR}|weld|v2"
TEXTURE_SETTINGS = f"box|max={MAX_TEXTURE_SIDE}|v1"


def cache_dir() -> Path:
    return cache_root() / "meshes"


def check_render_quality(quality: str) -> str:
    if quality not in RENDER_QUALITIES:
        raise ValueError(f"render quality must be one of {RENDER_QUALITIES}, got {quality!r}")
    return quality


# --- mesh files: (positions (V, 3), normals (V, 3) or None, texcoords (V, 2) or None, faces (F, 3)) -------------------
@dataclass
class Mesh:
    positions: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    texcoords: np.ndarray | None = None

    def welded(self) -> Mesh:
        """One vertex per distinct (position, texcoord): the files repeat vertices per triangle, which leaves a
        simplifier no edge to collapse. Normals are dropped: MuJoCo recomputes smooth ones from the welded surface."""
        keys = self.positions if self.texcoords is None else np.concatenate([self.positions, self.texcoords], 1)
        unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        texcoords = None if self.texcoords is None else np.ascontiguousarray(self.texcoords[first])
        faces = inverse.reshape(-1)[self.faces].astype(np.uint32)
        faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
        return Mesh(np.ascontiguousarray(self.positions[first]), faces, None, texcoords)

    def subset(self, faces: np.ndarray) -> Mesh:
        """The mesh with only ``faces`` (indices into this mesh's vertices), unused vertices dropped."""
        used, remapped = np.unique(faces, return_inverse=True)
        pick = lambda a: None if a is None else np.ascontiguousarray(a[used])  # noqa: E731
        return Mesh(pick(self.positions), remapped.reshape(-1, 3).astype(np.uint32), pick(self.normals), pick(self.texcoords))


def read_msh(path: Path) -> Mesh:
    """MuJoCo's binary mesh: int32 counts (vertices, normals, texcoords, faces), then float32 data, int32 faces."""
    data = Path(path).read_bytes()
    nv, nn, nt, nf = struct.unpack_from("<4i", data)
    floats = np.frombuffer(data, "<f4", 3 * nv + 3 * nn + 2 * nt, 16)
    faces = np.frombuffer(data, "<i4", 3 * nf, 16 + 4 * floats.size).reshape(-1, 3).astype(np.uint32)
    positions, rest = floats[: 3 * nv].reshape(-1, 3), floats[3 * nv :]
    normals = rest[: 3 * nn].reshape(-1, 3) if nn else None
    texcoords = rest[3 * nn :].reshape(-1, 2) if nt else None
    return Mesh(positions, faces, normals, texcoords)


def write_msh(mesh: Mesh, path: Path) -> None:
    parts = [mesh.positions, mesh.normals, mesh.texcoords]
    counts = [len(p) if p is not None else 0 for p in parts] + [len(mesh.faces)]
    body = b"".join(np.asarray(p, "<f4").tobytes() for p in parts if p is not None)
    Path(path).write_bytes(struct.pack("<4i", *counts) + body + np.asarray(mesh.faces, "<i4").tobytes())


def read_stl(path: Path) -> Mesh:
    """Binary STL; vertices shared by position (STL repeats them per triangle)."""
    data = Path(path).read_bytes()
    if data[:5] == b"solid" and b"facet" in data[:400]:
        raise ValueError(f"{path}: ASCII STL is not supported (LIBERO ships binary STL)")
    (count,) = struct.unpack_from("<I", data, 80)
    records = np.frombuffer(data, np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")]), count, 84)
    positions, faces = np.unique(records["v"].reshape(-1, 3), axis=0, return_inverse=True)
    return Mesh(positions.astype(np.float32), faces.reshape(-1, 3).astype(np.uint32))


def write_stl(mesh: Mesh, path: Path) -> None:
    triangles = mesh.positions[mesh.faces]  # (F, 3, 3)
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    records = np.zeros(len(triangles), np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")]))
    records["n"], records["v"] = normals, triangles
    Path(path).write_bytes(b"\0" * 80 + struct.pack("<I", len(records)) + records.tobytes())


def read_obj(path: Path) -> Mesh:
    """Wavefront OBJ (v, vt, vn, polygon f); one vertex per distinct (v, vt, vn) corner, polygons as fans."""
    lists: dict[str, list] = {"v": [], "vt": [], "vn": []}
    corners, polygons = [], []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] in lists:
            lists[fields[0]].append([float(x) for x in fields[1:4 if fields[0] != "vt" else 3]])
        elif fields[0] == "f":
            polygon = []
            for corner in fields[1:]:
                ids = [int(i) if i else 0 for i in (corner.split("/") + ["", ""])[:3]]
                sizes = (len(lists["v"]), len(lists["vt"]), len(lists["vn"]))
                ids = [i - 1 if i > 0 else (n + i if i < 0 else -1) for i, n in zip(ids, sizes)]
                polygon.append(len(corners))
                corners.append(tuple(ids))
            polygons.append(polygon)
    unique, corner_vertex = np.unique(np.array(corners, np.int64), axis=0, return_inverse=True)
    faces = [[corner_vertex[p[0]], corner_vertex[a], corner_vertex[b]] for p in polygons for a, b in zip(p[1:], p[2:])]
    v, vt, vn = (np.array(lists[k], np.float32) for k in ("v", "vt", "vn"))
    return Mesh(
        np.ascontiguousarray(v[unique[:, 0]]),
        np.array(faces, np.uint32),
        np.ascontiguousarray(vn[unique[:, 2]]) if len(vn) and (unique[:, 2] >= 0).all() else None,
        np.ascontiguousarray(vt[unique[:, 1]]) if len(vt) and (unique[:, 1] >= 0).all() else None,
    )


def write_obj(mesh: Mesh, path: Path) -> None:
    lines = [f"v {x:.8g} {y:.8g} {z:.8g}" for x, y, z in mesh.positions]
    if mesh.texcoords is not None:
        lines += [f"vt {u:.8g} {v:.8g}" for u, v in mesh.texcoords]
    if mesh.normals is not None:
        lines += [f"vn {x:.8g} {y:.8g} {z:.8g}" for x, y, z in mesh.normals]
    t, n = mesh.texcoords is not None, mesh.normals is not None
    corner = lambda i: f"{i}/{i if t else ''}/{i}" if n else (f"{i}/{i}" if t else f"{i}")  # noqa: E731
    lines += ["f " + " ".join(corner(i + 1) for i in face) for face in mesh.faces]
    Path(path).write_text("\n".join(lines) + "\n")


FORMATS = {".msh": (read_msh, write_msh), ".stl": (read_stl, write_stl), ".obj": (read_obj, write_obj)}


# --- simplification and the cache ---------------------------------------------------------------------------------------
def simplify(mesh: Mesh) -> Mesh:
    """Fewer triangles over a subset of the same vertices (so texture coordinates and normals stay exact)."""
    try:
        import meshoptimizer
    except ImportError as err:
        raise ImportError(
            "render quality 'fast' needs meshoptimizer (part of the libero extra: pip install -e '.[libero]'; it "
            "compiles a small C++ extension), or pass --render_quality full"
        ) from err

    mesh = mesh.welded()
    target = max(MIN_TRIANGLES, int(len(mesh.faces) * TARGET_RATIO))
    if target >= len(mesh.faces):
        return mesh
    indices = np.ascontiguousarray(mesh.faces.reshape(-1), np.uint32)
    destination = np.empty_like(indices)
    count = meshoptimizer.simplify(
        destination, indices, np.ascontiguousarray(mesh.positions, np.float32),
        target_index_count=3 * target, target_error=TARGET_ERROR,
    )  # fmt: skip
    return mesh.subset(destination[:count].reshape(-1, 3))


_KEYS: dict[tuple, str] = {}  # (path, size, mtime, settings) -> content digest, per process (resets re-read the XML)


def _cache_path(source: str, settings: str, suffix: str) -> Path:
    """Where the cached copy of ``source`` made with ``settings`` lives: named by its content and the settings."""
    path = Path(source)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, settings)
    if key not in _KEYS:
        _KEYS[key] = hashlib.sha256(path.read_bytes() + settings.encode()).hexdigest()[:24]
    return cache_dir() / f"{path.stem}-{_KEYS[key]}{suffix}"


def _cached(target: Path, build) -> Path:
    """``target``, built by ``build(staging_path)`` if missing; written beside its name and renamed into place."""
    if not target.exists():
        with staged(target) as staging:  # a concurrent builder's identical copy is replaced whole
            build(staging)
    return target


def copy_path(source: str) -> Path:
    """Where the decimated copy of the mesh ``source`` lives in the cache."""
    return _cache_path(source, SETTINGS, Path(source).suffix.lower())


def cached_copy(source: str) -> Path:
    """The decimated copy of the mesh ``source`` (built now if missing)."""
    read, write = FORMATS[Path(source).suffix.lower()]
    return _cached(copy_path(source), lambda staging: write(simplify(read(Path(source))), staging))


def texture_path(source: str) -> Path:
    """Where the reduced copy of the texture ``source`` lives in the cache."""
    return _cache_path(source, TEXTURE_SETTINGS, ".png")


def cached_texture(source: str) -> Path:
    """``source`` (a PNG) shrunk by a whole factor to at most MAX_TEXTURE_SIDE pixels a side, each pixel the mean of
    a block — what mipmapping averages it to before a 128 px camera samples it anyway (built now if missing)."""
    from PIL import Image

    def build(staging: Path) -> None:
        with Image.open(source) as image:
            image.load()
            factor = math.ceil(max(image.size) / MAX_TEXTURE_SIDE)
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
            image.reduce(factor).save(staging, format="PNG")  # each pixel the mean of a factor x factor block

    return _cached(texture_path(source), build)


def _texture_side(source: str) -> int:
    from PIL import Image

    with Image.open(source) as image:
        return max(image.size)


def _visual_mesh_geoms(root: ET.Element, meshes: dict[str, ET.Element]):
    """Every geom that only draws a mesh of a supported format and is drawn at all.

    Only geoms of groups 1 and 2: the cameras draw those, and robosuite's compiler (``inertiagrouprange="0 0"``)
    computes body inertias from group 0 alone, so what such a geom's mesh is weighs nothing. A group-0 geom is never
    drawn (robosuite hides the collision group) and may carry mass: it stays as it is.
    """
    for geom in root.iter("geom"):
        mesh = meshes.get(geom.get("mesh"))
        if (
            geom.get("type") == "mesh" and mesh is not None and geom.get("contype") == "0"
            and geom.get("conaffinity") == "0" and geom.get("group") in DRAWN_GROUPS
            and Path(mesh.get("file", "")).suffix.lower() in FORMATS
        ):  # fmt: skip
            yield geom


def _large_textures(assets: ET.Element) -> list[ET.Element]:
    """Textures read from PNG files larger than MAX_TEXTURE_SIDE (2D, or a cube whose faces all show the file)."""
    return [
        t for t in assets.findall("texture")
        if t.get("type") in ("2d", "cube") and t.get("gridsize") is None and t.get("file", "").lower().endswith(".png")
        and _texture_side(t.get("file")) > MAX_TEXTURE_SIDE
    ]  # fmt: skip


def fast_render_xml(xml: str, show_progress: bool = True) -> str:
    """A model XML -> the same model drawing decimated meshes and reduced textures (see the module docstring)."""
    root = ET.fromstring(xml)
    assets = root.find("asset")
    if assets is None:
        return xml
    meshes = {m.get("name"): m for m in assets.findall("mesh")}
    geoms = list(_visual_mesh_geoms(root, meshes))
    textures = _large_textures(assets)
    jobs = [(copy_path, cached_copy, s) for s in sorted({meshes[g.get("mesh")].get("file") for g in geoms})]
    jobs += [(texture_path, cached_texture, s) for s in sorted({t.get("file") for t in textures})]
    missing = [(build, source) for where, build, source in jobs if not where(source).exists()]
    if missing and show_progress:
        from tqdm import tqdm

        for build, source in tqdm(missing, desc="simplifying meshes and textures (once, cached)", unit="file"):
            build(source)
    for geom in geoms:
        original = meshes[geom.get("mesh")]
        name = f"{original.get('name')}__fast"
        if name not in meshes:
            meshes[name] = ET.SubElement(assets, "mesh", {**original.attrib, "name": name})
            meshes[name].set("file", str(cached_copy(original.get("file"))))
        geom.set("mesh", name)
    used = {element.get("mesh") for element in root.iter() if element.get("mesh")}
    for mesh in assets.findall("mesh"):
        if mesh.get("name") not in used:  # a shipped mesh only the simplified geoms drew: not uploaded for nothing
            assets.remove(mesh)
    for texture in textures:
        texture.set("file", str(cached_texture(texture.get("file"))))
    _without_multisampling(root)
    _without_reflections(root)
    return ET.tostring(root, encoding="unicode")


def _without_multisampling(root: ET.Element) -> None:
    """Off-screen frames drawn once per pixel instead of MuJoCo's 4 samples (a rendering setting, no physics)."""
    visual = root.find("visual")
    if visual is None:
        visual = ET.SubElement(root, "visual")
    quality = visual.find("quality")
    if quality is None:
        quality = ET.SubElement(visual, "quality")
    quality.set("offsamples", str(FAST_OFFSAMPLES))


def _without_reflections(root: ET.Element) -> None:
    """Every material, and every material default, set to reflect nothing (a rendering setting, no physics)."""
    for material in root.iter("material"):  # asset materials and <default> ones alike
        material.set("reflectance", "0")
