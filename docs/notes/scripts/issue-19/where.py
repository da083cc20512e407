"""Error of the circular coordinate by 30-degree sector of the fitted orientation, for one cell.
usage: where.py ANALYSIS_FOLDER STEP LANDMARKS..."""
import glob
import sys

import numpy as np

from convlens.topology import angle_agreement, circular_coordinates
from convlens.topology._circular import filter_orientation
from convlens.topology._cloud import FilterCloud
from convlens.topology._reference import _nearest_on_circle

cell = [c for c in sorted(glob.glob(sys.argv[1] + "/cells/*")) if "step_" + sys.argv[2] + "_" in c][0]
cloud = FilterCloud.load(cell)
x = np.asarray(cloud.points, float)
fitted, expl = filter_orientation(cloud)
d, tc = _nearest_on_circle(x, cloud.shape)
near = d <= 0.5
for L in map(int, sys.argv[3:]):
    cc = circular_coordinates(x, n_landmarks=L)
    a = angle_agreement(cc.angles[near], fitted[near])
    s = a["direction"]
    diff = s * cc.angles - fitted
    off = np.angle(np.exp(1j * (diff[near])).mean())
    err = np.degrees(np.angle(np.exp(1j * (diff - off))))
    print(f"L{L}: corr {a['correlation']:.2f} med {a['median_error_deg']:.0f}  bar {cc.bar} eps {cc.eps:.3f} cover {cc.cover_radius:.3f}")
    # error by fitted-orientation sector
    sec = (np.degrees(fitted[near]) // 30).astype(int)
    print("  mean signed err by 30-deg sector of fitted:", [f"{np.mean(err[near][sec==k]):+.0f}({(sec==k).sum()})" for k in range(12)])
    print("  hist of fitted (near):", np.histogram(fitted[near], 12, (0, 2*np.pi))[0])
    print("  hist of cc (near):    ", np.histogram(np.mod(s*cc.angles[near]-off, 2*np.pi), 12, (0, 2*np.pi))[0])
