#!/usr/bin/env python3
"""How far can `--metric heap` be from memray's high-water mark on a workload, before any fault of ours?

Reads one `memray run --trace-python-allocators` capture of a real workload (bench/workloads/real/,
as bench/attribution_vs_memray.py --heap runs it) and measures, keyed as that benchmark keys
(innermost frame in the workload's package, attribution_vs_memray.key_of):
- sampling noise: memray's high-water-mark records thinned as the allocation hook samples (each
  allocation kept with probability 1 - exp(-size/mean), weighted by its inverse; a record's
  allocations taken at its mean size), --draws times per mean: the total-variation distance (TVD)
  pure sampling gives at each `--heap-sample-bytes`;
- the reference's own spread: memray's composition at every snapshot whose live total is within
  3% of its peak (get_temporal_allocation_records), against its high-water mark; and where its own
  sustained peak (the highest total held 250 ms, the rule `--metric heap` uses) lies;
- for each pmt-sample output given (--pmt PREFIX: PREFIX.folded of a `--metric heap` run of the
  same workload), its TVD to the high-water mark and to the nearest of memray's near-peak moments.

Needs numpy and memray in the interpreter that runs it (bench/.venv-real-3.13/bin/python).
Usage: bench/.venv-real-3.13/bin/python bench/heap_reference_spread.py --memray-bin FILE
           [--workload mypy] [--means 262144,65536,16384,4096] [--draws 20] [--pmt PREFIX ...]
"""

import argparse
import os
import sys

import memray
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attribution_vs_memray as bench  # noqa: E402

SUSTAIN_S = 0.25
NEAR = 0.97


def key_index(keys, key):
    if key not in keys:
        keys[key] = len(keys)
    return keys[key]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memray-bin", required=True)
    parser.add_argument("--workload", default="mypy", choices=sorted(bench.WORKLOADS))
    parser.add_argument("--means", default="262144,65536,16384,4096")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--pmt", action="append", default=[], metavar="PREFIX")
    args = parser.parse_args()
    package = bench.WORKLOADS[args.workload][1]
    reader = memray.FileReader(args.memray_bin)
    keys, stack_keys = {}, {}

    def key_of(record):
        if record.stack_id not in stack_keys:
            frames = [(function, filename) for function, filename, _ in record.stack_trace()]
            stack_keys[record.stack_id] = key_index(keys, bench.key_of(frames, package))
        return stack_keys[record.stack_id]

    sizes, counts, rec_keys = [], [], []
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        sizes.append(record.size)
        counts.append(record.n_allocations)
        rec_keys.append(key_of(record))
    sizes, counts, rec_keys = np.array(sizes, float), np.array(counts), np.array(rec_keys)
    print("%s: memray's high-water mark %.1f MiB in %d allocations, %d keys" % (
        args.workload, sizes.sum() / 2**20, counts.sum(), len(keys)))

    # Sampling noise.
    rng = np.random.default_rng(1)
    mean_size = sizes / np.maximum(counts, 1)
    width = len(keys)
    hwm = np.bincount(rec_keys, sizes, width)
    hwm /= hwm.sum()
    for mean in [int(m) for m in args.means.split(",") if m]:
        p = -np.expm1(-mean_size / mean)
        distances, samples = [], []
        for _ in range(args.draws):
            kept = rng.binomial(counts, p)
            estimate = np.bincount(rec_keys, kept * mean_size / p, width)
            distances.append(0.5 * np.abs(estimate / estimate.sum() - hwm).sum())
            samples.append(kept.sum())
        print("sampling alone, one sample per %d bytes: ~%d samples held at the peak, TVD mean %.3f "
              "(sd %.3f, max %.3f over %d draws)" % (mean, np.mean(samples), np.mean(distances),
                                                     np.std(distances), np.max(distances), args.draws))

    # The reference's own spread over its near-peak moments.
    times = np.array([s.time for s in reader.get_memory_snapshots()], float)
    times = (times - times[0]) / 1000.0
    n = len(times)
    at, which, amount = [], [], []
    for record in reader.get_temporal_allocation_records(merge_threads=True):
        k = key_of(record)
        for interval in record.intervals:
            at.append(interval.allocated_before_snapshot)
            which.append(k)
            amount.append(interval.n_bytes)
            if interval.deallocated_before_snapshot is not None:
                at.append(interval.deallocated_before_snapshot)
                which.append(k)
                amount.append(-interval.n_bytes)
    width = len(keys)
    hwm = np.bincount(rec_keys, sizes, width)
    hwm /= hwm.sum()
    deltas = np.zeros((n + 1, width))
    np.add.at(deltas, (np.clip(at, 0, n), which), amount)
    live = np.cumsum(deltas, axis=0)[:n]
    total = live.sum(1)
    shares = live / np.maximum(total[:, None], 1)
    to_hwm = 0.5 * np.abs(shares - hwm).sum(1)
    peak = int(total.argmax())
    near = np.where(total >= NEAR * total[peak])[0]
    sustained = max((i for i in range(n) if times[i] >= SUSTAIN_S),
                    key=lambda i: total[np.searchsorted(times, times[i] - SUSTAIN_S):i + 1].min())
    print("memray's peak: %.1f MiB at %.1f s of %.1f s; its sustained peak (held %.2f s) at %.1f s, "
          "TVD %.3f to the high-water mark" % (total[peak] / 2**20, times[peak], times[-1], SUSTAIN_S,
                                               times[sustained], to_hwm[sustained]))
    print("memray's own moments within %d%% of its peak: %d snapshots from %.1f s to %.1f s; TVD to its "
          "high-water mark: median %.3f, max %.3f" % (round(100 * (1 - NEAR)), len(near), times[near].min(),
                                                      times[near].max(), np.median(to_hwm[near]),
                                                      to_hwm[near].max()))

    for prefix in args.pmt:
        weights, _, _ = bench.pmt_weights(prefix, package)
        q = np.zeros(width)
        unknown = 0
        for key, value in weights.items():
            if key in keys:
                q[keys[key]] += value
            else:
                unknown += value
        whole = q.sum() + unknown
        distances = 0.5 * (np.abs(shares - q / whole).sum(1) + unknown / whole)
        nearest = near[distances[near].argmin()]
        print("%s: TVD %.3f to the high-water mark; %.3f to memray's moment nearest in make-up "
              "(%.1f s, %.1f MiB)" % (prefix, 0.5 * (np.abs(hwm - q / whole).sum() + unknown / whole),
                                      distances[nearest], times[nearest], total[nearest] / 2**20))


if __name__ == "__main__":
    main()
