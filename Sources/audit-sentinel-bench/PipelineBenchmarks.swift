import AuditEvents
import CHeapStatistics
import Detection
import Foundation
import Kafka
import Logging
import Pipeline
import Synchronization

// MARK: 1. Core, no Kafka

/// The whole per-record path on one core — decode, normalize (lazy view; the full document for matches),
/// evaluate, build the match, apply it to the suppression windows — beside a straightforward Foundation
/// `JSONDecoder` implementation of the same rule and the same per-account windows.
struct CoreBenchmark {
    let rulePath: String

    func run(report: inout BenchReport) throws {
        let rule = try CompiledRule.load(file: rulePath)
        let ruleSet = RuleSet([rule])
        let count = environmentInt("BENCH_EVENTS", 20_000)
        let duration: Int64 = 5 * 60_000
        for rate in [0.001, 0.01, 0.1] {
            let records = corpus(count: count, matchRate: rate, seed: 21)
            let bytes = Double(records.reduce(0) { $0 + $1.count })
            let label = rate == 0.001 ? "0.1 %" : rate == 0.01 ? "1 %" : "10 %"

            func ours(validateEveryRecord: Bool) -> (seconds: Double, result: Int) {
                best(rounds: 5) { Self.measuredPass(rules: [rule], prefilter: ruleSet.prefilter, records: records, validateEveryRecord: validateEveryRecord) }
            }

            let foundation = best(rounds: 3) {
                let jsonDecoder = JSONDecoder()
                var windows: [String: (start: Int64, count: Int)] = [:]
                var matches = 0
                for (index, record) in records.enumerated() {
                    guard let event = try? jsonDecoder.decode(DecodeBenchmark.CodableEvent.self, from: Data(record)),
                          event.kind == "Event", let user = event.user?.username, user.hasPrefix("system:serviceaccount:"),
                          event.annotations?["authorization.k8s.io/decision"] == "forbid"
                    else { continue }
                    let time = 1_763_625_600_000 + Int64(index)
                    if let window = windows[user], time < window.start + duration {
                        windows[user]?.count += 1
                    } else {
                        windows[user] = (time, 0)
                    }
                    matches += 1
                }
                return matches
            }
            let validating = ours(validateEveryRecord: true)
            let fast = ours(validateEveryRecord: false)
            precondition(validating.result == foundation.result && fast.result == foundation.result,
                         "matches differ: ours \(validating.result)/\(fast.result), JSONDecoder \(foundation.result)")
            let events = Double(records.count)
            report.add("core", "JSONDecoder + seed rule + windows, \(label) matches", events: events / foundation.seconds, bytes: bytes / foundation.seconds)
            report.add("core", "ours, every record decoded, \(label) matches", events: events / validating.seconds, bytes: bytes / validating.seconds,
                       ratio: foundation.seconds / validating.seconds, ratioName: "× JSONDecoder")
            report.add("core", "ours, prefilter first, \(label) matches", events: events / fast.seconds, bytes: bytes / fast.seconds,
                       ratio: foundation.seconds / fast.seconds, ratioName: "× JSONDecoder")
        }
        report.note("core: \(count) events per rate, one thread; 'every record decoded' is the default (malformed records reach the DLQ), 'prefilter first' is processing.validate_every_record = false")
        try runElasticRuleSet(count: count, report: &report)
    }

    /// Elastic's Kubernetes rules (KQL, EQL with the sequence, ES|QL with and without STATS; from
    /// `AUDIT_SENTINEL_SHARED_TESTDATA` or ../shared/testdata), all loaded at once, at 1 % seed-rule matches:
    /// the cost of a full rule set against the seed rule alone, in the same run.
    func runElasticRuleSet(count: Int, report: inout BenchReport) throws {
        let testdata = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_SHARED_TESTDATA"] ?? "../shared/testdata"
        let directory = (testdata as NSString).appendingPathComponent("elastic-detection-rules-kubernetes")
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: directory).filter({ $0.hasSuffix(".toml") }).sorted() else {
            report.note("core: Elastic's rule set not measured (\(directory) not found)")
            return
        }
        let elastic = files.compactMap { try? CompiledRule.load(file: (directory as NSString).appendingPathComponent($0)) }
        let seed = try CompiledRule.load(file: rulePath)
        let records = corpus(count: count, matchRate: 0.01, seed: 21)
        let bytes = Double(records.reduce(0) { $0 + $1.count })
        let alone = best(rounds: 5) { Self.measuredPass(rules: [seed], prefilter: RuleSet([seed]).prefilter, records: records, validateEveryRecord: true) }
        let all = best(rounds: 5) { Self.measuredPass(rules: elastic, prefilter: RuleSet(elastic).prefilter, records: records, validateEveryRecord: true) }
        let events = Double(records.count)
        let kinds = Dictionary(grouping: elastic) { rule in
            rule.sequence != nil ? "EQL sequence" : rule.rule.type == .eql ? "EQL" : rule.esql?.isAggregating == true ? "ES|QL STATS"
                : rule.rule.type == .esql ? "ES|QL" : "KQL"
        }.mapValues(\.count)
        report.add("core", "ours, Elastic's \(elastic.count) rules loaded, 1 % matches", events: events / all.seconds, bytes: bytes / all.seconds,
                   ratio: all.seconds / alone.seconds, ratioName: "× the time of the seed rule alone")
        report.note("core: Elastic's rule set = \(kinds.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")) of \(files.count) files; \(all.result) matches over \(records.count) events")
    }
}

extension CoreBenchmark {
    /// One pass of the default core (every record validated), for instruction counts (callgrind).
    func once(records: [[UInt8]]) throws -> Int {
        let rule = try CompiledRule.load(file: rulePath)
        return Self.measuredPass(rules: [rule], prefilter: RuleSet([rule]).prefilter, records: records, validateEveryRecord: true)
    }

    /// The core over `records`: a record no rule can match is judged by the validation-only pass (or, with
    /// `validateEveryRecord` off, skipped); candidates are decoded, evaluated, their matches applied.
    @inline(never)
    static func measuredPass(rules: [CompiledRule], prefilter: PrefilterSet, records: [[UInt8]], validateEveryRecord: Bool) -> Int {
        let decoder = AuditRecordDecoder()
        let groupBy = [FieldPath("kubernetes.audit.user.username")]
        var states = rules.map { rule in
            RuleState(rule: rule.rule, suppression: .pipelineDefault, graceMilliseconds: 30_000, idleTimeoutMilliseconds: 60_000,
                      sequence: rule.sequence.map { ($0.steps.count, $0.maxspanMilliseconds ?? 3_600_000) },
                      esql: rule.esql.map { ($0, rule.schedule.interval, rule.schedule.lookback) })
        }
        var matches = 0
        // As the stream task does: the prefilter's search order learned over the records.
        var order = PrefilterSet.SearchOrder()
        for (index, record) in records.enumerated() {
            record.withUnsafeBytes { buffer in
                guard decoder.screen(buffer, prefilter: prefilter, order: &order, validate: validateEveryRecord, { _ in }) == .candidate else { return }
                decoder.decode(buffer, ingestTime: 1_763_625_600_000 + Int64(index)) { result in
                    guard case .success(let event) = result else { return }
                    for (ruleIndex, rule) in rules.enumerated() where rule.esql != nil || rule.matches(event) {
                        let position = RecordPosition(topic: "in", partition: 0, offset: Int64(index))
                        for match in rule.ruleMatches(for: event, groupBy: groupBy, source: position, sequence: 0, ingestTime: 0) {
                            if states[ruleIndex].sequences != nil {
                                _ = states[ruleIndex].applySequenceStep(match, now: 0)
                            } else if states[ruleIndex].aggregation != nil {
                                _ = states[ruleIndex].applyContribution(match, now: 0)
                                _ = states[ruleIndex].takeExecutionResults()
                            } else {
                                _ = states[ruleIndex].apply(match, rule: rule.rule, now: 0)
                            }
                            matches += 1
                        }
                    }
                }
            }
        }
        return matches
    }
}

// MARK: 4. Memory per open window

/// Heap bytes in use (glibc's allocator statistics): exact, unlike RSS, which keeps freed pages.
func heapInUse() -> Int { Int(heap_statistics_in_use()) }

/// The process's peak resident set (VmHWM), in bytes.
func peakResidentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
    return kilobytes * 1024
}

struct MemoryBenchmark {
    let rulePath: String

    func run(report: inout BenchReport) throws {
        let rule = try CompiledRule.load(file: rulePath)
        let groupBy = [FieldPath("kubernetes.audit.user.username")]
        let decoder = AuditRecordDecoder()
        let largest = environmentInt("BENCH_MEMORY_MAX_WINDOWS", 1_000_000)
        let sizes = [1_000, 100_000, 1_000_000].filter { $0 <= largest }
        var traffic = SyntheticAuditTraffic(seed: 5)
        // A few hundred distinct denied events, each reused under many account names.
        let templates = (0..<256).map { _ in traffic.next(.deniedServiceAccount, user: "system:serviceaccount:TEMPLATE:worker").json }
        for size in sizes {
            // The suppressor alone: the pipeline's per-key changelog bookkeeping is drained every batch.
            var suppressor = AlertSuppressor(configuration: .init(duration: DetectionRule.AlertSuppression.pipelineDefault.durationMilliseconds))
            let heapBefore = heapInUse()
            for index in 0..<size {
                let text = templates[index % templates.count].replacingOccurrences(of: "TEMPLATE", with: "ns-\(index)")
                Array(text.utf8).withUnsafeBytes { buffer in
                    decoder.decode(buffer, ingestTime: 1_763_625_600_000) { result in
                        guard case .success(let event) = result, rule.matches(event) else { return }
                        let position = RecordPosition(topic: "in", partition: 0, offset: Int64(index))
                        for match in rule.ruleMatches(for: event, groupBy: groupBy, source: position, sequence: 0, ingestTime: 0) {
                            _ = suppressor.apply(match, offset: match.sourcePosition, now: 0)
                        }
                    }
                }
            }
            precondition(suppressor.openWindowCount == size, "expected \(size) open windows, got \(suppressor.openWindowCount)")
            let heapOpen = heapInUse()
            // Stream time far beyond every window: all close.
            _ = suppressor.tick(now: .max / 2)
            _ = suppressor.closeAll()
            heap_statistics_trim()
            let heapClosed = heapInUse()
            precondition(suppressor.openWindowCount == 0)
            let perWindow = Double(heapOpen - heapBefore) / Double(size)
            report.add("memory", "open windows: \(size) accounts", events: nil, ratio: perWindow, ratioName: " B/window")
            report.note(String(format: "memory: %d windows: %.0f bytes each (heap in use); after they close: %.0f bytes retained per former window",
                               size, perWindow, Double(heapClosed - heapBefore) / Double(size)))
        }
        try pendingSequences(report: &report)
        report.note("memory: peak RSS of the whole benchmark process so far \(String(format: "%.0f", Double(peakResidentBytes()) / 1e6)) MB")
    }
}

extension MemoryBenchmark {
    /// Pending EQL sequences: one per account, each holding its first step's match (its ECS document as
    /// canonical bytes, as the pipeline keeps it), for an Elastic-like two-step sequence by user.name.
    func pendingSequences(report: inout BenchReport) throws {
        let rule = try CompiledRule(DetectionRule.parse(toml: #"""
            [rule]
            name = "bench sequence"
            rule_id = "bench-sequence"
            type = "eql"
            language = "eql"
            risk_score = 47
            severity = "medium"
            description = "bench"
            timestamp_override = "event.ingested"
            query = '''sequence by user.name with maxspan=5m [any where kubernetes.audit.verb == "list"] [any where kubernetes.audit.verb == "delete"]'''
            """#))
        let decoder = AuditRecordDecoder()
        var traffic = SyntheticAuditTraffic(seed: 6)
        let templates = (0..<256).map { _ in traffic.next(.deniedServiceAccount, user: "system:serviceaccount:TEMPLATE:worker", verb: "list").json }
        for size in [1_000, 100_000].filter({ $0 <= environmentInt("BENCH_MEMORY_MAX_WINDOWS", 1_000_000) }) {
            var state = RuleState(rule: rule.rule, suppression: .pipelineDefault, graceMilliseconds: 30_000, idleTimeoutMilliseconds: 60_000,
                                  sequence: (2, 300_000))
            let heapBefore = heapInUse()
            for index in 0..<size {
                let text = templates[index % templates.count].replacingOccurrences(of: "TEMPLATE", with: "ns-\(index)")
                Array(text.utf8).withUnsafeBytes { buffer in
                    decoder.decode(buffer, ingestTime: 1_763_625_600_000) { result in
                        guard case .success(let event) = result else { return }
                        let position = RecordPosition(topic: "in", partition: 0, offset: Int64(index))
                        for match in rule.ruleMatches(for: event, groupBy: [], source: position, sequence: 0, ingestTime: 0) {
                            _ = state.applySequenceStep(match, now: 0)
                        }
                    }
                }
            }
            let pending = state.sequences?.pendingCount ?? 0
            precondition(pending == size, "expected \(size) pending sequences, got \(pending)")
            let perSequence = Double(heapInUse() - heapBefore) / Double(size)
            report.add("memory", "pending sequences: \(size) accounts", events: nil, ratio: perSequence, ratioName: " B/sequence")
            report.note(String(format: "memory: %d pending EQL sequences (one step matched, its document kept): %.0f bytes each (heap in use, changelog bookkeeping included)", size, perSequence))
        }
    }
}

// MARK: 2, 3, 5. End to end on a broker

/// A broker the end-to-end benchmarks run on.
struct BenchBroker: @unchecked Sendable {
    let name: String
    let bootstrap: String
    let createTopic: (String, Int32) throws -> Void
    let owner: AnyObject?
    let provisioner: any TopicProvisioner

    static func mock() throws -> BenchBroker {
        let cluster = try MockCluster(brokers: 1, logger: benchLogger)
        return BenchBroker(name: "mock", bootstrap: cluster.bootstrapServers, createTopic: { try cluster.createTopic($0, partitions: $1) },
                           owner: cluster, provisioner: MockTopicProvisioner(cluster: cluster))
    }

    static func tansu(_ bootstrap: String) throws -> BenchBroker {
        let configuration = KafkaConfiguration(["bootstrap.servers": bootstrap])
        let admin = try KafkaAdmin(configuration: configuration, logger: benchLogger)
        return BenchBroker(name: "tansu", bootstrap: bootstrap,
                           createTopic: { try admin.createTopics([NewTopic(name: $0, partitions: $1, replicationFactor: 1)]) },
                           owner: nil, provisioner: try AdminTopicProvisioner(configuration: configuration, logger: benchLogger))
    }

    var kafka: KafkaConfiguration { KafkaConfiguration(["bootstrap.servers": bootstrap, "topic.metadata.refresh.interval.ms": "1000"]) }

    /// Consumer settings shared by the raw consumer and the pipeline.
    static let consumerProperties = [
        "session.timeout.ms": "10000", "heartbeat.interval.ms": "1000", "fetch.wait.max.ms": "50",
        "fetch.max.bytes": "52428800", "max.partition.fetch.bytes": "10485760", "queued.min.messages": "200000",
    ]

    func produce(_ records: [[UInt8]], topic: String, partitions: Int32) throws {
        let failures = Atomic<Int>(0)
        let producer = try KafkaProducer(configuration: kafka.merging(["linger.ms": "20", "queue.buffering.max.messages": "1000000"]),
                                         logger: benchLogger) { report in
            if report.error != nil { failures.add(1, ordering: .relaxed) }
        }
        for (index, record) in records.enumerated() {
            while true {
                switch Result(catching: { () throws(KafkaError) in
                    try producer.send(ProducerMessage(topic: topic, partition: Int32(index) % partitions, key: nil, value: record))
                }) {
                case .success: break
                case .failure(let error) where error.code == .queueFull:
                    producer.poll(timeout: .milliseconds(10))
                    continue
                case .failure(let error): throw error
                }
                break
            }
        }
        try producer.flush(timeout: .seconds(120))
        precondition(failures.load(ordering: .relaxed) == 0, "\(failures.load(ordering: .relaxed)) records not delivered to \(name)")
    }
}

struct EndToEndBenchmark {
    let broker: BenchBroker
    let rules: RuleSet

    /// (a) A raw librdkafka consumer in a fresh group that only touches each payload; with `readEveryByte`,
    /// it also reads every byte of it once (memchr): what bringing the payloads from the fetch thread's core
    /// costs a consumer that reads them, apart from what it does with them.
    func rawConsumer(topic: String, count: Int, readEveryByte: Bool = false) throws -> Double {
        let consumer = try KafkaConsumer(configuration: broker.kafka.merging([
            "group.id": "raw-\(UUID().uuidString)", "auto.offset.reset": "earliest", "enable.auto.commit": "false",
        ]).merging(BenchBroker.consumerProperties), logger: benchLogger)
        defer { try? consumer.close() }
        try consumer.subscribe(topics: [topic])
        var seen = 0
        var checksum = 0
        var started: ContinuousClock.Instant?
        let deadline = ContinuousClock.now + .seconds(300)
        while seen < count, ContinuousClock.now < deadline {
            try consumer.poll(maxMessages: 1000, timeout: .milliseconds(100)) { batch in
                if started == nil, !batch.isEmpty { started = .now }
                for record in batch {
                    let payload = record.payload
                    if readEveryByte, let base = payload.baseAddress, memchr(base, 0, payload.count) != nil { checksum &+= 1 }
                    checksum &+= Int(payload.first ?? 0) &+ Int(payload.last ?? 0) &+ payload.count
                    seen += 1
                }
            }
        }
        let elapsed = started!.duration(to: .now)
        announcePhase("raw", lasted: elapsed)
        precondition(seen >= count, "raw consumer read \(seen) of \(count) records on \(broker.name)")
        precondition(checksum != 0)
        return Double(count) / seconds(elapsed)
    }

    func pipelineConfiguration(applicationID: String, input: String) -> PipelineConfiguration {
        var configuration = PipelineConfiguration(applicationID: applicationID, kafka: broker.kafka, inputTopics: [input], alertsTopic: "\(applicationID)-alerts")
        // The pipeline's own fetch wait (10 ms) and linger (1 ms); the raw consumer's other settings.
        configuration.consumerProperties = BenchBroker.consumerProperties.filter { $0.key != "fetch.wait.max.ms" }
        configuration.internalPartitions = 6
        if let linger = ProcessInfo.processInfo.environment["BENCH_LINGER_MS"] { configuration.producerProperties["linger.ms"] = linger }
        // Extra consumer settings for the pipeline alone, `name=value,…` (experiments with librdkafka's queue).
        if let extra = ProcessInfo.processInfo.environment["BENCH_PIPELINE_CONSUMER"] {
            for pair in extra.split(separator: ",") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                precondition(parts.count == 2, "BENCH_PIPELINE_CONSUMER: \(pair) is not name=value")
                configuration.consumerProperties[String(parts[0])] = String(parts[1])
            }
        }
        configuration.replicationFactor = broker.name == "tansu" ? 1 : -1
        return configuration
    }

    /// One timed run of the pipeline: its rate, its loop thread's CPU per record, and how many of its polls
    /// that returned records were full (`processing.max_batch`): all full means the records were always
    /// there, and processing set the pace.
    struct PipelineRound {
        var eventsPerSecond: Double
        /// CPU time of the loop's thread per record (one instance; with several, the one that finished).
        var loopMicrosecondsPerRecord: Double
        var fullPolls: Int
        var polls: Int
    }

    /// (b) Pipeline instances (threads of this process, one group) until every input record is processed.
    /// - Parameter produceWhenSettled: when given, the input is produced by it once every instance is ready
    ///   (joined, assigned, restored); otherwise it is there already.
    /// - Parameter awaitMatches: the round also waits until every match the instances found has been read
    ///   back from the repartition topic and aggregated (for instruction counts that do not depend on how
    ///   far the read-back had got when the input ran out).
    func pipeline(topic: String, count: Int, instances: Int = 1, validateEveryRecord: Bool = true, awaitMatches: Bool = false,
                  produceWhenSettled: (() throws -> Void)? = nil) throws -> PipelineRound {
        var configuration = pipelineConfiguration(applicationID: "bench-\(UUID().uuidString.prefix(8))", input: topic)
        configuration.validateEveryRecord = validateEveryRecord
        let runners = (0..<instances).map { _ in PipelineRunner(configuration: configuration, rules: rules, provisioner: broker.provisioner, logger: benchLogger) }
        for runner in runners { try runner.start() }
        let statuses = runners.map(\.status)
        @Sendable func inputRecords() -> Int { statuses.reduce(0) { $0 + $1.counterSnapshot.inputRecords } }
        @Sendable func matchesPending() -> Bool {
            let counters = statuses.map(\.counterSnapshot)
            return counters.reduce(0) { $0 + $1.matches.values.reduce(0, +) } > counters.reduce(0) { $0 + $1.matchesAggregated }
        }
        // The clock starts once the first batch is processed (its wait for the group, assignment and
        // fetch are start-up, not throughput) and counts the input records processed after it; it stops
        // when the last input record is processed, read by the thread that processed it (as the raw
        // consumer times itself), not by the waiting thread's next look.
        let started = Mutex<(time: ContinuousClock.Instant, records: Int)?>(nil)
        let finished = Mutex<ContinuousClock.Instant?>(nil)
        // CPU seconds the loops' threads spent between their first batch and the last record (what the
        // pipeline's own thread costs per record, apart from how the two cores were shared).
        let loopCPU = Mutex<Double>(0)
        let done = Atomic<Bool>(false)
        let threads = runners.map { runner in
            // Handed to its thread: from here until `done`, only that thread touches the runner.
            nonisolated(unsafe) let runner = runner
            let thread = Thread {
                // Named for profiles (scripts/profile-e2e.sh): the loop's thread apart from librdkafka's rdk:*.
                Thread.current.name = "pipeline"
                var cpuAtStart: Double?
                while !done.load(ordering: .acquiring) {
                    guard (try? runner.runOnce()) ?? 0 > 0 else { continue }
                    let now = ContinuousClock.now
                    let processed = inputRecords()
                    started.withLock { if $0 == nil { $0 = (now, processed) } }
                    if cpuAtStart == nil { cpuAtStart = threadCPUSeconds() }
                    if processed >= count, !awaitMatches || !matchesPending() {
                        let first = finished.withLock { stamp in
                            defer { if stamp == nil { stamp = now } }
                            return stamp == nil
                        }
                        if first { loopCPU.withLock { $0 += threadCPUSeconds() - cpuAtStart! } }
                    }
                }
            }
            thread.start()
            return thread
        }
        _ = threads
        if let produceWhenSettled {
            // Settled: every member ready, and no rebalance for a second (a member that joined last may
            // still set one off after the others are ready).
            let settling = ContinuousClock.now + .seconds(60)
            var rebalances = -1
            var quietSince = ContinuousClock.now
            while ContinuousClock.now < settling {
                let now = statuses.reduce(0) { $0 + $1.counterSnapshot.rebalances }
                if now != rebalances || !statuses.allSatisfy(\.isReady) { rebalances = now; quietSince = .now }
                if quietSince.duration(to: .now) >= .seconds(1) { break }
                Thread.sleep(forTimeInterval: 0.01)
            }
            try produceWhenSettled()
        }
        let deadline = ContinuousClock.now + .seconds(600)
        while finished.withLock({ $0 == nil }), ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.005) }
        let end = finished.withLock { $0 } ?? ContinuousClock.now
        let start = started.withLock { $0 } ?? (time: end, records: 0)
        announcePhase(validateEveryRecord ? "pipeline" : "pipeline-prefilter-first", lasted: start.time.duration(to: end), endedAgo: end.duration(to: .now))
        done.store(true, ordering: .releasing)
        Thread.sleep(forTimeInterval: 0.3)
        let processed = inputRecords()
        for runner in runners { try? runner.stop() }
        precondition(processed >= count, "pipeline processed \(processed) of \(count) records on \(broker.name)")
        precondition(start.records < count, "the first batch held every record: nothing left to time on \(broker.name)")
        let counters = statuses.map(\.counterSnapshot)
        return PipelineRound(eventsPerSecond: Double(count - start.records) / seconds(start.time.duration(to: end)),
                             loopMicrosecondsPerRecord: loopCPU.withLock { $0 } * 1e6 / Double(count - start.records),
                             fullPolls: counters.reduce(0) { $0 + $1.fullPolls }, polls: counters.reduce(0) { $0 + $1.pollsWithRecords })
    }

    /// The share of matching events in the end-to-end runs: 1 %, or BENCH_E2E_MATCH_RATE (a burst of
    /// denials is what makes matches frequent).
    static let matchRate = Double(ProcessInfo.processInfo.environment["BENCH_E2E_MATCH_RATE"] ?? "0.01") ?? 0.01

    /// One round of the pipeline, every record validated, over `count` fresh events on 6 partitions
    /// (``matchRate`` of them matching).
    func pipelineOnce(count: Int) throws -> PipelineRound {
        let input = "once-\(UUID().uuidString.prefix(8))"
        try broker.createTopic(input, 6)
        try broker.produce(corpus(count: count, matchRate: Self.matchRate, seed: 31), topic: input, partitions: 6)
        return try pipeline(topic: input, count: count, awaitMatches: true)
    }

    func run(report: inout BenchReport) throws {
        // The mock keeps 5 MB a partition: 80 000 events (100 MB) need 24 partitions. Runs of 20 000 on 6
        // lasted 15–40 ms and their pipeline rounds spread from 297 to 935 k events/s (578–775 k in the
        // first five runs at 80 000).
        let mock = broker.name == "mock"
        let count = environmentInt("BENCH_E2E_EVENTS", mock ? 80_000 : 20_000)
        // Five rounds on the mock (each a fraction of a second, and single rounds vary by tens of per cent),
        // three on tansu (each about a second).
        let rounds = max(1, environmentInt("BENCH_E2E_ROUNDS", mock ? 5 : 3))
        let input = "e2e-\(UUID().uuidString.prefix(8))"
        let partitions = Int32(environmentInt("BENCH_E2E_PARTITIONS", mock ? 24 : 6))
        try broker.createTopic(input, partitions)
        let records = corpus(count: count, matchRate: Self.matchRate, seed: 31)
        let bytes = Double(records.reduce(0) { $0 + $1.count })
        try broker.produce(records, topic: input, partitions: partitions)
        // A broker serves a topic's first full read slower than the next ones: read once before measuring.
        _ = try rawConsumer(topic: input, count: count)
        // Rounds of the three, interleaved, and their medians: one run of each varies by tens of per cent here.
        var raw: [Double] = [], fast: [Double] = [], rawRead: [Double] = []
        var validatingRounds: [PipelineRound] = []
        for _ in 0..<rounds {
            raw.append(try rawConsumer(topic: input, count: count))
            rawRead.append(try rawConsumer(topic: input, count: count, readEveryByte: true))
            validatingRounds.append(try pipeline(topic: input, count: count))
            fast.append(try pipeline(topic: input, count: count, validateEveryRecord: false).eventsPerSecond)
        }
        let validating = validatingRounds.map(\.eventsPerSecond)
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        let limit = median(raw)
        report.add("e2e", "\(broker.name): raw librdkafka consumer (limit)", events: limit, bytes: limit * bytes / Double(count))
        report.add("e2e", "\(broker.name): pipeline, every record decoded", events: median(validating), bytes: median(validating) * bytes / Double(count),
                   ratio: median(validating) / limit, ratioName: " of raw")
        report.add("e2e", "\(broker.name): pipeline, prefilter first", events: median(fast), bytes: median(fast) * bytes / Double(count),
                   ratio: median(fast) / limit, ratioName: " of raw")
        func list(_ values: [Double]) -> String { values.map { String(format: "%.0f", $0) }.joined(separator: ", ") }
        report.note("e2e \(broker.name): \(count) events (\(String(format: "%g", Self.matchRate * 100)) % matches) on \(partitions) partitions, medians of \(rounds) interleaved rounds "
                    + "(after one unmeasured read); raw \(list(raw)), raw reading every byte \(list(rawRead)), pipeline \(list(validating)), prefilter first \(list(fast)) ev/s; "
                    + "pipeline polls full (of those with records): \(validatingRounds.map { "\($0.fullPolls)/\($0.polls)" }.joined(separator: ", ")); "
                    + "pipeline loop thread's CPU per record: \(validatingRounds.map { String(format: "%.2f", $0.loopMicrosecondsPerRecord) }.joined(separator: ", ")) µs")
    }

    /// 5. Throughput with 1, 2 and 3 instances in one group on a 6-partition input.
    func scaleOut(report: inout BenchReport) throws {
        let count = environmentInt("BENCH_SCALE_EVENTS", 20_000)
        let records = corpus(count: count, matchRate: 0.01, seed: 41)
        var single = 0.0
        for instances in 1...3 {
            // A fresh topic, filled once every member has joined and restored: the figure is throughput, not
            // the rebalance a member joining late would cause mid-run.
            let input = "scale-\(instances)-\(UUID().uuidString.prefix(8))"
            try broker.createTopic(input, 6)
            let rate = try pipeline(topic: input, count: count, instances: instances) {
                try broker.produce(records, topic: input, partitions: 6)
            }.eventsPerSecond
            if instances == 1 { single = rate }
            report.add("scale", "\(broker.name): \(instances) instance(s), one group, 6 partitions", events: rate, ratio: rate / single, ratioName: "× one instance")
        }
        report.note("scale: instances are threads of one process on a 2-core machine: this measures coordination overhead, not speed-up; the input is produced once the group has settled")
    }
}

// MARK: 3. Latency at a fixed offered rate

struct LatencyBenchmark {
    let broker: BenchBroker
    let rules: RuleSet

    /// Produces at `rate` events/s for `duration` seconds, 1 % of them denied requests of distinct service
    /// accounts (each one a new alert), and measures each new alert's latency: record timestamp
    /// (`event.ingested`) → alert acknowledged.
    func run(rate: Int, duration: Int, report: inout BenchReport) throws {
        let input = "latency-\(UUID().uuidString.prefix(8))"
        try broker.createTopic(input, 6)
        var configuration = EndToEndBenchmark(broker: broker, rules: rules).pipelineConfiguration(applicationID: "lat-\(UUID().uuidString.prefix(8))", input: input)
        configuration.maxBatch = 1000
        let runner = PipelineRunner(configuration: configuration, rules: rules, provisioner: broker.provisioner, logger: benchLogger)
        let latencies = Mutex<[Int64]>([])
        runner.observer = { event in if case .alertAcknowledged(let latency) = event { latencies.withLock { $0.append(latency) } } }
        try runner.start()
        // Join the group before traffic starts, so the join is not measured.
        let joinDeadline = ContinuousClock.now + .seconds(30)
        while !runner.isReady, ContinuousClock.now < joinDeadline { try runner.runOnce() }

        let producing = Atomic<Bool>(true)
        let produced = Atomic<Int>(0)
        let producerThread = Thread { [broker] in
            guard let producer = try? KafkaProducer(configuration: broker.kafka.merging(["linger.ms": "5"]), logger: benchLogger) else { return }
            // The input's leaders known before the first record, so the producer's own start-up is not measured.
            _ = try? producer.metadata(topic: input, timeout: .seconds(10))
            var traffic = SyntheticAuditTraffic(seed: 77)
            let start = ContinuousClock.now
            var sent = 0
            let total = rate * duration
            while sent < total {
                let due = min(total, Int(seconds(start.duration(to: .now)) * Double(rate)))
                while sent < due {
                    traffic.clock = Int64(Date().timeIntervalSince1970 * 1000)
                    let text = sent % 100 == 0
                        ? traffic.next(.deniedServiceAccount, user: "system:serviceaccount:lat-\(sent):worker").json
                        : traffic.next(traffic.nextKind(deniedFraction: 0)).json
                    _ = try? producer.send(ProducerMessage(topic: input, partition: Int32(sent % 6), key: nil, value: text))
                    sent += 1
                }
                Thread.sleep(forTimeInterval: 0.001)
            }
            try? producer.flush(timeout: .seconds(30))
            produced.store(sent, ordering: .releasing)
            producing.store(false, ordering: .releasing)
        }
        producerThread.start()
        let expectedAlerts = (rate * duration + 99) / 100
        let deadline = ContinuousClock.now + .seconds(duration + 60)
        while ContinuousClock.now < deadline, producing.load(ordering: .acquiring) || latencies.withLock({ $0.count }) < expectedAlerts {
            try runner.runOnce()
        }
        let consumed = runner.snapshot().recordsConsumed
        try runner.stop()
        let values = latencies.withLock { $0 }.sorted()
        precondition(!values.isEmpty, "no alerts measured")
        func percentile(_ p: Double) -> Int64 { values[min(values.count - 1, Int(Double(values.count) * p))] }
        let achieved = Double(produced.load(ordering: .acquiring)) / Double(duration)
        // Steady state: without the alerts of the first 2 s of traffic (the clients' first fetches and
        // requests to new partitions hold the first few hundred milliseconds of records back).
        let warmUp = min(values.count - 1, rate * 2 / 100)
        let steady = Array(latencies.withLock { $0 }.dropFirst(warmUp)).sorted()
        func steadyPercentile(_ p: Double) -> Int64 { steady[min(steady.count - 1, Int(Double(steady.count) * p))] }
        // A run that lost records (the mock keeps 5 MB a partition: a consumer that falls further behind is
        // reset past what was dropped) measured only some alerts: its row says so instead of a figure.
        let complete = values.count == expectedAlerts
        report.add("latency", "\(broker.name): \(rate / 1000)k ev/s offered, steady p99 ms\(complete ? "" : " (incomplete: \(values.count) of \(expectedAlerts) alerts)")",
                   events: achieved, ratio: complete ? Double(steadyPercentile(0.99)) : nil, ratioName: complete ? " ms p99" : nil)
        report.note("latency \(broker.name) @ \(rate) ev/s for \(duration) s: \(consumed) records consumed of \(produced.load(ordering: .acquiring)) produced, \(values.count) alerts of \(expectedAlerts); after the first 2 s p50 \(steadyPercentile(0.5)) ms, p99 \(steadyPercentile(0.99)) ms, max \(steady.last!) ms; every alert p50 \(percentile(0.5)) ms, p99 \(percentile(0.99)) ms, max \(values.last!) ms (exact, from every sample)")
    }
}

/// CPU seconds the calling thread has used.
func threadCPUSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
