"""Render quality "fast": LIBERO draws simplified copies of the meshes it only draws; the physics is untouched.

Software rendering (Mesa llvmpipe) spends its time on vertices: LIBERO's scenes draw ~840 k mesh vertices (the basket
alone 199 k) into 128 px cameras. Under ``fast``, every geom that only draws (``contype="0" conaffinity="0"``, in a
drawn group 1 or 2) and shows a mesh gets a twin:

* the original stays in the model, untouched except that it moves to geom group 3, which the off-screen renderer does
  not draw (robosuite draws groups 1 and 2) — so every mass, inertia, contact and solver parameter is compiled from the
  shipped mesh exactly as before;
* the twin, inserted right after it, has the same pose, material and colour, ``mass="0"`` (it adds nothing to its
  body) and never collides, and draws a decimated copy of the mesh.

The fast model also renders off-screen frames without multisampling (``offsamples="0"``), a rendering setting.

Decimation (meshoptimizer) collapses edges onto existing vertices, so the copy keeps a subset of the original
vertices with their texture coordinates and normals (labels still map). Copies are built once, with a progress bar,
and cached on disk (``$LIGHTVLA_CACHE/meshes``, default ``~/.cache/lightvla/meshes``), keyed by the source file's
content and the simplification settings: a second run or worker reuses them, a changed asset gets a new copy, and a
copy is written beside its final name and renamed into place, so processes building at once never see half a file.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prismatic.files import cache_root

RENDER_QUALITIES = ("full", "fast")
DRAWN_GROUPS = ("1", "2")  # robosuite's cameras draw visual groups 1 and 2 (group 0 holds collision geoms)
HIDDEN_GROUP = "3"  # drawn by neither robosuite's cameras nor its viewer (MjvOption shows groups 0-2 at most)
# Simplification target: this fraction of a mesh's triangles, but never fewer than MIN_TRIANGLES; meshoptimizer also
# stops where the next collapse would move the surface by more than TARGET_ERROR of the mesh's extent.
TARGET_RATIO = 0.05
MIN_TRIANGLES = 200
TARGET_ERROR = 0.02
FAST_OFFSAMPLES = 0  # multisampling off: measured below (README)
SETTINGS = f"meshopt|ratio={TARGET_RATIO}|min={MIN_TRIANGLES}|error={TARGET_ERROR}|weld|v2"


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


_KEYS: dict[tuple, str] = {}  # (path, size, mtime) -> content digest, per process (resets re-read the XML often)


def copy_path(source: str) -> Path:
    """Where the decimated copy of ``source`` lives in the cache: named by its content and the settings."""
    path = Path(source)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _KEYS:
        _KEYS[key] = hashlib.sha256(path.read_bytes() + SETTINGS.encode()).hexdigest()[:24]
    return cache_dir() / f"{path.stem}-{_KEYS[key]}{path.suffix.lower()}"


def cached_copy(source: str) -> Path:
    """The decimated copy of ``source`` (built now if missing)."""
    path, target = Path(source), copy_path(source)
    if not target.exists():
        read, write = FORMATS[path.suffix.lower()]
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(handle)
        try:
            write(simplify(read(path)), Path(staging))
            os.replace(staging, target)  # atomic: a concurrent builder's identical copy is replaced whole
        finally:
            Path(staging).unlink(missing_ok=True)
    return target


def _visual_mesh_geoms(root: ET.Element, meshes: dict[str, ET.Element]):
    """(parent, geom) of every geom that only draws a mesh of a supported format and is drawn at all.

    Only geoms of groups 1 and 2: the cameras draw those, and robosuite's compiler (``inertiagrouprange="0 0"``)
    computes body inertias from group 0 alone, so moving a group-1/2 original to group 3 changes no mass. A group-0
    geom is never drawn (robosuite hides the collision group) and may carry mass: it stays as it is.
    """
    for parent in root.iter():
        for geom in parent.findall("geom"):
            mesh = meshes.get(geom.get("mesh"))
            if (
                geom.get("type") == "mesh" and mesh is not None and geom.get("contype") == "0"
                and geom.get("conaffinity") == "0" and geom.get("group") in DRAWN_GROUPS
                and Path(mesh.get("file", "")).suffix.lower() in FORMATS
            ):  # fmt: skip
                yield parent, geom


def fast_render_xml(xml: str, show_progress: bool = True) -> str:
    """A model XML -> the same model with decimated twins drawing its visual-only meshes (see the module docstring)."""
    root = ET.fromstring(xml)
    assets = root.find("asset")
    if assets is None:
        return xml
    meshes = {m.get("name"): m for m in assets.findall("mesh")}
    targets = list(_visual_mesh_geoms(root, meshes))
    sources = sorted({meshes[g.get("mesh")].get("file") for _, g in targets})
    missing = [s for s in sources if not copy_path(s).exists()]
    if missing and show_progress:
        from tqdm import tqdm

        for source in tqdm(missing, desc="decimating visual meshes (once, cached)", unit="mesh"):
            cached_copy(source)
    twins = {}
    for parent, geom in targets:
        name = geom.get("mesh")
        if name not in twins:
            twins[name] = f"{name}__fast"
            copy = ET.SubElement(assets, "mesh", {k: v for k, v in meshes[name].attrib.items() if k != "name"})
            copy.set("name", twins[name])
            copy.set("file", str(cached_copy(meshes[name].get("file"))))
        twin = ET.Element("geom", {k: v for k, v in geom.attrib.items() if k not in ("name", "mass", "density")})
        twin.set("mesh", twins[name])
        twin.set("mass", "0")
        twin.set("group", geom.get("group"))  # 1 or 2: only drawn geoms get twins
        geom.set("group", HIDDEN_GROUP)
        parent.insert(list(parent).index(geom) + 1, twin)
    _without_multisampling(root)
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
