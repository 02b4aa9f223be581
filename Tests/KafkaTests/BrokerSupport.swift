import Foundation
import Kafka
import Logging
import Testing

/// A broker the scenarios run against: the in-process mock cluster or an external tansu.
struct TestBroker: Sendable {
    let name: String
    let bootstrapServers: String
    /// Creates a topic the way this broker supports it (mock API, or our admin client).
    let createTopic: @Sendable (_ name: String, _ partitions: Int32) throws -> Void
    /// Keeps the mock cluster alive as long as the broker value is used.
    let owner: (any Sendable)?

    static func mock(brokers: Int = 1) throws -> TestBroker {
        let cluster = try MockCluster(brokers: brokers, logger: quietLogger)
        return TestBroker(
            name: "mock", bootstrapServers: cluster.bootstrapServers,
            createTopic: { name, partitions in try cluster.createTopic(name, partitions: partitions) },
            owner: cluster)
    }

    /// The tansu broker that `make test` starts; its address comes from `AUDIT_SENTINEL_TANSU_BOOTSTRAP`.
    static var tansuBootstrap: String? { ProcessInfo.processInfo.environment["AUDIT_SENTINEL_TANSU_BOOTSTRAP"] }

    static func tansu() throws -> TestBroker {
        let bootstrap = try #require(tansuBootstrap)
        return TestBroker(
            name: "tansu", bootstrapServers: bootstrap,
            createTopic: { name, partitions in
                let admin = try KafkaAdmin(configuration: KafkaConfiguration(["bootstrap.servers": bootstrap]), logger: quietLogger)
                try admin.createTopics([NewTopic(name: name, partitions: partitions, replicationFactor: 1)])
            },
            owner: nil)
    }

    var common: KafkaConfiguration {
        KafkaConfiguration(["bootstrap.servers": bootstrapServers, "topic.metadata.refresh.interval.ms": "1000"])
    }

    func producerConfiguration(_ extra: [String: String] = [:]) -> KafkaConfiguration {
        common.merging(["linger.ms": "5"]).merging(extra)
    }

    /// Short group timings so that joins and rebalances take seconds, not the defaults' minutes.
    func consumerConfiguration(group: String, _ extra: [String: String] = [:]) -> KafkaConfiguration {
        common.merging([
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
            "session.timeout.ms": "6000",
            "heartbeat.interval.ms": "500",
            "max.poll.interval.ms": "60000",
            "fetch.wait.max.ms": "100",
        ]).merging(extra)
    }
}

let quietLogger: Logger = {
    var logger = Logger(label: "test")
    logger.logLevel = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_TEST_LOG"] == nil ? .critical : .debug
    return logger
}()

func uniqueName(_ prefix: String) -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
}

/// A record copied out of a poll, for assertions.
struct ReceivedRecord: Hashable, Sendable {
    var topic: String
    var partition: Int32
    var offset: Int64
    var key: String?
    var value: String
    var headers: [KafkaHeader]
    var timestamp: Int64?

    init(_ record: ConsumerRecord) {
        topic = record.topic
        partition = record.partition
        offset = record.offset
        key = record.key.map { String(decoding: $0, as: UTF8.self) }
        value = String(decoding: record.payload, as: UTF8.self)
        headers = record.headers
        timestamp = record.timestamp?.milliseconds
    }
}

/// Polls until `done` says so or the deadline passes; returns what was received.
@discardableResult
func consume(
    _ consumer: KafkaConsumer, until done: ([ReceivedRecord]) -> Bool, timeout: Duration = .seconds(30),
    store: Bool = true
) throws -> [ReceivedRecord] {
    var received: [ReceivedRecord] = []
    let deadline = ContinuousClock.now + timeout
    while !done(received), ContinuousClock.now < deadline {
        let batch: [ReceivedRecord] = try consumer.poll(timeout: .milliseconds(100)) { batch in
            if store, !batch.isEmpty { try consumer.store(batch.map(\.nextOffset)) }
            return batch.map(ReceivedRecord.init)
        }
        received += batch
    }
    return received
}

/// Produces `count` records `value-<i>` with keys `key-<i % keys>` and waits for every delivery.
func produce(_ broker: TestBroker, topic: String, count: Int, keys: Int = 10, from start: Int = 0) throws {
    let failures = Mutex(0)
    let producer = try KafkaProducer(configuration: broker.producerConfiguration(), logger: quietLogger) { report in
        if !report.isSuccess { failures.withLock { $0 += 1 } }
    }
    for index in start..<(start + count) {
        try producer.send(ProducerMessage(topic: topic, key: "key-\(index % keys)", value: "value-\(index)"))
    }
    try producer.flush(timeout: .seconds(30))
    #expect(failures.withLock { $0 } == 0)
}

import Synchronization
