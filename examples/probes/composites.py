"""Probe (issue 25): why does the ISNet's background-swapped training learn a subtle disease slowly?

One training with the production ``train()`` on a synthetic cohort rendered in memory (ground-truth
masks), then four numbers: the first epoch whose training cross-entropy is below 0.5, the AUC on the
external sites' raw images, the AUC on the internal test images with the lungs alone, and the
cross-entropy on the training images' lungs put on *new* backgrounds (a pairing never trained on).
Only the training split's images change between variants (validation and external stay raw):

  raw        the images as rendered (the shortcut is learnable)
  masked     the lungs alone (the lungs-only reference's inputs)
  absent     the raw images of the same cohort rendered with the shortcut absent at every site
  comp_any   static composites: each image's lungs (union of both masks) on the background of one other
             training image drawn once (any site), the same composite every epoch
  comp_site  the same with the donor drawn from the image's own site
  dyn_swap   the production `swap` arm without the teacher: a new donor at every step (warm-up and
             every batch), cross-entropy only

Usage (from the repository root, the project's venv):
  python examples/probes/composites.py VARIANT [EPOCHS=20] [SYNTH_SEED=101] [TRAIN_SEED=1]
Prints one JSON line. The standard variants train ``mode: standard``; every run uses difficulty 0.75 and
the demo's other settings, ``audit_samples: 0``. The figures are in docs/robustness.md.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import torch
from sklearn.metrics import roc_auc_score

from isnetflow.audit.counterfactual import swap_background
from isnetflow.config import Settings, TrainConfig
from isnetflow.training.data import TrainData, from_synthetic
from isnetflow.training.loop import train


def composite(data: TrainData, i: int, j: int) -> torch.Tensor:
    """Image ``i``'s lungs on image ``j``'s background: the counterfactual test's construction."""
    a, b = data.images[i].numpy(), data.images[j].numpy()
    return torch.from_numpy(swap_background(a, data.masks[i].numpy(), b, data.masks[j].numpy()))


def main(variant: str, epochs: int = 20, synth_seed: int = 101, train_seed: int = 1) -> dict[str, object]:
    """Train one variant and return its figures."""
    synth = Settings().synth.model_copy(update={"seed": synth_seed, "difficulty": 0.75})
    if variant == "absent":
        sites = [p.model_copy(update={"shortcut_mode": "absent"}) for p in synth.sites]
        synth = synth.model_copy(update={"sites": sites})
    data = from_synthetic(synth, 128)
    tr = torch.tensor(data.indices("train"))
    g = torch.Generator().manual_seed(1234)
    imgs = data.images.clone()
    if variant == "masked":
        imgs[tr] = data.images[tr] * data.masks[tr]
    elif variant in ("comp_any", "comp_site"):
        sites_tr = [data.sites[int(i)] for i in tr]
        for k, i in enumerate(tr.tolist()):
            pool = [
                int(j)
                for kk, j in enumerate(tr.tolist())
                if j != i and (variant == "comp_any" or sites_tr[kk] == sites_tr[k])
            ]
            j = pool[int(torch.randint(len(pool), (1,), generator=g))]
            imgs[i] = composite(data, i, j)
    data = dataclasses.replace(data, images=imgs)
    cfg = TrainConfig(mode="standard", epochs=epochs, seed=train_seed, audit_samples=0)
    if variant == "dyn_swap":
        cfg = TrainConfig(
            mode="isnet", relevance_loss=False, epochs=epochs, seed=train_seed, audit_samples=0,
            distill={"teacher_epochs": 0},
        )  # fmt: skip
    t0 = time.time()
    res = train(cfg, data, progress=False)
    ce = [h.get("train_ce") for h in res.history]
    va = [h.get("val_auc") for h in res.history]

    model = res.model.eval()

    def probs(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([torch.softmax(model(x[k : k + 64]), 1)[:, 1] for k in range(0, len(x), 64)])

    ext, te = torch.tensor(data.indices("external")), torch.tensor(data.indices("test"))
    orig = from_synthetic(synth, 128)
    lab = orig.labels
    ext_auc = roc_auc_score(lab[ext].numpy(), probs(orig.images[ext]).numpy())
    masked_test_auc = roc_auc_score(lab[te].numpy(), probs(orig.images[te] * orig.masks[te]).numpy())
    g2 = torch.Generator().manual_seed(999)
    trl = tr.tolist()
    fresh = []
    for i in trl:
        j = trl[int(torch.randint(len(trl), (1,), generator=g2))]
        j = j if j != i else trl[(trl.index(i) + 1) % len(trl)]
        fresh.append(composite(orig, i, j))
    pf = probs(torch.stack(fresh)).clamp(1e-6, 1 - 1e-6)
    y = lab[tr].float()
    fresh_ce = float(-(y * pf.log() + (1 - y) * (1 - pf).log()).mean())
    first = next((e for e, v in enumerate(ce) if v is not None and v < 0.5), None)
    return {
        "variant": variant, "cohort": synth_seed, "seed": train_seed, "ce_lt_05": first,
        "secs": round(time.time() - t0), "ext_auc": round(ext_auc, 3),
        "masked_test_auc": round(masked_test_auc, 3), "fresh_comp_ce": round(fresh_ce, 3),
        "best_epoch": res.best_epoch, "train_ce": [round(v, 2) for v in ce],
        "val_auc": [round(v, 2) for v in va],
    }  # fmt: skip


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(args[0], *(int(a) for a in args[1:]))))
