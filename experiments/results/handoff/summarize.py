"""Per case and target, per held-out image: iterations (learned / Douglas-Rachford / MFISTA) and
wall-time ratios (MFISTA s / learned s, DR s / learned s; > 1: the learned method is faster).

  python experiments/results/handoff/summarize.py experiments/results/handoff/*/bench.json
"""
import json
import sys

for path in sys.argv[1:]:
  report = json.load(open(path))
  for task, result in report["tasks"].items():
    config = report.get("config", {})
    print(f"{path} ({task}, rate {config.get('rate', '-')}, {result['labels'].get('drs_policy')})")
    for target, block in result["targets"].items():
      its, vs_mfista, vs_dr = [], [], []
      for row in block["per_image"]:
        m = row["methods"]
        get = lambda name, key: (m.get(name) or {}).get(key)
        its.append("/".join(str(get(n, "iters")) for n in ("drs_policy", "douglas_rachford", "mfista")))
        learned = get("drs_policy", "seconds")
        for name, out in (("mfista", vs_mfista), ("douglas_rachford", vs_dr)):
          other = get(name, "seconds")
          out.append(f"{other / learned:.2f}" if other and learned else "-")
      print(f"  {target}: its {', '.join(its)}; MFISTA/learned {', '.join(vs_mfista)}; "
            f"DR/learned {', '.join(vs_dr)}")
