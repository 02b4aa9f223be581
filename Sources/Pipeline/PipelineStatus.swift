// The pipeline's status: counters, readiness and ownership, behind a lock, for metrics and probes on any thread.
import Kafka
import Synchronization

/// Counters the pipeline keeps (the metrics endpoint and tests read them).
public struct PipelineCounters: Sendable, Equatable {
    public var recordsConsumed = 0
    /// Records read from the input topics (the rest come from the internal matches topics).
    public var inputRecords = 0
    public var eventsDecoded = 0
    public var prefilterRejected = 0
    public var decodeErrors: [String: Int] = [:]
    public var deadLettered = 0
    public var matches: [String: Int] = [:]
    /// Matches read back from the repartition topics and applied to suppression state.
    public var matchesAggregated = 0
    public var alertsNew = 0
    public var alertsUpdated = 0
    public var alertsNewByRule: [String: Int] = [:]
    public var alertsUpdatedByRule: [String: Int] = [:]
    /// Matches folded into an open window instead of raising an alert.
    public var suppressedMatches = 0
    public var lateMatches = 0
    public var duplicateMatches = 0
    public var produceRetries = 0
    public var commitRetries = 0
    public var rebalances = 0
    public var restoredKeys = 0
    public var restoreFailures = 0
    /// Records dropped because their partition's assignment changed in the poll that fetched them (or the
    /// partition is not this member's): the partition is read again from its start position.
    public var fencedRecords = 0
    /// Milliseconds spent restoring state stores, in total.
    public var restoreMilliseconds: Int64 = 0
    /// Records behind the end of each assigned input partition (refreshed every few seconds).
    public var lag: [TopicPartition: Int64] = [:]

    public init() {}
}


/// What the processors counted since the last merge: kept by the poll loop's task without a lock and added
/// to the totals once per batch.
struct TaskCounts {
    var inputRecords = 0
    var eventsDecoded = 0
    var prefilterRejected = 0
    var deadLettered = 0
    var decodeErrors: [String: Int] = [:]
    var matches: [String: Int] = [:]
    var matchesAggregated = 0
    var lateMatches = 0
    var duplicateMatches = 0
    var suppressedMatches = 0
    var alertsNew = 0
    var alertsUpdated = 0
    var alertsNewByRule: [String: Int] = [:]
    var alertsUpdatedByRule: [String: Int] = [:]
    var fencedRecords = 0

    func add(to totals: inout PipelineCounters) {
        totals.inputRecords += inputRecords
        totals.eventsDecoded += eventsDecoded
        totals.prefilterRejected += prefilterRejected
        totals.deadLettered += deadLettered
        for (reason, count) in decodeErrors { totals.decodeErrors[reason, default: 0] += count }
        for (rule, count) in matches { totals.matches[rule, default: 0] += count }
        totals.matchesAggregated += matchesAggregated
        totals.lateMatches += lateMatches
        totals.duplicateMatches += duplicateMatches
        totals.suppressedMatches += suppressedMatches
        totals.alertsNew += alertsNew
        totals.alertsUpdated += alertsUpdated
        for (rule, count) in alertsNewByRule { totals.alertsNewByRule[rule, default: 0] += count }
        for (rule, count) in alertsUpdatedByRule { totals.alertsUpdatedByRule[rule, default: 0] += count }
        totals.fencedRecords += fencedRecords
    }
}

/// The small, thread-safe face of a running pipeline: the poll loop writes it, metrics and probes read it.
public final class PipelineStatus: Sendable {
    struct Readiness {
        var joined = false
        var restoring = false
        var failedRestores: Set<StatePartition> = []
    }
    private let counters = Mutex(PipelineCounters())
    private let readiness = Mutex(Readiness())
    private let stores = Mutex((owned: 0, openWindows: 0))

    init() {}

    public var counterSnapshot: PipelineCounters { counters.withLock { $0 } }
    /// Joined its group and restored the state of every partition it was given.
    public var isReady: Bool { readiness.withLock { $0.joined && !$0.restoring && $0.failedRestores.isEmpty } }
    public var ownedStatePartitions: Int { stores.withLock { $0.owned } }
    public var openWindows: Int { stores.withLock { $0.openWindows } }

    func update(_ change: (inout PipelineCounters) -> Void) { counters.withLock { change(&$0) } }
    func updateReadiness(_ change: (inout Readiness) -> Void) { readiness.withLock { change(&$0) } }
    func setStores(owned: Int, openWindows: Int) { stores.withLock { $0 = (owned, openWindows) } }
}
