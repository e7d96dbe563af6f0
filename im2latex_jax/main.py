"""`im2latex-jax`: the command line.

  im2latex-jax train    --config configs/quickstart.py --workdir W [--config.x=y ...]
  im2latex-jax evaluate --workdir W --split S [--beam K] [--image-metrics]
  im2latex-jax predict  IMAGE... [--workdir W] [--beam K] [--json]
  im2latex-jax serve    [--workdir W] [--host H] [--port P]
  im2latex-jax render   --formulas F --out DIR
  im2latex-jax render-screens --engine pdflatex|katex|mathjax --formulas F --out DIR
  im2latex-jax robustness --data DIR [--workdir W] [--n N] --out DIR
  im2latex-jax gen-formulas --formulas F --split-list L --n N --out OUT
  im2latex-jax sweep    --space configs/sweeps/<name>.py --study NAME
  im2latex-jax bench    [--config ...]
  im2latex-jax merge-data --out DIR --add DIR[:split] --add DIR[:split] ...
  im2latex-jax shards export|train --config C --out DIR | --shards DIR --workdir W
  im2latex-jax normalize < raw.txt > normalized.txt
  im2latex-jax harvest  --src SOURCES(.tar.gz|/) --out DIR [--max-tokens 150]
  im2latex-jax export-model --workdir W --out DIR [--dtype bfloat16] [--blend MODEL --alpha A]

Each subcommand lives in the module named for its concern; this file only
sets up the process (compilation cache, logging) and dispatches.
"""

from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module, function taking argv incl. program name at [0])
COMMANDS = {
    "train": ("im2latex_jax.train_cli", "main"),
    "evaluate": ("im2latex_jax.evaluation.evaluate", "main"),
    "predict": ("im2latex_jax.infer.predict_cli", "main"),
    "serve": ("im2latex_jax.serve.app", "main"),
    "render": ("im2latex_jax.datagen.render", "main"),
    "render-screens": ("im2latex_jax.datagen.screens", "main"),
    "robustness": ("im2latex_jax.evaluation.robustness", "main"),
    "gen-formulas": ("im2latex_jax.datagen.formula_gen", "main"),
    "sweep": ("im2latex_jax.sweep.cli", "main"),
    "bench": ("im2latex_jax.bench", "main"),
    "export-model": ("im2latex_jax.infer.inference", "export_main"),
    "merge-data": ("im2latex_jax.data.merge", "main"),
    "shards": ("im2latex_jax.train_cli", "shards_main"),
    "normalize": ("im2latex_jax.latex.normalize", "main"),
    "harvest": ("im2latex_jax.latex.harvest", "main"),
}


def setup_process() -> None:
  """Quiet TF, persistent XLA compilation cache."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax  # pylint: disable=g-import-not-at-top
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR",
                         os.path.expanduser("~/.cache/im2latex_jax/xla"))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def usage() -> str:
  return __doc__.split("\n\n")[1] + "\n"


def run(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    sys.stdout.write("usage:\n" + usage())
    return 0 if len(argv) >= 2 else 2
  cmd = argv[1]
  if cmd not in COMMANDS:
    sys.stderr.write(f"im2latex-jax: unknown command {cmd!r}; choose one of "
                     f"{', '.join(COMMANDS)}.\n")
    return 2
  setup_process()
  module, fn = COMMANDS[cmd]
  try:
    mod = importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name and e.name.startswith("im2latex_jax"):
      sys.stderr.write(f"im2latex-jax {cmd}: not available in this version ({e}).\n")
      return 2
    raise
  rc = getattr(mod, fn)([f"im2latex-jax {cmd}"] + argv[2:])
  return int(rc or 0)


if __name__ == "__main__":
  sys.exit(run())
