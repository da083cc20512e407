"""How far the first layer moved from its initialisation: mean cosine between each filter
(mean-centred, as the analysis sees it) at a snapshot and at step 0 (rebuilt from the seed)."""
import glob
import sys

import torch

from convlens import load_model


def centred(w):
    w = w.flatten(1)
    w = w - w.mean(1, keepdim=True)
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
def init_of(arch, seed, tf):
    torch.manual_seed(seed)
    m = load_model(arch)
    if tf:
        torch.nn.init.trunc_normal_(m.net.conv1.weight, std=0.05, a=-0.1, b=0.1)
    return m.net.conv1.weight.detach()
arch, tf = sys.argv[1], sys.argv[2] == "tf"
for study in sys.argv[3:]:
    rows = {}
    for run in sorted(glob.glob(study + "/net_*")):
        seed = int(run[-3:])
        w0 = centred(init_of(arch, seed, tf))
        for snap in sorted(glob.glob(run + "/snapshots/step_*[0-9].pt")):
            step = int(snap.split("step_")[1][:7])
            w = centred(torch.load(snap, weights_only=True)["conv1.weight"])
            rows.setdefault(step, []).append(float((w * w0).sum(1).mean()))
    print(study, {s: round(sum(v) / len(v), 3) for s, v in sorted(rows.items())}, "nets", max(len(v) for v in rows.values()))
