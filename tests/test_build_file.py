"""Tests that the Bazel BUILD file is complete, sorted and has no dangling labels.

Runs under pytest and under `bazel test` (where the repository root is the
runfiles tree: checks of files that are not runfiles are skipped there).
"""

import ast
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

from absl.testing import absltest

ROOT = pathlib.Path(__file__).absolute().parent.parent
UNDER_BAZEL = "TEST_SRCDIR" in os.environ


def load_gen_build():
  spec = importlib.util.spec_from_file_location("gen_build", ROOT / "tools" / "gen_build.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


gen_build = load_gen_build()


def build_text():
  return (ROOT / "BUILD").read_text()


def string_literals(text):
  """Every double-quoted string literal of a BUILD file, comments removed."""
  code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
  return [ast.literal_eval(s) for s in re.findall(r'"(?:[^"\\]|\\.)*"', code)]


def target_names(text):
  return re.findall(r'^\s+name = "([^"]+)"', text, re.M)


class BuildFileTest(absltest.TestCase):

  def test_build_is_in_sync_with_the_test_files(self):
    files = gen_build.test_files(ROOT)
    self.assertIn("tests/test_build_file.py", files)
    self.assertEqual(
        build_text(), gen_build.render_build(build_text(), files),
        "BUILD is out of date: run `python3 tools/gen_build.py`")
    self.assertEqual(gen_build.main(["--check", "--root", str(ROOT)]), 0)

  def test_one_sorted_py_test_per_test_file(self):
    text = build_text()
    tests = re.findall(r'py_test\(\n\s+name = "([^"]+)"', text)
    files = gen_build.test_files(ROOT)
    self.assertEqual(tests, sorted(tests))
    self.assertEqual(tests, [pathlib.PurePosixPath(f).stem for f in files])
    for name in tests:
      self.assertIn(f'args = ["tests/{name}.py"]', text)

  def test_no_dangling_labels(self):
    text = build_text()
    names = set(target_names(text))
    self.assertLen(names, len(target_names(text)), "duplicate target names")
    for s in string_literals(text):
      if s.startswith("//visibility:") or "*" in s:  # visibility, glob pattern
        continue
      if s.startswith(":"):
        self.assertIn(s[1:], names, f"BUILD refers to undefined target {s}")
      elif s.startswith(("//", "@")):
        self.fail(f"BUILD refers to another package or repository: {s}")
      elif "/" in s or re.fullmatch(r"[\w.-]+\.(py|md|toml|txt|json)|BUILD|LICENSE", s):
        self.assertTrue((ROOT / s).is_file(), f"BUILD refers to a missing file: {s}")

  def test_render_is_stable_and_sorted(self):
    block = gen_build.render_targets(["tests/test_b.py", "tests/test_a.py"])
    self.assertLess(block.index('name = "test_a"'), block.index('name = "test_b"'))
    self.assertTrue(block.startswith(gen_build.BEGIN) and block.endswith(gen_build.END))
    text = "head\n" + block + "\ntail\n"
    self.assertEqual(gen_build.render_build(text, ["tests/test_a.py", "tests/test_b.py"]), text)
    with self.assertRaisesRegex(ValueError, "lacks the markers"):
      gen_build.render_build("no markers", [])


class BazelSetupTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if UNDER_BAZEL:
      self.skipTest("checks files of the source tree that are not Bazel runfiles")

  def test_local_stand_ins_for_implicit_repositories(self):
    stand_ins = ROOT / "third_party" / "bazel"
    cc = (stand_ins / "rules_cc" / "cc" / "defs.bzl").read_text()
    for rule in ("cc_binary", "cc_library", "cc_test", "cc_toolchain", "objc_library"):
      self.assertIn(f"{rule} = native.{rule}", cc)
    java = (stand_ins / "rules_java" / "java" / "defs.bzl").read_text()
    for rule in ("java_binary", "java_library", "java_test", "java_toolchain"):
      self.assertIn(f"{rule} = native.{rule}", java)
    coverage = (stand_ins / "remote_coverage_tools" / "BUILD").read_text()
    self.assertIn('name = "coverage_report_generator"', coverage)
    self.assertIn('name = "lcov_merger"', coverage)
    script = (ROOT / "tools" / "bazel_test.sh").read_text()
    for repo in ("rules_cc", "rules_java", "remote_coverage_tools"):
      self.assertTrue((stand_ins / repo / "WORKSPACE").is_file())
      self.assertIn(f"--override_repository={repo}=$root/third_party/bazel/{repo}", script)
    self.assertTrue(os.access(ROOT / "tools" / "bazel_test.sh", os.X_OK))
    ignored = (ROOT / ".bazelignore").read_text().split()
    self.assertIn(".venv", ignored)
    self.assertIn("third_party/bazel", ignored)


class PytestMainTest(absltest.TestCase):
  """tools/pytest_main.py, the entry point of every py_test."""

  def run_main(self, source):
    directory = pathlib.Path(self.create_tempdir().full_path)
    (directory / "test_it.py").write_text(source)
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "pytest_main.py"), "-p", "no:xdist", "test_it.py"],
        cwd=directory, capture_output=True, text=True, check=False, timeout=120)

  def test_exit_status(self):
    self.assertEqual(self.run_main("def test_ok():\n  pass\n").returncode, 0)
    failed = self.run_main("def test_bad():\n  assert False\n")
    self.assertEqual(failed.returncode, 1, failed.stdout)
    # pytest's 5, "no tests collected", is a pass for a py_test.
    self.assertEqual(self.run_main("x = 1\n").returncode, 0)


if __name__ == "__main__":
  absltest.main()
