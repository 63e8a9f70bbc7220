"""Compose README's overview figure from a finished synthetic-data demo run (runs/demo by default).

    dspose demo --data synthetic --out runs/demo && python docs/figures/make_overview.py [RUN_DIR]

Panels: the MPII physical topology (`topology_mpii.png`), the learned adjacency (`adjacency.png`) and the
predictions on held-out synthetic images (`predictions.png`). Only project-generated images are used: a run
on LSPET or COCO would put third-party images into the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


def main(run: Path, out: Path) -> None:
    panels = [("physical topology (MPII)", "topology_mpii.png"), ("learned adjacency", "adjacency.png"),
              ("held-out predictions", "predictions.png")]
    images = [mpimg.imread(run / name) for _, name in panels]
    widths = [im.shape[1] / im.shape[0] for im in images]
    fig, axes = plt.subplots(1, 3, figsize=(4.2 * sum(widths), 4.6), gridspec_kw={"width_ratios": widths})
    for ax, (title, _), im in zip(axes, panels, images):
        ax.imshow(im)
        ax.set_title(title, fontsize=13)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/demo"), Path(__file__).with_name("overview.png"))
