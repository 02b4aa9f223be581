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

    @Argument(help: "Audit log files.")
    var files: [String]

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
        var sink: FileHandle = .standardOutput
        if let output {
            guard FileManager.default.createFile(atPath: output, contents: nil), let handle = FileHandle(forWritingAtPath: output) else {
                printError("cannot write \(output)")
                throw ExitCode(2)
            }
            sink = handle
        }
        guard let duration = SettingsLoader.parseDuration(suppressionDuration), duration > 0 else {
            printError("--suppression-duration: expected a duration such as 30s or 5m, got \(suppressionDuration)")
            throw ExitCode(2)
        }
        // Every file is an input topic of one partition, every line (or whole JSON document) a record: the
        // live pipeline's topology and code, over an in-memory log, with the events' own times.
        var configuration = PipelineConfiguration(applicationID: "replay", kafka: KafkaConfiguration([:]), inputTopics: topic.map { [$0] } ?? files, alertsTopic: "alerts")
        configuration.alertFormat = alertFormat
        configuration.defaultSuppression.durationMilliseconds = duration
        configuration.graceMilliseconds = Int64(grace) * 1000
        configuration.idleTimeoutMilliseconds = .max / 4
        configuration.interimUpdateMilliseconds = 0
        configuration.internalPartitions = Int32(partitions)
        configuration.ingestTimeFromEvent = true
        configuration.decoderLimits = DecoderLimits(maxRecordBytes: 256 << 20, maxDepth: 100, maxErrorsPerRecord: .max)
        configuration.productVersion = AuditSentinelVersion.current
        configuration.deadLetterTopicName = "dead-letters"
        let driver = InMemoryDriver(configuration: configuration, rules: ruleSet)
        driver.retainsOutputs = false
        var alerts = (new: 0, updated: 0)
        driver.outputObserver = { record in
            if record.topic == "alerts" {
                sink.write(Data((record.value ?? []) + [UInt8(ascii: "\n")]))
                if record.headers.contains(where: { $0.name == "alert.kind" && $0.value == Array("new".utf8) }) { alerts.new += 1 } else { alerts.updated += 1 }
            } else {
                func header(_ name: String) -> String { record.headers.first { $0.name == name }?.value.map { String(decoding: $0, as: UTF8.self) } ?? "?" }
                let line = (Int(header("source.offset")) ?? 0) + 1
                printError("\(header("source.topic")): record \(line), event \((Int(header("error.event_index")) ?? 0) + 1): \(header("error.message"))")
            }
        }
        driver.join()
        var random = SyntheticAuditTraffic.Generator(seed: 1)
        let progress = isatty(STDERR_FILENO) == 1
        for file in files {
            let data: Data
            do {
                data = try readInput(file)
            } catch {
                printError("\(file): \(error)")
                throw ExitCode(2)
            }
            var piped = 0
            for record in Self.records(in: data) {
                driver.pipe(record, topic: topic ?? file)
                piped += 1
                if piped % 1000 == 0 {
                    driver.runUntilQuiet(using: &random)
                    driver.truncateConsumed()
                    if progress { FileHandle.standardError.write(Data("\r\(file): \(driver.counters.eventsDecoded) events, \(alerts.new) alerts".utf8)) }
                }
            }
            driver.runUntilQuiet(using: &random)
            driver.truncateConsumed()
        }
        driver.closeAllWindows()
        driver.runUntilQuiet(using: &random)
        if progress { FileHandle.standardError.write(Data("\r".utf8)) }
        let counters = driver.counters
        printError("replay: \(counters.eventsDecoded) events, \(counters.decodeErrors.values.reduce(0, +)) undecodable, \(alerts.new) alerts, \(alerts.updated) updates")
        if alerts.new == 0 { throw ExitCode(1) }
    }

    /// The records of an input: one per line when most lines are whole JSON objects (NDJSON, a malformed
    /// line being a record of its own), else the whole input as one record (an EventList or an event
    /// pretty-printed over many lines).
    static func records(in data: Data) -> [[UInt8]] {
        let bytes = [UInt8](data)
        func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D }
        let lines = bytes.split(separator: UInt8(ascii: "\n")).compactMap { line -> [UInt8]? in
            guard let first = line.firstIndex(where: { !isBlank($0) }), let last = line.lastIndex(where: { !isBlank($0) }) else { return nil }
            return Array(line[first...last])
        }
        let objects = lines.count { $0.first == UInt8(ascii: "{") && $0.last == UInt8(ascii: "}") }
        return objects * 2 >= lines.count ? lines : [bytes]
    }

    /// `.gz` through gzip, everything else as it is.
    func readInput(_ file: String) throws -> Data {
        guard file.hasSuffix(".gz") else { return try Data(contentsOf: URL(fileURLWithPath: file)) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["gzip", "-dc", "--", file]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CocoaError(.fileReadCorruptFile) }
        return data
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
