"""An MkDocs hook: the site serves its own MathJax, so math renders without a network.

MathJax 3 comes from the ``django-static-mathjax`` package on PyPI (the ``docs`` extra),
which vendors MathJax's built ``es5`` tree; nothing is fetched from a CDN at build or view
time. The hook adds to the site the combined TeX-to-CommonHTML component that
``mkdocs.yml`` loads, its web fonts, and the pieces it loads on demand: TeX extensions
(``autoload``) and the accessibility menu's explorer and speech rules.
"""

from __future__ import annotations

from importlib.resources import files as package_files
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

SITE_DIR = "assets/mathjax"
_SHIPPED = ("tex-mml-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "a11y", "sre")


def mathjax_es5_dir() -> Path:
    try:
        root = Path(str(package_files("mathjax"))) / "static" / "mathjax" / "es5"
    except ModuleNotFoundError:
        root = None
    if root is None or not (root / "tex-mml-chtml.js").is_file():
        raise PluginError("the docs need django-static-mathjax's MathJax: pip install -e '.[docs]'")
    return root


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = mathjax_es5_dir()
    for entry in map(root.joinpath, _SHIPPED):
        tree = [entry] if entry.is_file() else sorted(entry.rglob("*"))
        for source in filter(Path.is_file, tree):
            uri = f"{SITE_DIR}/{source.relative_to(root).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files
