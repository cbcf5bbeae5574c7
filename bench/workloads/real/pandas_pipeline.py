"""A pandas data pipeline on a ~200 MB CSV: read_csv, datetime parsing, string operations, groupby,
merge. Every intermediate result is kept alive to the end, so the high-water mark is the end state.

    python pandas_pipeline.py --prepare   # writes the CSV once (cached under bench/.data-real)
    python pandas_pipeline.py             # the workload
"""

import os
import sys

import common

ROWS = 2_600_000
CSV = "pandas_events_%d.csv" % ROWS


def prepare():
    path = common.data_path(CSV)
    if os.path.exists(path):
        return path
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(12)
    start = np.datetime64("2024-01-01T00:00:00")
    frame = pd.DataFrame({
        "event_id": np.arange(ROWS),
        "ts": (start + rng.integers(0, 365 * 86400, ROWS).astype("timedelta64[s]")).astype(str),
        "user": np.char.add("user_", rng.integers(0, 200_000, ROWS).astype(str)),
        "city": rng.choice(np.array(["Berlin", "Lisbon", "Osaka", "Quito", "Lagos", "Perth", "Oslo", "Lima"]), ROWS),
        "product_id": rng.integers(0, 5000, ROWS),
        "amount": rng.gamma(2.0, 30.0, ROWS).round(2),
        "note": np.char.add("order placed via ", rng.choice(np.array(["web", "app", "phone", "store"]), ROWS)),
    })
    frame.to_csv(path + ".tmp", index=False)
    os.replace(path + ".tmp", path)
    return path


def pipeline(path):
    import pandas as pd
    kept = {}
    events = pd.read_csv(path)
    kept["events"] = events
    events["when"] = pd.to_datetime(events["ts"], format="%Y-%m-%dT%H:%M:%S")
    events["day"] = events["when"].dt.day_name()
    events["user_upper"] = events["user"].str.upper()
    events["channel"] = events["note"].str.split(" ").str[-1]
    events["user_num"] = events["user"].str.slice(5).astype("int64")
    kept["by_city_day"] = events.groupby(["city", "day"]).agg(total=("amount", "sum"), n=("event_id", "count"))
    kept["by_user"] = events.groupby("user").agg(spent=("amount", "sum"), last=("when", "max"))
    products = pd.DataFrame({"product_id": range(5000), "category": ["cat_%d" % (i % 40) for i in range(5000)]})
    merged = events.merge(products, on="product_id", how="left")
    kept["merged"] = merged
    kept["by_category"] = merged.groupby(["category", "channel"])["amount"].describe()
    kept["sorted"] = merged.sort_values(["user", "when"])
    return kept


def main():
    if "--prepare" in sys.argv:
        print(prepare())
        return
    path = common.data_path(CSV)
    if not os.path.exists(path):
        sys.exit("pandas_pipeline.py: %s is missing; run with --prepare first" % path)
    common.run(lambda: pipeline(path), lambda kept: "pandas_pipeline: %d rows, %d results kept" % (
        len(kept["events"]), len(kept)))


if __name__ == "__main__":
    main()
