"""Tests that README.md says what works: its commands and its runnable code.

* The README opens with the two commands of a fresh machine (set up + main
  job; set up + tests), and CI (.ci/run) runs that test command verbatim.
* Every ```python block preceded by the line ``<!-- runnable -->`` runs.
  Names of the library it uses are checked first, in the default suite, so
  that a missing API shows up as a one-line message; executing the blocks
  (training included) is a slow test.
"""

import pathlib
import re

from absl.testing import absltest
import pytest

import keras_opnorm

ROOT = pathlib.Path(__file__).absolute().parent.parent
README = ROOT / "README.md"
CI_SCRIPT = ROOT / ".ci" / "run"

MAIN_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install -e ".[experiments]" && '
    ".venv/bin/python -m keras_opnorm.experiments.compare --output_dir=outputs/compare")
TEST_COMMAND_PREFIX = 'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && '

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_RUNNABLE = re.compile(r"^<!-- runnable -->\n```python\n(.*?)^```", re.S | re.M)


def code_blocks(text):
  """``(language, code)`` of every fenced block, in order."""
  return [(m.group(1), m.group(2)) for m in _FENCE.finditer(text)]


def runnable_blocks(text):
  """``(first line number, code)`` of the blocks marked ``<!-- runnable -->``."""
  return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _RUNNABLE.finditer(text)]


def commands(code):
  """The non-comment, non-empty lines of a shell block."""
  return [line.strip() for line in code.splitlines()
          if line.strip() and not line.strip().startswith("#")]


def readme_test_command():
  """The README's test command (the second command of its first block)."""
  return commands(code_blocks(README.read_text())[0][1])[1]


def library_names(code):
  """Dotted ``keras_opnorm.x.y`` names used in ``code`` (attribute chains)."""
  return sorted(set(re.findall(r"\bkeras_opnorm(?:\.[A-Za-z_]\w*)+", code)))


def resolve(dotted):
  """``keras_opnorm.a.b`` -> the object, or raises AttributeError."""
  obj = keras_opnorm
  for part in dotted.split(".")[1:]:
    obj = getattr(obj, part)
  return obj


class ReadmeCommandsTest(absltest.TestCase):

  def test_readme_starts_with_the_two_commands(self):
    text = README.read_text()
    before_first_block = text[:text.index("```")]
    # Only the title comes before the commands.
    self.assertEqual([l for l in before_first_block.splitlines() if l.strip()], ["# keras_opnorm"])
    language, code = code_blocks(text)[0]
    self.assertEqual(language, "bash")
    main, test = commands(code)
    self.assertEqual(main, MAIN_COMMAND)
    self.assertTrue(test.startswith(TEST_COMMAND_PREFIX), test)
    self.assertIn(".venv/bin/python -m pytest", test)

  def test_ci_runs_the_readme_test_command_verbatim(self):
    ci_lines = [line.strip() for line in CI_SCRIPT.read_text().splitlines()]
    self.assertIn(readme_test_command(), ci_lines)

  def test_there_is_a_runnable_quickstart(self):
    blocks = runnable_blocks(README.read_text())
    self.assertNotEmpty(blocks)
    self.assertIn("import keras_opnorm", blocks[0][1])


class ReadmeSnippetsTest(absltest.TestCase):

  def test_snippets_use_existing_library_names(self):
    missing = []
    for line, code in runnable_blocks(README.read_text()):
      for name in library_names(code):
        try:
          resolve(name)
        except AttributeError:
          missing.append(f"{name} (README.md line {line})")
    self.assertEmpty(
        missing,
        "README's runnable quickstart uses names that keras_opnorm does not "
        f"have (yet): {', '.join(missing)}")

  @pytest.mark.slow
  def test_runnable_snippets_execute(self):
    for line, code in runnable_blocks(README.read_text()):
      # Line numbers in tracebacks point into README.md.
      compiled = compile("\n" * (line - 1) + code, str(README), "exec")
      exec(compiled, {"__name__": "__readme__"})  # pylint: disable=exec-used


if __name__ == "__main__":
  absltest.main()
