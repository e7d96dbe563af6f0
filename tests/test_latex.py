"""LaTeX in and out: the normalizer, the harvester, the idiomatic writer."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from im2latex_jax.data import layout
from im2latex_jax.latex import harvest as harvest_lib
from im2latex_jax.latex import idiomatic
from im2latex_jax.latex import normalize
from im2latex_jax.latex import render_check

FIXTURES = REPO / "tests" / "fixtures" / "latex"
node = pytest.mark.skipif(shutil.which("node") is None and
                          shutil.which("nodejs") is None, reason="no Node.js")
tex = pytest.mark.skipif(shutil.which("pdflatex") is None or
                         shutil.which("pdftoppm") is None, reason="no TeX Live")


# ---- normalizer ----------------------------------------------------------------


@node
def test_normalizer_writes_what_im2markups_script_writes():
  """428 raw formulas (im2markup's raw sample, the books' math, edge cases)
  with the output of im2markup's own preprocess_formulas.py --mode normalize
  (tests/fixtures/latex/normalize_pairs.jsonl; empty where it fails)."""
  with open(FIXTURES / "normalize_pairs.jsonl", encoding="utf-8") as f:
    pairs = [json.loads(line) for line in f]
  results = normalize.normalize_many([p["raw"] for p in pairs])
  wrong = [(p["raw"], p["expected"], r.tokens)
           for p, r in zip(pairs, results) if r.tokens != p["expected"]]
  assert not wrong, wrong[:3]
  assert sum(not p["expected"] for p in pairs) > 10  # failures are covered too
  assert all((r.error is None) == bool(r.tokens) for r in results)


@node
def test_normalizer_forms_by_hand():
  cases = {
      "x^2": "x ^ { 2 }",
      "{\\rm d}x": "\\mathrm { d } x",
      "\\tanh^2 x": "\\operatorname { t a n h } ^ { 2 } x",
      "\\lim_{t\\to\\infty}": "\\operatorname* { l i m } _ { t \\to \\infty }",
      "a \\over b": "\\frac { a } { b }",
      "x \\label{e} % c": "x",
      "\\hskip 3pt": "\\hspace { 3 p t }",
      # The one deliberate difference from the original (`[object Object]`).
      "\\sqrt[3]{x}": "\\sqrt [ 3 ] { x }",
  }
  got = {raw: r.tokens for raw, r in zip(cases, normalize.normalize_many(cases))}
  assert got == cases


@node
def test_normalizer_failure_is_an_empty_result_with_a_reason():
  bad, good, empty = normalize.normalize_many(["\\frac{a}{", "x", "  "])
  assert (bad.tokens, good.tokens, empty.tokens) == ("", "x", "")
  assert "Expected '}'" in bad.error and good.error is None
  assert empty.error == "empty formula"


def _cli(args, stdin, env=None):
  r = subprocess.run([sys.executable, "-m", "im2latex_jax.main", *args],
                     input=stdin, capture_output=True, text=True, env=env,
                     timeout=300, check=False)
  return r.returncode, r.stdout, r.stderr


@node
def test_normalize_cli_one_line_per_input_line_and_exit_status():
  rc, out, err = _cli(["normalize"], "x^2\n\\frac{a}{\n\n\\color{red}{x}\ny\n")
  assert rc == 1
  assert out.split("\n") == ["x ^ { 2 }", "", "", "", "y", ""]
  lines = err.strip().split("\n")
  assert lines[0].startswith("line 2: ") and "Expected '}'" in lines[0]
  assert lines[1] == "line 4: no token form for a 'color' group"
  assert "Traceback" not in err
  rc, out, _ = _cli(["normalize"], "x^2\n")
  assert (rc, out) == (0, "x ^ { 2 }\n")


def test_normalize_without_node_is_a_usage_error(monkeypatch, capsys):
  monkeypatch.setenv("PATH", "/nonexistent")
  assert normalize.main(["im2latex-jax normalize"]) == 2
  assert "needs Node.js" in capsys.readouterr().err


# ---- harvest -------------------------------------------------------------------


def test_macros_with_arguments_defaults_and_def():
  macros = {}
  harvest_lib.collect_macros(
      "\\newcommand{\\norm}[1]{\\|#1\\|} \\newcommand\\R{\\mathbb{R}}"
      "\\newcommand{\\ip}[2][V]{\\langle #2\\rangle_{#1}}"
      "\\def\\pair#1#2{(#1,#2)} \\providecommand{\\R}{X}"
      "\\DeclareMathOperator{\\Hom}{Hom}", macros)
  expand = lambda s: harvest_lib.expand_macros(s, macros)
  assert expand("\\norm{x+y}") == "\\|x+y\\|"
  assert expand("\\R^n") == "\\mathbb{R}^n"  # \providecommand kept the first
  assert expand("\\ip{x} \\ip[W]{y}") == "\\langle x\\rangle_{V} \\langle y\\rangle_{W}"
  assert expand("\\pair a{\\norm b}") == "(a,\\|b\\|)"
  assert expand("\\Hom x") == "\\operatorname{Hom} x"
  assert expand("\\Rx + \\R x") == "\\Rx + \\mathbb{R} x"  # \Rx is not \R
  with pytest.raises(ValueError, match="lacks an argument"):
    expand("\\norm")
  loop = {}
  harvest_lib.collect_macros("\\def\\a{\\a x}", loop)
  with pytest.raises(ValueError, match="without end"):
    harvest_lib.expand_macros("\\a", loop)


def test_find_math_delimiters_and_skips():
  text = harvest_lib.strip_comments(
      "a $x$ b \\$5 c \\(y\\) d \\[z\\] $$w$$ % $no$\n\\verb|$v$| "
      "\\begin{verbatim}$q$\\end{verbatim} \\begin{equation*}e\\end{equation*}")
  found = [(f.latex, f.display) for f in harvest_lib.find_math(text)]
  assert found == [("x", False), ("y", False), ("z", True), ("w", True),
                   ("e", True)]


def test_multiline_displays_keep_their_lines():
  align = harvest_lib.display_body("align", "a &= b \\label{x}\\\\ c &= d \\nonumber\\\\")
  assert align == "\\begin{aligned} a &= b \\\\ c &= d \\end{aligned}"
  gather = harvest_lib.display_body("gather", "a = b \\\\[2pt] c = d")
  assert gather == "\\begin{array}{c} a = b \\\\ c = d \\end{array}"
  one_row = harvest_lib.display_body("align", "a &= b")
  assert one_row == "a = b"
  split = harvest_lib.display_body("equation", "\\begin{split} a &= b\\\\ &= c\\end{split}")
  assert split == "\\begin{aligned} a &= b \\\\ &= c \\end{aligned}"


@node
def test_harvest_fixture_paper():
  files = harvest_lib.read_sources(str(FIXTURES / "paper"))
  h = harvest_lib.harvest(files)
  assert h.formulas == [
      "x \\in \\mathbb { R } ^ { n }",
      "\\left\\lVert x \\right\\rVert ^ { 2 } = \\langle x \\rangle _ { V }",
      "( a , b )",
      "\\operatorname { H o m } ( A , B ) \\cong \\langle v \\rangle _ { W }",
      "\\begin{aligned} { f ( x ) } & { { } = x ^ { 2 } + 1 } \\\\ { g ( x ) } & "
      "{ { } = \\mathop { \\mathrm { a r g \\, m a x } } _ { y } ( x , y ) } \\\\ "
      "\\end{aligned}",
      "\\begin{array} { c } { a = b } \\\\ { c = d } \\\\ \\end{array}",
  ]
  assert h.found == 8
  assert h.dropped == {"duplicate": 1,
                       "does not normalize: Expected '}', got 'EOF'": 1}
  assert [harvest_lib.is_multiline(f) for f in h.formulas] == [False] * 4 + [True] * 2


@node
@tex
@pytest.mark.slow
def test_harvest_cli_writes_a_dataset_that_trains(tmp_path, tfds_dir):
  """Fixture paper -> official layout (images of the tokens) -> 2 train steps."""
  out = tmp_path / "harvested"
  src = tmp_path / "src"
  shutil.copytree(FIXTURES / "paper", src)
  # Enough formulas for a batch of 8 in each split.
  with open(src / "more.tex", "w", encoding="utf-8") as f:
    f.write(" ".join(f"${chr(97 + i % 26)}_{{{i}}} + {i}$" for i in range(40)))
  rc, stdout, err = _cli(["harvest", "--src", str(src), "--out", str(out),
                          "--validation-fraction", "0.3"], "")
  assert rc == 0, err
  report = json.loads((out / "harvest_report.json").read_text())
  assert report["kept"] == 46 and report["kept_multi_line"] == 2
  formulas = layout.read_formulas(str(out / layout.FORMULAS_FILE))
  train = layout.read_split_list(str(out / layout.split_file("train")), len(formulas))
  val = layout.read_split_list(str(out / layout.split_file("validation")), len(formulas))
  assert len(train) + len(val) == 46 and len(val) > 8
  assert {i for _, i in train}.isdisjoint(i for _, i in val)
  assert (out / "licenses" / "LICENSE").read_text().startswith("Test fixture")
  assert "licenses/LICENSE" in (out / "README.md").read_text()
  env = dict(os.environ, TFDS_DATA_DIR=str(tfds_dir))
  env.pop("XLA_FLAGS", None)
  rc, stdout, err = _cli(
      ["train", "--config", str(REPO / "configs" / "quickstart.py"),
       "--workdir", str(tmp_path / "run"), f"--config.input.manual_dir={out}",
       "--config.num_train_steps=2", "--config.eval_every_steps=2",
       "--config.input.batch_size=8", "--config.input.eval_batch_size=8",
       "--config.wandb.mode=disabled", "--config.model.cnn_features=(4,8,8,8,16,16)",
       "--config.model.encoder_hidden=8", "--config.model.decoder_hidden=16",
       "--config.model.embed_dim=8", "--config.input.token_buckets=(40,)"], "",
      env=env)
  assert rc == 0, err[-2000:]
  records = [json.loads(line) for line in
             (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert any(r.get("step") == 2 and "train/loss" in r for r in records)


def test_harvest_bad_source_is_a_usage_error(tmp_path, capsys):
  rc = harvest_lib.main(["im2latex-jax harvest", "--src", str(tmp_path / "nope"),
                         "--out", str(tmp_path / "o")])
  assert rc == 2 and "not a folder, a tarball or a .tex file" in capsys.readouterr().err
  rc = harvest_lib.main(["im2latex-jax harvest", "--src", str(tmp_path),
                         "--out", str(tmp_path / "o")])
  assert rc == 2 and "no .tex file" in capsys.readouterr().err


# ---- idiomatic output ----------------------------------------------------------

IDIOMATIC = {
    "\\operatorname { t a n h } ^ { 2 }": "\\tanh^{2}",
    "\\operatorname* { l i m } _ { t \\rightarrow \\infty }": "\\lim_{t\\rightarrow\\infty}",
    "C _ { n 1 }": "C_{n1}",
    "\\frac { 1 } { 2 }": "\\frac{1}{2}",
    "\\mathrm { a b c }": "\\mathrm{abc}",
    "\\operatorname { s p a n } x": "\\operatorname{span}x",
    # a limits name spelled without limits is not \lim: it would move them
    "\\operatorname { l i m } _ { n }": "\\operatorname{lim}_{n}",
    "\\operatorname* { l i m i n f }": "\\liminf",
    "\\alpha x \\beta 2": "\\alpha x\\beta2",
    "{ { a + b } }": "{a+b}",
    "{ x } ^ { 2 } + { \\frac { 1 } { 2 } } { = }": "x^{2}+{\\frac{1}{2}}{=}",
    "\\sqrt [ 3 ] { x } \\hspace { 1 c m } \\,": "\\sqrt[3]{x}\\hspace{1cm}\\,",
    "a \\ , \\ b \\ ": "a\\ ,\\ b\\ ",
    "\\left( x \\right.": "\\left(x\\right.",
    "\\begin{array} { c c } { a } & { b + c } \\\\ \\hline { } & { d } \\\\ \\end{array}":
        "\\begin{array}{cc} a & b+c \\\\ \\hline & d \\end{array}",
    "\\begin{aligned} { a } & { { } = b } \\\\ { } & { { } = c } \\\\ \\end{aligned}":
        "\\begin{aligned} a & {}=b \\\\ & {}=c \\end{aligned}",
    "\\left( \\begin{matrix} { 1 } & { 0 } \\\\ \\end{matrix} \\right)":
        "\\left(\\begin{matrix} 1 & 0 \\end{matrix}\\right)",
    # Unbalanced (a cut-off answer): joined, nothing else.
    "a { b ^ { 2": "a{b^{2",
}


@pytest.mark.parametrize("tokens", list(IDIOMATIC))
def test_idiomatic_by_hand(tokens):
  assert idiomatic.to_idiomatic(tokens) == IDIOMATIC[tokens]
  assert idiomatic.to_idiomatic(tokens.split()) == IDIOMATIC[tokens]


@tex
def test_idiomatic_renders_as_the_tokens_do():
  """The hand cases and 60 formulas of the embedded data, through pdflatex."""
  formulas = layout.read_formulas(str(REPO / "im2latex_jax" / "data" / "embedded" /
                                      layout.FORMULAS_FILE))[:60]
  formulas += [t for t in IDIOMATIC if t != "a { b ^ { 2" and "l i m i n f" not in t]
  verdicts = render_check.compare_renders(
      formulas, [idiomatic.to_idiomatic(t) for t in formulas])
  assert set(verdicts) <= {render_check.IDENTICAL, render_check.BOTH_FAIL}, [
      (f, v) for f, v in zip(formulas, verdicts) if v != render_check.IDENTICAL]
  assert verdicts.count(render_check.IDENTICAL) >= len(formulas) - 2


@tex
def test_render_check_sees_a_difference():
  # The last: the thin space of "lim inf" that the token form lost, kept by
  # design (idiomatic.SPACED_OPERATORS).
  verdicts = render_check.compare_renders(
      ["x ^ { 2 }", "x", "\\frac { a } {", "\\operatorname* { l i m i n f }"],
      ["x^{3}", "x", "x", "\\liminf"])
  assert verdicts == [render_check.DIFFERS, render_check.IDENTICAL,
                      render_check.FIRST_FAILS, render_check.DIFFERS]


def test_normalizer_and_idiomatic_writer_stand_alone():
  """predict/serve import the idiomatic writer; it (and the normalizer) must
  not pull in rendering, data or model code."""
  from test_structure import import_graph  # pylint: disable=g-import-not-at-top
  graph = import_graph()
  assert graph["im2latex_jax.latex.idiomatic"] == set()
  assert graph["im2latex_jax.latex.normalize"] == set()


@node
@tex
def test_harvest_drops_formulas_with_undefined_commands():
  files = {"p/a.tex": "$\\Subst{x}$ $\\alpha + \\lVert x \\rVert$ $\\tuple{a}{b}$"}
  h = harvest_lib.harvest(files, check_commands=True)
  assert h.formulas == ["\\alpha + \\lVert x \\rVert"]
  assert h.dropped["undefined command"] == 2
  assert h.undefined == {"Subst": 1, "tuple": 1}


def test_operator_forms_the_parser_reads():
  assert harvest_lib.operator_forms(
      "\\mathop{\\mathrm{colim}}\\nolimits B_i") == "\\operatorname{colim} B_i"
  assert harvest_lib.operator_forms("\\mathop{\\rm lim}\\limits_n") == "\\mathop{\\rm lim}_n"
  assert harvest_lib.operator_forms("a\\xspace b \\xspaces") == "a b \\xspaces"


@tex
def test_idiomatic_keeps_the_braces_that_matter_in_arrays():
  """Cases found by the 11,475-formula run: a cell after \\\\ opening with [,
  cells of amsmath dots or \\hfill, and the row break after an \\hline."""
  tokens = [
      "\\begin{array} { l } { a } \\\\ { [ b ] = c } \\\\ \\end{array}",
      "\\begin{matrix} { \\cdots \\cdots } & { \\cdot } \\\\ \\end{matrix}",
      "\\begin{array} { c } { a = b , \\hfill } \\\\ { c = d . \\hfill } \\\\ \\end{array}",
      "\\begin{array} { | c | } \\hline { p } \\\\ \\hline { } \\\\ \\end{array}",
  ]
  ideal = [idiomatic.to_idiomatic(t) for t in tokens]
  assert ideal[0] == "\\begin{array}{l} a \\\\ {[b]=c} \\end{array}"
  assert render_check.compare_renders(tokens, ideal) == [render_check.IDENTICAL] * 4
