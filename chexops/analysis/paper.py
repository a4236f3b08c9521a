"""The reference values CheXtransfer reports, as listed in CHEXTRANSFER.md: printed beside the measured numbers in
study.md and drawn beside them in the figures; nothing is computed from them."""

from __future__ import annotations

# Reference values reported by Ke et al., "CheXtransfer" (ACM CHIL 2021), as listed in CHEXTRANSFER.md
# ("Reported results"). They are printed beside the measured numbers for comparison; nothing is computed from them.
PAPER_CITATION = "Ke, Ellsworth, Banerjee, Ng, Rajpurkar, CheXtransfer, ACM CHIL 2021 (arXiv 2101.06871)"
PAPER_SPEARMAN: dict[tuple[str, str], tuple[float, float | None]] = {
    ("top1_vs_auroc", "random"): (0.082, 0.762),
    ("top1_vs_auroc", "imagenet"): (0.059, 0.829),
    ("params_vs_auroc", "random"): (0.791, None),
    ("params_vs_auroc", "imagenet"): (0.565, 0.023),
    # Reported as 0.718 "in magnitude" with smaller models gaining more, i.e. a negative correlation.
    ("boost_vs_params", "imagenet - random"): (-0.718, 0.002),
}
PAPER_BEST_WORST: dict[str, tuple[tuple[str, float], tuple[str, float]]] = {
    "random": (("inception_v3", 0.866), ("mobilenetv2", 0.814)),
}
PAPER_MEAN_BOOST = 0.015
PAPER_BOOST = {"efficientnet_b0": 0.023, "mobilenetv2": 0.040, "mobilenetv3": 0.033, "inception_v4": -0.002,
               "resnet101": 0.013}
PAPER_SIZE: dict[tuple[str, str], tuple[str, float]] = {
    ("ResNet", "random"): ("ResNet101 - ResNet18", 0.005),
    ("DenseNet", "random"): ("DenseNet201 - DenseNet121", 0.004),
    ("EfficientNet", "random"): ("EfficientNetB3 - B0", 0.003),
    ("ResNet", "imagenet"): ("ResNet101 - ResNet18", 0.002),
    ("DenseNet", "imagenet"): ("DenseNet201 - DenseNet121", 0.004),
    ("EfficientNet", "imagenet"): ("EfficientNetB3 - B0", -0.006),
}
PAPER_TRUNCATION_GAIN = 3.25
PAPER_TRUNCATION_DROP = "no statistically significant AUC drop"
# The scope of every paper value above: a claim quoted without it reads as if it covered this study's setting.
PAPER_SCOPE = ("real CheXpert radiographs (191k frontal training images, 3 epochs), test mean AUROC over the 6 study "
               "tasks, 100% of the labels; pretraining boosts are ImageNet weights against random initialisation")
# MoCo-CXR's headline, with its scope (as CHEXTRANSFER.md lists it).
MOCO_CXR = ("MoCo-CXR (Sowrirajan et al., MIDL 2021) reports, on real CheXpert, task Pleural Effusion only, at 0.1% of "
            "the labels, end-to-end fine-tuning from MoCo-CXR pretraining ahead of the same architecture without it "
            "by AUC +0.037 (95% CI 0.015-0.062; +0.096 for a linear probe), with gains shrinking as the label "
            "fraction grows")
