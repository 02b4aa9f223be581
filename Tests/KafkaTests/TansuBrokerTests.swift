import Foundation
import Kafka
import Testing

/// The `Kafka` module against tansu, an independent Kafka-compatible broker, started by `make test`.
/// Needs librdkafka ≥ 2.2 at run time (see README); runs only when `AUDIT_SENTINEL_TANSU_BOOTSTRAP` is set.
@Suite(
    "Tansu broker", .serialized,
    .enabled(if: TestBroker.tansuBootstrap != nil, "AUDIT_SENTINEL_TANSU_BOOTSTRAP is not set: run `make test`"))
struct TansuBrokerTests {
    @Test func roundTripWithKeysHeadersAndTimestamps() async throws {
        try await BrokerScenarios.roundTrip(.tansu())
    }

    @Test(arguments: [KafkaConfiguration.AssignmentStrategy.range, .cooperativeSticky])
    func groupRebalanceLosesAndDuplicatesNothing(strategy: KafkaConfiguration.AssignmentStrategy) throws {
        try BrokerScenarios.groupRebalance(.tansu(), strategy: strategy)
    }

    @Test func resumesFromCommittedOffsets() throws {
        try BrokerScenarios.resumeFromCommitted(.tansu())
    }

    @Test func adminCreatesCompactedTopicsAndDescribesThem() throws {
        let broker = try TestBroker.tansu()
        let admin = try KafkaAdmin(configuration: broker.common, logger: quietLogger)
        let topic = uniqueName("changelog")
        try admin.createTopics([NewTopic(name: topic, partitions: 6, replicationFactor: 1, configs: ["cleanup.policy": "compact"])])
        let described = try #require(try admin.metadata(topic: topic).topic(topic))
        #expect(described.partitions.count == 6)
        #expect(Set(described.partitions.map(\.id)) == Set(0..<6))

        let again = #expect(throws: KafkaError.self) { try admin.createTopics([NewTopic(name: topic, partitions: 6)]) }
        #expect(again?.code == .topicAlreadyExists)
        try admin.createTopics([NewTopic(name: topic, partitions: 6)], ignoreExisting: true)
        #expect(try admin.metadata().brokers.count >= 1)
    }

    /// What we produce, kafka-python reads; what kafka-python produces, we read.
    @Test func independentClientReadsAndWritesTheSameWireFormat() async throws {
        let broker = try TestBroker.tansu()
        let topic = uniqueName("interop")
        try broker.createTopic(topic, 1)

        let producer = try KafkaProducer(configuration: broker.producerConfiguration(), logger: quietLogger)
        for index in 0..<3 {
            _ = try await producer.send(ProducerMessage(
                topic: topic, key: "ours-\(index)", value: "{\"from\":\"swift\",\"n\":\(index)}",
                headers: [KafkaHeader("origin", "audit-sentinel")], timestamp: 1_700_000_000_000 + Int64(index)))
        }
        let readByPython = try runKafkaPython(
            """
            import json, sys
            from kafka import KafkaConsumer
            c = KafkaConsumer(sys.argv[2], bootstrap_servers=sys.argv[1], auto_offset_reset="earliest",
                              consumer_timeout_ms=5000, group_id=None)
            for m in c:
                print(json.dumps({"key": m.key.decode(), "value": m.value.decode(), "ts": m.timestamp,
                                  "headers": [[k, v.decode()] for k, v in m.headers]}))
            """, arguments: [broker.bootstrapServers, topic])
        let lines = readByPython.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(lines.count == 3)
        for (index, line) in lines.enumerated() {
            #expect(line["key"] as? String == "ours-\(index)")
            #expect(line["value"] as? String == "{\"from\":\"swift\",\"n\":\(index)}")
            #expect(line["ts"] as? Int == 1_700_000_000_000 + index)
            #expect(line["headers"] as? [[String]] == [["origin", "audit-sentinel"]])
        }

        _ = try runKafkaPython(
            """
            import sys
            from kafka import KafkaProducer
            p = KafkaProducer(bootstrap_servers=sys.argv[1])
            for i in range(3):
                p.send(sys.argv[2], key=f"theirs-{i}".encode(), value=f"python-{i}".encode(),
                       headers=[("origin", b"kafka-python")], timestamp_ms=1600000000000 + i)
            p.flush()
            """, arguments: [broker.bootstrapServers, topic])
        let consumer = try KafkaConsumer(configuration: broker.consumerConfiguration(group: uniqueName("g")), logger: quietLogger)
        try consumer.subscribe(topics: [topic])
        let received = try consume(consumer, until: { $0.count >= 6 })
        try consumer.close()
        let theirs = received.filter { $0.value.hasPrefix("python-") }
        #expect(theirs.map(\.value) == ["python-0", "python-1", "python-2"])
        #expect(theirs.map(\.key) == ["theirs-0", "theirs-1", "theirs-2"])
        #expect(theirs.map(\.timestamp) == [1_600_000_000_000, 1_600_000_000_001, 1_600_000_000_002])
        #expect(theirs.allSatisfy { $0.headers == [KafkaHeader("origin", "kafka-python")] })
    }
}

extension TansuBrokerTests {
    /// Debian's librdkafka 2.0.2 cannot read tansu's ApiVersions answer; `make test` runs this suite with
    /// the newer librdkafka from the confluent-kafka wheel. Say so plainly if that did not happen.
    @Test func runsWithALibrdkafkaThatSpeaksToTansu() throws {
        let parts = librdkafkaVersion.split(separator: ".").compactMap { Int($0) }
        #expect(parts.count >= 2 && (parts[0], parts[1]) >= (2, 2), "librdkafka \(librdkafkaVersion) at run time; tansu needs ≥ 2.2")
    }
}
