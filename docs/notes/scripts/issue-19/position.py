"""Angle agreement at other Rips scales in the bar (position) for every cell and planted circles.
usage: position.py ANALYSIS_FOLDER 0.5,0.8"""
import glob
import sys

import numpy as np

import convlens.topology._circular as C
from convlens.topology._cloud import FilterCloud
from convlens.topology._reference import _nearest_on_circle, primary_circle_patches

SRC = open(C.__file__).read()
def use(lenw):
    code = SRC
    if lenw:
        code = code.replace("sw = (deg[i] * deg[k]) ** -0.5", f"sw = (deg[i] * deg[k]) ** -0.5 * d_lm[i, k] ** {-lenw/2}")
    exec(compile(code, C.__file__, "exec"), C.__dict__)
cells = sorted(glob.glob(sys.argv[1] + "/cells/*"), key=lambda c: int(c.split("step_")[1].split("_")[0]))
data = []
for cell in cells:
    cloud = FilterCloud.load(cell)
    x = np.asarray(cloud.points, float)
    fitted, _ = C.filter_orientation(cloud)
    near = _nearest_on_circle(x, cloud.shape)[0] <= 0.5
    data.append((x, fitted, near))
POS = [float(v) for v in sys.argv[2].split(",")]
for lenw in (0,):
    use(lenw)
    for pos in POS:
        row = []
        for x, fitted, near in data:
            try:
                cc = C.circular_coordinates(x, n_landmarks=100, position=pos)
                a = C.angle_agreement(cc.angles[near], fitted[near])
                row.append(f"{abs(a['correlation']):.2f}/{a['median_error_deg']:.0f}")
            except C.NoCircleError:
                row.append("ref")
        for size, noise in ((3, 0.1), (5, 0.3)):
            t = np.random.default_rng(3).uniform(0, 2 * np.pi, 1500)
            cc = C.circular_coordinates(primary_circle_patches(1500, size, angles=t, noise=noise, seed=4), position=pos)
            a = C.angle_agreement(cc.angles, t)
            row.append(f"P{size}:{abs(a['correlation']):.3f}/{a['median_error_deg']:.1f}")
        print(f"lenw {lenw} pos {pos}:", " ".join(row))
