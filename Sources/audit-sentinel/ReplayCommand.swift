import ArgumentParser
import AuditEvents
import Detection
import Foundation
import Pipeline

/// `audit-sentinel replay`: an audit log through the same detection and suppression code as the live
/// pipeline, with no Kafka.
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

    @Argument(help: "Audit log files.")
    var files: [String]

    func run() throws {
        guard let alertFormat = AlertFormat(rawValue: format) else {
            printError("unknown format \(format): use ecs or ocsf")
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
        var defaultSuppression = DetectionRule.AlertSuppression.pipelineDefault
        guard let duration = SettingsLoader.parseDuration(suppressionDuration), duration > 0 else {
            printError("--suppression-duration: expected a duration such as 30s or 5m, got \(suppressionDuration)")
            throw ExitCode(2)
        }
        defaultSuppression.durationMilliseconds = duration
        var states = ruleSet.rules.map { rule in
            RuleState(rule: rule.rule, suppression: rule.rule.alertSuppression ?? defaultSuppression,
                      graceMilliseconds: Int64(grace) * 1000, idleTimeoutMilliseconds: .max / 4)
        }
        let builders = ruleSet.rules.map { AlertDocumentBuilder(rule: $0.rule, productVersion: AuditSentinelVersion.current) }
        let groupBy = ruleSet.rules.map { ($0.rule.alertSuppression ?? defaultSuppression).groupBy.map(FieldPath.init) }
        let stageTimestamp = FieldPath("kubernetes.audit.stageTimestamp")
        var counts = (events: 0, errors: 0, new: 0, updated: 0)
        let progress = isatty(STDERR_FILENO) == 1

        func publish(_ actions: [AlertAction], rule index: Int) {
            for action in actions {
                var line = builders[index].serialized(action, format: alertFormat)
                line.append(UInt8(ascii: "\n"))
                sink.write(Data(line))
                if action.kind == .new { counts.new += 1 } else { counts.updated += 1 }
            }
        }

        for file in files {
            let data: Data
            do {
                data = try readInput(file)
            } catch {
                printError("\(file): \(error)")
                throw ExitCode(2)
            }
            let decoder = AuditRecordDecoder(limits: DecoderLimits(maxRecordBytes: max(data.count, 1), maxDepth: 100, maxErrorsPerRecord: .max))
            var position = 0
            data.withUnsafeBytes { buffer in
                decoder.decode(buffer) { result in
                    position += 1
                    switch result {
                    case .failure(let error):
                        counts.errors += 1
                        printError("\(file): event \(error.eventIndex + 1): \(error)")
                    case .success(let event):
                        counts.events += 1
                        // No Kafka timestamp: the event's own ingest time, else its stage timestamp.
                        let ingest = event.ingestedMilliseconds
                            ?? event.firstString(stageTimestamp).flatMap { Timestamp.milliseconds(fromRFC3339: $0) }
                            ?? event.timestampMilliseconds ?? 0
                        for (index, rule) in ruleSet.rules.enumerated() where rule.matches(event) {
                            let matches = rule.ruleMatches(
                                for: event, groupBy: groupBy[index], source: RecordPosition(topic: file, partition: 0, offset: Int64(position)),
                                sequence: 0, ingestTime: ingest)
                            for match in matches { publish(states[index].apply(match, rule: rule.rule, now: 0), rule: index) }
                        }
                        if progress, counts.events % 10_000 == 0 {
                            FileHandle.standardError.write(Data("\r\(file): \(counts.events) events, \(counts.new) alerts".utf8))
                        }
                    }
                }
            }
        }
        for index in states.indices { publish(states[index].suppressor.closeAll(), rule: index) }
        if progress { FileHandle.standardError.write(Data("\r".utf8)) }
        printError("replay: \(counts.events) events, \(counts.errors) undecodable, \(counts.new) alerts, \(counts.updated) updates")
        if counts.new == 0 { throw ExitCode(1) }
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
