#!/usr/bin/env python3
"""Instructions of one thread per record, from callgrind runs of `audit-sentinel-bench pipeline-once`.

Usage: callgrind-thread.py N OUT_N OUT_2N — the callgrind output prefixes of two runs (--separate-threads=yes)
over N and 2N events. In each run it takes the thread that ran the stream task (the pipeline's own thread,
apart from librdkafka's, the mock broker's and the bench's), and prints the difference of the two counts
over N — what a record costs, with start-up, restore and one-time runtime lookups dropped out — split into
the screening (validation pass and literal search), librdkafka's own code on that thread (consuming and
freeing messages; the libc it calls is counted under the rest), and the rest (decoding and evaluating
candidates, windows, alerts, producing, the loop).
"""
import glob
import re
import subprocess
import sys

PARTS = {
    "screening": re.compile(r"RecordDecoderC6screen_"),
}


def thread_profile(prefix):
    best = None
    for path in sorted(glob.glob(prefix + "-*")):
        text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                              capture_output=True, text=True, check=True).stdout
        if "StreamTaskC7process" not in text:
            continue
        total = 0
        inclusive = {name: 0 for name in PARTS}
        for line in text.splitlines():
            match = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
            if not match:
                continue
            count, what = int(match.group(1).replace(",", "")), match.group(2)
            if "PROGRAM TOTALS" in what:
                total = count
            for name, pattern in PARTS.items():
                if pattern.search(what) and inclusive[name] == 0:
                    inclusive[name] = count  # the first (largest) line naming it: its inclusive cost
        exclusive = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True, check=True).stdout
        librdkafka = sum(int(m.group(1).replace(",", "")) for m in re.finditer(r"^\s*([\d,]+) \([ \d.]+%\)\s+.*librdkafka\.so", exclusive, re.M))
        profile = {"total": total, "librdkafka": librdkafka, **inclusive}
        if best is None or total > best["total"]:
            best = profile
    if best is None:
        sys.exit(f"no thread ran the stream task in {prefix}-*")
    return best


n = int(sys.argv[1])
small, large = thread_profile(sys.argv[2]), thread_profile(sys.argv[3])
per = {key: (large[key] - small[key]) / n for key in small}
rest = per["total"] - per["screening"] - per["librdkafka"]
print(f"{per['total']:.0f} instructions/record on the pipeline's thread: screening {per['screening']:.0f}, "
      f"librdkafka {per['librdkafka']:.0f}, the rest {rest:.0f}")
