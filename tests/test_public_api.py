"""Tests of the public API surface: exported names, docstrings, documentation.

* Every name in ``keras_opnorm.__all__`` (and in the ``__all__`` of every
  public submodule it exports) exists and has a docstring; public functions
  document their arguments and return value.
* Every name in the README's API table exists.
* The version is the same in the package, pyproject.toml and CHANGELOG.md.
"""

import ast
import inspect
import pathlib
import re
import textwrap
import types

from absl.testing import absltest

import keras_opnorm

ROOT = pathlib.Path(__file__).absolute().parent.parent


def public_items():
  """``(qualified name, object)`` for keras_opnorm.__all__ and its submodules' __all__."""
  items = []
  for name in keras_opnorm.__all__:
    obj = getattr(keras_opnorm, name, None)
    items.append((f"keras_opnorm.{name}", obj))
    if isinstance(obj, types.ModuleType):
      for sub in getattr(obj, "__all__", ()):
        items.append((f"keras_opnorm.{name}.{sub}", getattr(obj, sub, None)))
  return items


def readme_api_names():
  """The dotted ``keras_opnorm...`` names in the first column of the README's API table."""
  text = (ROOT / "README.md").read_text()
  section = text.split("## API overview", 1)[1].split("\n## ", 1)[0]
  names = []
  for line in section.splitlines():
    if line.startswith("|") and not line.startswith("| ---"):
      first_cell = line.split(" | ", 1)[0]
      names += re.findall(r"`(keras_opnorm(?:\.\w+)*)`", first_cell)
  return names


def returns_value(function):
  """Whether ``function``'s own body has a ``return <value>`` (Google style
  omits the Returns section of a function that returns None)."""
  try:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
  except (OSError, TypeError):
    return True
  body = tree.body[0]
  nodes = list(ast.iter_child_nodes(body))
  while nodes:
    node = nodes.pop()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
      continue  # nested scopes return for themselves
    if isinstance(node, ast.Return) and node.value is not None:
      if not (isinstance(node.value, ast.Constant) and node.value.value is None):
        return True
    nodes.extend(ast.iter_child_nodes(node))
  return False


def resolve(dotted):
  obj = keras_opnorm
  for part in dotted.split(".")[1:]:
    obj = getattr(obj, part)
  return obj


class PublicApiTest(absltest.TestCase):

  def test_all_names_exist_and_have_docstrings(self):
    items = public_items()
    self.assertNotEmpty(items)
    missing = [name for name, obj in items if obj is None]
    self.assertEmpty(missing, f"exported but missing: {missing}")
    undocumented = [name for name, obj in items
                    if not isinstance(obj, (str, int, float, tuple, dict, list)) and
                    not (inspect.getdoc(obj) or "").strip()]
    self.assertEmpty(undocumented, f"public names without a docstring: {undocumented}")

  def test_public_functions_document_args_and_returns(self):
    # Functions only: classes document their constructor arguments in many
    # valid places (class docstring, __init__).
    problems = []
    for name, obj in public_items():
      if not inspect.isfunction(obj):
        continue
      doc = inspect.getdoc(obj) or ""
      params = [p for p in inspect.signature(obj).parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
      if params and "Args:" not in doc:
        problems.append(f"{name}: no Args section")
      if returns_value(obj) and "Returns:" not in doc and "Yields:" not in doc:
        problems.append(f"{name}: no Returns section")
    self.assertEmpty(problems)

  def test_core_names_are_exported(self):
    # The names the issue tracker and the tutorials rely on (API contract).
    for name in ("operator_norm", "singular_values", "pgd_attack", "lp_norm",
                 "dual_exponent", "steepest_ascent", "project_lp_ball",
                 "random_lp_ball", "jvp", "vjp", "RobustModel", "objectives",
                 "callbacks", "layers", "evaluation", "datasets"):
      self.assertIn(name, keras_opnorm.__all__)

  def test_readme_api_table_names_exist(self):
    names = readme_api_names()
    self.assertGreater(len(names), 10)
    missing = []
    for name in names:
      try:
        resolve(name)
      except AttributeError:
        missing.append(name)
    self.assertEmpty(missing, f"README's API table lists names that do not exist: {missing}")

  def test_version_is_consistent(self):
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    self.assertEqual(keras_opnorm.__version__, version)
    self.assertIn(f"## [{version}]", (ROOT / "CHANGELOG.md").read_text())


if __name__ == "__main__":
  absltest.main()
