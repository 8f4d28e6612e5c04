"""Doctest collection of the package: the diffusers shell is collected only where it imports."""

from __future__ import annotations

import importlib.util

collect_ignore = []
try:
    if importlib.util.find_spec("diffusers") is None:
        raise ImportError
    import diffusers.schedulers.scheduling_utils  # noqa: F401
except ImportError:  # no diffusers (or no torch): the module cannot be imported, by design
    collect_ignore.append("src/kdpm2/_diffusers.py")

# The README's code blocks run as tests where Sybil is installed (the test extra): see
# tests/readme.py for the names they leave to the reader.
try:
    from sybil import Sybil
    from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser
except ImportError:
    pass
else:
    from tests import readme

    pytest_collect_file = Sybil(
        parsers=[
            PythonCodeBlockParser(),
            CodeBlockParser(language="bash", evaluator=readme.run_bash),
            SkipParser(),
        ],
        patterns=["README.md"],
        setup=readme.setup,
        teardown=readme.teardown,
    ).pytest()
