// The detect processor: one input record → its rule matches, or a dead letter with the reason.
import AuditEvents
import Detection
import Kafka

/// A consumed record as the processors see it: borrowed bytes, valid only for the duration of the call
/// that hands it over (a librdkafka message, or an entry of the in-memory log).
public struct RecordView {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: UnsafeRawBufferPointer?
    public var payload: UnsafeRawBufferPointer
    /// The record's Kafka timestamp, milliseconds.
    public var timestamp: Int64?

    public init(topic: String, partition: Int32, offset: Int64, key: UnsafeRawBufferPointer?, payload: UnsafeRawBufferPointer, timestamp: Int64?) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.payload = payload
        self.timestamp = timestamp
    }

    public var topicPartition: TopicPartition { TopicPartition(topic, partition) }
}

/// Borrowed bytes must not cross threads: a view lives inside the poll that produced it.
@available(*, unavailable)
extension RecordView: Sendable {}

/// Decodes every record (or only prefilter candidates), stamps `event.ingested` (the event's own, else the
/// record's Kafka timestamp, else the clock), evaluates every rule and hands each match on; an undecodable
/// record becomes a dead letter: its original bytes, with the error and source position in headers.
struct DetectProcessor {
    let topology: Topology
    let prefilter: PrefilterSet
    let decoder: AuditRecordDecoder
    let groupFields: [[FieldPath]]
    let clock: @Sendable () -> Int64

    init(topology: Topology, prefilter: PrefilterSet, clock: @escaping @Sendable () -> Int64) {
        self.topology = topology
        self.prefilter = prefilter
        self.clock = clock
        decoder = AuditRecordDecoder(limits: topology.configuration.decoderLimits)
        groupFields = topology.rules.map { topology.configuration.suppression(for: $0.rule).groupBy.map(FieldPath.init) }
    }

    /// - Parameter onMatch: called with the rule's index and each match, in record order.
    func process(_ record: RecordView, counts: inout TaskCounts, output: inout [OutputRecord], prefilterOrder: inout PrefilterSet.SearchOrder,
                 onMatch: (Int, RuleMatch) -> Void) {
        let payload = record.payload
        counts.inputRecords += 1
        // A record no rule can match is only judged (when every record is): the validation-only pass, no
        // tape, the decoder's verdict.
        var firstFailure: AuditDecodeError?
        let screening = decoder.screen(payload, prefilter: prefilter, order: &prefilterOrder, validate: topology.configuration.validateEveryRecord) { error in
            if firstFailure == nil { firstFailure = error }
            counts.decodeErrors[error.reason.rawValue, default: 0] += 1
        }
        if case .rejected(let events) = screening {
            counts.prefilterRejected += 1
            counts.eventsDecoded += events
            if let firstFailure { deadLetter(record, firstFailure, counts: &counts, output: &output) }
            return
        }
        let fromEvent = record.timestamp == nil && topology.configuration.ingestTimeFromEvent
        let ingest = record.timestamp ?? (fromEvent ? 0 : clock())
        var decodeFailure: AuditDecodeError?
        var events = 0
        let rules = topology.rules
        let clusterName = topology.configuration.clusterNames.isEmpty ? nil : topology.configuration.clusterNames[record.topic]
        decoder.decode(payload, ingestTime: fromEvent ? nil : ingest, clusterName: clusterName) { result in
            switch result {
            case .failure(let error):
                if decodeFailure == nil { decodeFailure = error }
                counts.decodeErrors[error.reason.rawValue, default: 0] += 1
            case .success(let event):
                events += 1
                let eventIngest = fromEvent
                    ? event.ingestedMilliseconds ?? event.firstString(Self.stageTimestamp).flatMap { Timestamp.milliseconds(fromRFC3339: $0) }
                        ?? event.timestampMilliseconds ?? 0
                    : ingest
                for (index, rule) in rules.enumerated() where rule.esql != nil || rule.matches(event) {  // ES|QL: evaluated once, in ruleMatches
                    let matches = rule.ruleMatches(
                        for: event, groupBy: groupFields[index],
                        source: RecordPosition(topic: record.topic, partition: record.partition, offset: record.offset),
                        sequence: events - 1, ingestTime: eventIngest)
                    counts.matches[rule.id, default: 0] += matches.count
                    for match in matches { onMatch(index, match) }
                }
            }
        }
        counts.eventsDecoded += events
        if let decodeFailure { deadLetter(record, decodeFailure, counts: &counts, output: &output) }
    }

    /// The record's original bytes to its dead-letter topic, the first error and its position in headers.
    private func deadLetter(_ record: RecordView, _ failure: AuditDecodeError, counts: inout TaskCounts, output: inout [OutputRecord]) {
        output.append(OutputRecord(
            topic: topology.configuration.deadLetterTopic(record.topic), key: record.key.map(Array.init), value: Array(record.payload),
            headers: [
                KafkaHeader("error.reason", failure.reason.rawValue), KafkaHeader("error.message", failure.message),
                KafkaHeader("error.offset", "\(failure.offset)"), KafkaHeader("error.event_index", "\(failure.eventIndex)"),
                KafkaHeader("source.topic", record.topic), KafkaHeader("source.partition", "\(record.partition)"),
                KafkaHeader("source.offset", "\(record.offset)"),
            ]))
        counts.deadLettered += 1
    }

    static let stageTimestamp = FieldPath("kubernetes.audit.stageTimestamp")

    /// The repartition record of a match: keyed by its group key, in the partition the topology chooses,
    /// stamped by the pipeline's clock (the aggregate side counts idle time from it, by the same clock).
    func repartitionRecord(_ match: RuleMatch, ruleIndex: Int, floor: Int64?) -> OutputRecord? {
        guard let topic = topology.matchesTopics[ruleIndex] else { return nil }
        let key = match.groupKeyBytes
        let rule = topology.rules[ruleIndex]
        return OutputRecord(topic: topic, partition: topology.matchesPartition(forKey: key), key: key,
                            value: StateCodec.encode(match, ruleID: rule.id, floor: floor), headers: [KafkaHeader("rule_id", rule.id)],
                            timestamp: clock())
    }
}
