"""Tests of the Colab notebooks in tutorials/.

* Default suite: each notebook is valid nbformat 4 for the ``python3``
  kernel, opens with a markdown cell holding its "Open in Colab" badge (a
  link to its own path), then an install cell that pip-installs the package
  only when ``keras_opnorm`` is not importable, then a ``FAST_MODE`` flag read
  from ``KERAS_OPNORM_FAST`` (before any other code). Notebooks are stored
  without outputs.
* Slow (``--runslow``, as in CI): each notebook is executed end to end with
  nbclient in fast mode (``KERAS_OPNORM_FAST=1``); any cell error fails the
  test. The kernel is this interpreter (``sys.executable``), started from a
  temporary kernelspec so that another ``python3`` kernelspec on the machine
  cannot take its place, and a first injected cell checks that.
"""

import ast
import json
import os
import pathlib
import sys
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
import pytest

ROOT = pathlib.Path(__file__).absolute().parent.parent
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))
EXPECTED = ("01_quickstart.ipynb", "02_theorem.ipynb", "03_choosing_pq.ipynb",
            "04_cifar10_gpu.ipynb")
COLAB_URL = ("https://colab.research.google.com/github/keras-opnorm/keras_opnorm/"
             "blob/main/tutorials/")
CELL_TIMEOUT_S = 600


def _read(name):
  nbformat = pytest.importorskip("nbformat")
  return nbformat.read(str(TUTORIALS / name), as_version=4)


def _code_cells(nb):
  return [c for c in nb.cells if c.cell_type == "code"]


def _uses_env_flag(tree):
  """True if ``tree`` reads ``KERAS_OPNORM_FAST`` from the environment."""
  return any(isinstance(node, ast.Constant) and node.value == "KERAS_OPNORM_FAST"
             for node in ast.walk(tree))


def _assigns(tree, name):
  return any(isinstance(node, ast.Assign) and
             any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
             for node in ast.walk(tree))


class NotebookStructureTest(parameterized.TestCase):

  def test_the_four_tutorials_exist(self):
    self.assertContainsSubset(EXPECTED, NOTEBOOKS)

  @parameterized.parameters(*NOTEBOOKS)
  def test_valid_nbformat_4_with_python3_kernel(self, name):
    nbformat = pytest.importorskip("nbformat")
    nb = _read(name)
    nbformat.validate(nb)
    self.assertEqual(nb.nbformat, 4)
    self.assertEqual(nb.metadata.kernelspec.name, "python3")
    # Every code cell parses as Python (no IPython magics: nbclient and a
    # plain `python` read them alike).
    for i, cell in enumerate(_code_cells(nb)):
      with self.subTest(cell=i):
        ast.parse(cell.source)

  @parameterized.parameters(*NOTEBOOKS)
  def test_opens_with_colab_badge(self, name):
    first = _read(name).cells[0]
    self.assertEqual(first.cell_type, "markdown")
    self.assertIn("colab-badge.svg", first.source)
    self.assertIn(f"({COLAB_URL}{name})", first.source)

  @parameterized.parameters(*NOTEBOOKS)
  def test_install_cell_then_fast_mode_flag(self, name):
    cells = _code_cells(_read(name))
    install, flag = cells[0].source, cells[1].source
    # The install cell pip-installs the package, guarded by an import check.
    self.assertIn("keras-opnorm[experiments]", install)
    self.assertIn('find_spec("keras_opnorm") is None', install)
    self.assertIn('"-m", "pip", "install"', install)
    tree = ast.parse(flag)
    self.assertTrue(_assigns(tree, "FAST_MODE"), flag)
    self.assertTrue(_uses_env_flag(tree), flag)

  @parameterized.parameters(*NOTEBOOKS)
  def test_fast_mode_defaults_to_false_and_reads_env(self, name):
    flag = _code_cells(_read(name))[1].source
    for value, expected in [(None, False), ("0", False), ("1", True), ("true", True)]:
      env = {} if value is None else {"KERAS_OPNORM_FAST": value}
      namespace = {}
      old = os.environ.pop("KERAS_OPNORM_FAST", None)
      try:
        os.environ.update(env)
        exec(compile(flag, name, "exec"), namespace)  # pylint: disable=exec-used
      finally:
        os.environ.pop("KERAS_OPNORM_FAST", None)
        if old is not None:
          os.environ["KERAS_OPNORM_FAST"] = old
      self.assertIs(namespace["FAST_MODE"], expected, value)

  @parameterized.parameters(*NOTEBOOKS)
  def test_stored_without_outputs(self, name):
    for i, cell in enumerate(_code_cells(_read(name))):
      with self.subTest(cell=i):
        self.assertEqual(cell.outputs, [])
        self.assertIsNone(cell.execution_count)


def _kernel_env():
  """The kernel's environment: fast mode, this checkout first on the path."""
  env = dict(os.environ)
  env["KERAS_OPNORM_FAST"] = "1"
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env["PYTHONPATH"] = os.pathsep.join(
      [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
  # A notebook draws inline, as on Colab (CI exports MPLBACKEND=Agg).
  env.pop("MPLBACKEND", None)
  return env


def _kernel_manager(kernel_dir):
  """A KernelManager whose ``python3`` kernel runs ``sys.executable``."""
  from jupyter_client import KernelManager  # pylint: disable=g-import-not-at-top
  from jupyter_client.kernelspec import KernelSpecManager  # pylint: disable=g-import-not-at-top
  spec_dir = pathlib.Path(kernel_dir) / "python3"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "Python 3 (test)",
      "language": "python",
  }))
  specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
  return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _errors(nb):
  """``(cell index, message)`` of every error output."""
  return [(i, f"{o.ename}: {o.evalue}") for i, c in enumerate(nb.cells)
          if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


class NotebookExecutionTest(parameterized.TestCase):

  @pytest.mark.slow
  @parameterized.parameters(*NOTEBOOKS)
  def test_runs_end_to_end_in_fast_mode(self, name):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    nb = _read(name)
    # Check first that the kernel is this interpreter.
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    with tempfile.TemporaryDirectory() as work_dir, \
         tempfile.TemporaryDirectory() as kernel_dir:
      client = nbclient.NotebookClient(
          nb, km=_kernel_manager(kernel_dir), timeout=CELL_TIMEOUT_S,
          resources={"metadata": {"path": work_dir}})
      start = time.perf_counter()
      try:
        client.execute(env=_kernel_env())
      except nbclient.exceptions.CellExecutionError as e:
        self.fail(f"{name}: a cell failed in fast mode:\n{e}")
      seconds = time.perf_counter() - start
    kernel_python = nb.cells[0].outputs[0].text.strip()
    self.assertEqual(kernel_python, sys.executable)
    self.assertEqual(_errors(nb), [])
    print(f"{name}: {seconds:.0f} s in fast mode")


if __name__ == "__main__":
  absltest.main()
