#!/usr/bin/env python3
"""Instructions of one thread per record, from callgrind runs of `audit-sentinel-bench pipeline-once`.

Usage: callgrind-thread.py N OUT_N OUT_2N — the callgrind output prefixes of two runs (--separate-threads=yes)
over N and 2N events. In each run it takes the thread that ran the stream task (the pipeline's own thread,
apart from librdkafka's, the mock broker's and the bench's) and prints the difference of the two counts over
N — what a record costs, with start-up, restore and one-time runtime lookups dropped out — split into:
the screening (validation pass and literal search: everything under `AuditRecordDecoder.screen`); the rest
of the records' processing (everything else under `StreamTask.process`: candidates' decode and rules,
windows, the alert of a window a match opens); librdkafka (everything under a call from our code into
librdkafka: polling, freeing messages, producing, committing — with the libc those calls use); and the rest
(the sink's and the loop's own code, and punctuation: idle closes and interim updates go by the wall clock,
which runs ~50 times slower under valgrind, so this part varies from run to run).
"""
import glob
import re
import sys

SCREEN = re.compile(r"RecordDecoderC6screen_")
PROCESS = re.compile(r"StreamTaskC7process")
LIBRDKAFKA = "librdkafka.so"


def parse(path):
    """Whether the thread ran the stream task, and its instructions: in total, under `screen`, under
    `StreamTask.process`, and under calls that cross from another object into librdkafka (a call's cost in
    callgrind's file is inclusive)."""
    positions = 1
    objects, functions = {}, {}
    current_object = current_function = None
    callee_object = callee_function = None
    pending_call = False
    total = screening = processing = librdkafka = 0
    ran_stream_task = False

    def named(table, value):
        match = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not match:
            return value
        if match.group(2) is not None:
            table[match.group(1)] = match.group(2)
        return table.get(match.group(1), "")

    with open(path) as lines:
        for line in lines:
            line = line.rstrip("\n")
            if line.startswith("positions:"):
                positions = len(line.split()) - 1
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
            elif line.startswith("ob="):
                current_object = named(objects, line[3:])
            elif line.startswith("fn="):
                current_function = named(functions, line[3:])
                callee_object = None
                if PROCESS.search(current_function):
                    ran_stream_task = True
            elif line.startswith("cob="):
                callee_object = named(objects, line[4:])
            elif line.startswith("cfn="):
                callee_function = named(functions, line[4:])
            elif line.startswith("calls="):
                pending_call = True
            elif pending_call and line and (line[0].isdigit() or line[0] in "+-*"):
                pending_call = False
                fields = line.split()
                cost = int(fields[positions]) if len(fields) > positions else 0
                target_object = callee_object if callee_object is not None else current_object
                callee_object = None
                if SCREEN.search(callee_function or "") and not SCREEN.search(current_function or ""):
                    screening += cost
                if PROCESS.search(callee_function or "") and not PROCESS.search(current_function or ""):
                    processing += cost
                if LIBRDKAFKA in (target_object or "") and LIBRDKAFKA not in (current_object or ""):
                    librdkafka += cost
    return ran_stream_task, {"total": total, "screening": screening, "processing": processing, "librdkafka": librdkafka}


def thread_profile(prefix):
    best = None
    for path in sorted(glob.glob(prefix + "-*")):
        ran, profile = parse(path)
        if ran and (best is None or profile["total"] > best["total"]):
            best = profile
    if best is None:
        sys.exit(f"no thread ran the stream task in {prefix}-*")
    return best


n = int(sys.argv[1])
small, large = thread_profile(sys.argv[2]), thread_profile(sys.argv[3])
per = {key: (large[key] - small[key]) / n for key in small}
other_processing = per["processing"] - per["screening"]
rest = per["total"] - per["processing"] - per["librdkafka"]
print(f"{per['total']:.0f} instructions/record on the pipeline's thread: screening {per['screening']:.0f}, "
      f"the rest of processing {other_processing:.0f}, librdkafka {per['librdkafka']:.0f}, sink, loop and punctuation {rest:.0f}")
