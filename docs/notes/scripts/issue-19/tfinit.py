"""4 x C(64,32,64) on grey CIFAR, the paper's recipe (SGD, shifts, flips) with TensorFlow's
CIFAR-10 tutorial initialisation (truncated normal: convs std 0.05, fc 0.04, readout 1/64)."""
import sys

import torch

from convlens import load_model
from convlens.data import conform, load_dataset
from convlens.training import TrainConfig, train

torch.set_num_threads(1)
out = sys.argv[1]
ds0 = load_dataset("/work/shared/data/cifar10-small.npz")
for seed in range(4):
    torch.manual_seed(seed)
    m = load_model("C(64,32,64)")
    ds = conform(ds0, m)
    with torch.no_grad():
        for name, std, bias in (("conv1", 0.05, 0.0), ("conv2", 0.05, 0.1), ("fc1", 0.04, 0.1), ("readout", 1 / 64, 0.0)):
            mod = getattr(m.net, name)
            torch.nn.init.trunc_normal_(mod.weight, std=std, a=-2 * std, b=2 * std)
            mod.bias.fill_(bias)
    cfg = TrainConfig(seed=seed, steps=400, batch_size=128, snapshot_every=100, optimizer="sgd",
                      augment_shift=4, augment_flip=True, val_fraction=0.05, eval_every=400)
    _, r = train(m, ds, cfg, out=f"{out}/net_{seed:03d}")
    print(seed, r.val_accuracy, flush=True)
