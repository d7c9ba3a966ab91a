"""Regenerate the pictures in docs/assets/ by running the examples that draw them.

    python docs/regenerate_assets.py            # every picture
    python docs/regenerate_assets.py sweep.png  # some of them

Each picture comes from one example run with ``--out``; nothing is drawn by
hand. Needs the ``examples`` extra (scikit-learn, matplotlib, tqdm).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "docs" / "assets"
EXAMPLES = {  # picture -> the example that draws it
    "schedules_gallery.png": "schedules_gallery.py",
    "lr_finder.png": "lr_finder.py",
    "trainer.png": "trainer.py",
    "sweep.png": "sweep.py",
    "learner_gallery.png": "learner_gallery.py",
    "modern_learners.png": "modern_learners.py",
    "compressed_training.png": "compressed_training.py",
}


def regenerate(names: list[str]) -> None:
    unknown = sorted(set(names) - set(EXAMPLES))
    if unknown:
        raise SystemExit(f"unknown pictures {unknown}; known: {sorted(EXAMPLES)}")
    for name in names:
        example = ROOT / "examples" / EXAMPLES[name]
        print(f"{name}: python examples/{example.name} --out docs/assets/{name}", flush=True)
        subprocess.run([sys.executable, str(example), "--out", str(ASSETS / name)], check=True)


if __name__ == "__main__":
    regenerate(sys.argv[1:] or list(EXAMPLES))
