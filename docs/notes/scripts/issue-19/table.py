"""Markdown rows from a `convlens topology analyze` summary.json."""
import json
import sys

rows = json.load(open(sys.argv[1] + "/summary.json"))
print("| layer, step | filters (kept) | longest H1 bars | 1st/2nd | near primary circle | coverage | near 3 circles (gain) | Mapper loops | angle agreement |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    b = r["h1_long_bars"]
    ratio = b[0] / b[1] if len(b) > 1 and b[1] > 0 else float("inf")
    ang = f"{r['angle_agreement']:.2f}" if r.get("angle_agreement") is not None else "none"
    print(f"| {r['row']}, {r['col'].replace('step ', '')} | {r['filters']} ({r['kept']}) | "
          f"{', '.join(f'{v:.3f}' for v in b)} | {ratio:.2f} | {100 * r['circle_share']:.1f} % | "
          f"{r['coverage']:.2f} | {100 * r['three_circles']:.1f} % (+{100 * r['three_gain']:.1f}) | "
          f"{r['mapper_loops']} | {ang} |")
