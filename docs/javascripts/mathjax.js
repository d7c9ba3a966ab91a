// Read by MathJax when it loads (docs/hooks/mathjax.py serves it from the site itself):
// typeset only what pymdownx.arithmatex marked as math, never code or prose.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: { ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex" },
};
