import ArgumentParser
import AuditEvents
import Detection
import Foundation

/// `audit-sentinel match`: grep for KQL over captured audit logs.
struct Match: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the audit events that match a rule or a KQL query, as normalized ECS JSON lines.",
        discussion: """
            Reads audit records in any supported shape (raw events, EventList batches, NDJSON, GKE and AKS \
            records, ECS documents, Filebeat wrappers) from the files, or from standard input when none are \
            given. For a new_terms rule, only events bringing a combination of terms not seen within the \
            rule's history window (in this input) are printed. Records that cannot be decoded are reported \
            on standard error and skipped. Exit status: 0 if something matched, 1 if nothing did, 2 on error.
            """)

    @Option(name: .long, help: "A detection rule file (Elastic TOML format).")
    var rule: String?

    @Option(name: .long, help: "A KQL query, e.g. 'kubernetes.audit.verb:delete'.")
    var query: String?

    @Flag(name: .long, help: "Keep the event's original text in event.original.")
    var preserveOriginal = false

    @Argument(help: "Audit log files; standard input when none are given.")
    var files: [String] = []

    func validate() throws {
        if (rule == nil) == (query == nil) { throw ValidationError("give exactly one of --rule FILE or --query KQL") }
    }

    func run() throws {
        let compiled: CompiledRule?
        let kql: CompiledQuery
        do {
            if let rule {
                let loaded = try CompiledRule.load(file: rule)
                compiled = loaded
                kql = loaded.query
            } else {
                compiled = nil
                kql = try CompiledQuery(parsing: query!)
            }
        } catch {
            printError("\(error)")
            throw ExitCode(2)
        }

        let history = InMemoryNewTermsHistory()
        var matched = 0
        var failures = 0
        let output = FileHandle.standardOutput
        let inputs = files.isEmpty ? ["-"] : files
        for input in inputs {
            let data: Data
            do {
                data = input == "-" ? FileHandle.standardInput.readDataToEndOfFile() : try Data(contentsOf: URL(fileURLWithPath: input))
            } catch {
                printError("\(input): \(error.localizedDescription)")
                throw ExitCode(2)
            }
            // A file is one long record: its events are read one after another, bad ones reported.
            let decoder = AuditRecordDecoder(limits: DecoderLimits(maxRecordBytes: max(data.count, 1), maxDepth: 100, maxErrorsPerRecord: .max))
            let name = input == "-" ? "<stdin>" : input
            data.withUnsafeBytes { buffer in
                decoder.decode(buffer) { result in
                    switch result {
                    case .failure(let error):
                        failures += 1
                        printError("\(name): event \(error.eventIndex + 1): \(error)")
                    case .success(let event):
                        guard kql.matches(event) else { return }
                        if let compiled, compiled.rule.type == .newTerms,
                           compiled.newTerms(event, at: compiled.eventTime(event) ?? 0, history: history).isEmpty {
                            return
                        }
                        matched += 1
                        var line: [UInt8] = []
                        JSONValue.object(event.normalized(preserveOriginal: preserveOriginal)).write(to: &line, sortedKeys: true)
                        line.append(UInt8(ascii: "\n"))
                        output.write(Data(line))
                    }
                }
            }
        }
        if failures > 0 { printError("\(failures) record(s) could not be decoded") }
        if matched == 0 { throw ExitCode(1) }
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
        for file in files {
            do throws(RuleLoadError) {
                let rule = try CompiledRule.load(file: file)
                var line = "ok  \(file): \(rule.name) [\(rule.rule.type.rawValue), \(rule.rule.severity), risk \(rule.rule.riskScore)] id \(rule.id)"
                if let terms = rule.rule.newTerms { line += "; new terms \(terms.fields) over \(terms.historyWindowStart)" }
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
