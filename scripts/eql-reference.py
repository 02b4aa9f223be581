#!/usr/bin/env python3
"""The independent EQL evaluator for the differential test: Endgame's `eql` package (PyPI) in its
Elasticsearch syntax mode. Reads {"cases": [{"query": ..., "events": [...]}]} on standard input; prints one
JSON line per case: the completed sequences (each a list of event "id"s, in step order) or, for an event
query, the ids of the matching events. Event times are the events' "@timestamp" in milliseconds."""
import json
import sys

import eql
from eql.parser import elasticsearch_syntax, skip_optimizations


def run(case):
    # Without the package's optimizer: it folds `k in ("a", "b") or k != "c"` into `k in ("a", "b", "c")`.
    with elasticsearch_syntax, skip_optimizations:
        query = eql.parse_query(case["query"])
    engine = eql.PythonEngine({"time_unit": 1000})  # ticks per second: milliseconds
    results = []
    engine.add_output_hook(lambda result: results.append([event.data["id"] for event in result.events]))
    engine.add_query(query)
    engine.stream_events([eql.Event("generic", event["@timestamp"], event) for event in case["events"]])
    return results


def main():
    cases = json.load(sys.stdin)["cases"]
    for case in cases:
        print(json.dumps(run(case)))


if __name__ == "__main__":
    main()
