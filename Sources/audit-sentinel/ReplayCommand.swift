import ArgumentParser
import AuditEvents
import Detection
import Foundation
import Kafka
import Pipeline

/// `audit-sentinel replay`: an audit log through the live pipeline's topology — the same stream task,
/// processors and state stores — on the in-memory driver, with no Kafka.
struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run captured audit logs through the pipeline's detection and suppression, offline; print the alerts.",
        discussion: """
            Reads audit records in any supported shape (NDJSON, EventList, GKE, AKS, ECS, Filebeat wrappers; \
            `.gz` files are decompressed) and publishes every alert document as one JSON line, new alerts and \
            updates alike, exactly as the live pipeline would. With no Kafka record timestamp, an event's \
            event.ingested is its own when it carries one (ECS documents), else its stageTimestamp (else its \
            requestReceivedTimestamp), so a replay reproduces what the pipeline computes when records are \
            produced with their events' timestamps. Every window is closed at the end of the input. \
            Exit status: 0 if something alerted, 1 if nothing did, 2 on error.
            """)

    @Option(name: .long, help: "Rule files or directories of rules (Elastic TOML); default Config/rules.")
    var rules: [String] = ["Config/rules"]

    @Option(name: .long, help: "Write the alerts here instead of standard output.")
    var output: String?

    @Option(name: .long, help: "Alert format: ecs or ocsf.")
    var format: String = "ecs"

    @Option(name: .long, help: "Grace period for late events, in seconds.")
    var grace: Int = 30

    @Option(name: .customLong("suppression-duration"),
            help: "Suppression window of rules without their own alert_suppression (as run's suppression.duration), e.g. 5m.")
    var suppressionDuration: String = "5m"

    @Option(name: .long, help: "Partitions of the repartition topics, as run's processing.internal_partitions (stream time is kept per partition).")
    var partitions: Int = 6

    @Option(name: .long, help: "Read every file as one input topic of this name, as if the events came from it (alerts cite their source topic); default: each file is its own topic.")
    var topic: String?

    @Option(name: .customLong("cluster-name"), help: "orchestrator.cluster.name for events that carry none (as run's topics.cluster_names).")
    var clusterName: String?

    @Flag(name: [.short, .long], help: "Keep reading a growing file (one input), like tail -F; SIGINT or SIGTERM closes the windows and ends the replay.")
    var follow = false

    @Option(name: .customLong("max-record-bytes"), help: "Longest record read; longer ones are reported and skipped.")
    var maxRecordBytes: Int = 64 << 20

    @Argument(help: "Audit log files or directories (\"-\" for standard input).")
    var files: [String]

    func validate() throws {
        if follow && files.count != 1 { throw ValidationError("--follow reads one input: give one file") }
        if maxRecordBytes < 1024 { throw ValidationError("--max-record-bytes: at least 1024") }
    }

    func run() throws {
        guard let alertFormat = AlertFormat(rawValue: format) else {
            printError("unknown format \(format): use ecs or ocsf")
            throw ExitCode(2)
        }
        guard (1...10_000).contains(partitions) else {
            printError("--partitions: expected 1…10000, got \(partitions)")
            throw ExitCode(2)
        }
        let ruleSet = try loadRuleSet(rules)
        guard let duration = SettingsLoader.parseDuration(suppressionDuration), duration > 0 else {
            printError("--suppression-duration: expected a duration such as 30s or 5m, got \(suppressionDuration)")
            throw ExitCode(2)
        }
        let inputs: InputList
        let sink: ResultOutput
        do {
            inputs = try InputList(files)
            sink = try output.map { (path) throws(InputError) in try ResultOutput(path: path) } ?? ResultOutput()
        } catch {
            printError("\(error)")
            throw ExitCode(2)
        }
        StopSignals.install(ignoringBrokenPipes: false)
        // Every file is an input topic of one partition, every record of it (a line, or a whole JSON
        // document) a Kafka record: the live pipeline's topology and code, over an in-memory log, with the
        // events' own times.
        func topicName(_ path: String) -> String { topic ?? (path == "-" ? "<stdin>" : path) }
        var configuration = PipelineConfiguration(applicationID: "replay", kafka: KafkaConfiguration([:]),
                                                  inputTopics: topic.map { [$0] } ?? inputs.paths.map(topicName).uniqued(), alertsTopic: "alerts")
        configuration.alertFormat = alertFormat
        if let clusterName, !clusterName.isEmpty {
            configuration.clusterNames = Dictionary(configuration.inputTopics.map { ($0, clusterName) }, uniquingKeysWith: { first, _ in first })
        }
        configuration.defaultSuppression.durationMilliseconds = duration
        configuration.graceMilliseconds = Int64(grace) * 1000
        configuration.idleTimeoutMilliseconds = .max / 4
        configuration.interimUpdateMilliseconds = 0
        configuration.internalPartitions = Int32(partitions)
        configuration.ingestTimeFromEvent = true
        configuration.decoderLimits = DecoderLimits(maxRecordBytes: maxRecordBytes, maxDepth: 100, maxErrorsPerRecord: .max)
        configuration.productVersion = AuditSentinelVersion.current
        configuration.deadLetterTopicName = "dead-letters"
        let driver = InMemoryDriver(configuration: configuration, rules: ruleSet)
        driver.retainsOutputs = false
        var alerts = (new: 0, updated: 0)
        var batch = ReplayBatch()
        driver.outputObserver = { record in
            if record.topic == "alerts" {
                sink.write(line: record.value ?? [])
                if record.headers.contains(where: { $0.name == "alert.kind" && $0.value == Array("new".utf8) }) { alerts.new += 1 } else { alerts.updated += 1 }
            } else {
                func header(_ name: String) -> String { record.headers.first { $0.name == name }?.value.map { String(decoding: $0, as: UTF8.self) } ?? "?" }
                let topic = header("source.topic")
                let offset = Int64(header("source.offset")) ?? -1
                let position = Int(offset - batch.firstOffset)
                let origin = topic == batch.topic && batch.lines.indices.contains(position) ? "\(batch.file):\(batch.lines[position])" : "\(topic): record \(offset + 1)"
                let index = (Int(header("error.event_index")) ?? 0) + 1
                printError("\(origin)\(index > 1 ? ", event \(index)" : ""): \(header("error.reason")): \(header("error.message"))")
            }
        }
        driver.join()
        var random = SyntheticAuditTraffic.Generator(seed: 1)
        var progress = ProgressLine(totalBytes: inputs.totalBytes)
        func drain() {
            batch.pipe(into: driver)
            driver.runUntilQuiet(maxRecords: ReplayBatch.size, using: &random)
            driver.truncateConsumed()
            batch.consumed()
        }
        let read = inputs.readRecords(follow: follow, maxRecordBytes: maxRecordBytes, outputFD: sink.fd,
                                      whileWaiting: { drain(); sink.flush() }, afterEachInput: drain) { record in
            if batch.add(record, topicName: topicName) {
                drain()
                progress.update(bytesRead: record.bytesRead, events: driver.counters.eventsDecoded, alerts: alerts.new)
            }
        }
        if StopSignals.requested { printError("replay: \(StopSignals.lastName): input ends here; closing every window") }
        batch.pipe(into: driver)
        driver.closeAllWindows()
        drain()
        sink.flush()
        progress.finish()
        let counters = driver.counters
        printError("replay: \(counters.eventsDecoded) events, \(counters.decodeErrors.values.reduce(0, +) + read.oversized) undecodable, \(alerts.new) alerts, \(alerts.updated) updates")
        if read.inputFailed { throw ExitCode(2) }
        if alerts.new == 0 { throw ExitCode(1) }
    }
}

extension Array where Element: Hashable {
    /// The elements in order, each once.
    func uniqued() -> [Element] {
        var seen: Set<Element> = []
        return filter { seen.insert($0).inserted }
    }
}

/// Loads the rules of files and directories, or exits with status 2 saying why (no rule at all included).
func loadRuleSet(_ paths: [String]) throws -> RuleSet {
    do {
        let ruleSet = try RuleSet.load(files: expandRuleFiles(paths))
        guard !ruleSet.rules.isEmpty else {
            printError("no rules found in \(paths.joined(separator: ", "))")
            throw ExitCode(2)
        }
        return ruleSet
    } catch let error as RuleSetError {
        printError("\(error)")
        throw ExitCode(2)
    }
}

/// Rule files from files and directories (sorted `*.toml` of each directory).
func expandRuleFiles(_ paths: [String]) -> [String] {
    paths.flatMap { path -> [String] in
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else { return [path] }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return entries.filter { $0.hasSuffix(".toml") }.sorted().map { (path as NSString).appendingPathComponent($0) }
    }
}

/// The records read since the driver last ran: all of one file, offsets in a row (for the dead letters'
/// messages), their bytes one after another in one buffer that the driver's log slices when they are piped.
/// One value, so that adding a record is one access to the replay's state, not one per variable.
struct ReplayBatch {
    /// Records run through the topology in batches of this many: each batch writes the changelog of the
    /// windows it changed once, however many of its matches changed them (1 000 wrote them four times as
    /// often; the live pipeline's polls are of `processing.max_batch`).
    static let size = 4096

    private(set) var topic = ""
    private(set) var file = ""
    /// The log offset of the batch's first record, once piped.
    private(set) var firstOffset: Int64 = 0
    /// Each record's line in its file.
    private(set) var lines: [Int] = []
    private var bytes: [UInt8] = []
    /// Where each record's bytes end in ``bytes``; emptied once they are piped.
    private var ends: [Int] = []
    /// Where the records not yet piped start in ``bytes``.
    private var unpiped = 0
    /// The input the last record came from, and its topic: records come file by file, so the topic is
    /// named once per file.
    private var input = (path: "", topic: "")
    /// Records read in all.
    private var read = 0

    /// Adds a record; true when a batch is complete.
    mutating func add(_ record: InputList.Record, topicName: (String) -> String) -> Bool {
        if record.path != input.path { input = (record.path, topicName(record.path)) }
        if lines.isEmpty {
            topic = input.topic
            file = record.name
        }
        bytes.append(contentsOf: record.bytes)
        ends.append(bytes.count)
        lines.append(record.line)
        read += 1
        return read % Self.size == 0
    }

    /// Appends the records read since the last call to the driver's input log, as slices of ``bytes``.
    mutating func pipe(into driver: InMemoryDriver) {
        guard !ends.isEmpty else { return }
        let offset = driver.pipe(contentsOf: bytes[unpiped...], ends: ends, topic: topic)
        if unpiped == 0 { firstOffset = offset }
        unpiped = bytes.count
        ends.removeAll(keepingCapacity: true)
    }

    /// The batch has run and its records are truncated from the log: the buffer is emptied only now that
    /// the log holds no slice of it, so its capacity is kept rather than copied.
    mutating func consumed() {
        bytes.removeAll(keepingCapacity: true)
        lines.removeAll(keepingCapacity: true)
        unpiped = 0
    }
}
