import AuditEvents
import Foundation

/// How prefilter literals of a disjunction combine, for KQL and EQL alike: one group holding the best
/// (most selective) group of each alternative; nothing when any alternative requires nothing.
enum PrefilterLiterals {
    static func disjunction(_ alternatives: [[[String]]]) -> [[String]] {
        var group: [String] = []
        for groups in alternatives {
            guard let best = groups.max(by: { ($0.map(\.count).min() ?? 0) < ($1.map(\.count).min() ?? 0) }) else { return [] }
            group += best
        }
        return group.isEmpty ? [] : [Array(Set(group)).sorted()]
    }
}

/// A loaded rule, ready to run: its query compiled (KQL, or an EQL event query), its prefilter derived, its
/// term fields resolved.
public final class CompiledRule: Sendable {
    public enum Matcher: Sendable {
        case kql(CompiledQuery)
        case eql(EQLEventMatcher)
        /// An EQL sequence: per event, the steps it matches; joining them is the pipeline's keyed state.
        case sequence(EQLSequenceSteps)
        /// An ES|QL query: per event; with STATS, its groups' rows are the pipeline's keyed state.
        case esql(ESQLProgram)
    }

    public let rule: DetectionRule
    public let matcher: Matcher
    /// Literals a record must contain to possibly match; nil when the query requires none.
    public let prefilter: Prefilter?
    public let newTermsFields: [FieldPath]
    /// Event time: the rule's `timestamp_override` (Elastic's rules use `event.ingested`), else `@timestamp`.
    public let timestampField: FieldPath
    /// Elastic's schedule for the rule (`interval`, and `from` as a look-back): aggregating ES|QL rules
    /// reproduce it in event time.
    public let schedule: (interval: Int64, lookback: Int64)

    public init(_ rule: DetectionRule) throws(RuleLoadError) {
        self.rule = rule
        schedule = try rule.schedule()
        if rule.type == .esql {
            let program: ESQLProgram
            do throws(ESQLCompileError) {
                program = try ESQLProgram(parsing: rule.query)
            } catch {
                throw RuleLoadError(file: rule.file, ruleName: rule.name, message: "query: \(error)")
            }
            matcher = .esql(program)
            prefilter = program.requiredLiterals.map { Prefilter(requirements: $0) }
            if program.isAggregating, rule.alertSuppression != nil {
                throw RuleLoadError(file: rule.file, ruleName: rule.name,
                                    message: "[rule.alert_suppression] on an aggregating ES|QL rule: its scheduled executions de-duplicate by the STATS groups already; remove it")
            }
        } else if rule.type == .eql {
            do throws(EQLSyntaxError) {
                switch try EQLParser.parse(rule.query) {
                case .event(let eventQuery):
                    let eql = try EQLEventMatcher(eventQuery)
                    matcher = .eql(eql)
                    prefilter = eql.requiredLiterals.map { Prefilter(requirements: $0) }
                case .sequence(let sequence):
                    let steps = try EQLSequenceSteps(sequence)
                    matcher = .sequence(steps)
                    prefilter = steps.requiredLiterals.map { Prefilter(requirements: $0) }
                }
            } catch {
                throw RuleLoadError(file: rule.file, ruleName: rule.name, message: "query: \(error)")
            }
            if case .sequence = matcher, rule.alertSuppression != nil {
                // As in Kibana, which offers suppression for EQL event queries only.
                throw RuleLoadError(file: rule.file, ruleName: rule.name,
                                    message: "[rule.alert_suppression] on an EQL sequence: Elastic suppresses event-query alerts, not sequences; remove it")
            }
        } else {
            let query: CompiledQuery
            do {
                query = try CompiledQuery(parsing: rule.query)
            } catch {
                throw RuleLoadError(file: rule.file, ruleName: rule.name, message: "query: \(error)")
            }
            matcher = .kql(query)
            prefilter = query.requiredLiterals.map { Prefilter(requirements: $0) }
        }
        newTermsFields = rule.newTerms?.fields.map(FieldPath.init) ?? []
        timestampField = FieldPath(rule.timestampOverride ?? "@timestamp")
    }

    public static func load(file: String) throws(RuleLoadError) -> CompiledRule {
        try CompiledRule(DetectionRule.load(file: file))
    }

    public var id: String { rule.ruleID }
    public var name: String { rule.name }

    /// The KQL query (nil for EQL rules).
    public var query: CompiledQuery? { if case .kql(let query) = matcher { query } else { nil } }

    /// Whether the event matches the rule's query (for `new_terms` rules: before the novelty check).
    public func matches(_ event: some KQLDocument) -> Bool {
        switch matcher {
        case .kql(let query): query.matches(event)
        case .eql(let eql): eql.matches(event)
        case .sequence(let steps): steps.matchesAny(event)
        case .esql(let program): program.evaluate(event, now: eventTime(event) ?? 0) != nil
        }
    }

    public func matches(_ event: AuditEvent) -> Bool {
        switch matcher {
        case .kql(let query): query.matches(event)  // the flat program on the lazy view
        case .eql(let eql): eql.matches(event)
        case .sequence(let steps): steps.matchesAny(event)
        case .esql(let program): program.evaluate(event, now: eventTime(event) ?? 0) != nil
        }
    }

    /// The ES|QL program, for an ES|QL rule.
    public var esql: ESQLProgram? { if case .esql(let program) = matcher { program } else { nil } }

    /// The sequence's steps, for an EQL sequence rule.
    public var sequence: EQLSequenceSteps? { if case .sequence(let steps) = matcher { steps } else { nil } }

    /// The event's time for this rule, in milliseconds.
    public func eventTime(_ event: AuditEvent) -> Int64? {
        switch timestampField.name {
        case "event.ingested": event.ingestedMilliseconds ?? event.timestampMilliseconds
        case "@timestamp": event.timestampMilliseconds
        default: event.firstString(timestampField).flatMap { Timestamp.milliseconds(fromRFC3339: $0) } ?? event.timestampMilliseconds
        }
    }

    /// A document's time for this rule: its timestamp field, else `@timestamp` (RFC 3339), in milliseconds.
    public func eventTime(_ document: some KQLDocument) -> Int64? {
        for field in [timestampField, FieldPath("@timestamp")] {
            var time: Int64?
            document.forEachValue(of: field) { value in
                time = value.kind == .string ? Timestamp.milliseconds(fromRFC3339: value.stringValue) : nil
                return false
            }
            if let time { return time }
        }
        return nil
    }

    /// For `new_terms` rules: the combinations of the term fields' values in this event (every combination
    /// when fields have several values, at most `limit`). Empty when a field is missing: such an event
    /// cannot bring a new term, as in Elastic.
    public func termCombinations(_ event: some KQLDocument, limit: Int = 100) -> [TermsKey] {
        var combinations: [[String]] = [[]]
        for field in newTermsFields {
            var values: [String] = []
            event.forEachValue(of: field) { value in
                let text = value.stringValue
                if !values.contains(text) { values.append(text) }
                return values.count < limit
            }
            if values.isEmpty { return [] }
            combinations = combinations.flatMap { prefix in values.map { prefix + [$0] } }.prefix(limit).map { $0 }
        }
        return combinations.map(TermsKey.init)
    }

    /// For `new_terms` rules: the combinations not seen within the history window before `time`. Every
    /// combination is recorded as seen at `time` (the latest sighting wins).
    public func newTerms(_ event: some KQLDocument, at time: Int64, history: some NewTermsHistory) -> [TermsKey] {
        guard let window = rule.newTerms?.historyWindowMilliseconds else { return [] }
        var fresh: [TermsKey] = []
        for key in termCombinations(event) {
            if let seen = history.lastSeen(key), abs(time - seen) <= window {
                history.record(key, at: max(seen, time))
            } else {
                fresh.append(key)
                history.record(key, at: time)
            }
        }
        return fresh
    }
}

/// The values of a `new_terms` rule's fields, in field order.
public struct TermsKey: Hashable, Sendable, CustomStringConvertible {
    public var values: [String]
    public init(_ values: [String]) { self.values = values }
    public var description: String { values.joined(separator: " | ") }
}

/// The history a `new_terms` rule keeps: when each combination of term values was last seen. The pipeline
/// keeps one per partition and persists it to a compacted changelog; this module's in-memory store is
/// bounded and evicts by age.
public protocol NewTermsHistory: AnyObject {
    func lastSeen(_ key: TermsKey) -> Int64?
    func record(_ key: TermsKey, at time: Int64)
    /// Forgets combinations last seen before `time` (outside every window that could still ask).
    func evict(before time: Int64)
    var count: Int { get }
}

/// A bounded in-memory history. Over capacity, the combinations seen longest ago go first.
/// Not thread-safe: one owner at a time (the pipeline keeps each partition's under its state lock).
public final class InMemoryNewTermsHistory: NewTermsHistory, @unchecked Sendable {
    private var seen: [TermsKey: Int64] = [:]
    public let capacity: Int
    public private(set) var evictedCount = 0

    public init(capacity: Int = 1_000_000) {
        self.capacity = capacity
    }

    public func lastSeen(_ key: TermsKey) -> Int64? { seen[key] }

    public func record(_ key: TermsKey, at time: Int64) {
        seen[key] = max(seen[key] ?? .min, time)
        if seen.count > capacity {
            // Drop the oldest tenth at once, so eviction costs O(1) amortized per record.
            let drop = max(1, capacity / 10)
            for (key, _) in seen.sorted(by: { $0.value < $1.value }).prefix(drop) { seen.removeValue(forKey: key) }
            evictedCount += drop
        }
    }

    public func evict(before time: Int64) {
        let before = seen.count
        seen = seen.filter { $0.value >= time }
        evictedCount += before - seen.count
    }

    public var count: Int { seen.count }

    /// Every entry, for persisting.
    public var entries: [(TermsKey, Int64)] { seen.map { ($0.key, $0.value) } }
}

/// All the rules of a directory, loaded together: any file that fails is reported, none is skipped.
public struct RuleSet: Sendable {
    public let rules: [CompiledRule]

    public init(_ rules: [CompiledRule]) { self.rules = rules }

    /// Loads every `*.toml` file of `directory`.
    /// - Throws: ``RuleSetError`` with one entry per failing file.
    public static func load(directory: String) throws(RuleSetError) -> RuleSet {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".toml") }.sorted()
        } catch {
            throw RuleSetError(failures: [RuleLoadError(file: directory, message: "cannot list rules: \(error.localizedDescription)")])
        }
        return try load(files: files.map { (directory as NSString).appendingPathComponent($0) })
    }

    public static func load(files: [String]) throws(RuleSetError) -> RuleSet {
        var rules: [CompiledRule] = []
        var failures: [RuleLoadError] = []
        for file in files {
            do throws(RuleLoadError) {
                rules.append(try CompiledRule.load(file: file))
            } catch {
                failures.append(error)
            }
        }
        guard failures.isEmpty else { throw RuleSetError(failures: failures) }
        return RuleSet(rules)
    }

    /// A prefilter for the whole set: a record passes if any rule might match it.
    public var prefilter: PrefilterSet { PrefilterSet(rules.map(\.prefilter)) }
}

public struct RuleSetError: Error, Sendable, CustomStringConvertible {
    public var failures: [RuleLoadError]
    public var description: String { failures.map(\.description).joined(separator: "\n") }
}
