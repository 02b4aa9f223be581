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
        return groups.enumerated().map { index, values in
            RuleMatch(groupValues: values, eventTime: time, documentBytes: document, source: source,
                      sequence: min(sequence, 1023) << 10 | min(index, 1023))
        }
    }
}

/// One rule's aggregation state for one partition (or, in `replay`, one input): suppression windows and,
/// for `new_terms` rules, the history of term combinations; plus what changed since the last changelog flush.
public struct RuleState: Sendable {
    public var suppressor: AlertSuppressor
    public var history: InMemoryNewTermsHistory
    /// For an EQL sequence rule: its pending sequences (its suppressor then keeps only the clocks).
    public var sequences: PendingSequences?
    var dirtyKeys: Set<String> = []
    var dirtyTerms: Set<TermsKey> = []
    var dirtySequenceKeys: Set<String> = []

    /// - Parameter sequence: for an EQL sequence rule, its step count and span (`maxspan`, else the
    ///   pipeline's default span for sequences).
    public init(rule: DetectionRule, suppression: DetectionRule.AlertSuppression, graceMilliseconds: Int64, idleTimeoutMilliseconds: Int64,
                sequence: (steps: Int, span: Int64)? = nil) {
        suppressor = AlertSuppressor(configuration: .init(
            duration: suppression.durationMilliseconds, grace: graceMilliseconds, idleTimeout: idleTimeoutMilliseconds,
            missingFieldsStrategy: suppression.missingFieldsStrategy))
        history = InMemoryNewTermsHistory()
        sequences = sequence.map { PendingSequences(stepCount: $0.steps, maxspan: $0.span) }
    }

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
        let actions = suppressor.apply(match, offset: match.sourcePosition, now: now)
        dirtyKeys.insert(match.groupKey)
        for action in actions { dirtyKeys.insert(action.window.groupKey) }
        return actions
    }

    mutating func advance(toWatermark time: Int64) -> [AlertAction] {
        let actions = suppressor.advance(toWatermark: time)
        for action in actions { dirtyKeys.insert(action.window.groupKey) }
        expireSequences()
        return actions
    }

    mutating func tick(now: Int64) -> [AlertAction] {
        let actions = suppressor.tick(now: now)
        for action in actions { dirtyKeys.insert(action.window.groupKey) }
        expireSequences()
        return actions
    }
}
