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

    /// Two members share a group; partitions move when the second joins. Offsets are committed after each
    /// batch: no record is lost, and only a record whose commit the broker refused (a commit that raced the
    /// rebalance, `REBALANCE_IN_PROGRESS`) may be seen twice — never one that was committed.
    static func groupRebalance(_ broker: TestBroker, strategy: KafkaConfiguration.AssignmentStrategy) throws {
        let topic = uniqueName("rebalance")
        let group = uniqueName("group")
        try broker.createTopic(topic, 4)
        try produce(broker, topic: topic, count: 200)

        func pollAll(_ members: [Member], until done: () -> Bool, timeout: Duration = .seconds(40)) throws {
            let deadline = ContinuousClock.now + timeout
            while !done(), ContinuousClock.now < deadline {
                for member in members { try member.poll() }
            }
        }

        let a = try Member(broker, group: group, topic: topic, strategy: strategy)
        try pollAll([a], until: { a.count >= 20 })
        let b = try Member(broker, group: group, topic: topic, strategy: strategy)
        try pollAll([a, b], until: { (try? b.consumer.assignment().count) == 2 && (try? a.consumer.assignment().count) == 2 })
        try produce(broker, topic: topic, count: 200, from: 200)
        try pollAll([a, b], until: { Set((a.snapshot.processed + b.snapshot.processed).map(\.value)).count >= 400 })
        try a.consumer.close()
        try b.consumer.close()

        let ledgers = [a.snapshot, b.snapshot]
        let all = ledgers.flatMap(\.processed).map(\.value)
        let distinct = Set(all)
        #expect(distinct == Set((0..<400).map { "value-\($0)" }), "lost: \(400 - distinct.count)")
        var counts: [String: Int] = [:]
        for value in all { counts[value, default: 0] += 1 }
        let duplicated = Set(counts.filter { $0.value > 1 }.keys)
        let refused = ledgers[0].refusedAtRevoke.union(ledgers[1].refusedAtRevoke)
        #expect(duplicated.isSubset(of: refused), "duplicates of committed records: \(duplicated.subtracting(refused).sorted())")
        #expect(!ledgers[1].processed.isEmpty, "the second member got records")
        let expectedProtocol: RebalanceEvent.RebalanceProtocol = strategy == .cooperativeSticky ? .cooperative : .eager
        #expect(ledgers[0].events.first?.kind == .assign)
        #expect(ledgers[0].events.contains { $0.kind == .revoke })
        #expect(ledgers.flatMap(\.events).allSatisfy { $0.protocol == expectedProtocol })
        #expect(ledgers[1].events.contains { $0.kind == .assign && $0.partitions.count == 2 })
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

/// What one member processed, and which of it the broker has not confirmed as committed.
private struct Ledger {
    var events: [RebalanceEvent] = []
    var processed: [ReceivedRecord] = []
    var unconfirmed: Set<String> = []
    var refusedAtRevoke: Set<String> = []
}
private final class SharedLedger: Sendable { let state = Mutex(Ledger()) }
private final class Member: Sendable {
    let consumer: KafkaConsumer
    let shared: SharedLedger
    init(_ broker: TestBroker, group: String, topic: String, strategy: KafkaConfiguration.AssignmentStrategy) throws {
        let configuration = broker.consumerConfiguration(group: group, ["partition.assignment.strategy": strategy.rawValue])
        let shared = SharedLedger()
        consumer = try KafkaConsumer(configuration: configuration, logger: quietLogger) { consumer, event in
            // Runs inside poll, before the change applies: revoked partitions are still ours, so commit.
            shared.state.withLock { $0.events.append(event) }
            guard event.kind != .assign else { return }
            let committed = (try? consumer.commit()) != nil
            shared.state.withLock { ledger in
                if !committed { ledger.refusedAtRevoke.formUnion(ledger.unconfirmed) }
                ledger.unconfirmed.removeAll()
            }
        }
        self.shared = shared
        try consumer.subscribe(topics: [topic])
    }
    func poll() throws {
        let records: [ReceivedRecord] = try consumer.poll(maxMessages: 50, timeout: .milliseconds(50)) { batch in
            guard !batch.isEmpty else { return [] }
            try consumer.store(batch.map(\.nextOffset))
            return batch.map(ReceivedRecord.init)
        }
        guard !records.isEmpty else { return }
        var committed = true
        do {
            try consumer.commit()
        } catch {
            // Refused while the group rebalances: the offsets stay stored, and the revoke handler or
            // the next commit retries them.
            guard error.code == .rebalanceInProgress else { throw error }
            committed = false
        }
        shared.state.withLock { ledger in
            ledger.processed += records
            if committed { ledger.unconfirmed.removeAll() } else { ledger.unconfirmed.formUnion(records.map(\.value)) }
        }
    }
    var count: Int { shared.state.withLock { $0.processed.count } }
    var snapshot: Ledger { shared.state.withLock { $0 } }
}
