// An ES|QL STATS rule's keyed state for one partition: per-group panes of partial aggregates, run on Elastic's schedule in event time.
import AuditEvents
import Detection

/// Which input positions a piece of keyed state has applied, per input partition: the highest, and the
/// most recent ones (ascending, at most ``capacity``). A position at or below the highest is a replay
/// (its input record read again after a crash) unless it is newer than the oldest recent one and not among
/// them: a match resent after a failed delivery, never applied.
public enum ReplayPositions {
    public static let capacity = 64

    public static func isReplay(_ position: Int64, applied: Int64?, recent: [Int64]) -> Bool {
        guard let applied, position <= applied else { return false }
        return recent.isEmpty || position < recent[0] || recent.contains(position)
    }

    public static func record(_ position: Int64, from source: String, applied: inout [String: Int64], recent: inout [String: [Int64]]) {
        applied[source] = max(applied[source] ?? .min, position)
        var positions = recent[source] ?? []
        let index = positions.firstIndex { $0 > position } ?? positions.endIndex
        positions.insert(position, at: index)
        if positions.count > capacity { positions.removeFirst(positions.count - capacity) }
        recent[source] = positions
    }
}

/// One row of one scheduled execution that passed the query: what the rule alerts on.
public struct ESQLExecutionResult: Sendable, Equatable {
    public var groupKey: String
    public var keys: [ESQLValue]
    /// The execution time `T` (the rows aggregate events in `[T − lookback, T)`).
    public var execution: Int64
    public var lookback: Int64
    public var columns: [ESQLColumn]
    /// A repeat of the group's row in the execution before (overlapping windows): not alerted.
    public var duplicate: Bool

    public var windowStart: Int64 { execution - lookback }
}

public struct ESQLColumn: Sendable, Equatable {
    public var name: String
    public var value: ESQLValue
    public init(name: String, value: ESQLValue) {
        self.name = name
        self.value = value
    }
}

/// An aggregating ES|QL rule's state, as Elastic's schedule would compute it but continuously: execution
/// `T` runs at every multiple of the rule's `interval` (since the epoch) and aggregates, per group, the
/// rows of events whose event time is in `[T − lookback, T)` (`lookback` from the rule's `from`). Events
/// are kept per group in panes of `gcd(interval, lookback)` — each pane's partial aggregates — so that an
/// execution merges the panes its window covers and a pane is dropped once no later execution covers it.
///
/// Execution `T` runs when stream time less the grace period reaches `T` (every event before `T` that is
/// not late has arrived). An event older than every execution still to run is late: counted, not applied
/// (Elastic's later runs would not see it either once its window has passed). A group's row that passes in
/// executions `T` and `T + interval` (overlapping windows, when lookback exceeds interval) alerts once: the
/// repeat is flagged a duplicate, de-duplicating by the group's values as Elastic de-duplicates
/// overlapping runs. Deterministic: the same contributions in the same order give the same results.
public struct ScheduledAggregation: Sendable {
    public struct Group: Sendable, Equatable {
        public var keys: [ESQLValue]
        /// Pane index → partial aggregates (one per STATS aggregate).
        public var panes: [Int64: [ESQLPartialAggregate]]
        /// The last execution whose row for this group passed.
        public var lastPassed: Int64?
        public var applied: [String: Int64]
        public var recent: [String: [Int64]]
        /// The latest execution this group's state has been through. Persisted with it: after a crash
        /// whose changelog kept some groups' newer records and others' older ones, the executions re-run
        /// from the restored stream time skip the groups that have had them (their alerts were published
        /// before their records were written) and give the others the same results again.
        public var executed: Int64?

        public init(keys: [ESQLValue], panes: [Int64: [ESQLPartialAggregate]] = [:], lastPassed: Int64? = nil,
                    applied: [String: Int64] = [:], recent: [String: [Int64]] = [:], executed: Int64? = nil) {
            self.keys = keys
            self.panes = panes
            self.lastPassed = lastPassed
            self.executed = executed
            self.applied = applied
            self.recent = recent
        }
    }

    public let interval: Int64
    public let lookback: Int64
    /// The pane width: `gcd(interval, lookback)`.
    public let pane: Int64
    let functions: [ESQLAggregateFunction]
    public private(set) var groups: [String: Group] = [:]
    /// The latest execution time already run (every one at or before it has run).
    public private(set) var executed: Int64 = .min
    public private(set) var lateCount = 0
    /// Contributions recognized as replays of positions already applied.
    public private(set) var replayCount = 0
    /// Rows that repeated their group's row of the execution before (not alerted).
    public private(set) var repeatedRowCount = 0
    /// Groups whose state changed since the changelog last took them.
    var dirty: Set<String> = []

    public init(interval: Int64, lookback: Int64, functions: [ESQLAggregateFunction]) {
        precondition(interval > 0 && lookback > 0, "a schedule has a positive interval and lookback")
        self.interval = interval
        self.lookback = lookback
        self.functions = functions
        var (a, b) = (interval, lookback)
        while b != 0 { (a, b) = (b, a % b) }
        pane = a
    }

    /// Panes held, over every group (kept as they change: the metrics read it on every poll).
    public private(set) var paneCount = 0
    /// No pane has an index below this (a lower bound, exact after each execution): most calls to ``run``
    /// find nothing due without looking at any group.
    private var earliestPane = Int64.max

    static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }

    /// The first execution time at or after `time`.
    func gridCeiling(_ time: Int64) -> Int64 { -Self.floorDivide(-time, interval) * interval }

    /// Adds one event's row to its group. Returns false when it is late (no execution still to run covers
    /// it) or a replay of a position the group has applied.
    /// - Parameter position: the match's input position (``RuleMatch/sourcePosition``) and input partition.
    public mutating func add(key: String, keys: [ESQLValue], partials: [ESQLPartialAggregate], time: Int64, position: Int64, source: String) -> Bool {
        // Executions covering `time` are those in (time, time + lookback]; all of them run already?
        let through = max(executed, groups[key]?.executed ?? .min)
        if through != .min, time + lookback <= through {
            lateCount += 1
            return false
        }
        var group = groups[key] ?? Group(keys: keys)
        if ReplayPositions.isReplay(position, applied: group.applied[source], recent: group.recent[source] ?? []) {
            replayCount += 1
            return false
        }
        ReplayPositions.record(position, from: source, applied: &group.applied, recent: &group.recent)
        let index = Self.floorDivide(time, pane)
        if var existing = group.panes[index] {
            for slot in existing.indices { existing[slot].merge(partials[slot], function: functions[slot]) }
            group.panes[index] = existing
        } else {
            group.panes[index] = partials
            paneCount += 1
            earliestPane = min(earliestPane, index)
        }
        groups[key] = group
        dirty.insert(key)
        return true
    }

    /// Runs every execution at or before `horizon` (stream time less grace; `.max` runs every execution that
    /// still covers a pane). Returns each execution's passing rows in execution order, then group-key order.
    public mutating func run(upTo horizon: Int64, program: ESQLProgram) -> [ESQLExecutionResult] {
        var results: [ESQLExecutionResult] = []
        var time = executed == .min ? Int64.min : executed + interval
        while earliestPane != .max {
            // The first execution that covers any pane: skip stretches with nothing to aggregate.
            let first = gridCeiling(earliestPane * pane + pane)
            if time < first { time = first }
            guard time <= horizon else { break }
            results += execute(at: time, program: program)
            executed = time
            time += interval
            earliestPane = groups.values.compactMap { $0.panes.keys.min() }.min() ?? .max
        }
        if horizon != .max, horizon != .min {
            let floor = Self.floorDivide(horizon, interval) * interval
            if floor > executed { executed = floor }
        }
        // Groups left with no panes are dropped at executions; without any pane to run, here.
        if horizon == .max || (earliestPane == .max && !groups.isEmpty) { dropEnded(all: horizon == .max) }
        return results
    }

    private mutating func execute(at time: Int64, program: ESQLProgram) -> [ESQLExecutionResult] {
        let low = Self.floorDivide(time - lookback, pane)
        let high = Self.floorDivide(time, pane)  // exclusive
        var keys: [String] = []
        var rows: [(keys: [ESQLValue], aggregates: [ESQLPartialAggregate])] = []
        for key in groups.keys.sorted() {
            let group = groups[key]!
            if let through = group.executed, through >= time { continue }  // had this execution before a restore
            var merged: [ESQLPartialAggregate]?
            for (index, partials) in group.panes where index >= low && index < high {
                if merged == nil {
                    merged = partials
                } else {
                    for slot in partials.indices { merged![slot].merge(partials[slot], function: functions[slot]) }
                }
            }
            guard let merged else { continue }
            keys.append(key)
            rows.append((group.keys, merged))
        }
        var results: [ESQLExecutionResult] = []
        for row in program.finish(rows, now: time) {
            let key = keys[row.group]
            let duplicate = lookback > interval && groups[key]?.lastPassed == time - interval
            if duplicate { repeatedRowCount += 1 }
            groups[key]?.lastPassed = time
            dirty.insert(key)
            results.append(ESQLExecutionResult(groupKey: key, keys: rows[row.group].keys, execution: time, lookback: lookback,
                                               columns: row.columns.map { ESQLColumn(name: $0.name, value: $0.value) }, duplicate: duplicate))
        }
        // Panes no later execution covers go; a group with none left goes once its chain of passes cannot
        // continue (it passed in an execution before this one, or never).
        let keep = Self.floorDivide(time + interval - lookback, pane)
        for key in Array(groups.keys) {
            var group = groups[key]!
            if let through = group.executed, through >= time { continue }
            // Not marked dirty for this alone: a group this execution left unchanged gets the same (empty)
            // result if it runs again after a restore.
            group.executed = time
            let before = group.panes.count
            group.panes = group.panes.filter { $0.key >= keep }
            if group.panes.count != before {
                dirty.insert(key)
                paneCount -= before - group.panes.count
            }
            if group.panes.isEmpty && group.lastPassed != time {
                groups[key] = nil
                dirty.insert(key)
            } else {
                groups[key] = group
            }
        }
        return results
    }

    /// Drops groups with no panes whose last pass is before `executed` (their chain has ended).
    private mutating func dropEnded(all: Bool) {
        for (key, group) in groups where group.panes.isEmpty && (all || group.lastPassed != executed) {
            groups[key] = nil
            dirty.insert(key)
        }
    }

    // MARK: State for the changelog

    public func state(of key: String) -> Group? { groups[key] }

    /// Restores a group from the changelog.
    public mutating func restore(key: String, group: Group?) {
        paneCount += (group?.panes.count ?? 0) - (groups[key]?.panes.count ?? 0)
        if let lowest = group?.panes.keys.min() { earliestPane = min(earliestPane, lowest) }
        groups[key] = group
    }

    /// After a restore: the executions up to the restored stream time have run (they run whenever stream
    /// time moves, in the same step as the state the position record covers); later ones run again, for
    /// the groups that have not had them.
    public mutating func restore(horizon: Int64) {
        guard horizon != .min else { return }
        executed = max(executed, Self.floorDivide(horizon, interval) * interval)
    }
}
