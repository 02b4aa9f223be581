#!/usr/bin/env python3
"""Summarizes a system-wide perf profile of the e2e benchmark per measured interval (scripts/profile-e2e.sh).

Reads the benchmark's output on standard input for its `phase NAME START END` lines (CLOCK_MONOTONIC
seconds, the profile's clock), and prints for each interval the share of all CPU samples (both cores) that
went to: the pipeline's thread (named `pipeline`) split into our code, librdkafka and the kernel; the raw
consumer's thread; librdkafka's own threads (rdk:*, minus the mock cluster's); the broker (tansu, or the
mock cluster's rdk:mock threads); other processes; and idle cores. Also as CPU time (samples at 1999 Hz).
"""
import collections
import subprocess
import sys

perf_data = sys.argv[1]
phases = [line.split()[1:] for line in sys.stdin if line.startswith("phase ")]


def category(comm, dso):
    if comm == "swapper":
        return "idle"
    if comm == "pipeline":
        if "librdkafka" in dso:
            return "pipeline thread: librdkafka"
        if "kernel" in dso:
            return "pipeline thread: kernel"
        return "pipeline thread: our code (Swift runtime and libc included)"
    if comm.startswith("audit-sentinel"):
        return "main thread (raw consumer's loop, or waiting)"
    if comm == "rdk:mock" or comm.startswith("tansu") or comm.startswith("tokio"):
        return "broker (tansu, or the mock cluster's threads)"
    if comm.startswith("rdk:"):
        return "librdkafka threads (rdk:*)"
    return "other"


for name, start, end in phases:
    report = subprocess.run(
        ["perf", "report", "-i", perf_data, "--time", f"{start},{end}", "--sort", "comm,dso", "--stdio", "-F", "sample,comm,dso"],
        capture_output=True, text=True, check=True).stdout
    shares = collections.Counter()
    total = 0
    for line in report.splitlines():
        fields = line.split()
        if not fields or line.startswith("#") or not fields[0].isdigit():
            continue
        samples, comm, dso = int(fields[0]), fields[1], " ".join(fields[2:])
        shares[category(comm, dso)] += samples
        total += samples
    seconds = float(end) - float(start)
    print(f"  {name}: {seconds * 1000:.0f} ms, {total} samples of 2 cores")
    for key, samples in shares.most_common():
        print(f"    {100 * samples / max(total, 1):5.1f} %  {samples / 1999 * 1000:6.0f} ms of CPU  {key}")
