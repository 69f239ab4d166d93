"""Entry point of every Bazel ``py_test``: runs one test file with pytest.

The BUILD file gives each test file its own ``py_test`` whose ``main`` is this
script and whose first argument is the test file, so that a test behaves the
same under ``bazel test`` as under ``pytest``: ``tests/conftest.py`` is used
(seeds, ``--runslow``), ``@pytest.mark.slow`` tests are skipped unless
``--runslow`` is passed (``bazel test //... --test_arg=--runslow``), and
pytest-only features (fixtures, marks) work.

pytest's exit status 5 ("no tests collected", e.g. a file whose tests are all
deselected) counts as success; every other non-zero status fails the test.
"""

import os
import sys

import pytest

_NO_TESTS_COLLECTED = 5


def main(argv):
  args = ["-p", "no:cacheprovider", "-q", "-rs"]
  # Bazel asks for a JUnit XML report here (shown by `bazel test` tools).
  xml_output = os.environ.get("XML_OUTPUT_FILE")
  if xml_output:
    args.append(f"--junitxml={xml_output}")
  status = pytest.main(args + list(argv))
  return 0 if status == _NO_TESTS_COLLECTED else int(status)


if __name__ == "__main__":
  sys.dont_write_bytecode = True  # the runfiles tree is read-only
  sys.exit(main(sys.argv[1:]))
