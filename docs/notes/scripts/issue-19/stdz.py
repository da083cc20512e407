"""4 x C(64,32,64) on grey CIFAR, the paper's recipe (SGD, shifts, flips) with the paper's input
preprocessing: each image mean-centred and normalised (TF's per_image_standardization)."""
import sys

import torch

from convlens import load_model
from convlens.data import conform, load_dataset
from convlens.training import TrainConfig, train

torch.set_num_threads(1)
out = sys.argv[1]
ds0 = load_dataset("/work/shared/data/cifar10-small.npz")
def standardize(mod, args):
    x = args[0]
    n = x[0].numel()
    mean = x.mean((1, 2, 3), keepdim=True)
    std = x.std((1, 2, 3), keepdim=True, unbiased=False).clamp_min(n ** -0.5)
    return ((x - mean) / std,)
for seed in range(4):
    torch.manual_seed(seed)
    m = load_model("C(64,32,64)")
    ds = conform(ds0, m)
    m.net.register_forward_pre_hook(standardize)
    cfg = TrainConfig(seed=seed, steps=400, batch_size=128, snapshot_every=100, optimizer="sgd",
                      augment_shift=4, augment_flip=True, val_fraction=0.05, eval_every=400)
    _, r = train(m, ds, cfg, out=f"{out}/net_{seed:03d}")
    print(seed, r.val_accuracy, flush=True)
