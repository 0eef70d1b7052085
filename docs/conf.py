"""Sphinx configuration: the API reference from the docstrings, the README as the guide.

Build (after ``pip install -e '.[docs]'``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The docstrings are plain reST (no Napoleon sections). The reference documents the
public names as ``import pasid`` gives them: the compiled core's classes when it is
built (their signatures are the text signatures Cython embeds, their docstrings the
pure twins', taken at import), else the pure backend's. The examples in the docstrings
are the ones ``tests/test_doctests.py`` runs on both backends; the pages add none.
"""

import os
import sys

# the checkout's pasid (its compiled modules built in place, or an editable install)
sys.path.insert(0, os.path.abspath(".."))

import pasid  # noqa: E402

project = "pasid"
author = "the pasid authors"
copyright = "the pasid authors (MIT)"
release = pasid.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# autodoc: members in source order, signatures as the code has them
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# the README and the example's README are Markdown (MyST reads their tables), with
# heading anchors as GitHub makes them
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"pasid {release}"
html_theme_options = {"description": "PCIe PASID allocation, a Linux-IDA-compatible "
                                     "allocator and a simulator, on a Cython core"}
