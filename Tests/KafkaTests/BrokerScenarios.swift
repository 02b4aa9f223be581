import Foundation
import Kafka
import Synchronization
import Testing

/// Scenarios that must hold on every real broker; each suite runs them against its own.
enum BrokerScenarios {
    /// Keys, headers, timestamps and explicit partitions survive the round trip; equal keys share a partition.
    static func roundTrip(_ broker: TestBroker) async throws {
        let topic = uniqueName("roundtrip")
        try broker.createTopic(topic, 3)
        let producer = try KafkaProducer(configuration: broker.producerConfiguration(), logger: quietLogger)
        var reports: [DeliveryReport] = []
        for index in 0..<6 {
            let message = ProducerMessage(
                topic: topic, key: "account-\(index % 2)", value: "{\"n\":\(index)}",
                headers: [KafkaHeader("content-type", "application/json"), KafkaHeader("seq", "\(index)")],
                timestamp: 1_700_000_000_000 + Int64(index))
            reports.append(try await producer.send(message))
        }
        let pinned = try await producer.send(ProducerMessage(topic: topic, partition: 2, key: nil, value: "pinned"))
        #expect(pinned.partition == 2)
        #expect(reports.allSatisfy { $0.offset >= 0 && $0.topic == topic })
        #expect(Set(reports.enumerated().filter { $0.offset % 2 == 0 }.map(\.element.partition)).count == 1)

        let consumer = try KafkaConsumer(configuration: broker.consumerConfiguration(group: uniqueName("g")), logger: quietLogger)
        try consumer.subscribe(topics: [topic])
        let received = try consume(consumer, until: { $0.count >= 7 })
        try consumer.close()
        #expect(received.count == 7)
        for index in 0..<6 {
            let record = try #require(received.first { $0.value == "{\"n\":\(index)}" })
            #expect(record.key == "account-\(index % 2)")
            #expect(record.headers == [KafkaHeader("content-type", "application/json"), KafkaHeader("seq", "\(index)")])
            #expect(record.timestamp == 1_700_000_000_000 + Int64(index))
            #expect(record.partition == reports[index].partition && record.offset == reports[index].offset)
        }
        let pinnedRecord = try #require(received.first { $0.value == "pinned" })
        #expect(pinnedRecord.partition == 2 && pinnedRecord.key == nil)
    }

    /// Two members share a group; partitions move when the second joins and when it leaves. With offsets
    /// committed after each batch, every record is processed exactly once across both members.
    static func groupRebalance(_ broker: TestBroker, strategy: KafkaConfiguration.AssignmentStrategy) throws {
        let topic = uniqueName("rebalance")
        let group = uniqueName("group")
        try broker.createTopic(topic, 4)
        try produce(broker, topic: topic, count: 200)

        let events = Mutex<[String: [RebalanceEvent]]>([:])
        func member(_ name: String) throws -> KafkaConsumer {
            let configuration = broker.consumerConfiguration(group: group, ["partition.assignment.strategy": strategy.rawValue])
            let consumer = try KafkaConsumer(configuration: configuration, logger: quietLogger) { consumer, event in
                events.withLock { $0[name, default: []].append(event) }
                // Everything processed was committed after its batch; a final attempt costs nothing.
                if event.kind == .revoke { try? consumer.commit() }
            }
            try consumer.subscribe(topics: [topic])
            return consumer
        }
        var seen: [String: [ReceivedRecord]] = ["a": [], "b": []]
        func pollBoth(_ members: [(String, KafkaConsumer)], until done: () -> Bool, timeout: Duration = .seconds(40)) throws {
            let deadline = ContinuousClock.now + timeout
            while !done(), ContinuousClock.now < deadline {
                for (name, consumer) in members {
                    let records: [ReceivedRecord] = try consumer.poll(maxMessages: 50, timeout: .milliseconds(50)) { batch in
                        guard !batch.isEmpty else { return [] }
                        try consumer.store(batch.map(\.nextOffset))
                        try consumer.commit()
                        return batch.map(ReceivedRecord.init)
                    }
                    seen[name]! += records
                }
            }
        }
        let a = try member("a")
        // A alone gets every partition and starts consuming.
        try pollBoth([("a", a)], until: { seen["a"]!.count >= 20 })
        let b = try member("b")
        try pollBoth([("a", a), ("b", b)], until: {
            (try? b.assignment().count) == 2 && (try? a.assignment().count) == 2
        })
        try produce(broker, topic: topic, count: 200, from: 200)
        try pollBoth([("a", a), ("b", b)], until: { seen.values.map(\.count).reduce(0, +) >= 400 })
        try a.close()
        try b.close()

        let all = seen.values.flatMap { $0 }
        #expect(all.count == 400, "received \(all.count) of 400")
        #expect(Set(all.map(\.value)).count == 400, "duplicates: \(all.count - Set(all.map(\.value)).count)")
        #expect(!seen["b"]!.isEmpty, "the second member got records")
        let recorded = events.withLock { $0 }
        let expectedProtocol: RebalanceEvent.RebalanceProtocol = strategy == .cooperativeSticky ? .cooperative : .eager
        #expect(recorded["a"]?.first?.kind == .assign)
        #expect(recorded["a"]?.contains { $0.kind == .revoke } == true)
        #expect(recorded.values.joined().allSatisfy { $0.protocol == expectedProtocol })
        #expect(recorded["b"]?.contains { $0.kind == .assign && $0.partitions.count == 2 } == true)
    }

    /// A new member of the same group resumes exactly at the committed offset.
    static func resumeFromCommitted(_ broker: TestBroker) throws {
        let topic = uniqueName("resume")
        let group = uniqueName("group")
        try broker.createTopic(topic, 1)
        try produce(broker, topic: topic, count: 100)

        let first = try KafkaConsumer(configuration: broker.consumerConfiguration(group: group), logger: quietLogger)
        try first.subscribe(topics: [topic])
        let early = try consume(first, until: { $0.count >= 30 }, store: false)
        #expect(early.count >= 30)
        try first.commit([TopicPartitionOffset(topic, 0, offset: 30)])
        #expect(try first.committed([TopicPartition(topic, 0)]) == [TopicPartitionOffset(topic, 0, offset: 30)])
        try first.close()

        let second = try KafkaConsumer(configuration: broker.consumerConfiguration(group: group), logger: quietLogger)
        try second.subscribe(topics: [topic])
        let rest = try consume(second, until: { $0.count >= 70 })
        try second.commit()
        #expect(try second.committed([TopicPartition(topic, 0)]) == [TopicPartitionOffset(topic, 0, offset: 100)])
        try second.close()
        #expect(rest.first?.offset == 30)
        #expect(rest.map(\.value) == (30..<100).map { "value-\($0)" })
    }
}

/// Runs Python with kafka-python, the independent client; `AUDIT_SENTINEL_PYTHON` names the interpreter.
func runKafkaPython(_ script: String, arguments: [String]) throws -> String {
    let python = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_PYTHON"] ?? "python3"
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [python, "-c", script] + arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw KafkaPythonFailure(status: process.terminationStatus, stderr: errorText)
    }
    return String(decoding: data, as: UTF8.self)
}

struct KafkaPythonFailure: Error, CustomStringConvertible {
    var status: Int32
    var stderr: String
    var description: String { "kafka-python exited \(status): \(stderr)" }
}
