#!/usr/bin/env python3
"""The old system's approach as a peer of `gept train`, on the same rows.

CatBoost (MultiLogloss, 200 iterations, depth 6, learning rate 0.1) trained on
the features and the training split `gept train` uses (`gept dataset`), both
as one global model and per item for the 100 most active items; scored by
`gept eval --predictions` on the same evaluation rows as our model
(`gept eval --export-rows`), and printed side by side.

Usage (after `scripts/setup.sh` with GEPT_SETUP_PEERS=1, and a model trained
with the same --until):

  GEPT_SETUP_PEERS=1 scripts/setup.sh
  .venv/bin/python scripts/peer_catboost.py --gept target/release/gept \\
      --model MODEL_DIR --data ../shared/data/osrs/ernestoreza-ge_data \\
      --until 2025-05-23T12:00:00Z --max-horizon 12 --work peer-out

Only targets up to --max-horizon hours are trained and scored (the period
after --until is too short for longer ones). CatBoost's MultiLogloss needs
every label of a row, so its training rows are those with all of them known.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier

HORIZONS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 20, 24, 32, 40, 48]


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def targets_upto(columns, max_h):
    return [c for c in columns if c.startswith("fill_") and int(c.split("_")[1][:-1]) <= max_h]


def fit(x, y, seed=42):
    model = CatBoostClassifier(
        loss_function="MultiLogloss",
        iterations=200,
        depth=6,
        learning_rate=0.1,
        random_seed=seed,
        verbose=False,
        allow_writing_files=False,
        thread_count=os.cpu_count(),
    )
    model.fit(x, y)
    return model


def write_predictions(path, rows, probs, targets):
    out = pd.DataFrame(probs, columns=targets)
    out.insert(0, "timestamp", rows["timestamp"].values)
    out.insert(0, "item_id", rows["item_id"].values)
    out.to_csv(path, index=False, float_format="%.6f")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gept", default="target/release/gept")
    ap.add_argument("--model", required=True, help="our model directory, trained with the same --until")
    ap.add_argument("--data", required=True, help="folder with the recordings")
    ap.add_argument("--until", required=True, help="end of training history (RFC 3339)")
    ap.add_argument("--max-horizon", type=int, default=12)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--global-rows", type=int, default=300_000, help="training rows sampled for the global model")
    ap.add_argument("--top", type=int, default=100, help="per-item models for this many most active items")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the dataset, evaluation rows and global model's report already in --work")
    ap.add_argument("--work", default="peer-out")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    latest = os.path.join(a.data, "latest_snapshots.jsonl.zst")
    hourly = os.path.join(a.data, "1h_snapshots.jsonl.gz")
    mapping = os.path.join(a.data, "mapping.json.gz")
    five = os.path.join(a.data, "5m_snapshots_partial.jsonl.gz")
    common = ["--hourly", hourly, "--mapping", mapping] + (["--five-minute", five] if os.path.exists(five) else [])

    # 1. The training split of `gept train`, and the evaluation rows of `gept eval`.
    ours = os.path.join(a.work, "ours")
    eval_rows = os.path.join(a.work, "eval_rows.csv")
    reuse = a.reuse and os.path.exists(os.path.join(ours, "report.json"))
    if not reuse:
        run([a.gept, "dataset", "--latest", latest, *common, "--until", a.until,
             "--stride", str(a.stride), "--out", os.path.join(a.work, "data")])
        run([a.gept, "eval", "--model", a.model, "--latest", latest, *common, "--from", a.until,
             "--max-horizon", f"{a.max_horizon}h", "--report", ours, "--export-rows", eval_rows])

    train = pd.concat([pd.read_csv(os.path.join(a.work, "data", f)) for f in ("train.csv", "validation.csv")])
    evals = pd.read_csv(eval_rows)
    targets = targets_upto(train.columns, a.max_horizon)
    features = [c for c in train.columns if c not in ("item_id", "timestamp") and not c.startswith("fill_")]
    known = train[targets].notna().all(axis=1)
    train = train[known]
    print(f"peer: {len(train)} training rows with all {len(targets)} labels, {len(evals)} evaluation rows",
          file=sys.stderr)

    # 2. One global model.
    global_s = float("nan")
    if not (a.reuse and os.path.exists(os.path.join(a.work, "catboost_global", "report.json"))):
        sample = train.sample(n=min(a.global_rows, len(train)), random_state=42)
        t0 = time.time()
        model = fit(sample[features].values, sample[targets].values.astype(int))
        global_s = time.time() - t0
        probs = model.predict_proba(evals[features].values)
        glob = os.path.join(a.work, "catboost_global.csv")
        write_predictions(glob, evals, probs, targets)
        run([a.gept, "eval", "--predictions", glob, "--latest", latest, *common, "--from", a.until,
             "--max-horizon", f"{a.max_horizon}h", "--report", os.path.join(a.work, "catboost_global")])

    # 3. Per item, for the --top most active items (highest mean hourly volume).
    active = (train.groupby("item_id")["volume_1h"].mean().sort_values(ascending=False).index[:a.top]).tolist()
    parts = []
    t0 = time.time()
    for n, item in enumerate(active, 1):
        print(f"peer: per-item model {n}/{len(active)} (item {item}), {time.time() - t0:.0f} s so far",
              file=sys.stderr, flush=True)
        rows = train[train["item_id"] == item]
        y = rows[targets].values.astype(int)
        ev = evals[evals["item_id"] == item]
        if len(ev) == 0:
            continue
        if len(rows) < 50 or (y.min(axis=0) == y.max(axis=0)).any():
            # CatBoost cannot fit a constant column: fall back to the training base rate there.
            rates = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
            const = (y.min(axis=0) == y.max(axis=0))
            if len(rows) < 50 or const.all():
                parts.append((ev, np.tile(rates, (len(ev), 1))))
                continue
            m = fit(rows[features].values, y[:, ~const])
            p = np.tile(rates, (len(ev), 1))
            p[:, ~const] = m.predict_proba(ev[features].values)
            parts.append((ev, p))
            continue
        m = fit(rows[features].values, y)
        parts.append((ev, m.predict_proba(ev[features].values)))
    per_item_s = time.time() - t0
    ev_all = pd.concat([p[0] for p in parts])
    per = os.path.join(a.work, "catboost_per_item.csv")
    write_predictions(per, ev_all, np.vstack([p[1] for p in parts]), targets)
    items = ",".join(str(i) for i in active)
    run([a.gept, "eval", "--predictions", per, "--latest", latest, *common, "--from", a.until, "--items", items,
         "--max-horizon", f"{a.max_horizon}h", "--report", os.path.join(a.work, "catboost_per_item")])
    run([a.gept, "eval", "--model", a.model, "--latest", latest, *common, "--from", a.until, "--items", items,
         "--max-horizon", f"{a.max_horizon}h", "--report", os.path.join(a.work, "ours_top100")])

    def summary(name):
        r = json.load(open(os.path.join(a.work, name, "report.json")))
        return r["mean_auc"], r["mean_within_item_auc"], r["mean_brier"], r["rows"]

    print()
    print(f"{'model':<34} {'mean AUC':>9} {'within-item':>12} {'Brier':>8} {'rows':>9}")
    for label, name in [("gept (all items)", "ours"), (f"CatBoost global ({global_s:.0f} s)", "catboost_global"),
                        (f"gept ({a.top} most active)", "ours_top100"),
                        (f"CatBoost per item ({per_item_s:.0f} s)", "catboost_per_item")]:
        auc, within, brier, n = summary(name)
        print(f"{label:<34} {auc:>9.4f} {within:>12.4f} {brier:>8.4f} {n:>9}")


if __name__ == "__main__":
    main()
