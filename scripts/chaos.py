"""Crash-test helper (scripts/chaos.sh runs it with the project's venv; confluent-kafka is an independent
client here, with its own librdkafka).

  chaos.py produce BOOTSTRAP TOPIC EVENTS.ndjson REPLAY.ndjson
      creates TOPIC (6 partitions), produces every event keyed and partitioned by its username (FNV-1a),
      with its stageTimestamp as the Kafka record timestamp; writes what was produced, in order, to
      REPLAY.ndjson (the input of `audit-sentinel replay`).
  chaos.py drained BOOTSTRAP GROUP TOPIC...
      exit 0 when the group's committed offsets reach the end of every partition of the topics.
  chaos.py verify BOOTSTRAP ALERTS_TOPIC EXPECTED.ndjson
      reads the alerts topic and compares with the expected alerts: every expected id present, the last
      version of each equal to the expected final document (all but kibana.alert.ancestors, which names
      input positions), no unexpected id; prints a one-line verdict; exit 1 on any loss or mismatch.
"""
import json
import sys
from datetime import datetime, timezone

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 6


def fnv1a(text):
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def millis(rfc3339):
    # "2025-11-20T08:00:00.123456Z" → milliseconds, truncated like the pipeline's parser.
    head, _, fraction = rfc3339.rstrip("Z").partition(".")
    base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(base.timestamp()) * 1000 + int((fraction + "000")[:3])


def produce(bootstrap, topic, events_path, replay_path):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10})
    failures = []
    lines = [line for line in open(events_path) if line.strip()]
    produced = []
    for line in lines:
        event = json.loads(line)
        user = event["user"]["username"]
        produced.append((fnv1a(user) % PARTITIONS, user, line.strip(), millis(event["stageTimestamp"])))
    with open(replay_path, "w") as replay:
        for partition, user, text, timestamp in produced:
            producer.produce(topic, value=text.encode(), key=user.encode(), partition=partition, timestamp=timestamp,
                             on_delivery=lambda error, _message: error and failures.append(error))
            producer.poll(0)
            replay.write(text + "\n")
    producer.flush(60)
    if failures:
        sys.exit(f"chaos: {len(failures)} input records not delivered: {failures[0]}")
    print(f"chaos: produced {len(produced)} records to {topic}")


def read_topic(bootstrap, topic):
    """Every record of the topic and each partition's end, from the end-of-partition events of a fetch
    (tansu's ListOffsets is not reliable)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-reader", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
    records, ends = [], {}
    idle = 0
    while len(ends) < len(metadata.partitions) and idle < 100:
        message = consumer.poll(0.2)
        if message is None:
            idle += 1
            continue
        idle = 0
        if message.error():
            if message.error().code() == -191:  # _PARTITION_EOF
                ends[message.partition()] = message.offset()
                continue
            sys.exit(f"chaos: reading {topic}: {message.error()}")
        ends.pop(message.partition(), None)
        records.append((message.partition(), message.offset(), message.key(), message.value()))
    consumer.close()
    return records, ends


def drained(bootstrap, group, topics):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        behind = 0
        for topic in topics:
            _, ends = read_topic(bootstrap, topic)
            partitions = [TopicPartition(topic, p) for p in sorted(ends)]
            for committed in consumer.committed(partitions, timeout=10):
                behind += ends[committed.partition] - max(committed.offset, 0)
        print(f"chaos: {behind} records behind")
        sys.exit(0 if behind == 0 else 1)
    finally:
        consumer.close()


def comparable(document):
    document = json.loads(json.dumps(document))
    document.get("kibana", {}).get("alert", {}).pop("ancestors", None)
    return document


def differences(want, got, path=""):
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(want) | set(got)):
            yield from differences(want.get(key), got.get(key), f"{path}.{key}" if path else key)
    elif want != got:
        yield path, want, got


def verify(bootstrap, topic, expected_path):
    expected = {}
    for line in open(expected_path):
        if line.strip():
            document = json.loads(line)
            expected[document["kibana"]["alert"]["uuid"]] = document  # the last version wins
    records, _ = read_topic(bootstrap, topic)
    last = {}
    versions = {}
    for partition, offset, raw_key, value in sorted(records, key=lambda r: (r[0], r[1])):
        key, document = raw_key.decode(), json.loads(value)
        last[key] = document
        versions.setdefault(key, []).append(json.dumps(comparable(document), sort_keys=True))
    missing = sorted(set(expected) - set(last))
    unexpected = sorted(set(last) - set(expected))
    mismatched = [key for key in expected if key in last and comparable(last[key]) != comparable(expected[key])]
    duplicates = sum(len(v) - len(set(v)) for v in versions.values())
    ok = not missing and not unexpected and not mismatched
    verdict = "PASS" if ok else "FAIL"
    print(f"chaos verdict: {verdict} — {len(expected)} alerts expected, {len(last)} found, {len(missing)} missing, "
          f"{len(mismatched)} final versions differ, {len(unexpected)} unexpected; {len(records)} alert records read, "
          f"{duplicates} redelivered duplicates")
    for key in (missing + mismatched + unexpected)[:5]:
        for path, want, got in differences(comparable(expected.get(key, {})), comparable(last.get(key, {}))):
            print(f"  {key} {path}: expected {json.dumps(want)[:200]}, found {json.dumps(got)[:200]}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"produce": produce, "drained": lambda b, g, *t: drained(b, g, t), "verify": verify}[command](*arguments)
