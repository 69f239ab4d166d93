"""Regenerates the py_test targets of the BUILD file from tests/test_*.py.

Every ``tests/test_*.py`` gets one ``py_test`` (sorted by name) that runs the
file with pytest through ``tools/pytest_main.py``. Only the block between the
``BEGIN GENERATED`` / ``END GENERATED`` markers of BUILD is rewritten.

Usage (from the repository root)::

  python3 tools/gen_build.py          # rewrite BUILD
  python3 tools/gen_build.py --check  # exit 1 if BUILD is out of date

``tests/test_build_file.py`` runs the check in CI.
"""

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN = "# BEGIN GENERATED py_test targets (python3 tools/gen_build.py)"
END = "# END GENERATED py_test targets"
RUNNER = "tools/pytest_main.py"

_TEMPLATE = '''py_test(
    name = "{name}",
    timeout = "long",
    srcs = [
        "{src}",
        "{runner}",
    ],
    args = ["{src}"],
    # No generated tests/__init__.py: pytest then puts tests/ on sys.path
    # (rootdir-less "prepend" import mode), as in a plain pytest run, so
    # tests can import their helper modules (training_testlib).
    legacy_create_init = False,
    main = "{runner}",
    deps = [":test_support"],
)
'''


def test_files(root=ROOT):
  """The repository-relative paths of tests/test_*.py, sorted."""
  return sorted(p.relative_to(root).as_posix() for p in (root / "tests").glob("test_*.py"))


def render_targets(files):
  """The generated block (markers included) for the given test files."""
  targets = [
      _TEMPLATE.format(name=pathlib.PurePosixPath(src).stem, src=src, runner=RUNNER)
      for src in sorted(files)
  ]
  return BEGIN + "\n\n" + "\n".join(targets) + "\n" + END


def render_build(build_text, files):
  """``build_text`` with its generated block replaced for ``files``."""
  start = build_text.find(BEGIN)
  stop = build_text.find(END)
  if start < 0 or stop < start:
    raise ValueError(f"BUILD lacks the markers {BEGIN!r} ... {END!r}")
  return build_text[:start] + render_targets(files) + build_text[stop + len(END):]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true",
                      help="only check that BUILD is up to date (exit 1 if not)")
  parser.add_argument("--root", type=pathlib.Path, default=ROOT,
                      help="repository root. Defaults to the parent of tools/.")
  args = parser.parse_args(argv)
  build = args.root / "BUILD"
  old = build.read_text()
  new = render_build(old, test_files(args.root))
  if args.check:
    if old != new:
      print(f"{build} is out of date: run `python3 tools/gen_build.py`", file=sys.stderr)
      return 1
    return 0
  if old != new:
    build.write_text(new)
    print(f"updated {build}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
