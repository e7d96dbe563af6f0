"""The package's import graph: no cycles, and the trainer used by its command only.

Parses every module's imports (module level and inside functions, since a
lazy import is still a dependency) with `ast`, without importing anything.
"""

import ast
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
