// Pending EQL sequences of one rule in one partition: Elasticsearch's matching rules in event time, as keyed state.
import Detection

/// A sequence some of whose steps have matched: its events in step order.
public struct PendingSequence: Sendable, Equatable {
    public var events: [RuleMatch]
    public var start: Int64 { events[0].eventTime }
    public var last: Int64 { events[events.count - 1].eventTime }
}

/// A sequence whose every step has matched: what the rule alerts on.
public struct CompletedSequence: Sendable, Equatable {
    /// The join key, as ``RuleMatch/groupKey`` joins it.
    public var groupKey: String
    public var groupValues: [String?]
    /// One event per step, in step order.
    public var events: [RuleMatch]
    public var start: Int64 { events[0].eventTime }
    public var end: Int64 { events[events.count - 1].eventTime }

    public init(groupKey: String, groupValues: [String?], events: [RuleMatch]) {
        precondition(!events.isEmpty, "a sequence has events")
        self.groupKey = groupKey
        self.groupValues = groupValues
        self.events = events
    }
}

/// The state machine of an EQL sequence rule for one partition of its repartition topic (every event of a
/// join key is in one partition, in the order the partition holds them). It follows Elasticsearch's
/// sequence matcher:
/// - an event matching step 0 starts a sequence for its key;
/// - an event matching step `i` takes, of the key's sequences waiting for step `i`, the latest one whose
///   last event is not after it in event time (ties: the one read first), and drops that one's older
///   rivals at the same step; the taken sequence advances, or completes at the last step;
/// - a sequence whose event would end more than `maxspan` after its first is rejected;
/// - an event matching `until` discards the key's sequences whose last event is not after it, before it
///   counts as a step (so it can start a sequence, not continue one);
/// - an event matching several steps is applied from the last step down, so it never fills two
///   consecutive steps of one sequence.
/// A pending sequence expires once stream time, less the grace period, is past its start plus `maxspan`
/// (no event that is not late can complete it). Per key and step at most ``perStepCapacity`` sequences
/// wait (the oldest goes first): only the latest ever advances unless events arrive out of order.
/// Deterministic: the same matches in the same order give the same sequences.
public struct PendingSequences: Sendable {
    public static let perStepCapacity = 8

    public let stepCount: Int
    /// `maxspan`, or the pipeline's default span for sequences that state none (pending state must end).
    public let maxspan: Int64
    /// Per join key: the sequences waiting for step `i + 1` at index `i`, each list in order of its
    /// sequences' last event time.
    public private(set) var keys: [String: [[PendingSequence]]] = [:]
    public private(set) var rejectedByMaxspan = 0
    public private(set) var discardedByUntil = 0
    public private(set) var expired = 0
    /// No pending sequence expires before this horizon (a lower bound: sequences taken since may have
    /// raised it), so most events skip the scan over every key.
    private var earliestExpiry = Int64.max

    public init(stepCount: Int, maxspan: Int64) {
        precondition(stepCount >= 2, "a sequence has at least two steps")
        self.stepCount = stepCount
        self.maxspan = maxspan
    }

    /// Sequences waiting, over every key and step.
    public var pendingCount: Int { keys.values.reduce(0) { $0 + $1.reduce(0) { $0 + $1.count } } }

    /// Applies one event's match (its ``RuleMatch/steps`` say which steps it matches).
    /// - Returns: the sequences it completes, in order of their first event.
    public mutating func apply(_ match: RuleMatch) -> [CompletedSequence] {
        let key = match.groupKey
        var waiting = keys[key] ?? Array(repeating: [], count: stepCount - 1)
        var completed: [CompletedSequence] = []
        if match.steps & EQLSequenceSteps.untilBit != 0 {
            // First: the event ends what came before it, then counts as a step (it can start a sequence).
            for step in waiting.indices {
                let before = waiting[step].count
                waiting[step].removeAll { $0.last <= match.eventTime }
                discardedByUntil += before - waiting[step].count
            }
        }
        for step in stride(from: stepCount - 1, through: 0, by: -1) where match.steps & (1 << UInt32(step)) != 0 {
            if step == 0 {
                insert(PendingSequence(events: [match]), into: &waiting[0])
                continue
            }
            guard let index = waiting[step - 1].lastIndex(where: { $0.last <= match.eventTime }) else { continue }
            var sequence = waiting[step - 1][index]
            waiting[step - 1].removeSubrange(0...index)
            if match.eventTime - sequence.start > maxspan {
                rejectedByMaxspan += 1
                continue
            }
            sequence.events.append(match)
            if step == stepCount - 1 {
                completed.append(CompletedSequence(groupKey: key, groupValues: sequence.events[0].groupValues, events: sequence.events))
            } else {
                insert(sequence, into: &waiting[step])
            }
        }
        keys[key] = waiting.allSatisfy(\.isEmpty) ? nil : waiting
        return completed.sorted { $0.start < $1.start }
    }

    /// Drops the sequences no event within the grace period can complete any more.
    /// - Parameter horizon: stream time less the grace period.
    /// - Returns: the keys whose pending sequences changed.
    public mutating func expire(horizon: Int64) -> [String] {
        guard horizon > .min + maxspan, earliestExpiry < horizon else { return [] }
        var changed: [String] = []
        var next = Int64.max
        for (key, waiting) in keys {
            var kept = waiting
            for step in kept.indices { kept[step].removeAll { $0.start + maxspan < horizon } }
            for sequences in kept { for sequence in sequences { next = min(next, sequence.start + maxspan) } }
            let removed = waiting.reduce(0) { $0 + $1.count } - kept.reduce(0) { $0 + $1.count }
            guard removed > 0 else { continue }
            expired += removed
            keys[key] = kept.allSatisfy(\.isEmpty) ? nil : kept
            changed.append(key)
        }
        earliestExpiry = next
        return changed.sorted()
    }

    private mutating func insert(_ sequence: PendingSequence, into list: inout [PendingSequence]) {
        earliestExpiry = min(earliestExpiry, sequence.start + maxspan)
        Self.insert(sequence, into: &list)
    }

    private static func insert(_ sequence: PendingSequence, into list: inout [PendingSequence]) {
        let index = list.lastIndex { $0.last <= sequence.last }.map { $0 + 1 } ?? 0
        list.insert(sequence, at: index)
        if list.count > perStepCapacity { list.removeFirst(list.count - perStepCapacity) }
    }

    // MARK: State for the changelog

    /// The key's waiting sequences, to persist; nil when it has none (a tombstone).
    public func state(of key: String) -> [[PendingSequence]]? { keys[key] }

    public mutating func restore(key: String, waiting: [[PendingSequence]]?) {
        guard let waiting, waiting.count == stepCount - 1, !waiting.allSatisfy(\.isEmpty) else {
            keys[key] = nil
            return
        }
        keys[key] = waiting
        for sequences in waiting { for sequence in sequences { earliestExpiry = min(earliestExpiry, sequence.start + maxspan) } }
    }
}
