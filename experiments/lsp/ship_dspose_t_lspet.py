"""Ship the LSPET run as dspose_t_lspet: its best checkpoint and model card into dspose_graph/weights.

Run from the repository root after `dspose train experiments/lsp/dspose_t_lspet.yaml`.
"""

from dspose_graph.models.checkpoint import load_checkpoint
from dspose_graph.models.runtime import cpu_description
from dspose_graph.weights.card import ship, training_summary

run = "runs/lsp/dspose_t_lspet"
ckpt = f"{run}/best.pt"
state = load_checkpoint(ckpt)
metrics = state["metrics"]
summary = training_summary(run)
card = {
    "data": "LSP Extended (Johnson & Everingham, CVPR 2011): joints.mat + images read in place from ../shared/data/lspet; "
            "trained on images 1-9,000 (data.kind lspet, split 'train'), evaluated on images 9,001-9,500 ('val', held out); "
            "images 9,501-10,000 ('test') are kept aside for acceptance checks and were never seen",
    "licence": "LSPET annotations and images: research use only, cite the paper (S. Johnson, M. Everingham, Learning "
               "Effective Human Pose Estimation from Inaccurate Annotation, CVPR 2011). These weights are derived from "
               "them: use them for research. The start (dspose_t_synthetic) holds no third-party data.",
    "recipe": "experiments/lsp/dspose_t_lspet.yaml",
    "commands": {
        "train": "dspose train experiments/lsp/dspose_t_lspet.yaml",
        "ship": "python experiments/lsp/ship_dspose_t_lspet.py (dspose_graph.weights.card.ship)",
        "val_metrics": "dspose train experiments/lsp/dspose_t_lspet.yaml --eval-only --resume dspose_t_lspet "
                       "--set run.out_dir=runs/lsp/card_check   # writes runs/lsp/card_check/metrics_eval.json",
    },
    "start": "backbone + Transformer of dspose_t_synthetic (trained only on the project's generated people), fresh GraphConv graph head",
    "training": {**summary, "checkpoint_epoch": int(state["epoch"]),
                 "machine": f"{cpu_description()}; bf16 autocast chosen by optim.precision auto, "
                            "1 loader process; the machine was shared with other jobs at idle priority"},
    "val_protocol": "500 val persons, ground-truth boxes (labelled joints + 10 % margin, x1.25 crop padding), flip test, "
                    "DARK decoding. torso_PCK@0.2: within 0.2 x |left shoulder - right hip|, over the persons with both "
                    "labelled (torso_persons); PCK@0.2: within 0.2 x the box's longest side; AP: pycocotools OKS AP "
                    "(LSP sigmas, box area); swap: percent of labelled left/right pairs predicted crossed",
    "goals": "torso PCK@0.2 >= 75 (stretch 85) and swap <= 5 %: NOT met by this model (see val_metrics)",
}
print(ship(ckpt, "dspose_t_lspet", metrics=metrics, card=card))
