import AuditEvents
import Detection

extension DetectionRule.AlertSuppression {
    /// Suppression for rules without `[rule.alert_suppression]`: per account, five minutes.
    public static let pipelineDefault = DetectionRule.AlertSuppression(groupBy: ["kubernetes.audit.user.username"], durationMilliseconds: 5 * 60_000)
}

extension CompiledRule {
    /// The matches one event brings for this rule, ready for suppression: one per group (for `new_terms`
    /// rules, one per combination of terms; none when a term is missing). Shared by the live pipeline and
    /// `replay`, so both compute the same documents.
    /// - Parameters:
    ///   - sequence: the event's place among the events of its record.
    ///   - ingestTime: `event.ingested` for an event that has none (replay derives it from the event).
    public func ruleMatches(for event: AuditEvent, groupBy: [FieldPath], source: RecordPosition, sequence: Int, ingestTime: Int64) -> [RuleMatch] {
        let ingested = event.ingestedMilliseconds ?? ingestTime
        let time = timestampField.name == "event.ingested" ? ingested : (eventTime(event) ?? ingested)
        if let program = esql {
            return esqlMatches(program, event: event, groupBy: groupBy, source: source, sequence: sequence, ingested: ingested, time: time)
        }
        if let sequenceSteps = self.sequence {
            // One match per join key the event matches steps under, grouped (and partitioned) by that key.
            let steps = sequenceSteps.matches(event)
            guard !steps.isEmpty else { return [] }
            let document = event.canonicalDocument(ingestedIfMissing: ingested)
            return steps.enumerated().map { index, entry in
                var match = RuleMatch(groupValues: entry.key.map(Optional.some), eventTime: time, documentBytes: document, source: source,
                                      sequence: min(sequence, 1023) << 10 | min(index, 1023))
                match.steps = entry.steps
                return match
            }
        }
        let document = event.canonicalDocument(ingestedIfMissing: ingested)
        let groups: [[String?]] = rule.type == .newTerms
            ? termCombinations(event).map { $0.values.map(Optional.some) }
            : [groupBy.map { event.firstString($0) }]
        // Read from the event's field view, which gives the document's values (its window summary then
        // does not parse the document again).
        let summaryValues = groups.isEmpty ? nil : SuppressionSummary.Values { field, body in event.forEachValue(of: field, body) }
        return groups.enumerated().map { index, values in
            var match = RuleMatch(groupValues: values, eventTime: time, documentBytes: document, source: source,
                                  sequence: min(sequence, 1023) << 10 | min(index, 1023))
            match.summaryValues = summaryValues
            return match
        }
    }
}

extension CompiledRule {
    /// An ES|QL rule's matches. Without STATS: the event's document with the query's computed columns
    /// added, grouped for suppression as a query rule's. With STATS: one contribution per group the row
    /// belongs to — the group's key values and the row's partial aggregates, not the event — keyed and
    /// partitioned by the group.
    func esqlMatches(_ program: ESQLProgram, event: AuditEvent, groupBy: [FieldPath], source: RecordPosition, sequence: Int,
                     ingested: Int64, time: Int64) -> [RuleMatch] {
        guard let slots = program.evaluate(event, now: time) else { return [] }
        if !program.isAggregating {
            var document = event.canonicalDocument(ingestedIfMissing: ingested)
            let columns = program.outputColumns(slots)
            if !columns.isEmpty, case .object(var object)? = try? JSONValue.parse(document) {
                for column in columns { object.setValue(column.value.json, atDottedPath: column.name) }
                document = []
                JSONValue.object(object).write(to: &document, sortedKeys: true)
            }
            return [RuleMatch(groupValues: groupBy.map { event.firstString($0) }, eventTime: time, documentBytes: document, source: source,
                              sequence: min(sequence, 1023) << 10)]
        }
        let (groups, inputs) = program.contributions(slots, document: event, now: time)
        let partials = program.partials(inputs)
        return groups.enumerated().map { index, keys in
            var match = RuleMatch(groupValues: keys.map(ESQLContribution.keyText), eventTime: time, documentBytes: [], source: source,
                                  sequence: min(sequence, 1023) << 10 | min(index, 1023))
            match.contribution = ESQLContribution(keys: keys, partials: partials)
            return match
        }
    }
}

/// An aggregating ES|QL rule's match, as the repartition record carries it: the group's key values and one
/// row's partial aggregates.
public struct ESQLContribution: Sendable, Equatable {
    public var keys: [ESQLValue]
    public var partials: [ESQLPartialAggregate]

    public init(keys: [ESQLValue], partials: [ESQLPartialAggregate]) {
        self.keys = keys
        self.partials = partials
    }

    /// As a match's document: `{"a":[partials],"k":[keys]}`.
    public var bytes: [UInt8] {
        var bytes: [UInt8] = []
        JSONValue.object(["k": .array(keys.map(\.encoded)), "a": .array(partials.map(\.encoded))]).write(to: &bytes, sortedKeys: true)
        return bytes
    }

    /// The match's contribution: the one it carries in-process, else its bytes decoded.
    public init?(_ match: RuleMatch) {
        if let contribution = match.contribution {
            self = contribution
            return
        }
        guard case .object(let object)? = try? JSONValue.parse(match.documentBytes),
            case .array(let keyItems)? = object["k"], case .array(let partialItems)? = object["a"]
        else { return nil }
        var keys: [ESQLValue] = []
        for item in keyItems {
            guard let value = ESQLValue(encoded: item) else { return nil }
            keys.append(value)
        }
        var partials: [ESQLPartialAggregate] = []
        for item in partialItems {
            guard let partial = ESQLPartialAggregate(encoded: item) else { return nil }
            partials.append(partial)
        }
        self.keys = keys
        self.partials = partials
    }

    /// A key value as group-key text: strings as they are, other types tagged so that no two values share
    /// a text (nil for null: the null group).
    public static func keyText(_ value: ESQLValue) -> String? {
        switch value {
        case .null: nil
        case .string(let text): text
        default: "\u{1}" + (value.encoded.serialized)
        }
    }
}

extension JSONValue {
    var serialized: String {
        var bytes: [UInt8] = []
        write(to: &bytes, sortedKeys: true)
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension JSONObject {
    /// Sets `a.b.c` as nested objects (as Elasticsearch reads a dotted name), replacing what is in the way.
    public mutating func setValue(_ value: JSONValue, atDottedPath path: String) {
        let parts = path.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            self[path] = value
            return
        }
        var inner = self[parts[0]]?.objectValue ?? JSONObject()
        inner.setValue(value, atDottedPath: parts[1])
        self[parts[0]] = .object(inner)
    }
}

/// One rule's aggregation state for one partition (or, in `replay`, one input): suppression windows and,
/// for `new_terms` rules, the history of term combinations; plus what changed since the last changelog flush.
public struct RuleState: Sendable {
    public var suppressor: AlertSuppressor
    public var history: InMemoryNewTermsHistory
    /// For an EQL sequence rule: its pending sequences (its suppressor then keeps only the clocks).
    public var sequences: PendingSequences?
    /// For an aggregating ES|QL rule: its groups' panes on the rule's schedule (the suppressor keeps only
    /// the clocks), and the rows of executions run since the processor last took them.
    public var aggregation: ScheduledAggregation?
    let program: ESQLProgram?
    var executionResults: [ESQLExecutionResult] = []
    var dirtyKeys: Set<String> = []
    var dirtyTerms: Set<TermsKey> = []
    var dirtySequenceKeys: Set<String> = []

    /// - Parameter sequence: for an EQL sequence rule, its step count and span (`maxspan`, else the
    ///   pipeline's default span for sequences).
    public init(rule: DetectionRule, suppression: DetectionRule.AlertSuppression, graceMilliseconds: Int64, idleTimeoutMilliseconds: Int64,
                sequence: (steps: Int, span: Int64)? = nil, esql: (program: ESQLProgram, interval: Int64, lookback: Int64)? = nil) {
        suppressor = AlertSuppressor(configuration: .init(
            duration: suppression.durationMilliseconds, grace: graceMilliseconds, idleTimeout: idleTimeoutMilliseconds,
            missingFieldsStrategy: suppression.missingFieldsStrategy))
        history = InMemoryNewTermsHistory()
        sequences = sequence.map { PendingSequences(stepCount: $0.steps, maxspan: $0.span) }
        if let esql, esql.program.isAggregating {
            program = esql.program
            aggregation = ScheduledAggregation(interval: esql.interval, lookback: esql.lookback, functions: esql.program.aggregateFunctions)
        } else {
            program = nil
        }
    }

    /// Applies one contribution of an aggregating ES|QL rule, then runs the executions stream time has
    /// reached. Returns false for a contribution that is late or a replay (not applied).
    public mutating func applyContribution(_ match: RuleMatch, now: Int64) -> Bool {
        guard aggregation != nil, let contribution = ESQLContribution(match) else { return false }
        _ = suppressor.observe(eventTime: match.eventTime, now: now)
        let applied = aggregation!.add(key: match.groupKey, keys: contribution.keys, partials: contribution.partials, time: match.eventTime,
                                       position: match.sourcePosition, source: match.sourcePartition)
        runExecutions()
        return applied
    }

    /// Runs the executions that stream time, less the grace period, has reached.
    mutating func runExecutions(all: Bool = false) {
        guard aggregation != nil, let program else { return }
        let horizon = all ? Int64.max : (suppressor.streamTime == .min ? .min : suppressor.streamTime - suppressor.configuration.grace)
        guard horizon != .min else { return }
        executionResults += aggregation!.run(upTo: horizon, program: program)
    }

    /// The rows of executions run since the last call.
    public mutating func takeExecutionResults() -> [ESQLExecutionResult] {
        defer { executionResults.removeAll() }
        return executionResults
    }

    /// Runs every execution still to come (the end of a replay).
    public mutating func runAllExecutions() { runExecutions(all: true) }

    /// Applies one event's match to an EQL sequence rule's pending sequences (Elastic does not suppress
    /// sequence alerts: each completed sequence alerts).
    /// - Returns: the sequences it completes.
    public mutating func applySequenceStep(_ match: RuleMatch, now: Int64) -> [CompletedSequence] {
        guard sequences != nil else { return [] }
        _ = suppressor.observe(eventTime: match.eventTime, now: now)
        let completed = sequences!.apply(match)
        dirtySequenceKeys.insert(match.groupKey)
        expireSequences()
        return completed
    }

    /// Drops pending sequences that stream time has left behind.
    mutating func expireSequences() {
        guard sequences != nil, suppressor.streamTime != .min else { return }
        for key in sequences!.expire(horizon: suppressor.streamTime - suppressor.configuration.grace) { dirtySequenceKeys.insert(key) }
    }

    /// Applies one match; for `new_terms` rules only combinations not seen within the history window reach
    /// suppression.
    public mutating func apply(_ match: RuleMatch, rule: DetectionRule, now: Int64) -> [AlertAction] {
        if let window = rule.newTerms?.historyWindowMilliseconds {
            let key = TermsKey(match.groupValues.map { $0 ?? "" })
            dirtyTerms.insert(key)
            if let seen = history.lastSeen(key), abs(match.eventTime - seen) <= window {
                history.record(key, at: max(seen, match.eventTime))
                return []
            }
            history.record(key, at: match.eventTime)
        }
        let key = match.groupKey
        let actions = suppressor.apply(match, key: key, offset: match.sourcePosition, now: now)
        dirtyKeys.insert(key)
        for action in actions { dirtyKeys.insert(action.window.groupKey) }
        return actions
    }

    mutating func advance(toWatermark time: Int64) -> [AlertAction] {
        let actions = suppressor.advance(toWatermark: time)
        for action in actions { dirtyKeys.insert(action.window.groupKey) }
        expireSequences()
        runExecutions()
        return actions
    }

    mutating func tick(now: Int64) -> [AlertAction] {
        let actions = suppressor.tick(now: now)
        for action in actions { dirtyKeys.insert(action.window.groupKey) }
        expireSequences()
        runExecutions()
        return actions
    }
}
