"""Compose README's overview figure from a finished demo run on generated people.

    dspose demo --data synthetic --out runs/demo
    python docs/figures/make_overview.py --run runs/demo [--out docs/figures/overview.png]

Panels, left to right: the MPII physical topology (``topology_mpii.png``), the learned adjacency
(``adjacency.png``) and the predictions on held-out generated people (``predictions.png``). A run on LSPET,
COCO or any other real data is refused: its figures would put third-party images into the repository.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

PANELS = [("MPII topology", "topology_mpii.png"), ("learned adjacency", "adjacency.png"),
          ("held-out predictions", "predictions.png")]
DEFAULT_OUT = Path(__file__).with_name("overview.png")
# dspose_graph.data.synthetic writes this at the start of every annotation file's info.description.
GENERATED = "dspose-graph synthetic person keypoints"


def check_generated(run: Path) -> None:
    """Raise ``ValueError`` unless ``run`` is a demo run whose held-out images are the project's generated people."""
    config_path = run / "train" / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not found; expected a finished `dspose demo --out {run}` run")
    data = yaml.safe_load(config_path.read_text())["data"]
    val_ann = Path(data.get("root") or "") / data["val_ann"]
    description = json.loads(val_ann.read_text()).get("info", {}).get("description", "")
    if not description.startswith(GENERATED):
        raise ValueError(f"{config_path}: data.val_ann {val_ann} is not the project's generated people "
                         f"(info.description {description!r}); re-run the demo with --data synthetic")


def compose(run: Path, out: Path) -> Path:
    """Write the three-panel figure of ``run`` to ``out`` (PNG) and return ``out``."""
    check_generated(run)
    missing = [name for _, name in PANELS if not (run / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run}: missing {', '.join(missing)} (a demo with a graph head writes all three)")
    images = [mpimg.imread(run / name) for _, name in PANELS]
    widths = [im.shape[1] / im.shape[0] for im in images]
    fig, axes = plt.subplots(1, 3, figsize=(4.2 * sum(widths), 4.6), gridspec_kw={"width_ratios": widths})
    for ax, (title, _), im in zip(axes, PANELS, images):
        ax.imshow(im)
        ax.set_title(title, fontsize=13)
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="the demo's --out (default runs/demo)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the figure (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    print(f"wrote {compose(args.run, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
