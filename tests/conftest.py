"""pytest configuration shared by every test file.

* ``--runslow``: tests marked ``@pytest.mark.slow`` are skipped without it.
* TensorFlow's C++ logging is silenced before TensorFlow is first imported.
* Every test starts from the same seeds (Python, numpy, TensorFlow, Keras),
  so a failure reproduces. ``tf.test.TestCase.setUp`` seeds again for its own tests.
* ``@pytest.mark.slow`` may be written above or below absl's
  ``@parameterized.parameters`` / ``named_parameters`` / ``product``.
* absl flags are marked as parsed, so absl ``parameterized.TestCase`` /
  ``tf.test.TestCase`` classes (``get_temp_dir``, ``FLAGS.test_tmpdir``) work
  when pytest, not ``absltest.main()``, runs them.
"""

import os

# Must happen before TensorFlow is imported by any test module.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# For the subprocesses tests start (notebook kernels, workers).
os.environ.setdefault("PYTHONHASHSEED", "0")

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl.testing import parameterized  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

SEED = 0


def _keep_marks_of_parameterized_tests():
  """Makes ``@pytest.mark.X`` above ``@parameterized...`` reach each case.

  A mark written above the ``parameterized`` decorator lands on absl's
  ``_ParameterizedTestIter`` object, which the metaclass then replaces by the
  generated test methods: the mark would be lost silently (a slow test would
  run in the default suite). This copies it onto every generated method.
  A mark written below the decorator (next to ``def``) already works.
  """
  cls = getattr(parameterized, "_ParameterizedTestIter", None)
  if cls is None or getattr(cls, "_keras_opnorm_marks", False):
    return
  original_iter = cls.__iter__

  def iter_with_marks(self):
    marks = list(getattr(self, "pytestmark", []))
    for fn in original_iter(self):
      if marks:
        fn.pytestmark = list(getattr(fn, "pytestmark", [])) + marks
      yield fn

  cls.__iter__ = iter_with_marks
  cls._keras_opnorm_marks = True  # pylint: disable=protected-access


_keep_marks_of_parameterized_tests()


def pytest_addoption(parser):
  parser.addoption(
      "--runslow", action="store_true", default=False,
      help="also run tests marked @pytest.mark.slow (CI does)")


def pytest_configure(config):
  # Registered here too (not only in pyproject.toml) so that the marker is
  # known wherever the tests run, e.g. inside a Bazel sandbox.
  config.addinivalue_line(
      "markers", "slow: long checks; skipped unless pytest is given --runslow")
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def pytest_collection_modifyitems(config, items):
  # tf.test.TestCase inherits a `test_session` method (a TF1 session helper
  # that skips itself): deselect it rather than report a skip per class.
  kept, session_helpers = [], []
  for item in items:
    is_helper = (item.name == "test_session" and item.cls is not None and
                 getattr(item.cls.test_session, "__module__", "").startswith("tensorflow."))
    (session_helpers if is_helper else kept).append(item)
  if session_helpers:
    config.hook.pytest_deselected(items=session_helpers)
    items[:] = kept
  if config.getoption("--runslow"):
    return
  skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
  for item in items:
    if item.get_closest_marker("slow") is not None:
      item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _deterministic_seeds():
  """Seeds Python's `random`, numpy, TensorFlow and Keras before every test."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(SEED)
  yield
