"""keras_opnorm uses public Keras API, within the declared Keras range.

* No module of the package imports Keras internals (``keras.src``), or reaches
  them as an attribute (``keras.src.losses``): those move between releases.
  Docstrings may name the Keras source files they mirror.
* The installed Keras is inside pyproject.toml's tested range; CI (.ci/run)
  also runs the training and callback tests on the range's lower bound.
"""

import ast
import pathlib
import re

import keras
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keras_opnorm"


def _internal_uses(path):
  """``(line, text)`` of each ``keras.src`` import or attribute in a module."""
  tree = ast.parse(path.read_text(), filename=str(path))
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      names = [node.module or ""]
    elif (isinstance(node, ast.Attribute) and node.attr == "src"
          and isinstance(node.value, ast.Name) and node.value.id == "keras"):
      names = ["keras.src"]
    else:
      continue
    found.extend((node.lineno, n) for n in names if n == "keras.src" or n.startswith("keras.src."))
  return found


def _version(text):
  return tuple(int(v) for v in text.split(".")[:2])


class KerasCompatTest(tf.test.TestCase):

  def test_no_keras_src_in_the_package(self):
    modules = sorted(PACKAGE.rglob("*.py"))
    self.assertGreater(len(modules), 10)
    uses = {str(p.relative_to(ROOT)): _internal_uses(p) for p in modules}
    self.assertEqual({k: v for k, v in uses.items() if v}, {})

  def test_detector_finds_both_forms(self):
    # The check above would pass vacuously if the detector missed a form.
    tmp = pathlib.Path(self.get_temp_dir()) / "m.py"
    tmp.write_text('"""Mirrors keras.src.losses (a docstring: fine)."""\n'
                   "from keras.src.losses import loss\n"
                   "import keras\n"
                   "x = keras.src.trainers\n")
    self.assertEqual([n for _, n in _internal_uses(tmp)], ["keras.src.losses", "keras.src"])

  def test_installed_keras_is_in_the_declared_range(self):
    pyproject = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"keras>=([0-9.]+),<([0-9.]+)"', pyproject)
    self.assertIsNotNone(match, "pyproject.toml must declare keras>=LOW,<HIGH")
    low, high = _version(match.group(1)), _version(match.group(2))
    self.assertLessEqual(low, _version(keras.__version__))
    self.assertLess(_version(keras.__version__), high)
    ci = (ROOT / ".ci" / "run").read_text()
    self.assertIn("oldest_keras_tests", ci)  # CI tests the lower bound too


if __name__ == "__main__":
  tf.test.main()
