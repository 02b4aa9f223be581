import ArgumentParser
import AuditEvents
import Detection
import Foundation
import Pipeline

/// `audit-sentinel match`: grep for KQL, EQL or ES|QL over audit logs, streaming.
struct Match: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the audit events that match a rule, a KQL, EQL or ES|QL query, as normalized ECS JSON lines.",
        discussion: """
            Reads audit records in any supported shape (raw events, EventList batches, NDJSON, GKE and AKS \
            records, ECS documents, Filebeat wrappers; gzip files, concatenated members included) from the \
            files and directories, or from standard input when none are given ("-" names it too). Records are \
            read, matched and printed as they arrive, in bounded memory: each result is written before the \
            command waits for more input. For a new_terms rule, only events bringing a combination of terms not \
            seen within the rule's history window (in this input) are printed. For an EQL sequence (a rule \
            or --eql), each completed sequence is printed as one line: a JSON array of its events' documents, \
            in sequence order, as soon as its last event is read. For ES|QL (a rule or --esql), a query \
            without STATS prints each event that passes, with the columns the query computes; a query \
            with STATS prints the rows of every scheduled execution over the input (--interval, --from; \
            a rule's own schedule), one JSON object per row with its @execution time, as soon as stream \
            time passes the execution (and the rest at the end). Records that cannot be decoded \
            are reported on standard error as FILE:LINE and skipped. \
            Exit status: 0 if something matched, 1 if nothing did, 2 on an error (a bad rule or query, an \
            input that cannot be read; matches found before it are still printed).
            """)

    @Option(name: .long, help: "A detection rule file (Elastic TOML format).")
    var rule: String?

    @Option(name: .long, help: "A KQL query, e.g. 'kubernetes.audit.verb:delete'.")
    var query: String?

    @Option(name: .long, help: "An EQL event query or sequence, e.g. 'any where kubernetes.audit.verb == \"delete\"'.")
    var eql: String?

    @Option(name: .long, help: "An ES|QL query, e.g. 'FROM logs-* | WHERE kubernetes.audit.verb == \"delete\"'.")
    var esql: String?

    @Option(name: .long, help: "For an aggregating --esql query: the schedule's interval (e.g. 5m).")
    var interval = "5m"

    @Option(name: .long, help: "For an aggregating --esql query: each execution's look-back (e.g. now-6m).")
    var from = "now-6m"

    @Flag(name: .long, help: "Keep the event's original text in event.original.")
    var preserveOriginal = false

    @Flag(name: [.short, .long], help: "Keep reading a growing file (one input), like tail -F; stop with SIGINT or SIGTERM.")
    var follow = false

    @Option(name: .customLong("max-record-bytes"), help: "Longest record read; longer ones are reported and skipped.")
    var maxRecordBytes: Int = 64 << 20

    @Argument(help: "Audit log files or directories; standard input when none are given.")
    var files: [String] = []

    func validate() throws {
        if [rule, query, eql, esql].compactMap({ $0 }).count != 1 { throw ValidationError("give exactly one of --rule FILE, --query KQL, --eql EQL or --esql ES|QL") }
        if follow && files.count > 1 { throw ValidationError("--follow reads one input: give one file (or none, for standard input)") }
        if maxRecordBytes < 1024 { throw ValidationError("--max-record-bytes: at least 1024") }
    }

    func run() throws {
        let compiled: CompiledRule?
        let kql: CompiledQuery?
        var eventQuery: EQLEventMatcher?
        var sequence: EQLSequenceSteps?
        var esqlRows: ESQLRows?
        do {
            compiled = try rule.map { (path) throws(RuleLoadError) in try CompiledRule.load(file: path) }
            kql = try query.map { (text) throws(KQLSyntaxError) in try CompiledQuery(parsing: text) }
            switch try eql.map({ (text) throws(EQLSyntaxError) in try EQLParser.parse(text) }) {
            case .event(let parsed)?: eventQuery = try EQLEventMatcher(parsed)
            case .sequence(let parsed)?: sequence = try EQLSequenceSteps(parsed)
            case nil: sequence = compiled?.sequence
            }
            if let esql {
                let schedule = try DetectionRule.schedule(interval: interval, from: from)
                esqlRows = ESQLRows(program: try ESQLProgram(parsing: esql), schedule: schedule, eventTime: { $0.timestampMilliseconds ?? 0 })
            } else if let compiled, let program = compiled.esql {
                esqlRows = ESQLRows(program: program, schedule: compiled.schedule, eventTime: { compiled.eventTime($0) ?? 0 })
            }
        } catch {
            printError("\(error)")
            throw ExitCode(2)
        }
        let inputs: InputList
        do { inputs = try InputList(files.isEmpty ? ["-"] : files) } catch {
            printError("\(error)")
            throw ExitCode(2)
        }
        StopSignals.install(ignoringBrokenPipes: false)

        let history = InMemoryNewTermsHistory()
        let sequences = sequence.map { SequenceLines(steps: $0, eventTime: { event in compiled?.eventTime(event) ?? event.timestampMilliseconds ?? 0 }) }
        var matched = 0
        var failures = 0
        let output = ResultOutput()
        let decoder = AuditRecordDecoder(limits: DecoderLimits(maxRecordBytes: maxRecordBytes, maxDepth: 100, maxErrorsPerRecord: .max))
        let read = inputs.readRecords(follow: follow, maxRecordBytes: maxRecordBytes, outputFD: output.fd, whileWaiting: output.flush) { record in
            decoder.decode(record.bytes) { result in
                switch result {
                case .failure(let error):
                    failures += 1
                    printError("\(record.name):\(record.line): \(error)")
                case .success(let event):
                    if let esqlRows {
                        for line in esqlRows.add(event, position: RecordPosition(topic: record.name, partition: 0, offset: Int64(record.line))) {
                            matched += 1
                            output.write(line: line)
                        }
                        return
                    }
                    if let sequences {
                        for line in sequences.add(event, position: RecordPosition(topic: record.name, partition: 0, offset: Int64(record.line)),
                                                  preserveOriginal: preserveOriginal) {
                            matched += 1
                            output.write(line: line)
                        }
                        return
                    }
                    guard kql?.matches(event) ?? eventQuery?.matches(event) ?? compiled?.matches(event) ?? false else { return }
                    if let compiled, compiled.rule.type == .newTerms,
                       compiled.newTerms(event, at: compiled.eventTime(event) ?? 0, history: history).isEmpty {
                        return
                    }
                    matched += 1
                    if preserveOriginal {
                        var line: [UInt8] = []
                        JSONValue.object(event.normalized(preserveOriginal: true)).write(to: &line, sortedKeys: true)
                        output.write(line: line)
                    } else {
                        output.write(line: event.canonicalDocument())
                    }
                }
            }
        }
        for line in esqlRows?.finish() ?? [] {
            matched += 1
            output.write(line: line)
        }
        failures += read.oversized
        output.flush()
        if failures > 0 { printError("\(failures) record(s) could not be decoded") }
        if read.inputFailed { throw ExitCode(2) }
        if matched == 0 { throw ExitCode(1) }
    }
}

/// `match` for an EQL sequence: the pipeline's pending-sequence state machine over one input, in read order,
/// printing each completed sequence as a JSON array of its events' documents.
final class SequenceLines {
    let steps: EQLSequenceSteps
    let eventTime: (AuditEvent) -> Int64
    var pending: PendingSequences
    var streamTime = Int64.min
    var eventIndex = 0
    /// As the pipeline's default: an event this much older than the newest still joins.
    static let grace: Int64 = 30_000

    init(steps: EQLSequenceSteps, eventTime: @escaping (AuditEvent) -> Int64) {
        self.steps = steps
        self.eventTime = eventTime
        pending = PendingSequences(stepCount: steps.steps.count, maxspan: steps.maxspanMilliseconds ?? PipelineConfiguration.defaultSequenceSpan)
    }

    func add(_ event: AuditEvent, position: RecordPosition, preserveOriginal: Bool) -> [[UInt8]] {
        let matches = steps.matches(event)
        eventIndex += 1
        guard !matches.isEmpty else { return [] }
        let time = eventTime(event)
        var document: [UInt8] = []
        if preserveOriginal {
            JSONValue.object(event.normalized(preserveOriginal: true)).write(to: &document, sortedKeys: true)
        } else {
            document = event.canonicalDocument()
        }
        var lines: [[UInt8]] = []
        for (index, entry) in matches.enumerated() {
            var match = RuleMatch(groupValues: entry.key.map(Optional.some), eventTime: time, documentBytes: document, source: position,
                                  sequence: min(eventIndex, 1023) << 10 | min(index, 1023))
            match.steps = entry.steps
            for completed in pending.apply(match) {
                var line: [UInt8] = [UInt8(ascii: "[")]
                for (position, event) in completed.events.enumerated() {
                    if position > 0 { line.append(UInt8(ascii: ",")) }
                    line += event.documentBytes
                }
                line.append(UInt8(ascii: "]"))
                lines.append(line)
            }
        }
        streamTime = max(streamTime, time)
        _ = pending.expire(horizon: streamTime - Self.grace)
        return lines
    }
}

/// `match` for ES|QL: a query without STATS prints each passing event's document with its computed
/// columns; one with STATS runs the pipeline's scheduled aggregation over the input in event time and
/// prints every execution's rows (duplicates of the execution before included: these are results, not
/// alerts), each as a JSON object of its columns in query order, after `@execution`.
final class ESQLRows {
    let program: ESQLProgram
    let eventTime: (AuditEvent) -> Int64
    var aggregation: ScheduledAggregation?
    var streamTime = Int64.min
    var eventIndex = 0

    init(program: ESQLProgram, schedule: (interval: Int64, lookback: Int64), eventTime: @escaping (AuditEvent) -> Int64) {
        self.program = program
        self.eventTime = eventTime
        if program.isAggregating {
            aggregation = ScheduledAggregation(interval: schedule.interval, lookback: schedule.lookback, functions: program.aggregateFunctions)
        }
    }

    func add(_ event: AuditEvent, position: RecordPosition) -> [[UInt8]] {
        eventIndex += 1
        let time = eventTime(event)
        guard let slots = program.evaluate(event, now: time) else { return advance(to: time) }
        guard aggregation != nil else {
            var object = (try? JSONValue.parse(event.canonicalDocument()))?.objectValue ?? [:]
            for column in program.outputColumns(slots) { object.setValue(column.value.json, atDottedPath: column.name) }
            var line: [UInt8] = []
            JSONValue.object(object).write(to: &line, sortedKeys: true)
            return [line]
        }
        let (groups, inputs) = program.contributions(slots, document: event, now: time)
        let partials = program.partials(inputs)
        for (index, keys) in groups.enumerated() {
            let key = RuleMatch(groupValues: keys.map(ESQLContribution.keyText), eventTime: time, documentBytes: [], source: position).groupKey
            _ = aggregation!.add(key: key, keys: keys, partials: partials, time: time,
                                 position: Int64(min(eventIndex, 1 << 40)) << 10 | Int64(min(index, 1023)), source: position.topic)
        }
        return advance(to: time)
    }

    private func advance(to time: Int64) -> [[UInt8]] {
        guard aggregation != nil else { return [] }
        streamTime = max(streamTime, time)
        return lines(aggregation!.run(upTo: streamTime - SequenceLines.grace, program: program))
    }

    /// The executions still to come at the end of the input.
    func finish() -> [[UInt8]] {
        guard aggregation != nil else { return [] }
        return lines(aggregation!.run(upTo: .max, program: program))
    }

    private func lines(_ results: [ESQLExecutionResult]) -> [[UInt8]] {
        results.map { result in
            var row: JSONObject = ["@execution": .string(Timestamp.rfc3339(milliseconds: result.execution))]
            for column in result.columns { row[column.name] = column.value.json }
            var line: [UInt8] = []
            JSONValue.object(row).write(to: &line)
            return line
        }
    }
}

/// `audit-sentinel check-rule`: load and compile rules, print what they are or why they fail.
struct CheckRule: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-rule",
        abstract: "Load and compile detection rules; print a summary of each, or the errors.")

    @Argument(help: "Rule files (Elastic TOML format) or directories of them.")
    var paths: [String]

    func run() throws {
        let files = expandRuleFiles(paths)
        var failed = false
        for path in paths where !files.contains(where: { $0 == path || $0.hasPrefix(path.hasSuffix("/") ? path : path + "/") }) {
            printError("ERR \(path): no rule files (*.toml) in this directory")
            failed = true
        }
        for file in files {
            do throws(RuleLoadError) {
                let rule = try CompiledRule.load(file: file)
                var line = "ok  \(file): \(rule.name) [\(rule.rule.type.rawValue), \(rule.rule.severity), risk \(rule.rule.riskScore)] id \(rule.id)"
                if let terms = rule.rule.newTerms { line += "; new terms \(terms.fields) over \(terms.historyWindowStart)" }
                if let sequence = rule.sequence {
                    line += "; sequence of \(sequence.steps.count) steps by \(sequence.joinKeyNames.joined(separator: ", "))"
                    line += sequence.maxspanMilliseconds.map { ", maxspan \($0 / 1000) s" } ?? ", no maxspan (pending for sequences.default_span)"
                    if sequence.until != nil { line += ", until" }
                }
                if let program = rule.esql {
                    if program.isAggregating {
                        line += "; STATS by \(program.groupNames.joined(separator: ", ")) every \(rule.schedule.interval / 1000) s over the last \(rule.schedule.lookback / 1000) s"
                    } else {
                        line += "; per event"
                    }
                }
                if let literals = rule.prefilter?.requirements {
                    line += "; prefilter \(literals.map { "(" + $0.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " | ") + ")" }.joined(separator: " & "))"
                }
                print(line)
            } catch {
                failed = true
                printError("ERR \(error)")
            }
        }
        if failed { throw ExitCode(2) }
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
