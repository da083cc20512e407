"""Angle agreement for other edge weights w = (deg_i deg_k)^(2 * EXPONENT) of the harmonic
coordinate: on every cell of a `topology analyze` output (100 and 200 landmarks; |circular
correlation| / median error in degrees over the near-circle filters) and on planted circles.
usage: [POSITION=0.8] weights.py ANALYSIS_FOLDER EXPONENT...   (the library uses -0.5, before
session 7 -0.25; POSITION: where in the H1 bar the Rips scale is taken, default 0.5)"""
import glob
import os
import re
import sys

import numpy as np

import convlens.topology._circular as C
from convlens.topology._cloud import FilterCloud
from convlens.topology._reference import _nearest_on_circle, primary_circle_patches

SOURCE = open(C.__file__).read()
POSITION = float(os.environ.get("POSITION", 0.5))


def use(exponent):
    code = re.sub(r"sw = \(deg\[i\] \* deg\[k\]\) \*\* -?[0-9.]+", f"sw = (deg[i] * deg[k]) ** {exponent}", SOURCE)
    exec(compile(code, C.__file__, "exec"), C.__dict__)


for exponent in map(float, sys.argv[2:]):
    use(exponent)
    row = []
    for cell in sorted(glob.glob(sys.argv[1] + "/cells/*")):
        cloud = FilterCloud.load(cell)
        x = np.asarray(cloud.points, float)
        fitted, _ = C.filter_orientation(cloud)
        near = _nearest_on_circle(x, cloud.shape)[0] <= 0.5
        for landmarks in (100, 200):
            try:
                cc = C.circular_coordinates(x, n_landmarks=landmarks, position=POSITION)
                a = C.angle_agreement(cc.angles[near], fitted[near])
                row.append(f"{abs(a['correlation']):.2f}/{a['median_error_deg']:.0f}")
            except C.NoCircleError:
                row.append("refused")
    for size, noise in ((3, 0.1), (5, 0.3)):
        t = np.random.default_rng(3).uniform(0, 2 * np.pi, 1500)
        cc = C.circular_coordinates(primary_circle_patches(1500, size, angles=t, noise=noise, seed=4),
                                    position=POSITION)
        a = C.angle_agreement(cc.angles, t)
        row.append(f"planted {size}x{size}: {abs(a['correlation']):.3f}/{a['median_error_deg']:.1f}")
    print(exponent, " ".join(row))
