// The pipeline's status (counters, lifecycle state, readiness, ownership) and the events it reports, for metrics and probes on any thread.
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
    /// Offset commits refused when issued (a rebalance under way) or failed when answered.
    public var commitRetries = 0
    /// Offset commits the group coordinator accepted (transactions: committed transactions).
    public var commitsSucceeded = 0
    public var rebalances = 0
    public var restoredKeys = 0
    public var restoreFailures = 0
    /// Records dropped because their partition's assignment changed in the poll that fetched them (or the
    /// partition is not this member's): the partition is read again from its start position.
    public var fencedRecords = 0
    /// Milliseconds spent restoring state stores, in total.
    public var restoreMilliseconds: Int64 = 0
    /// Polls that returned records, and those of them that returned a full batch (`processing.max_batch`).
    /// Mostly full polls mean the consumer's prefetch queue never runs dry: processing, not fetching, sets
    /// the pace (scale out, or give the instance more CPU).
    public var pollsWithRecords = 0
    public var fullPolls = 0
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

/// Where a member is in its life. Only `running` is ready: the group joined, every assigned partition's
/// state restored and positioned, and every input topic known to the cluster.
public enum PipelineState: String, Sendable, CaseIterable {
    /// Creating topics and clients.
    case starting
    /// Subscribed; waiting for the group's first assignment.
    case joining
    /// A rebalance is under way (partitions revoked, the new assignment not yet positioned).
    case rebalancing
    /// Reading changelogs back into state stores.
    case restoring
    /// Joined and restored, but an input topic does not exist yet (it is picked up once created).
    case waitingForInput = "waiting_for_input"
    case running
    /// Stop requested: finishing in-flight outputs, committing, leaving the group.
    case stopping
    case stopped
}

/// What happens as it happens, for histograms and logs: called on the poll loop's thread, or for
/// statistics on the producer's poll thread. Keep the handler short.
public enum PipelineEvent: Sendable {
    /// A new alert was acknowledged by the broker, this long after its first match's `event.ingested`.
    case alertAcknowledged(latencyMilliseconds: Int64)
    /// An offset commit (or a transaction's commit) was answered.
    case committed(latency: Duration, failed: Bool)
    /// From the first rebalance callback (or the subscription) to every assigned partition restored and positioned.
    case rebalanced(duration: Duration, assignedPartitions: Int)
    /// State stores rebuilt from their changelogs.
    case restored(duration: Duration, keys: Int, statePartitions: Int)
    /// librdkafka's periodic statistics of the consumer or the producer (`metrics.kafka_statistics_interval`).
    case statistics(KafkaStatistics)
}

/// The small, thread-safe face of a running pipeline: the poll loop writes it, metrics and probes read it.
public final class PipelineStatus: Sendable {
    struct Readiness {
        var state: PipelineState = .starting
        var joined = false
        var rebalancing = false
        var restoring = false
        var failedRestores: Set<StatePartition> = []
        /// Input topics the cluster's metadata does not hold yet.
        var missingInputs: [String] = []

        /// The state the flags add up to (starting, stopping and stopped are set explicitly).
        mutating func settle() {
            guard state != .starting, state != .stopping, state != .stopped else { return }
            state = !joined ? .joining : rebalancing ? .rebalancing : (restoring || !failedRestores.isEmpty) ? .restoring
                : !missingInputs.isEmpty ? .waitingForInput : .running
        }
    }
    private let counters = Mutex(PipelineCounters())
    private let readiness = Mutex(Readiness())
    private let stores = Mutex((owned: 0, openWindows: 0, pendingSequences: 0, aggregationPanes: 0))

    init() {}

    public var counterSnapshot: PipelineCounters { counters.withLock { $0 } }
    /// Joined its group, restored the state of every partition it was given, and reads every input topic.
    public var isReady: Bool { state == .running }
    public var state: PipelineState { readiness.withLock { $0.state } }

    /// Why the member is not ready, in a line for `/readyz` and logs (nil when it is).
    public var notReadyReason: String? {
        readiness.withLock { readiness in
            switch readiness.state {
            case .running: return nil
            case .starting: return "starting: creating topics and clients"
            case .joining: return "joining the consumer group"
            case .rebalancing: return "rebalancing"
            case .restoring:
                return readiness.failedRestores.isEmpty ? "restoring state from the changelogs"
                    : "restoring state failed for \(readiness.failedRestores.sorted().map(\.description).joined(separator: ", ")); retrying"
            case .waitingForInput: return "waiting for input topic \(readiness.missingInputs.joined(separator: ", ")) to be created"
            case .stopping: return "stopping"
            case .stopped: return "stopped"
            }
        }
    }
    public var ownedStatePartitions: Int { stores.withLock { $0.owned } }
    public var openWindows: Int { stores.withLock { $0.openWindows } }
    /// EQL sequences waiting for their next step, over the state partitions this member owns.
    public var pendingSequences: Int { stores.withLock { $0.pendingSequences } }
    /// Panes of partial aggregates held for aggregating ES|QL rules.
    public var aggregationPanes: Int { stores.withLock { $0.aggregationPanes } }

    func update(_ change: (inout PipelineCounters) -> Void) { counters.withLock { change(&$0) } }
    func updateReadiness(_ change: (inout Readiness) -> Void) {
        readiness.withLock { readiness in
            change(&readiness)
            readiness.settle()
        }
    }
    func setStores(owned: Int, openWindows: Int, pendingSequences: Int, aggregationPanes: Int) {
        stores.withLock { $0 = (owned, openWindows, pendingSequences, aggregationPanes) }
    }
}

extension Duration {
    /// Whole milliseconds, for log metadata and counters.
    public var wholeMilliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
