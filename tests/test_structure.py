"""The package's import graph: no cycles, and the trainer used by its command only.

Parses every module's imports (module level and inside functions, since a
lazy import is still a dependency) with `ast`, without importing anything.
"""

import ast
import re
import pathlib

import pytest

PACKAGE = "im2latex_jax"
ROOT = pathlib.Path(__file__).resolve().parents[1]
# train.py is imported by the command that runs it, and by nothing below it.
TRAINER = f"{PACKAGE}.train"
TRAINER_IMPORTERS = {f"{PACKAGE}.train_cli"}


def _modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted((root / PACKAGE).rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    out[".".join(parts)] = path
  return out


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
  """module -> the package modules it imports (a package's own __init__
  counts only when a name is taken from it, not when a submodule is)."""
  mods = _modules(root)
  graph = {m: set() for m in mods}
  for m, path in mods.items():
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods
                 else node.module for a in node.names]
      else:
        continue
      for name in names:
        while name and name not in mods:
          name = name.rpartition(".")[0]
        if name and name != m and name != PACKAGE:
          graph[m].add(name)
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_no_import_cycle():
  assert cycles(import_graph()) == []


def test_only_the_train_command_imports_the_trainer():
  graph = import_graph()
  assert TRAINER in graph
  assert {m for m, deps in graph.items() if TRAINER in deps} == TRAINER_IMPORTERS


def test_the_checker_sees_cycles_and_lazy_imports(tmp_path):
  """The two tests above can fail: a cycle through a function-level import
  and a trainer import from below are both found in a package made here."""
  pkg = tmp_path / PACKAGE
  (pkg / "data").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "data" / "__init__.py").write_text("")
  (pkg / "train.py").write_text(f"from {PACKAGE}.data import a\n")
  (pkg / "data" / "a.py").write_text(f"def f():\n  from {PACKAGE} import train\n")
  graph = import_graph(tmp_path)
  assert graph[f"{PACKAGE}.data.a"] == {TRAINER}
  assert cycles(graph) == [[f"{PACKAGE}.data.a", TRAINER]]
  # `from package import submodule` is an edge to the submodule only.
  (pkg / "data" / "a.py").write_text(f"from {PACKAGE}.data import b\n")
  (pkg / "data" / "b.py").write_text("")
  (pkg / "data" / "__init__.py").write_text(f"from {PACKAGE}.data import a\n")
  assert cycles(import_graph(tmp_path)) == []


@pytest.mark.parametrize("module", [f"{PACKAGE}.data.shards", f"{PACKAGE}.data.core"])
def test_tf_free_modules_never_reach_the_tf_data_pipeline(module):
  """The TF-free source and the interface import nothing that needs TensorFlow."""
  graph = import_graph()
  seen, todo = set(), [module]
  while todo:
    m = todo.pop()
    if m in seen:
      continue
    seen.add(m)
    todo.extend(graph[m])
  assert not seen & {f"{PACKAGE}.data.input_pipeline", f"{PACKAGE}.data.im2latex100k"}


# Files outside the package that import it: scripts, configs, benchmarks,
# result tables, launch scripts, notebooks (code cells), shell heredocs.
SCRIPT_GLOBS = ("configs/**/*.py", "benchmarks/*.py", "scripts/*.py", "scripts/*.sh",
                "results/**/*.py", "results/**/*.sh", "launch/**/*.py", "launch/**/*.sh",
                "notebooks/*.ipynb", "tests/*.py")
_FROM_IMPORT = re.compile(
    r"^\s*from\s+(im2latex_jax(?:\.\w+)*)\s+import\s+\(?([\w\s,]+?)\)?\s*(?:#.*)?$", re.M)


def _top_level_names(path: pathlib.Path) -> set[str]:
  """Names a module defines or imports at its top level (without importing it)."""
  names = set()
  for node in ast.parse(path.read_text(encoding="utf-8")).body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      for t in targets:
        names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names |= {(a.asname or a.name).split(".")[0] for a in node.names}
  return names


def test_every_import_of_the_package_outside_it_resolves():
  # A module moved inside the package must take every script's import along
  # (results/robustness/compare.py still imported `im2latex_jax.metrics`).
  mods = _modules(ROOT)
  broken = []
  for pattern in SCRIPT_GLOBS:
    for path in sorted(ROOT.glob(pattern)):
      text = path.read_text(encoding="utf-8")
      if path.suffix == ".ipynb":
        import json  # pylint: disable=g-import-not-at-top
        text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"]
                         if c["cell_type"] == "code")
      for m in _FROM_IMPORT.finditer(text):
        module, names = m.group(1), [n.split()[0] for n in m.group(2).split(",") if n.strip()]
        if module not in mods:
          broken.append(f"{path.relative_to(ROOT)}: no module {module}")
          continue
        defined = _top_level_names(mods[module])
        for n in names:
          if f"{module}.{n}" not in mods and n not in defined:
            broken.append(f"{path.relative_to(ROOT)}: {module} has no {n}")
      for m in re.finditer(r"^\s*import\s+(im2latex_jax(?:\.\w+)+)", text, re.M):
        if m.group(1) not in mods:
          broken.append(f"{path.relative_to(ROOT)}: no module {m.group(1)}")
  assert not broken, "\n".join(broken)


# ---- layers ------------------------------------------------------------------
# (importer prefix, forbidden import prefixes, why). Prefixes are module
# paths below the package; a prefix matches the module and its submodules.
LAYER_RULES = (
    ("data", ("datagen", "infer", "serve", "evaluation", "latex", "sweep", "models",
              "state", "steps", "train", "train_cli", "bench", "analysis"),
     "data is the bottom layer (online augmentation is a data op: data/augment.py)"),
    ("models", ("data", "datagen", "infer", "serve", "evaluation", "latex", "sweep",
                "state", "steps", "train", "checkpointing", "optim", "bench"),
     "models are Flax modules and nothing else"),
    ("datagen", ("infer", "serve", "evaluation"),
     "training data must not depend on inference code"),
    ("infer", ("serve", "evaluation"), "the server and the benchmarks sit on inference"),
    ("state", ("infer",), "the trainer's state loads models through loading.py"),
    ("steps", ("infer",), "the training steps know no inference"),
    ("checkpointing", ("infer", "optim"),
     "checkpointing stores what it is given (the caller says which way is better)"),
)
# Known, named exceptions: each is work still to do (an exception that is
# fixed must leave this list: the test compares them exactly).
LAYER_EXCEPTIONS = {
    # Issue 41: the glyph-size normalization screens shares with inference
    # (preprocess.normalize_image, DATASET_EM_PX) is to move below both.
    ("im2latex_jax.datagen.screens", "im2latex_jax.infer.preprocess"),
}


def _under(module: str, prefix: str) -> bool:
  full = f"{PACKAGE}.{prefix}"
  return module == full or module.startswith(full + ".")


def layer_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
  return {(m, d) for m, deps in graph.items() for d in deps
          for importer, forbidden, _ in LAYER_RULES
          if _under(m, importer) and any(_under(d, f) for f in forbidden)}


def test_layers():
  found = layer_violations(import_graph())
  why = {f"{m} imports {d}: " + next(w for i, f, w in LAYER_RULES
                                      if _under(m, i) and any(_under(d, x) for x in f))
         for m, d in found - LAYER_EXCEPTIONS}
  assert not why, "\n".join(sorted(why))
  assert found >= LAYER_EXCEPTIONS, f"fixed, remove from LAYER_EXCEPTIONS: {LAYER_EXCEPTIONS - found}"


def test_the_layer_checker_sees_each_rule(tmp_path):
  """Each rule fails on a package that breaks it (as today's code did before
  this test: data.input_pipeline -> datagen.augment, infer.predict_cli ->
  serve.image_io, state -> infer.inference, checkpointing -> optim)."""
  pkg = tmp_path / PACKAGE
  for sub in ("data", "datagen", "infer", "serve", "models"):
    (pkg / sub).mkdir(parents=True)
    (pkg / sub / "__init__.py").write_text("")
  (pkg / "__init__.py").write_text("")
  files = {
      "data/a.py": f"from {PACKAGE}.datagen import b\n",
      "datagen/b.py": f"def f():\n  from {PACKAGE}.infer import c\n",
      "infer/c.py": f"from {PACKAGE}.serve import d\n",
      "serve/d.py": "",
      "models/m.py": f"from {PACKAGE} import optim\n",
      "state.py": f"from {PACKAGE}.infer import c\n",
      "steps.py": f"from {PACKAGE}.infer import c\n",
      "checkpointing.py": f"from {PACKAGE} import optim\n",
      "optim.py": "",
  }
  for name, text in files.items():
    (pkg / name).write_text(text)
  p = lambda m: f"{PACKAGE}.{m}"
  assert layer_violations(import_graph(tmp_path)) == {
      (p("data.a"), p("datagen.b")), (p("datagen.b"), p("infer.c")),
      (p("infer.c"), p("serve.d")), (p("models.m"), p("optim")),
      (p("state"), p("infer.c")), (p("steps"), p("infer.c")),
      (p("checkpointing"), p("optim"))}


# Package modules that read the repository's benchmarks/ folder (by path).
BENCHMARK_READERS = {
    # Issue 41: bench.py is to split into a small measurement library and the
    # command; the PyTorch twin stays a benchmark script.
    f"{PACKAGE}.bench",
}


def test_no_package_module_reads_benchmarks():
  readers = {m for m, path in _modules(ROOT).items()
             if re.search(r"""["']benchmarks["'/]""", path.read_text(encoding="utf-8"))}
  assert readers == BENCHMARK_READERS
