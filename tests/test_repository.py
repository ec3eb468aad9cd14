"""The repository is self-contained: its recorded fixtures are intact, and no code reads data from outside it."""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path, PurePath

from conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("tests", "prismatic", "experiments", "scripts", "vla-scripts")
# Places that name the user's home on purpose: locations a user owns, never data the repository depends on.
ALLOWED_HOME = {
    "prismatic/files.py": "the cache of derived data (statistics, decimated meshes; LIGHTVLA_CACHE overrides it)",
    "prismatic/training/metrics.py": "Weights & Biases credentials in ~/.netrc",
    "prismatic/policy/checkpoints.py": "expands a '~' the user typed in a checkpoint path",
}
PARENT_SEGMENT = re.compile(r"(^|[/\\])\.\.([/\\]|$)")
OUTSIDE_ABSOLUTE = re.compile(r"^(~|/(work|home|root|tmp|mnt|data|Users|opt|srv|scratch)(/|$))")


def test_recorded_fixtures_are_byte_identical_to_the_recording():
    listed = {}
    for line in (FIXTURES / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[Path(name)] = digest
    present = {p.relative_to(FIXTURES) for p in FIXTURES.rglob("*") if p.is_file() and p.parent != FIXTURES}
    assert present == set(listed), f"unlisted: {sorted(present - set(listed))}, missing: {sorted(set(listed) - present)}"
    changed = [str(n) for n, d in listed.items() if hashlib.sha256((FIXTURES / n).read_bytes()).hexdigest() != d]
    assert not changed, f"recorded fixtures differ from the recording: {changed}"


def levels_up(node: ast.AST) -> int | None:
    """How many folders above `__file__` an expression like `Path(__file__).resolve().parents[2]` names, else None."""
    ups = 0
    while True:
        if isinstance(node, ast.Name):
            return ups if node.id == "__file__" else None
        if isinstance(node, ast.Attribute):
            ups += node.attr == "parent"
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
            if not isinstance(node.slice, ast.Constant):
                return None
            ups += node.slice.value + 1
            node = node.value.value
        elif isinstance(node, ast.Call):
            is_dirname = isinstance(node.func, ast.Attribute) and node.func.attr == "dirname"
            ups += is_dirname
            node = node.args[0] if (node.args and (is_dirname or isinstance(node.func, ast.Name))) else node.func
        else:
            return None


def outside_references(source: str, relative: PurePath) -> list[str]:
    """Every way the Python `source` of the file at `relative` (to the root) names a location above the root."""
    depth = len(relative.parts)  # ups from the file itself to the root
    found = []
    for node in ast.walk(ast.parse(source, str(relative))):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" not in node.value:
            if PARENT_SEGMENT.search(node.value) or OUTSIDE_ABSOLUTE.match(node.value):
                found.append(f"{relative}:{line}: path {node.value!r}")
        elif isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
            ups = levels_up(node)
            if ups is not None and ups > depth:
                found.append(f"{relative}:{line}: {ups - depth} folder(s) above the repository root")
        if isinstance(node, ast.Attribute) and node.attr in ("home", "expanduser", "expandvars"):
            if str(relative) not in ALLOWED_HOME:
                found.append(f"{relative}:{line}: the home folder ({node.attr})")
    return found


def shell_outside_references(path: Path) -> list[str]:
    relative = path.relative_to(ROOT)
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        # `$(dirname "$0")/..` is the root for a script one folder down; anything else with `..` leaves it
        climbs = code.replace('"$(dirname "$0")/.."', "") if len(relative.parts) == 2 else code
        if PARENT_SEGMENT.search(climbs) or re.search(r"(^|[\s=\"'])(~/|/(work|home|root|mnt|data|Users)/)", code):
            found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_no_code_names_a_path_above_the_repository():
    found = []
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if "fixtures" in path.relative_to(ROOT).parts or not path.is_file():
                continue
            if path.suffix == ".py":
                found += outside_references(path.read_text(), path.relative_to(ROOT))
            elif path.suffix == ".sh":
                found += shell_outside_references(path)
    assert not found, "code reaches outside the repository (put what it needs inside it):\n" + "\n".join(found)


def test_the_check_sees_every_way_out():
    """The detector itself: each of these escapes the repository from tests/, the last three stay inside."""
    cases = {
        'FIXTURE = Path(__file__).resolve().parents[2] / "shared"': 1,
        "FIXTURE = Path(__file__).parent.parent.parent": 1,
        'FIXTURE = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))': 1,
        'data = np.load("../shared/fixtures/x.npz")': 1,
        'data = np.load("/work/shared/x.npz")': 1,
        "cache = Path.home() / 'x'": 1,
        'ROOT = Path(__file__).resolve().parents[1] / "scripts"': 0,
        "HERE = Path(__file__).parent": 0,
        'text = "wait..."': 0,
    }
    for code, expected in cases.items():
        assert len(outside_references(code, PurePath("tests/test_x.py"))) == expected, code


def test_the_library_imports_nothing_above_it():
    """Every module of prismatic/ imports in a fresh interpreter where experiments/ (the simulator harness) and the
    scripts cannot be imported: the library depends on neither."""
    import subprocess
    import sys

    code = """
import importlib, importlib.abc, pkgutil, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("experiments", "scripts"):
            raise ImportError(f"the library imported {name}")
sys.meta_path.insert(0, Refuse())
import prismatic
names = [m.name for m in pkgutil.walk_packages(prismatic.__path__, "prismatic.")]
for name in names:
    importlib.import_module(name)
print(len(names), "modules")
"""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[0]) > 30, proc.stdout


# The library's packages, lowest layer first: a module may import its own layer and the layers before it.
LAYERS = (
    ("prismatic.files", "prismatic.plotting", "prismatic.precision"),  # helpers that know no model and no data
    ("prismatic.vla",),  # model-free data: constants, prompts, normalisation, image pipeline, dataset readers
    ("prismatic.models",),  # nn building blocks: pruner and baselines, heads, projectors, bidirectional Llama
    ("prismatic.extern",),  # the Hugging Face model, configuration and processor
    ("prismatic.policy",),  # policy assembly: presets, checkpoints, Hub, inference, serving, policy options
    ("prismatic.training",),  # fine-tuning
)


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_repository.py LAYERS: add it to one")


def prismatic_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} if node.module != "prismatic" else {f"prismatic.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {name for name in names if name.startswith("prismatic.")}


def test_each_package_imports_only_the_layers_below_it():
    wrong = []
    for path in sorted((ROOT / "prismatic").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if module == "prismatic":
            continue
        wrong += [f"{module} ({LAYERS[layer_of(module)][0]}) imports {name}"
                  for name in sorted(prismatic_imports(path)) if layer_of(name) > layer_of(module)]  # fmt: skip
    assert not wrong, "imports against the layers (lowest first: " + ", ".join(p[0] for p in LAYERS) + "):\n" + "\n".join(wrong)
