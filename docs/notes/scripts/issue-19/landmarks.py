"""Does the choice of landmarks decide the angle agreement? For every cell of a `topology analyze`
output: circular coordinates from 100 maxmin landmarks of the whole dense core (the default), of
more landmarks, and of the filters near the primary circle only; agreement (|circular
correlation| and median error) with the fitted orientation over the near-circle filters.
usage: landmarks.py ANALYSIS_FOLDER"""
import glob
import sys

import numpy as np

from convlens.topology import NoCircleError, angle_agreement, circular_coordinates
from convlens.topology._circular import filter_orientation
from convlens.topology._cloud import FilterCloud
from convlens.topology._reference import _nearest_on_circle


def agreement(angles, fitted, near):
    a = angle_agreement(angles[near], fitted[near])
    return f"{abs(a['correlation']):.2f} / {a['median_error_deg']:.0f} deg"


def arm(x, fitted, near, index, n_landmarks):
    try:
        cc = circular_coordinates(x[index], n_landmarks=n_landmarks)
    except NoCircleError:
        return "refused"
    # place every filter with the coordinates fitted on the subset: near ones are in it
    angles = np.full(len(x), np.nan)
    angles[index] = cc.angles
    return f"{agreement(angles, fitted, near)} (1st/2nd {cc.dominance:.1f})"


print("| step | near circle | 100 maxmin of the core (default) | 200 maxmin of the core | 100 maxmin of the near-circle filters |")
print("|---|---|---|---|---|")
for cell in sorted(glob.glob(sys.argv[1] + "/cells/*")):
    cloud = FilterCloud.load(cell)
    x = np.asarray(cloud.points, dtype=np.float64)
    fitted, _ = filter_orientation(cloud)
    near = _nearest_on_circle(x, cloud.shape)[0] <= 0.5
    everything = np.arange(len(x))
    cols = [arm(x, fitted, near, everything, 100), arm(x, fitted, near, everything, 200),
            arm(x, fitted, near, np.flatnonzero(near), 100)]
    step = cell.split("step_")[1].split("_")[0]
    print(f"| {step} | {near.sum()} of {len(x)} | " + " | ".join(cols) + " |")
