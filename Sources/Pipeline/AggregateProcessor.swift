// The aggregate processor: a match → its state store's suppression → alert records.
import AuditEvents
import Detection
import Kafka

/// Applies matches to state stores and turns the resulting alert actions into alert records (keyed by
/// alert id, last write wins). Deterministic: the same matches in the same order give the same bytes.
struct AggregateProcessor {
    let topology: Topology
    let builders: [AlertDocumentBuilder]
    /// Per rule, the headers every alert record of it carries (rule id, severity, content type), made once.
    private let ruleHeaders: [[KafkaHeader]]

    init(topology: Topology) {
        self.topology = topology
        builders = topology.rules.map { AlertDocumentBuilder(rule: $0.rule, productVersion: topology.configuration.productVersion) }
        ruleHeaders = builders.map { $0.headers(format: topology.configuration.alertFormat).map { KafkaHeader($0.0, $0.1) } }
    }

    private static let kindHeaders = (new: KafkaHeader("alert.kind", AlertAction.Kind.new.rawValue),
                                      update: KafkaHeader("alert.kind", AlertAction.Kind.update.rawValue))

    func emptyState(ruleIndex: Int) -> RuleState {
        let configuration = topology.configuration
        let compiled = topology.rules[ruleIndex]
        let rule = compiled.rule
        return RuleState(rule: rule, suppression: configuration.suppression(for: rule),
                         graceMilliseconds: configuration.graceMilliseconds, idleTimeoutMilliseconds: configuration.idleTimeoutMilliseconds,
                         sequence: compiled.sequence.map { ($0.steps.count, $0.maxspanMilliseconds ?? configuration.sequenceSpanMilliseconds) },
                         esql: compiled.esql.map { ($0, compiled.schedule.interval, compiled.schedule.lookback) })
    }

    /// Applies one match of a record the store does not hold yet (the caller checks
    /// ``StateStore/covers(offset:)`` once per record, then moves the position past it).
    func apply(_ match: RuleMatch, to store: inout StateStore, now: Int64, counts: inout TaskCounts, output: inout [OutputRecord]) {
        counts.matchesAggregated += 1
        if store.state.aggregation != nil {
            let before = (store.state.aggregation!.lateCount, store.state.aggregation!.replayCount)
            if !store.state.applyContribution(match, now: now) {
                counts.lateMatches += store.state.aggregation!.lateCount - before.0
                counts.duplicateMatches += store.state.aggregation!.replayCount - before.1
            }
            output += executionRecords(&store, counts: &counts)
            return
        }
        if store.state.sequences != nil {
            for sequence in store.state.applySequenceStep(match, now: now) {
                output += sequenceAlertRecords(sequence, ruleIndex: store.id.ruleIndex, counts: &counts)
            }
            return
        }
        let before = (store.state.suppressor.lateCount, store.state.suppressor.duplicateCount)
        let actions = store.state.apply(match, rule: topology.rules[store.id.ruleIndex].rule, now: now)
        let late = store.state.suppressor.lateCount - before.0
        let duplicate = store.state.suppressor.duplicateCount - before.1
        counts.lateMatches += late
        counts.duplicateMatches += duplicate
        if duplicate == 0 && !actions.contains(where: { $0.kind == .new }) { counts.suppressedMatches += 1 }
        for action in actions { output.append(alertRecord(action, ruleIndex: store.id.ruleIndex, counts: &counts)) }
    }

    /// A completed sequence's alerts, keyed by their ids: in ECS, one building-block alert per event and
    /// the shell alert that groups them (last, so a consumer that sees the shell has seen its parts); in
    /// OCSF, one finding with the events as evidences.
    func sequenceAlertRecords(_ sequence: CompletedSequence, ruleIndex: Int, counts: inout TaskCounts) -> [OutputRecord] {
        let builder = builders[ruleIndex]
        let ruleID = topology.rules[ruleIndex].id
        counts.alertsNew += 1
        counts.alertsNewByRule[ruleID, default: 0] += 1
        let format = topology.configuration.alertFormat
        let documents = builder.sequenceDocuments(sequence, format: format)
        return documents.enumerated().map { index, document in
            OutputRecord(
                topic: topology.configuration.alertsTopic, key: Array(document.id.utf8), value: document.bytes,
                headers: ruleHeaders[ruleIndex] + [Self.kindHeaders.new, KafkaHeader("alert.sequence", document.role)],
                latencyOrigin: index == documents.count - 1 ? sequence.end : nil, lastWriteWins: true)
        }
    }

    /// The alerts of the executions an aggregating ES|QL rule's store has run since the last call: one per
    /// passing row that does not repeat the group's row of the execution before, keyed by its id.
    func executionRecords(_ store: inout StateStore, counts: inout TaskCounts) -> [OutputRecord] {
        guard store.state.aggregation != nil else { return [] }
        let builder = builders[store.id.ruleIndex]
        let format = topology.configuration.alertFormat
        var records: [OutputRecord] = []
        for result in store.state.takeExecutionResults() {
            if result.duplicate {
                counts.suppressedMatches += 1
                continue
            }
            counts.alertsNew += 1
            counts.alertsNewByRule[store.id.ruleID, default: 0] += 1
            let document = builder.executionDocument(result, format: format)
            records.append(OutputRecord(
                topic: topology.configuration.alertsTopic, key: Array(document.id.utf8), value: document.bytes,
                headers: ruleHeaders[store.id.ruleIndex]
                    + [Self.kindHeaders.new, KafkaHeader("alert.execution", Timestamp.rfc3339(milliseconds: result.execution))],
                latencyOrigin: result.execution, lastWriteWins: true))
        }
        return records
    }

    func alertRecord(_ action: AlertAction, ruleIndex: Int, counts: inout TaskCounts) -> OutputRecord {
        let builder = builders[ruleIndex]
        let ruleID = topology.rules[ruleIndex].id
        if action.kind == .new {
            counts.alertsNew += 1
            counts.alertsNewByRule[ruleID, default: 0] += 1
        } else {
            counts.alertsUpdated += 1
            counts.alertsUpdatedByRule[ruleID, default: 0] += 1
        }
        let format = topology.configuration.alertFormat
        let alertID = builder.alertID(for: action.window)
        return OutputRecord(
            topic: topology.configuration.alertsTopic, key: Array(alertID.utf8),
            value: builder.serialized(action, format: format, alertID: alertID),
            headers: ruleHeaders[ruleIndex] + [action.kind == .new ? Self.kindHeaders.new : Self.kindHeaders.update],
            latencyOrigin: action.kind == .new ? action.window.first.eventTime : nil, lastWriteWins: true)
    }
}
