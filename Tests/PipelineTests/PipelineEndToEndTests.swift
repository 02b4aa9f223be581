import AuditEvents
import Detection
import Foundation
import Kafka
import Logging
import Pipeline
import PipelineSimulation
import Synchronization
import TestSupport
import Testing

/// A wall clock the test moves by hand (milliseconds).
final class ManualClock: Sendable {
    private let value = Atomic<Int64>(1_000_000)
    var now: Int64 { value.load(ordering: .relaxed) }
    func advance(by milliseconds: Int64) { value.add(milliseconds, ordering: .relaxed) }
}

let quiet: Logger = {
    var logger = Logger(label: "pipeline-test")
    logger.logLevel = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_TEST_LOG"] == nil ? .critical : .debug
    return logger
}()

/// The scenario: normal traffic, a stolen service-account token probing secrets across namespaces, and a
/// misconfigured operator denied every ten seconds; plus malformed records.
struct Scenario {
    static let thief = "system:serviceaccount:payments:checkout-api"
    static let operatorAccount = "system:serviceaccount:monitoring:exporter"
    static let start: Int64 = 1_763_625_600_000

    struct Record {
        var value: [UInt8]
        var timestamp: Int64
        var key: String
    }

    /// Records in event-time order; the second half starts at `splitAt`.
    static func records() -> [Record] {
        var traffic = SyntheticAuditTraffic(seed: 3, startMilliseconds: start, spacingMilliseconds: 0)
        var records: [Record] = []
        func add(_ kind: SyntheticAuditTraffic.Kind, at time: Int64, user: String? = nil, namespace: String? = nil, verb: String? = nil, resource: String? = nil) {
            traffic.clock = time
            let event = traffic.next(kind, user: user, namespace: namespace, verb: verb, resource: resource)
            records.append(Record(value: Array(event.json.utf8), timestamp: time, key: "node-\(records.count % 3)"))
        }
        for second in stride(from: 0, to: 480, by: 10) {
            let time = start + Int64(second) * 1000
            add(.normal, at: time)
            add(.normal, at: time + 1)
            add(.deniedUser, at: time + 2)
            add(.deniedServiceAccount, at: time + 3, user: operatorAccount, namespace: "monitoring", verb: "list", resource: "nodes")
            if second < 200 {
                let namespace = ["kube-system", "default", "payments", "vault"][second / 10 % 4]
                add(.deniedServiceAccount, at: time + 4, user: thief, namespace: namespace, verb: second % 20 == 0 ? "get" : "list",
                    resource: second % 20 == 0 ? "secrets" : "pods")
            }
        }
        return records
    }

    static let malformed: [[UInt8]] = [
        Array(#"{"kind":"Event","verb":"get","user":{"username":"system:serviceaccount:x:y""#.utf8),
        Array(#"{"kind":"Event","verb":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8),
        Array(#"{"kind":"Event","verb":5,"annotations":{"authorization.k8s.io/decision":"forbid"}}"#.utf8),
    ]
}

/// How the pipeline polls: waiting for full batches or taking what is there, and the batch size.
struct PollShape: Sendable, CustomTestStringConvertible {
    var fill: Bool
    var batch: Int
    var testDescription: String { "\(fill ? "full batches" : "available records") of \(batch)" }
    static let all = [false, true].flatMap { fill in [1, 7, 1000].map { PollShape(fill: fill, batch: $0) } }
}

/// A pipeline test bench: a broker, topics, traffic in, alerts out.
struct PipelineBench {
    let broker: (bootstrap: String, provisioner: any TopicProvisioner, owner: (any Sendable)?)
    var app = "sentinel-\(UUID().uuidString.prefix(6).lowercased())"
    var input: String
    var alerts: String
    var rules: RuleSet

    init(mock cluster: MockCluster) throws {
        try self.init(bootstrap: cluster.bootstrapServers, provisioner: MockTopicProvisioner(cluster: cluster), owner: cluster)
    }

    /// The tansu broker `make test` starts (`AUDIT_SENTINEL_TANSU_BOOTSTRAP`).
    init(tansu bootstrap: String) throws {
        let kafka = KafkaConfiguration(["bootstrap.servers": bootstrap])
        try self.init(bootstrap: bootstrap, provisioner: AdminTopicProvisioner(configuration: kafka, logger: quiet), owner: nil)
    }

    init(bootstrap: String, provisioner: any TopicProvisioner, owner: (any Sendable)?) throws {
        broker = (bootstrap, provisioner, owner)
        input = "k8s-audit-\(UUID().uuidString.prefix(6).lowercased())"
        alerts = "alerts-\(UUID().uuidString.prefix(6).lowercased())"
        // One input partition: the events reach the pipeline in event-time order (across several input
        // partitions, disorder beyond the grace period makes late alerts, by design).
        try provisioner.create([NewTopic(name: input, partitions: 1, replicationFactor: 1)])
        rules = try RuleSet.load(files: [packageRoot.appendingPathComponent("Config/rules/kubernetes_denied_service_account_request.toml").path])
    }

    var kafka: KafkaConfiguration {
        KafkaConfiguration(["bootstrap.servers": broker.bootstrap, "topic.metadata.refresh.interval.ms": "1000"])
    }

    var skipRepartition = false
    var poll = PollShape(fill: false, batch: 1000)
    var interimUpdates = true

    func configuration(_ guarantee: PipelineConfiguration.ProcessingGuarantee = .atLeastOnce) -> PipelineConfiguration {
        var configuration = PipelineConfiguration(applicationID: app, kafka: kafka, inputTopics: [input], alertsTopic: alerts)
        configuration.processingGuarantee = guarantee
        configuration.consumerProperties = ["session.timeout.ms": "6000", "heartbeat.interval.ms": "500", "fetch.wait.max.ms": "50"]
        configuration.internalPartitions = skipRepartition ? 1 : 4
        configuration.skipRepartition = skipRepartition
        configuration.fillBatches = poll.fill
        if !interimUpdates { configuration.interimUpdateMilliseconds = 0 }
        configuration.maxBatch = poll.batch
        return configuration
    }

    func runner(_ clock: ManualClock, _ guarantee: PipelineConfiguration.ProcessingGuarantee = .atLeastOnce) -> PipelineRunner {
        PipelineRunner(configuration: configuration(guarantee), rules: rules, provisioner: broker.provisioner, logger: quiet, clock: { clock.now })
    }

    func produce(_ records: [Scenario.Record], malformed: [[UInt8]] = []) throws {
        let producer = try KafkaProducer(configuration: kafka, logger: quiet)
        for record in records {
            try producer.send(ProducerMessage(topic: input, key: Array(record.key.utf8), value: record.value, timestamp: record.timestamp))
        }
        for bytes in malformed {
            try producer.send(ProducerMessage(topic: input, key: Array("bad".utf8), value: bytes, timestamp: Scenario.start))
        }
        try producer.flush(timeout: .seconds(30))
    }

    struct Alert {
        var id: String
        var kind: String
        var document: JSONObject
        var offset: Int64
    }

    /// Every record of a topic so far: partitions assigned directly (no group to join), read to their ends.
    func read(_ topic: String, atLeast count: Int, timeout: Duration = .seconds(20)) throws -> [(key: String, value: [UInt8], headers: [KafkaHeader], offset: Int64)] {
        let consumer = try KafkaConsumer(
            configuration: kafka.merging(["group.id": "reader-\(UUID().uuidString)", "auto.offset.reset": "earliest", "enable.partition.eof": "true"]),
            logger: quiet)
        defer { try? consumer.close() }
        let partitions = try #require(try consumer.metadata(topic: topic).topic(topic)).partitions.map(\.id)
        try consumer.assign(partitions.map { TopicPartitionOffset(topic, $0, offset: KafkaOffset.beginning) })
        var records: [(String, [UInt8], [KafkaHeader], Int64)] = []
        var ended = Set<Int32>()
        let deadline = ContinuousClock.now + timeout
        while (records.count < count || ended.count < partitions.count), ContinuousClock.now < deadline {
            try consumer.poll(timeout: .milliseconds(100)) { batch in
                for record in batch {
                    ended.remove(record.partition)
                    records.append((record.key.map { String(decoding: $0, as: UTF8.self) } ?? "", Array(record.payload), record.headers, record.offset))
                }
                for case .partitionEOF(let partition, _) in batch.notices { ended.insert(partition.partition) }
            }
        }
        return records.map { (key: $0.0, value: $0.1, headers: $0.2, offset: $0.3) }
    }

    func alerts(atLeast count: Int) throws -> [Alert] {
        try read(alerts, atLeast: count).map { record in
            let document = try JSONValue.parse(record.value).objectValue ?? [:]
            let kind = record.headers.first { $0.name == "alert.kind" }.flatMap { $0.value.map { String(decoding: $0, as: UTF8.self) } } ?? ""
            return Alert(id: record.key, kind: kind, document: document, offset: record.offset)
        }
    }
}

/// Runs the pipeline until `done` holds and nothing has arrived for a second (every match aggregated), or
/// time runs out.
func drive(_ runners: [PipelineRunner], clock: ManualClock, until done: () -> Bool, timeout: Duration = .seconds(60)) throws {
    let deadline = ContinuousClock.now + timeout
    var quietPolls = 0
    while ContinuousClock.now < deadline {
        var processed = 0
        for runner in runners { processed += try runner.runOnce() }
        quietPolls = processed == 0 ? quietPolls + 1 : 0
        if quietPolls >= 10, done() { return }
    }
}

/// Drives until `consumed`, then lets the windows' time pass (their ends and the idle timeout, by the
/// injected clock) and drives until `updated`: the updates of the windows that suppressed matches.
func driveThroughWindows(_ runners: [PipelineRunner], clock: ManualClock, consumed: () -> Bool, updated: () -> Bool) throws {
    try drive(runners, clock: clock, until: consumed)
    clock.advance(by: 10 * 60_000)
    try drive(runners, clock: clock, until: updated)
}

/// Ten thousand malformed records of every kind the issue names, seeded and reproducible.
enum MalformedRecords {
    static let limits = DecoderLimits(maxRecordBytes: 8 * 1024, maxDepth: 100)

    static func make(count: Int, seed: UInt64 = 8) -> [[UInt8]] {
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        var traffic = SyntheticAuditTraffic(seed: seed, startMilliseconds: Scenario.start, spacingMilliseconds: 0)
        let denied = Array(traffic.next(.deniedServiceAccount).json.utf8)
        var records: [[UInt8]] = []
        for index in 0..<count {
            switch index % 7 {
            case 0:  // truncated JSON
                records.append(Array(denied.prefix(Int.random(in: 1..<(denied.count - 1), using: &random))))
            case 1:  // binary
                records.append((0..<Int.random(in: 1...256, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) })
            case 2:  // wrong types where the rule and the ECS view read
                let variants = [
                    #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":5,"user":{"username":"system:serviceaccount:a:b"},"annotations":{"authorization.k8s.io/decision":"forbid"}}"#,
                    #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"get","user":"system:serviceaccount:a:b","annotations":{"authorization.k8s.io/decision":"forbid"}}"#,
                    #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"get","user":{"username":["x"]},"annotations":["forbid"]}"#,
                ]
                records.append(Array(variants[index / 7 % variants.count].utf8))
            case 3:  // over the record size limit, every 350th record: librdkafka's mock broker keeps only the
                     // newest 5 MB of a partition, and the whole input must stay within that
                if index % 350 == 3 {
                    records.append(Array(#"{"kind":"Event","padding":""#.utf8) + Array(repeating: UInt8(ascii: "a"), count: limits.maxRecordBytes) + Array(#""}"#.utf8))
                } else {
                    records.append(Array("{\"kind\":\"Event\"".utf8))   // unterminated object
                }
            case 4:  // nesting beyond the depth limit
                let depth = limits.maxDepth + 1 + index % 50
                records.append(Array(#"{"kind":"Event","requestObject":"#.utf8) + Array(repeating: UInt8(ascii: "["), count: depth)
                               + Array(repeating: UInt8(ascii: "]"), count: depth) + [UInt8(ascii: "}")])
            case 5:  // invalid UTF-8 inside an otherwise valid event
                var bytes = denied
                let position = bytes.firstIndex(of: UInt8(ascii: "s"))!   // inside the first string that has an s
                bytes[position] = [0xFF, 0xC3, 0xED][index / 7 % 3]
                records.append(bytes)
            default:  // empty
                records.append([])
            }
        }
        return records
    }
}

/// The scenarios, run on either broker.
enum PipelineScenarios {
    /// (Tansu only: librdkafka's mock cluster creates every topic a client asks for.) Started before its input topic exists: it joins (the internal topics), says it waits for the input
    /// and is not ready; once the topic is created it is read within 10 s, and the member becomes ready.
    /// The runner's events tell the rebalance, its duration and the commits, each once.
    static func inputTopicCreatedAfterStartIsConsumedWithinSeconds(_ bench: PipelineBench) throws {
        var bench = bench
        bench.input = "created-later-\(UUID().uuidString.prefix(6).lowercased())"
        let clock = ManualClock()
        let runner = bench.runner(clock)
        let events = Mutex<[PipelineEvent]>([])
        runner.observer = { event in events.withLock { $0.append(event) } }
        try runner.start()
        let joinDeadline = ContinuousClock.now + .seconds(30)
        while runner.status.state != .waitingForInput, ContinuousClock.now < joinDeadline { try runner.runOnce() }
        #expect(runner.status.state == .waitingForInput, "\(runner.status.notReadyReason ?? "ready")")
        #expect(!runner.isReady)
        #expect(runner.status.notReadyReason == "waiting for input topic \(bench.input) to be created")
        for _ in 0..<20 { try runner.runOnce() }  // a few more metadata checks: asking never creates the topic
        #expect(!runner.isReady)

        try bench.broker.provisioner.create([NewTopic(name: bench.input, partitions: 1, replicationFactor: 1)])
        let created = ContinuousClock.now
        let records = Array(Scenario.records().prefix(40))
        try bench.produce(records)
        while runner.snapshot().inputRecords < records.count, created.duration(to: .now) < .seconds(20) { try runner.runOnce() }
        let took = created.duration(to: .now)
        print("input topic created after start: its records were read \(took) after its creation")
        #expect(runner.snapshot().inputRecords == records.count)
        #expect(took < .seconds(10))
        let readyDeadline = ContinuousClock.now + .seconds(10)
        while !runner.isReady, ContinuousClock.now < readyDeadline { try runner.runOnce() }
        #expect(runner.isReady && runner.status.state == .running)
        // Commits answered (the asynchronous ones by the coordinator's callback): each counted once.
        let commitDeadline = ContinuousClock.now + .seconds(10)
        while runner.snapshot().commitsSucceeded == 0, ContinuousClock.now < commitDeadline { try runner.runOnce() }
        try runner.stop()
        #expect(runner.status.state == .stopped)
        let seen = events.withLock { $0 }
        let rebalances = seen.compactMap { event -> Duration? in if case .rebalanced(let duration, _) = event { return duration } else { return nil } }
        let commits = seen.filter { if case .committed = $0 { return true } else { return false } }
        #expect(rebalances.count >= 2, "the join, and the assignment of the new topic's partition")
        #expect(rebalances.allSatisfy { $0 > .zero })
        let counters = runner.snapshot()
        #expect(counters.commitsSucceeded >= 1)
        #expect(commits.count == counters.commitsSucceeded + counters.commitRetries, "one event per commit answered")
    }

    /// 10 000 malformed records interleaved with the scenario: each is dead-lettered with its original bytes
    /// and a reason, every valid record is processed (the same alerts as without them), nothing stalls.
    static func malformedRecordsAreDeadLetteredAndNothingElseIsLost(_ bench: PipelineBench, malformedCount: Int = 10_000) throws {
        let valid = Scenario.records()
        let malformed = MalformedRecords.make(count: malformedCount)
        // Interleave: the valid records keep their order, malformed ones fall between them.
        var input: [(value: [UInt8], timestamp: Int64, isValid: Bool)] = []
        var next = 0
        for (index, record) in valid.enumerated() {
            let share = (index + 1) * malformed.count / valid.count
            while next < share { input.append((malformed[next], record.timestamp, false)); next += 1 }
            input.append((record.value, record.timestamp, true))
        }
        let producer = try KafkaProducer(configuration: bench.kafka, logger: quiet)
        for record in input {
            try producer.send(ProducerMessage(topic: bench.input, key: Array("node".utf8), value: record.value, timestamp: record.timestamp))
        }
        try producer.flush(timeout: .seconds(60))

        var configuration = bench.configuration()
        configuration.decoderLimits = MalformedRecords.limits
        let clock = ManualClock()
        let runner = PipelineRunner(configuration: configuration, rules: bench.rules, provisioner: bench.broker.provisioner, logger: quiet, clock: { clock.now })
        try runner.start()
        try driveThroughWindows([runner], clock: clock,
                                consumed: { runner.snapshot().inputRecords >= input.count && runner.snapshot().matchesAggregated >= 68 },
                                updated: { runner.snapshot().alertsUpdated >= 3 })
        let counters = runner.snapshot()
        try runner.stop()

        // The input partition was read to its end and committed there: no record held it up.
        #expect(counters.inputRecords == input.count)
        #expect(counters.deadLettered == malformed.count)
        // Errors are counted per event: a record of several broken events counts each.
        #expect(counters.decodeErrors.values.reduce(0, +) >= malformed.count, "\(counters.decodeErrors)")
        #expect(counters.matches[try #require(bench.rules.rules.first).id] == 68)
        let reasons = Set(counters.decodeErrors.keys)
        #expect(reasons.isSuperset(of: ["invalid_json", "wrong_field_type", "record_too_large", "nesting_too_deep", "invalid_utf8", "empty_record"]), "\(counters.decodeErrors)")

        // Every malformed record is in the DLQ, byte for byte, with its reason and source offset.
        let expected = Dictionary(uniqueKeysWithValues: input.enumerated().filter { !$0.element.isValid }.map { (Int64($0.offset), $0.element.value) })
        let dead = try bench.read(configuration.deadLetterTopic(bench.input), atLeast: malformed.count, timeout: .seconds(90))
        var seen = Set<Int64>()
        for record in dead {
            func header(_ name: String) -> String? { record.headers.first { $0.name == name }?.value.map { String(decoding: $0, as: UTF8.self) } }
            let offset = try #require(header("source.offset").flatMap { Int64($0) })
            #expect(record.value == expected[offset], "DLQ record for offset \(offset) differs from the input")
            #expect(header("error.reason").map(reasons.contains) == true)
            #expect(header("error.message")?.isEmpty == false)
            seen.insert(offset)
        }
        #expect(seen == Set(expected.keys), "\(dead.count) DLQ records read; \(expected.count - seen.count) malformed records missing from the DLQ, e.g. \(Set(expected.keys).subtracting(seen).sorted().prefix(10)); \(seen.subtracting(expected.keys).count) unexpected")

        // The valid records gave exactly the alerts of the clean scenario.
        let alerts = try bench.alerts(atLeast: 6)
        #expect(Set(alerts.map(\.id)).count == 3)
        #expect(Set(alerts.filter { $0.kind == "update" }.map { $0.document[path: "kibana.alert.suppression.docs_count"] }) == [19, 29, 17])
    }

    static func scenarioAlertsSuppressesAndUpdates(_ bench: PipelineBench) throws {
        let records = Scenario.records()
        try bench.produce(records, malformed: Scenario.malformed)
        let clock = ManualClock()
        let runner = bench.runner(clock)
        try runner.start()
        // Consume everything: three new alerts (thief, operator's two windows) at once. The partitions then
        // go quiet; once the idle timeout and the windows' ends have passed, updates follow.
        try driveThroughWindows([runner], clock: clock, consumed: { runner.snapshot().matchesAggregated >= 68 },
                                updated: { runner.snapshot().alertsUpdated >= 3 })
        let counters = runner.snapshot()
        try runner.stop()

        let alerts = try bench.alerts(atLeast: 6)
        let byID = Dictionary(grouping: alerts, by: \.id)
        #expect(byID.count == 3, "alert ids: \(byID.keys.sorted())")
        #expect(alerts.count == 6)
        let thief = try #require(byID.values.first { $0.first?.document[path: "user.name"] == .string(Scenario.thief) })
        #expect(thief.map(\.kind) == ["new", "update"])
        #expect(thief[0].document[path: "kibana.alert.suppression.docs_count"] == 0)
        #expect(thief[1].document[path: "kibana.alert.suppression.docs_count"] == 19)
        #expect(thief[1].document[path: "kibana.alert.suppression.summary.count"] == 19)
        #expect(Set(thief[1].document[path: "kibana.alert.suppression.summary.namespaces"]?.arrayValue ?? []) == ["kube-system", "default", "payments", "vault"])
        #expect(Set(thief[1].document[path: "kibana.alert.suppression.summary.resources"]?.arrayValue ?? []) == ["secrets", "pods"])
        let operatorAlerts = byID.values.filter { $0.first?.document[path: "user.name"] == .string(Scenario.operatorAccount) }
        #expect(operatorAlerts.count == 2, "the operator's denials span two windows")
        #expect(Set(operatorAlerts.compactMap { $0.last?.document[path: "kibana.alert.suppression.docs_count"] }) == [29, 17])

        // Malformed records are dead-lettered with their reason; everything else was processed.
        let dead = try bench.read(bench.configuration().deadLetterTopic(bench.input), atLeast: 3)
        #expect(dead.count == 3)
        #expect(Set(dead.compactMap { $0.headers.first { $0.name == "error.reason" }?.value.map { String(decoding: $0, as: UTF8.self) } })
                == ["invalid_json", "invalid_utf8", "wrong_field_type"])
        #expect(dead.allSatisfy { $0.headers.contains { $0.name == "source.offset" } })
        #expect(counters.deadLettered == 3)
        #expect(counters.matches[try #require(bench.rules.rules.first).id] == 68)
    }

    /// `replay` (the in-memory driver) over the scenario's events gives the live pipeline's alert documents,
    /// byte for byte, when the records carry the events' stage timestamps (the ingest time replay derives).
    static func replayIsByteIdenticalToTheLivePipeline(_ bench: PipelineBench) throws {
        var bench = bench
        bench.interimUpdates = false
        var records = Scenario.records()
        for index in records.indices {
            let event = try JSONValue.parse(records[index].value)
            records[index].timestamp = try #require(event[path: "stageTimestamp"]?.stringValue.flatMap { Timestamp.milliseconds(fromRFC3339: $0) })
        }
        try bench.produce(records)
        let clock = ManualClock()
        let runner = bench.runner(clock)
        try runner.start()
        try driveThroughWindows([runner], clock: clock, consumed: { runner.snapshot().matchesAggregated >= 68 },
                                updated: { runner.snapshot().alertsUpdated >= 3 })
        try runner.stop()
        let live = Set(try bench.read(bench.alerts, atLeast: 6).map(\.value))

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("scenario-\(UUID().uuidString).ndjson")
        try Data(records.flatMap { $0.value + [UInt8(ascii: "\n")] }).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("audit-sentinel")
        process.arguments = ["replay", "--topic", bench.input, "--partitions", "\(bench.configuration().internalPartitions)",
                             "--rules", packageRoot.appendingPathComponent("Config/rules").path, file.path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let replayed = Set(printed.split(separator: UInt8(ascii: "\n")).map(Array.init))
        if ProcessInfo.processInfo.environment["AUDIT_SENTINEL_TEST_DUMP"] != nil {
            try Data(live.sorted { $0.lexicographicallyPrecedes($1) }.flatMap { $0 + [10] }).write(to: URL(fileURLWithPath: "/tmp/live.ndjson"))
            try Data(replayed.sorted { $0.lexicographicallyPrecedes($1) }.flatMap { $0 + [10] }).write(to: URL(fileURLWithPath: "/tmp/replayed.ndjson"))
        }
        #expect(replayed.count == 6, "three alerts and their updates, not \(replayed.count)")
        #expect(replayed == live, "\(replayed.subtracting(live).count) replayed documents not among the live ones, \(live.subtracting(replayed).count) live ones not replayed")
    }

    static func restartMidWindowRestoresStateFromTheChangelog(_ bench: PipelineBench) throws {
        let records = Scenario.records()
        let half = records.count / 2
        try bench.produce(Array(records[..<half]))
        let clock = ManualClock()
        let first = bench.runner(clock)
        try first.start()
        try drive([first], clock: clock, until: { first.snapshot().alertsNew >= 2 })
        try first.stop()

        try bench.produce(Array(records[half...]))
        let second = bench.runner(clock)
        try second.start()
        try driveThroughWindows([second], clock: clock, consumed: { first.snapshot().matchesAggregated + second.snapshot().matchesAggregated >= 68 },
                                updated: { second.snapshot().alertsUpdated >= 3 })
        #expect(second.snapshot().restoredKeys > 0)
        try second.stop()

        let alerts = try bench.alerts(atLeast: 6)
        let byID = Dictionary(grouping: alerts, by: \.id)
        #expect(byID.count == 3, "no second initial alert after the restart")
        let thief = try #require(byID.values.first { $0.first?.document[path: "user.name"] == .string(Scenario.thief) })
        #expect(thief.map(\.kind) == ["new", "update"])
        #expect(thief.last?.document[path: "kibana.alert.suppression.docs_count"] == 19, "counts from before and after the restart add up")
    }

    static func replayingTheSameInputGivesIdenticalDocuments(_ bench: PipelineBench) throws {
        let records = Array(Scenario.records().prefix(120))
        var runs: [[String: [UInt8]]] = []
        var bench = bench
        try bench.produce(records)
        for _ in 0..<2 {
            // Another application over the same input topic: a full reprocessing.
            bench.app = "replay-\(UUID().uuidString.prefix(6).lowercased())"
            bench.alerts = "alerts-\(UUID().uuidString.prefix(6).lowercased())"
            let clock = ManualClock()
            let runner = bench.runner(clock)
            try runner.start()
            try driveThroughWindows([runner], clock: clock, consumed: { runner.snapshot().alertsNew >= 2 },
                                    updated: { runner.snapshot().alertsUpdated >= 2 })
            try runner.stop()
            var documents: [String: [UInt8]] = [:]
            for record in try bench.read(bench.alerts, atLeast: 4) {
                let kind = record.headers.first { $0.name == "alert.kind" }?.value ?? []
                documents[record.key + "/" + String(decoding: kind, as: UTF8.self)] = record.value
            }
            runs.append(documents)
        }
        #expect(runs[0].count == 4)
        #expect(runs[0].keys.sorted() == runs[1].keys.sorted())
        #expect(runs[0].keys.allSatisfy { runs[0][$0] == runs[1][$0] }, "same input, same documents, byte for byte")
    }

    /// Two instances in one group; partitions move when the second joins and again when the first leaves.
    static func twoInstancesShareTheWorkAndLoseNothing(_ bench: PipelineBench, poll: PollShape = PollShape(fill: false, batch: 1000)) throws {
        var bench = bench
        bench.poll = poll
        let records = Scenario.records()
        let third = records.count / 3
        try bench.produce(Array(records[..<third]))
        let clock = ManualClock()
        let a = bench.runner(clock)
        try a.start()
        try drive([a], clock: clock, until: { a.snapshot().alertsNew >= 2 })
        let b = bench.runner(clock)
        try b.start()
        try bench.produce(Array(records[third..<(2 * third)]))
        let partitions = Int(bench.configuration().internalPartitions)
        try drive([a, b], clock: clock, until: { b.ownedStatePartitions > 0 && a.ownedStatePartitions + b.ownedStatePartitions == partitions })
        try a.stop()
        try bench.produce(Array(records[(2 * third)...]))
        // Every match of the scenario aggregated (by one instance or the other) before time jumps ahead.
        try driveThroughWindows(
            [b], clock: clock,
            consumed: { b.ownedStatePartitions == partitions && a.snapshot().matchesAggregated + b.snapshot().matchesAggregated >= 68 },
            updated: { a.snapshot().alertsUpdated + b.snapshot().alertsUpdated >= 3 })
        try b.stop()

        let alerts = try bench.alerts(atLeast: 6)
        var versions: [String: [PipelineBench.Alert]] = [:]
        for alert in alerts { versions[alert.id + "/" + alert.kind, default: []].append(alert) }
        #expect(Set(alerts.map(\.id)).count == 3, "every expected alert id, and no other")
        #expect(versions.count == 6, "a new and an update version of each")
        // At least once: a version seen twice (a batch replayed after a rebalance) is the same document.
        for (version, copies) in versions where copies.count > 1 {
            #expect(Set(copies.map { JSONValue.object($0.document).serialized(sortedKeys: true) }).count == 1, "\(version) differs between copies")
        }
        let updates = alerts.filter { $0.kind == "update" }.map { $0.document[path: "kibana.alert.suppression.docs_count"] }
        #expect(Set(updates) == [19, 29, 17])
    }

    /// An EQL sequence rule (a role created, then a secret touched by the same account within two minutes,
    /// unless the role is deleted first): its first steps are read by one instance, which stops; a second
    /// restores them from the changelog; a third joins (partitions move) and the second leaves. Every
    /// sequence completes once, whichever instance held it: five shells with their building blocks, one
    /// set of ids, each version the same document wherever it was written twice.
    static func sequencesSpanningARestartAndARebalanceCompleteExactlyOnce(_ bench: PipelineBench) throws {
        var bench = bench
        bench.rules = RuleSet([Simulation.sequenceRule])
        var traffic = SyntheticAuditTraffic(seed: 5, startMilliseconds: Scenario.start, spacingMilliseconds: 0)
        var time = Scenario.start
        func record(_ user: Int, _ verb: String, _ resource: String) -> Scenario.Record {
            time += 1_000
            traffic.clock = time
            let event = traffic.next(.normal, user: "system:serviceaccount:team\(user):deployer", namespace: "team\(user)", verb: verb, resource: resource)
            return Scenario.Record(value: Array(event.json.utf8), timestamp: time, key: "node-\(user % 3)")
        }
        let clock = ManualClock()
        let partitions = Int(bench.configuration().internalPartitions)
        func shells(_ runners: [PipelineRunner]) -> Int { runners.reduce(0) { $0 + $1.snapshot().alertsNew } }

        // The first steps (and two second steps with nothing before them), read by one instance that stops.
        try bench.produce((0..<6).map { record($0, "create", "roles") } + [record(6, "get", "secrets"), record(7, "list", "secrets")])
        let first = bench.runner(clock)
        try first.start()
        try drive([first], clock: clock, until: { first.snapshot().matchesAggregated >= 8 })
        try first.stop()
        #expect(first.snapshot().alertsNew == 0)

        // A restart: two sequences complete from restored state.
        let second = bench.runner(clock)
        try second.start()
        try bench.produce([record(0, "get", "secrets"), record(1, "watch", "secrets")])
        try drive([second], clock: clock, until: { shells([second]) >= 2 })
        #expect(second.snapshot().restoredKeys > 0, "pending sequences came back from the changelog")

        // A rebalance: a third instance joins, two more complete wherever their keys went.
        let third = bench.runner(clock)
        try third.start()
        try drive([second, third], clock: clock, until: { third.ownedStatePartitions > 0 && second.ownedStatePartitions + third.ownedStatePartitions == partitions })
        try bench.produce([record(2, "get", "secrets"), record(3, "get", "secrets")])
        try drive([second, third], clock: clock, until: { shells([second, third]) >= 4 })

        // The second leaves; one more completes, one is ended by its until step first.
        try second.stop()
        try bench.produce([record(4, "get", "secrets"), record(5, "delete", "roles"), record(5, "get", "secrets")])
        try drive([third], clock: clock, until: { third.ownedStatePartitions == partitions && shells([second, third]) >= 5 })
        try third.stop()

        let alerts = try bench.alerts(atLeast: 15)
        var versions: [String: Set<String>] = [:]
        for alert in alerts { versions[alert.id, default: []].insert(JSONValue.object(alert.document).serialized(sortedKeys: true)) }
        #expect(versions.count == 15, "five sequences of two building blocks and a shell, each id once")
        #expect(versions.values.allSatisfy { $0.count == 1 }, "a copy written twice is the same document")
        let shellDocuments = alerts.filter { $0.document[path: "kibana.alert.depth"] == 2 }
        let users = Set(shellDocuments.compactMap { $0.document[path: "user.name"]?.stringValue })
        #expect(users == Set((0..<5).map { "system:serviceaccount:team\($0):deployer" }))
        for shell in Dictionary(grouping: shellDocuments, by: \.id).values.compactMap(\.first) {
            let group = shell.document[path: "kibana.alert.group.id"]
            let parts = alerts.filter { $0.document[path: "kibana.alert.group.id"] == group && $0.id != shell.id }
            #expect(Set(parts.map(\.id)).count == 2, "two building blocks per shell")
        }
    }

    /// An aggregating ES|QL rule (denied service accounts counted per namespace, every two minutes over
    /// three): six accounts' first events are read by one instance, which stops mid-window; a second
    /// restores their groups from the changelog and reads more; a third joins (partitions move), the second
    /// leaves, and events ten minutes on move stream time past the executions. Each account alerts once,
    /// with the exact counts of every event of its window, whichever instances held its panes.
    static func aggregatesSpanningARestartAndARebalanceStayExact(_ bench: PipelineBench) throws {
        var bench = bench
        bench.rules = RuleSet([Simulation.esqlRule])
        var traffic = SyntheticAuditTraffic(seed: 6, startMilliseconds: Scenario.start, spacingMilliseconds: 0)
        func record(_ user: Int, at seconds: Int, _ namespace: String) -> Scenario.Record {
            let time = Scenario.start + Int64(seconds) * 1000
            traffic.clock = time
            let event = traffic.next(.deniedServiceAccount, user: "system:serviceaccount:team\(user):deployer", namespace: namespace, verb: "list", resource: "pods")
            return Scenario.Record(value: Array(event.json.utf8), timestamp: time, key: "node-\(user % 3)")
        }
        let clock = ManualClock()
        let partitions = Int(bench.configuration().internalPartitions)
        func alerts(_ runners: [PipelineRunner]) -> Int { runners.reduce(0) { $0 + $1.snapshot().alertsNew } }
        let users = 0..<6

        // Execution T = start + 2 min aggregates [start − 1 min, start + 2 min): every event below.
        try bench.produce(users.map { record($0, at: 10 + $0, "alpha") } + users.map { record($0, at: 30 + $0, "alpha") })
        let first = bench.runner(clock)
        try first.start()
        try drive([first], clock: clock, until: { first.snapshot().matchesAggregated >= 12 })
        try first.stop()
        #expect(first.snapshot().alertsNew == 0, "no execution has run yet")

        let second = bench.runner(clock)
        try second.start()
        try bench.produce(users.map { record($0, at: 60 + $0, "beta") })
        try drive([second], clock: clock, until: { second.snapshot().matchesAggregated >= 6 })
        #expect(second.snapshot().restoredKeys > 0, "the groups came back from the changelog")

        let third = bench.runner(clock)
        try third.start()
        try drive([second, third], clock: clock, until: { third.ownedStatePartitions > 0 && second.ownedStatePartitions + third.ownedStatePartitions == partitions })
        try bench.produce(users.filter { $0 % 2 == 0 }.map { record($0, at: 100 + $0, "gamma") })
        try drive([second, third], clock: clock, until: { second.snapshot().matchesAggregated + third.snapshot().matchesAggregated >= 9 })
        try second.stop()
        // Ten minutes on: stream time passes both executions that cover the window.
        try bench.produce(users.map { record($0, at: 600 + $0, "alpha") })
        try drive([third], clock: clock, until: { third.ownedStatePartitions == partitions && alerts([first, second, third]) >= 6 })
        try third.stop()

        let documents = try bench.alerts(atLeast: 6)
        var versions: [String: Set<String>] = [:]
        for alert in documents { versions[alert.id, default: []].insert(JSONValue.object(alert.document).serialized(sortedKeys: true)) }
        #expect(versions.count == 6, "one alert per account")
        #expect(versions.values.allSatisfy { $0.count == 1 }, "a copy written twice is the same document")
        for alert in documents {
            let user = try #require(alert.document[path: "kubernetes.audit.user.username"]?.stringValue)
            let index = try #require(Int(user.dropFirst("system:serviceaccount:team".count).prefix { $0.isNumber }))
            let even = index % 2 == 0
            #expect(alert.document[path: "Esql.event_count"] == .number(JSONNumber(even ? 4 : 3)), "\(user): every event of the window, once")
            #expect(alert.document[path: "Esql.namespace_count"] == .number(JSONNumber(even ? 3 : 2)))
            #expect(alert.document[path: "Esql.namespaces"] == (even ? ["alpha", "beta", "gamma"] : ["alpha", "beta"]))
            #expect(alert.document[path: "@timestamp"] == .string(Timestamp.rfc3339(milliseconds: Scenario.start + 120_000)))
        }
    }

    static func exactlyOnceUsesTheTransactionCallSequence(_ bench: PipelineBench) throws {
        let records = Array(Scenario.records().prefix(60))
        try bench.produce(records)
        let clock = ManualClock()
        let runner = bench.runner(clock, .exactlyOnce)
        try runner.start()
        try drive([runner], clock: clock, until: { runner.snapshot().recordsConsumed >= records.count && runner.snapshot().alertsNew >= 2 })
        try runner.stop()
        let alerts = try bench.alerts(atLeast: 2)
        #expect(Set(alerts.map(\.id)).count == 2)
    }
}

@Suite("Pipeline on the mock cluster", .serialized)
struct PipelineEndToEndTests {
    func bench() throws -> PipelineBench { try PipelineBench(mock: MockCluster(brokers: 1, logger: quiet)) }

    @Test func scenarioAlertsSuppressesAndUpdates() throws { try PipelineScenarios.scenarioAlertsSuppressesAndUpdates(bench()) }
    @Test func restartMidWindowRestoresStateFromTheChangelog() throws { try PipelineScenarios.restartMidWindowRestoresStateFromTheChangelog(bench()) }
    @Test func replayingTheSameInputGivesIdenticalDocuments() throws { try PipelineScenarios.replayingTheSameInputGivesIdenticalDocuments(bench()) }
    @Test func replayIsByteIdenticalToTheLivePipeline() throws { try PipelineScenarios.replayIsByteIdenticalToTheLivePipeline(bench()) }
    /// The result does not depend on how records are batched: both poll modes, batches of 1, 7 and 1 000.
    @Test(arguments: PollShape.all)
    func twoInstancesShareTheWorkAndLoseNothing(poll: PollShape) throws { try PipelineScenarios.twoInstancesShareTheWorkAndLoseNothing(bench(), poll: poll) }
    @Test func exactlyOnceUsesTheTransactionCallSequence() throws { try PipelineScenarios.exactlyOnceUsesTheTransactionCallSequence(bench()) }
    @Test func sequencesSpanningARestartAndARebalanceCompleteExactlyOnce() throws {
        try PipelineScenarios.sequencesSpanningARestartAndARebalanceCompleteExactlyOnce(bench())
    }
    @Test func aggregatesSpanningARestartAndARebalanceStayExact() throws {
        try PipelineScenarios.aggregatesSpanningARestartAndARebalanceStayExact(bench())
    }
    /// 3 000 here: librdkafka's mock broker keeps only the newest 5 MB of a partition, and the one-partition
    /// dead-letter topic of 10 000 records (with their headers) is more; the tansu suite runs 10 000.
    @Test func malformedRecordsAreDeadLetteredAndNothingElseIsLost() throws {
        try PipelineScenarios.malformedRecordsAreDeadLetteredAndNothingElseIsLost(bench(), malformedCount: 3_000)
    }

    /// Poll fill, the counter that says whether processing or fetching sets the pace: a backlog read in
    /// batches of 7 that wait to fill comes in full polls; the same backlog in batches of 1 000 in none.
    @Test func pollsAreCountedByWhetherTheirBatchWasFull() throws {
        for batch in [7, 1000] {
            var shaped = try bench()
            shaped.poll = PollShape(fill: true, batch: batch)
            let records = Scenario.records()
            try shaped.produce(records)
            let clock = ManualClock()
            let runner = shaped.runner(clock)
            try runner.start()
            try drive([runner], clock: clock, until: { runner.snapshot().inputRecords >= records.count })
            let counters = runner.snapshot()
            try runner.stop()
            #expect(counters.inputRecords == records.count)
            #expect(counters.fullPolls <= counters.pollsWithRecords)
            // Every record came in a poll that returned records; a full one holds `batch`, any other fewer.
            #expect(counters.pollsWithRecords > 0)
            #expect(counters.recordsConsumed <= counters.fullPolls * batch + (counters.pollsWithRecords - counters.fullPolls) * (batch - 1))
            if batch == 7 {
                // The backlog is there before the first poll: all but the polls that end a partition's records fill.
                #expect(counters.fullPolls >= records.count / batch - 2, "\(counters.fullPolls) full of \(counters.pollsWithRecords)")
            } else {
                #expect(counters.fullPolls == 0, "\(records.count) records cannot fill a batch of 1 000")
            }
        }
    }

    /// Without the repartition hop (input already partitioned by account): the same alerts, and a restart
    /// restores the state from the changelog partition of the input partition.
    @Test func skippingTheRepartitionHopGivesTheSameAlerts() throws {
        var skipping = try bench()
        skipping.skipRepartition = true
        try PipelineScenarios.scenarioAlertsSuppressesAndUpdates(skipping)
        var restarting = try bench()
        restarting.skipRepartition = true
        try PipelineScenarios.restartMidWindowRestoresStateFromTheChangelog(restarting)
    }
}

/// The same scenarios against tansu, a real Kafka-compatible broker (`make test` starts it).
@Suite(
    "Pipeline on tansu", .serialized,
    .enabled(if: ProcessInfo.processInfo.environment["AUDIT_SENTINEL_TANSU_BOOTSTRAP"] != nil, "AUDIT_SENTINEL_TANSU_BOOTSTRAP is not set: run `make test`"))
struct TansuPipelineTests {
    func bench() throws -> PipelineBench {
        try PipelineBench(tansu: ProcessInfo.processInfo.environment["AUDIT_SENTINEL_TANSU_BOOTSTRAP"]!)
    }

    @Test func scenarioAlertsSuppressesAndUpdates() throws { try PipelineScenarios.scenarioAlertsSuppressesAndUpdates(bench()) }
    @Test func restartMidWindowRestoresStateFromTheChangelog() throws { try PipelineScenarios.restartMidWindowRestoresStateFromTheChangelog(bench()) }
    @Test func replayingTheSameInputGivesIdenticalDocuments() throws { try PipelineScenarios.replayingTheSameInputGivesIdenticalDocuments(bench()) }
    @Test(arguments: PollShape.all)
    func twoInstancesShareTheWorkAndLoseNothing(poll: PollShape) throws { try PipelineScenarios.twoInstancesShareTheWorkAndLoseNothing(bench(), poll: poll) }
    @Test func malformedRecordsAreDeadLetteredAndNothingElseIsLost() throws { try PipelineScenarios.malformedRecordsAreDeadLetteredAndNothingElseIsLost(bench()) }
    @Test func inputTopicCreatedAfterStartIsConsumedWithinSeconds() throws { try PipelineScenarios.inputTopicCreatedAfterStartIsConsumedWithinSeconds(bench()) }
    @Test func sequencesSpanningARestartAndARebalanceCompleteExactlyOnce() throws {
        try PipelineScenarios.sequencesSpanningARestartAndARebalanceCompleteExactlyOnce(bench())
    }
    @Test func aggregatesSpanningARestartAndARebalanceStayExact() throws {
        try PipelineScenarios.aggregatesSpanningARestartAndARebalanceStayExact(bench())
    }
}

@Suite("Pipeline under faults and with new_terms rules (mock cluster)", .serialized)
struct PipelineFaultTests {
    /// Produce requests fail for a while: the pipeline retries with backoff, pauses its partitions, and in
    /// the end every alert is there.
    @Test func rejectedProduceRequestsAreRetriedAndNothingIsLost() throws {
        let cluster = try MockCluster(brokers: 1, logger: quiet)
        let bench = try PipelineBench(mock: cluster)
        let records = Scenario.records()
        try bench.produce(records)
        let clock = ManualClock()
        var configuration = bench.configuration()
        configuration.producerProperties = ["message.timeout.ms": "2000"]
        let runner = PipelineRunner(configuration: configuration, rules: bench.rules, provisioner: bench.broker.provisioner, logger: quiet, clock: { clock.now })
        try runner.start()
        cluster.pushRequestErrors(apiKey: MockCluster.ApiKey.produce, Array(repeating: .topicAuthorizationFailed, count: 4))
        try driveThroughWindows([runner], clock: clock, consumed: { runner.snapshot().matchesAggregated >= 68 },
                                updated: { runner.snapshot().alertsUpdated >= 3 })
        let counters = runner.snapshot()
        try runner.stop()
        #expect(counters.produceRetries > 0, "the injected failures were retried")
        let alerts = try bench.alerts(atLeast: 6)
        #expect(Set(alerts.map(\.id)).count == 3)
        #expect(Set(alerts.filter { $0.kind == "update" }.map { $0.document[path: "kibana.alert.suppression.docs_count"] }) == [19, 29, 17])
    }

    /// Every broker goes down mid-stream for a few seconds: the pipeline keeps polling without failing,
    /// resumes when the brokers are back, and the alerts are exactly those of an undisturbed run.
    @Test func brokersGoingDownMidStreamPauseAndResumeLosingNothing() throws {
        let cluster = try MockCluster(brokers: 3, logger: quiet)
        let bench = try PipelineBench(mock: cluster)
        let records = Scenario.records()
        let half = records.count / 2
        try bench.produce(Array(records[..<half]))
        let clock = ManualClock()
        var configuration = bench.configuration()
        configuration.producerProperties = ["message.timeout.ms": "3000"]
        let runner = PipelineRunner(configuration: configuration, rules: bench.rules, provisioner: bench.broker.provisioner, logger: quiet, clock: { clock.now })
        try runner.start()
        try drive([runner], clock: clock, until: { runner.snapshot().alertsNew >= 2 })

        try cluster.setBrokerDown()
        let producer = try KafkaProducer(configuration: bench.kafka.merging(["message.timeout.ms": "60000"]), logger: quiet)
        for record in records[half...] {
            try producer.send(ProducerMessage(topic: bench.input, key: Array(record.key.utf8), value: record.value, timestamp: record.timestamp))
        }
        let outage = ContinuousClock.now + .seconds(4)
        var processedDuringOutage = 0
        while ContinuousClock.now < outage { processedDuringOutage += try runner.runOnce() }
        #expect(processedDuringOutage == 0, "nothing can be read while every broker is down")
        try cluster.setBrokerUp()
        try producer.flush(timeout: .seconds(30))

        try driveThroughWindows([runner], clock: clock, consumed: { runner.snapshot().inputRecords >= records.count && runner.snapshot().matchesAggregated >= 68 },
                                updated: { runner.snapshot().alertsUpdated >= 3 })
        let counters = runner.snapshot()
        try runner.stop()
        #expect(counters.inputRecords >= records.count)
        #expect(counters.deadLettered == 0)
        let alerts = try bench.alerts(atLeast: 6)
        #expect(Set(alerts.map(\.id)).count == 3)
        #expect(Set(alerts.filter { $0.kind == "update" }.map { $0.document[path: "kibana.alert.suppression.docs_count"] }) == [19, 29, 17])
    }

    /// The alerts topic alone becomes unwritable (its leader's broker is down): the instance pauses its
    /// partitions and resends with backoff, commits no match offset past an unacknowledged alert (while the
    /// input, whose matches were acknowledged, commits on), and when the broker returns every alert is
    /// delivered.
    @Test func anUnwritableAlertsTopicHoldsCommitsBackUntilItRecovers() throws {
        let cluster = try MockCluster(brokers: 3, logger: quiet)
        let bench = try PipelineBench(mock: cluster)
        let records = Scenario.records()
        try bench.produce(records)
        let clock = ManualClock()
        var configuration = bench.configuration()
        configuration.producerProperties = ["message.timeout.ms": "1500"]
        try cluster.setCoordinator(key: configuration.applicationID, broker: 1)
        try cluster.setCoordinator(key: "\(configuration.applicationID)-restore", broker: 1)
        try cluster.createTopic(bench.alerts, partitions: 3)
        for partition in 0..<3 { try cluster.setPartitionLeader(topic: bench.alerts, partition: Int32(partition), broker: 3) }
        try cluster.setBrokerDown(3)
        let runner = PipelineRunner(configuration: configuration, rules: bench.rules, provisioner: bench.broker.provisioner, logger: quiet, clock: { clock.now })
        try runner.start()
        // Everything on broker 1 except the alerts topic, which broker 3 — down — leads.
        let rule = try #require(bench.rules.rules.first).id
        for (topic, partitions) in [(bench.input, 1), (configuration.matchesTopic(rule), Int(configuration.internalPartitions)),
                                    (configuration.stateTopic(rule), Int(configuration.internalPartitions)), (configuration.deadLetterTopic(bench.input), 1)] {
            for partition in 0..<partitions { try cluster.setPartitionLeader(topic: topic, partition: Int32(partition), broker: 1) }
        }

        // The instance runs on its own thread: with its alerts failing it stays inside its delivery loop,
        // resending with backoff and its partitions paused, until they are acknowledged.
        let running = Atomic<Bool>(true)
        // Driven by the loop thread alone until it has finished; this thread reads only `status` meanwhile.
        nonisolated(unsafe) let driven = runner
        let loop = Thread {
            while running.load(ordering: .acquiring) { _ = try? driven.runOnce() }
        }
        loop.start()
        let raised = ContinuousClock.now + .seconds(60)
        while runner.snapshot().alertsNew < 3 && ContinuousClock.now < raised { Thread.sleep(forTimeInterval: 0.05) }
        // Past message.timeout.ms the alerts fail and are resent.
        let failing = ContinuousClock.now + .seconds(60)
        while runner.snapshot().produceRetries == 0 && ContinuousClock.now < failing { Thread.sleep(forTimeInterval: 0.1) }
        Thread.sleep(forTimeInterval: 1)   // time for a (wrong) commit to happen
        let during = runner.snapshot()
        #expect(during.alertsNew >= 3, "the alerts were raised: \(during)")
        #expect(during.produceRetries > 0, "the failed alerts are being retried: \(during)")
        // The first match of every matches partition raised an alert (a new account) that is not acknowledged:
        // no matches partition may have a committed offset past 0.
        let reader = try KafkaConsumer(configuration: bench.kafka.merging(["group.id": configuration.applicationID]), logger: quiet)
        let matchesPartitions = (0..<configuration.internalPartitions).map { TopicPartition(configuration.matchesTopic(rule), $0) }
        let committed = try reader.committed(matchesPartitions)
        #expect(committed.count == matchesPartitions.count)
        #expect(committed.allSatisfy { $0.offset <= 0 }, "committed past an unacknowledged alert: \(committed)")
        // Meanwhile the input, whose outputs (the matches) were acknowledged, was committed to its end.
        #expect(try reader.committed([TopicPartition(bench.input, 0)]).first?.offset == Int64(records.count))
        try reader.close()

        // Back: the resent alerts are acknowledged and the loop returns.
        try cluster.setBrokerUp(3)
        running.store(false, ordering: .releasing)
        let recovered = ContinuousClock.now + .seconds(60)
        while !loop.isFinished && ContinuousClock.now < recovered { Thread.sleep(forTimeInterval: 0.05) }
        #expect(loop.isFinished, "the delivery loop did not come back after the broker did")
        try driveThroughWindows([runner], clock: clock, consumed: { runner.snapshot().matchesAggregated >= 68 },
                                updated: { runner.snapshot().alertsUpdated >= 3 })
        try runner.stop()
        let alerts = try bench.alerts(atLeast: 6)
        #expect(Set(alerts.map(\.id)).count == 3)
        #expect(Set(alerts.filter { $0.kind == "update" }.map { $0.document[path: "kibana.alert.suppression.docs_count"] }) == [19, 29, 17])
    }

    /// A `new_terms` rule alerts once per new combination of its terms, keyed and remembered per partition.
    @Test func newTermsRulesAlertOncePerNewCombination() throws {
        let cluster = try MockCluster(brokers: 1, logger: quiet)
        var bench = try PipelineBench(mock: cluster)
        let ruleFile = FileManager.default.temporaryDirectory.appendingPathComponent("new-terms-\(UUID().uuidString).toml")
        try #"""
            [metadata]
            creation_date = "2026/11/27"

            [rule]
            author = ["Audit Sentinel tests"]
            description = "A denied service-account request with a user agent not seen for that account."
            name = "Denied Service Account Request From A New User Agent"
            risk_score = 21
            rule_id = "0b6f2c1e-5a34-4d7b-9c1f-2e8a7d6b5c40"
            severity = "low"
            type = "new_terms"
            language = "kuery"
            timestamp_override = "event.ingested"
            query = '''
            kubernetes.audit.user.username:system\:serviceaccount\:* and kubernetes.audit.annotations.authorization_k8s_io/decision:"forbid"
            '''

            [rule.new_terms]
            field = "new_terms_fields"
            value = ["kubernetes.audit.user.username", "user_agent.original"]
            [[rule.new_terms.history_window_start]]
            field = "history_window_start"
            value = "now-7d"
            """#.write(to: ruleFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: ruleFile) }
        bench = PipelineBench(copying: bench, rules: try RuleSet.load(files: [ruleFile.path]))

        let records = Scenario.records()
        // The expected alerts: the distinct (account, user agent) pairs of denied service-account requests.
        var pairs = Set<[String]>()
        for record in records {
            record.value.withUnsafeBytes { buffer in
                AuditRecordDecoder().decode(buffer) { result in
                    guard case .success(let event) = result, bench.rules.rules[0].matches(event) else { return }
                    pairs.insert([event.firstString("kubernetes.audit.user.username") ?? "", event.firstString("user_agent.original") ?? ""])
                }
            }
        }
        try bench.produce(records)
        let clock = ManualClock()
        let runner = bench.runner(clock)
        try runner.start()
        try drive([runner], clock: clock, until: { runner.snapshot().matchesAggregated >= 68 })
        try runner.stop()
        let alerts = try bench.alerts(atLeast: pairs.count)
        #expect(pairs.count > 2)
        #expect(alerts.count == pairs.count, "one alert per new combination")
        #expect(Set(alerts.compactMap { alert -> [String]? in
            guard let user = alert.document[path: "kubernetes.audit.user.username"]?.stringValue,
                  let agent = alert.document[path: "user_agent.original"]?.stringValue else { return nil }
            return [user, agent]
        }) == pairs)
    }
}

extension PipelineBench {
    init(copying other: PipelineBench, rules: RuleSet) {
        self = other
        self.rules = rules
    }
}
