"""The documentation site works offline and links right, and the README lists every page.

The site is built as CI builds it (``mkdocs build --strict``), once, and every page and
stylesheet is read back: nothing the browser loads by itself (scripts, stylesheets, fonts,
images, preconnects) may come from another host, every local script and stylesheet must
be in the site, MathJax's fonts must be there, and 404.html (served at any depth) must link
absolutely under ``site_url``. Links to other sites (``<a href>``) are fine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MATHJAX = "assets/mathjax/tex-mml-chtml.js"

# <link rel=...> kinds that make the browser fetch (or connect to) the address by itself.
_FETCHING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "preconnect",
                  "dns-prefetch", "icon", "apple-touch-icon", "manifest"}  # fmt: skip
_SRC_TAGS = {"script", "img", "iframe", "source", "audio", "video", "embed", "track", "input"}
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)['"]""")


class _Resources(HTMLParser):
    """The addresses a page makes the browser load without a click, with what asks for each."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag in _SRC_TAGS and attr.get("src"):
            self.found.append((f"<{tag} src>", attr["src"]))
        rels = set(attr.get("rel", "").lower().split())
        if tag == "link" and rels & _FETCHING_RELS and attr.get("href"):
            self.found.append((f"<link rel={' '.join(sorted(rels))}>", attr["href"]))
        if attr.get("style"):
            self.found += css_resources(attr["style"], f"<{tag} style>")
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found += css_resources(data, "<style>")


def css_resources(css: str, where: str = "css") -> list[tuple[str, str]]:
    """``url(...)`` and ``@import`` addresses in a stylesheet (fonts, images, other sheets)."""
    return [(f"{where} @import" if m[2] else f"{where} url()", m[1] or m[2])
            for m in _CSS_URL.finditer(css)]  # fmt: skip


def html_resources(html: str) -> list[tuple[str, str]]:
    parser = _Resources()
    parser.feed(html)
    return parser.found


def is_external(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https") or url.startswith("//")


def external_resources(path: Path) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    found = css_resources(text) if path.suffix == ".css" else html_resources(text)
    return [(what, url) for what, url in found if is_external(url)]


class _MkdocsYaml(yaml.SafeLoader):
    """mkdocs.yml's own tags (``!relative``, ``!ENV``) read as None: nav and site_url have none."""


_MkdocsYaml.add_multi_constructor("!", lambda loader, suffix, node: None)
MKDOCS = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_MkdocsYaml)


def nav_pages(nav: list) -> list[str]:
    """Every page of an mkdocs ``nav``, depth first, as paths under docs/."""
    pages = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def readme_documentation_links() -> set[str]:
    section = README.read_text().split("\n## Documentation\n", 1)[1].split("\n## ", 1)[0]
    return {link.split("#")[0] for link in re.findall(r"\]\(docs/([^)\s]+\.md[^)\s]*)\)", section)}


@pytest.mark.parametrize(
    ("snippet", "kind"),
    [
        ('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js">', "html"),
        ('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">', "html"),
        ('<link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>', "html"),
        ('<img src="//img.shields.io/badge.svg">', "html"),
        ("<style>@import url(https://fonts.googleapis.com/css2?family=Inter);</style>", "html"),
        ('@import "https://example.com/theme.css";', "css"),
        ("@font-face { font-family: X; src: url('https://fonts.gstatic.com/x.woff2'); }", "css"),
    ],
)
def test_the_scan_finds_every_kind_of_external_resource(tmp_path, snippet, kind):
    page = tmp_path / f"page.{kind}"
    page.write_text(f"<a href='https://arxiv.org/abs/1412.6980'>Adam</a>{snippet}")
    (found,) = external_resources(page)
    assert found[1].startswith(("https://", "//"))
    page.write_text("<a href='https://arxiv.org/abs/1412.6980'>Adam</a><img src='../a.png'>")
    assert external_resources(page) == []


def test_the_site_builds_strict_and_loads_nothing_from_other_hosts(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    files = sorted(p for p in site.rglob("*") if p.suffix in (".html", ".css"))
    pages = [p for p in files if p.suffix == ".html"]
    assert len(pages) >= len(nav_pages(MKDOCS["nav"]))

    external = {str(p.relative_to(site)): found for p in files if (found := external_resources(p))}
    assert external == {}, f"pages that need a network connection: {external}"

    assert MKDOCS.get("site_url"), "mkdocs.yml needs site_url: 404.html's links are built from it"
    site_path = urlsplit(MKDOCS["site_url"]).path
    mathjax = (site / MATHJAX).resolve()
    missing, relative_in_404, math_without_mathjax = [], [], []
    for page in pages:
        html, name = page.read_text(encoding="utf-8"), str(page.relative_to(site))
        urls = [urlsplit(u).path for _, u in html_resources(html) if not is_external(u)]
        urls = [u for u in urls if u and not u.startswith("data:")]
        if name == "404.html":  # served at any depth: only links from the site's root work
            relative_in_404 += [u for u in urls if not u.startswith(site_path)]
        targets = [
            (site / u.removeprefix(site_path) if u.startswith("/") else page.parent / u).resolve()
            for u in urls
        ]
        missing += [f"{name}: {u}" for u, t in zip(urls, targets, strict=True) if not t.is_file()]
        if 'class="arithmatex"' in html and mathjax not in targets:
            math_without_mathjax.append(name)
    assert missing == [], f"scripts, stylesheets or images the site does not have: {missing}"
    assert relative_in_404 == [], f"404.html's links not under {site_path}: {relative_in_404}"
    assert math_without_mathjax == [], f"pages with math that do not load {MATHJAX}"

    # MathJax fetches its fonts when it typesets: every one its script names is in the site.
    fonts = set(re.findall(r"MathJax_[A-Za-z0-9-]+\.woff", (site / MATHJAX).read_text()))
    font_dir = site / "assets/mathjax/output/chtml/fonts/woff-v2"
    assert len(fonts) > 20 and {f for f in fonts if not (font_dir / f).is_file()} == set()


def test_the_readme_lists_every_page_of_the_site():
    # index.md is the site's home page, the README's counterpart, so the README has no link to it.
    pages = [p for p in nav_pages(MKDOCS["nav"]) if p != "index.md"]
    linked = readme_documentation_links()
    unlisted = [p for p in pages if p not in linked]
    assert unlisted == [], f"pages in mkdocs.yml's nav that the README's list lacks: {unlisted}"
    assert sorted(linked - set(pages)) == [], "the README lists pages that are not in the nav"
    assert all((ROOT / "docs" / p).is_file() for p in pages)
