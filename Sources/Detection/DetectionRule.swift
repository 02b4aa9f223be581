import AuditEvents
import Foundation

/// An Elastic detection rule, read unchanged from its TOML file (elastic/detection-rules format).
public struct DetectionRule: Sendable {
    public enum RuleType: String, Sendable, CaseIterable {
        case query
        case newTerms = "new_terms"
        /// EQL event queries and sequences.
        case eql
        /// ES|QL queries: per event without STATS, on Elastic's schedule in event time with it.
        case esql
    }

    public struct Threat: Sendable, Equatable, Codable {
        public struct Entry: Sendable, Equatable, Codable {
            public var id: String
            public var name: String
            public var reference: String
        }
        public struct Technique: Sendable, Equatable, Codable {
            public var id: String
            public var name: String
            public var reference: String
            public var subtechnique: [Entry]
        }
        public var framework: String
        public var tactic: Entry
        public var technique: [Technique]
    }

    public struct NewTerms: Sendable, Equatable {
        /// The fields whose combination of values must be new.
        public var fields: [String]
        /// `history_window_start` as written (`now-7d`), and as a duration.
        public var historyWindowStart: String
        public var historyWindowMilliseconds: Int64
    }

    public struct AlertSuppression: Sendable, Equatable {
        public enum MissingFieldsStrategy: String, Sendable {
            /// Events missing a group-by field form one group of their own.
            case suppress
            /// Every event missing a group-by field alerts on its own.
            case doNotSuppress
        }
        public var groupBy: [String]
        public var durationMilliseconds: Int64
        public var missingFieldsStrategy: MissingFieldsStrategy

        public init(groupBy: [String], durationMilliseconds: Int64, missingFieldsStrategy: MissingFieldsStrategy = .suppress) {
            self.groupBy = groupBy
            self.durationMilliseconds = durationMilliseconds
            self.missingFieldsStrategy = missingFieldsStrategy
        }
    }

    // [metadata]
    public var creationDate: String?
    public var updatedDate: String?
    public var maturity: String?
    public var integration: [String]
    // [rule]
    public var ruleID: String
    public var name: String
    public var description: String
    public var author: [String]
    public var license: String?
    public var references: [String]
    public var tags: [String]
    public var riskScore: Int
    public var severity: String
    public var type: RuleType
    public var language: String
    public var index: [String]
    public var query: String
    public var timestampOverride: String?
    public var falsePositives: [String]
    public var note: String?
    public var from: String?
    public var interval: String?
    public var threat: [Threat]
    public var newTerms: NewTerms?
    public var alertSuppression: AlertSuppression?
    /// The file the rule came from (for messages).
    public var file: String
    /// Elastic's `max_signals` (alerts per execution; Kibana's default 100) and the rule's `version` (1 when
    /// the file has none, as in Elastic's repository, where the release sets it): carried into alerts.
    public var maxSignals = 100
    public var version = 1
}

/// A rule file that could not be loaded, and why: never a silent skip, never a half-loaded rule.
public struct RuleLoadError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var ruleName: String?
    public var line: Int?
    public var message: String

    public var description: String {
        var location = file
        if let line { location += ":\(line)" }
        if let ruleName { location += " (\(ruleName))" }
        return "\(location): \(message)"
    }
}

extension DetectionRule {
    public static let supportedTypes = RuleType.allCases.map(\.rawValue)
    public static let supportedLanguages = ["kuery", "eql", "esql"]

    /// Reads one rule file.
    public static func load(file: String) throws(RuleLoadError) -> DetectionRule {
        // The system's reason in one line ("No such file or directory", "Permission denied", "Is a directory").
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RuleLoadError(file: file, message: "cannot open: \(String(cString: strerror(errno)))") }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = read(fd, &chunk, chunk.count)
            if count > 0 { bytes += chunk[..<count]; continue }
            if count < 0 && errno == EINTR { continue }
            let failure = count < 0 ? errno : 0
            close(fd)
            if failure != 0 { throw RuleLoadError(file: file, message: "cannot read: \(String(cString: strerror(failure)))") }
            break
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw RuleLoadError(file: file, message: "not UTF-8 text (a rule file is TOML)")
        }
        return try parse(toml: text, file: file)
    }

    /// Parses a rule from TOML text.
    public static func parse(toml text: String, file: String = "<rule>") throws(RuleLoadError) -> DetectionRule {
        let root: TOMLTable
        do throws(TOMLParseError) {
            root = try TOMLTable(parsing: text)
        } catch {
            throw RuleLoadError(file: file, line: error.line, message: "malformed TOML: \(error.message)")
        }
        var reader = TableReader(file: file)
        let metadata = root["metadata"]?.table
        guard let rule = root["rule"]?.table else { throw reader.failure("missing the [rule] table") }
        reader.ruleName = rule["name"]?.string

        let type = try reader.string(rule, "type")
        let language = try reader.string(rule, "language")
        guard let ruleType = RuleType(rawValue: type) else {
            throw reader.failure("rule type \"\(type)\" (language \"\(language)\") is not supported; supported types: query and new_terms with language kuery, eql with language eql, esql with language esql")
        }
        let expectedLanguage = switch ruleType {
        case .query, .newTerms: "kuery"
        case .eql: "eql"
        case .esql: "esql"
        }
        guard language == expectedLanguage else {
            throw reader.failure("language \"\(language)\" is not supported for type \(type); supported: kuery (KQL) for query and new_terms, eql for eql, esql for esql")
        }

        var parsed = DetectionRule(
            creationDate: metadata?["creation_date"]?.string, updatedDate: metadata?["updated_date"]?.string,
            maturity: metadata?["maturity"]?.string, integration: reader.strings(metadata, "integration"),
            ruleID: try reader.string(rule, "rule_id"), name: try reader.string(rule, "name"),
            description: try reader.string(rule, "description"), author: reader.strings(rule, "author"),
            license: rule["license"]?.string, references: reader.strings(rule, "references"), tags: reader.strings(rule, "tags"),
            riskScore: try reader.int(rule, "risk_score"), severity: try reader.string(rule, "severity"), type: ruleType,
            language: language, index: reader.strings(rule, "index"), query: try reader.string(rule, "query"),
            timestampOverride: rule["timestamp_override"]?.string, falsePositives: reader.strings(rule, "false_positives"),
            note: rule["note"]?.string, from: rule["from"]?.string, interval: rule["interval"]?.string,
            threat: try reader.threats(rule), newTerms: nil, alertSuppression: nil, file: file)
        if rule["max_signals"] != nil { parsed.maxSignals = try reader.int(rule, "max_signals") }
        if rule["version"] != nil { parsed.version = try reader.int(rule, "version") }

        if ruleType == .newTerms {
            guard let table = rule["new_terms"]?.table else { throw reader.failure("a new_terms rule needs a [rule.new_terms] table") }
            let fields = reader.strings(table, "value")
            guard !fields.isEmpty else { throw reader.failure("[rule.new_terms] needs the fields in `value`") }
            var start: String?
            if let windows = table["history_window_start"]?.array {
                for case let entry? in windows.map({ $0.table }) where entry["field"]?.string == "history_window_start" {
                    start = entry["value"]?.string
                }
            }
            guard let start else { throw reader.failure("[rule.new_terms] needs a history_window_start") }
            guard let window = parseRelativeWindow(start) else {
                throw reader.failure("history_window_start \"\(start)\" is not of the form now-<n><s|m|h|d|w>")
            }
            parsed.newTerms = NewTerms(fields: fields, historyWindowStart: start, historyWindowMilliseconds: window)
        }
        if let table = rule["alert_suppression"]?.table {
            let groupBy = reader.strings(table, "group_by")
            guard (1...3).contains(groupBy.count) else { throw reader.failure("alert_suppression.group_by needs 1 to 3 fields") }
            var duration: Int64 = 5 * 60_000
            if let durationTable = table["duration"]?.table {
                guard let value = durationTable["value"]?.int, let unit = durationTable["unit"]?.string,
                    let milliseconds = Self.milliseconds(value: Int64(value), unit: unit)
                else { throw reader.failure("alert_suppression.duration needs an integer value and a unit of s, m or h") }
                duration = milliseconds
            }
            let strategyText = table["missing_fields_strategy"]?.string ?? "suppress"
            guard let strategy = AlertSuppression.MissingFieldsStrategy(rawValue: strategyText) else {
                throw reader.failure("alert_suppression.missing_fields_strategy must be suppress or doNotSuppress, not \(strategyText)")
            }
            parsed.alertSuppression = AlertSuppression(groupBy: groupBy, durationMilliseconds: duration, missingFieldsStrategy: strategy)
        }
        return parsed
    }

    /// The schedule Elastic runs the rule on: `interval` (default 5m) and the look-back of each run, `from`
    /// (default `now-6m`), in milliseconds.
    public func schedule() throws(RuleLoadError) -> (interval: Int64, lookback: Int64) {
        do throws(RuleLoadError) {
            return try Self.schedule(interval: interval, from: from)
        } catch {
            throw RuleLoadError(file: file, ruleName: name, message: error.message)
        }
    }

    public static func schedule(interval: String?, from: String?) throws(RuleLoadError) -> (interval: Int64, lookback: Int64) {
        func span(_ text: String) -> Int64? {
            guard let unit = text.last, let value = Int64(text.dropLast()), value > 0 else { return nil }
            return milliseconds(value: value, unit: String(unit))
        }
        let intervalText = interval ?? "5m"
        guard let every = span(intervalText) else {
            throw RuleLoadError(file: "", message: "interval \"\(intervalText)\" is not of the form <n><s|m|h|d>")
        }
        let fromText = from ?? "now-6m"
        guard let lookback = parseRelativeWindow(fromText) else {
            throw RuleLoadError(file: "", message: "from \"\(fromText)\" is not of the form now-<n><s|m|h|d|w>")
        }
        return (every, lookback)
    }

    /// `now-7d` → 7 days in milliseconds.
    static func parseRelativeWindow(_ text: String) -> Int64? {
        guard text.hasPrefix("now-"), let unit = text.last else { return nil }
        guard let value = Int64(text.dropFirst(4).dropLast()), value > 0 else { return nil }
        return milliseconds(value: value, unit: String(unit))
    }

    static func milliseconds(value: Int64, unit: String) -> Int64? {
        switch unit {
        case "s": value * 1000
        case "m": value * 60_000
        case "h": value * 3_600_000
        case "d": value * 86_400_000
        case "w": value * 7 * 86_400_000
        default: nil
        }
    }
}

/// Typed reads from TOML tables with errors naming the key.
private struct TableReader {
    let file: String
    var ruleName: String?

    init(file: String) { self.file = file }

    func failure(_ message: String) -> RuleLoadError {
        RuleLoadError(file: file, ruleName: ruleName, message: message)
    }

    func string(_ table: TOMLTable, _ key: String) throws(RuleLoadError) -> String {
        guard let value = table[key] else { throw failure("missing required key rule.\(key)") }
        guard let text = value.string else { throw failure("rule.\(key) must be a string") }
        return text
    }

    func int(_ table: TOMLTable, _ key: String) throws(RuleLoadError) -> Int {
        guard let value = table[key] else { throw failure("missing required key rule.\(key)") }
        guard let number = value.int else { throw failure("rule.\(key) must be an integer") }
        return number
    }

    func strings(_ table: TOMLTable?, _ key: String) -> [String] {
        guard let array = table?[key]?.array else { return table?[key]?.string.map { [$0] } ?? [] }
        return array.compactMap(\.string)
    }

    func threats(_ rule: TOMLTable) throws(RuleLoadError) -> [DetectionRule.Threat] {
        guard let array = rule["threat"]?.array else { return [] }
        var threats: [DetectionRule.Threat] = []
        for case let table? in array.map({ $0.table }) {
            func entry(_ table: TOMLTable?) -> DetectionRule.Threat.Entry? {
                guard let table, let id = table["id"]?.string, let name = table["name"]?.string else { return nil }
                return .init(id: id, name: name, reference: table["reference"]?.string ?? "")
            }
            guard let tactic = entry(table["tactic"]?.table) else { throw failure("rule.threat needs a tactic with id and name") }
            let techniques = (table["technique"]?.array ?? [TOMLValue]()).compactMap { value -> DetectionRule.Threat.Technique? in
                guard let technique = entry(value.table) else { return nil }
                let subtechniques = (value.table?["subtechnique"]?.array ?? [TOMLValue]()).compactMap { entry($0.table) }
                return .init(id: technique.id, name: technique.name, reference: technique.reference, subtechnique: subtechniques)
            }
            threats.append(.init(framework: table["framework"]?.string ?? "MITRE ATT&CK", tactic: tactic, technique: techniques))
        }
        return threats
    }
}
