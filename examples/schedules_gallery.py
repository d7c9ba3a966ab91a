"""Draw every gradtx schedule and wrapper over 1500 steps into one PNG.

    python examples/schedules_gallery.py [--out outputs/schedules_gallery.png]

Each panel is one schedule evaluated on all 1500 counts in a single call.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gradtx import schedules as S  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "outputs" / "schedules_gallery.png"
STEPS = 1500
MULTISTEP = S.multistep_decay(1.0, [250, 750, 900], 0.5)  # MXNet's MultiFactorScheduler example

GALLERY = {
    "step_decay(1, 250, 0.5)": S.step_decay(1.0, 250, 0.5),
    "multistep_decay(1, [250, 750, 900], 0.5)": MULTISTEP,
    "polynomial_decay(1, 0, 2, 1000)": S.polynomial_decay(1.0, 0.0, 2, 1000),
    "cosine_decay(1, 1000, 0.1)": S.cosine_decay(1.0, 1000, 0.1),
    "triangular(0.1, 1, 1000)": S.triangular(0.1, 1.0, 1000),
    "triangular(0.1, 1, 1000, inc_fraction=0.2)": S.triangular(0.1, 1.0, 1000, 0.2),
    "warmup(multistep, 250, 0.1)": S.warmup(MULTISTEP, 250, 0.1),
    "cooldown(multistep, 1000, 300, 0.05)": S.cooldown(MULTISTEP, 1000, 300, 0.05),
    "one_cycle(0.1, 1, 1000, 400, 0.01)": S.one_cycle(0.1, 1.0, 1000, 400, 0.01),
    "cyclic(triangular(), 300, 0.1, 1)": S.cyclic(S.shapes.triangular(), 300, 0.1, 1.0),
    "cosine_restarts(1, 100, 2, magnitude_decay=0.5)": S.cosine_restarts(
        1.0, 100, 2, 0.05, magnitude_decay=0.5
    ),
    "cyclic_lr(0.1, 1, 150, mode='triangular2')": S.cyclic_lr(0.1, 1.0, 150, mode="triangular2"),
    "cyclic_lr(0.1, 1, 150, mode='exp_range', gamma=0.998)": S.cyclic_lr(
        0.1, 1.0, 150, mode="exp_range", gamma=0.998
    ),
    "warmup(cosine_decay(1, 1200), 300)": S.warmup(S.cosine_decay(1.0, 1200), 300),
    "geometric_decay(1, 0.5, 300)": S.geometric_decay(1.0, 0.5, 300),
    "inverse_sqrt(1, 100)": S.inverse_sqrt(1.0, 100),
}


def main(out: Path) -> None:
    cols = 4
    rows = -(-len(GALLERY) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), sharex=True)
    for ax, (title, schedule) in zip(axes.flat, GALLERY.items(), strict=False):
        S.plot_schedule(schedule, STEPS, ax=ax, color="tab:blue")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(GALLERY) :]:
        ax.axis("off")
    fig.suptitle(f"gradtx.schedules over {STEPS} steps (count 0 is the first update)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    main(parser.parse_args().out)
