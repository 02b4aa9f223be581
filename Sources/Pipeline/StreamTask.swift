// The stream task: one member's processors and state stores, from record bytes to output records, with no broker.
import AuditEvents
import Detection
import Kafka

/// Everything between a consumed record and the records to produce, for the partitions one member owns:
/// the detect processor, the aggregate processor over the state stores, the window punctuator, and the
/// changelog writes. The Kafka runtime (``PipelineRunner``) and the in-memory driver (``InMemoryDriver``)
/// drive the same task, so live and replay share every line from record bytes to alert document.
///
/// Ownership is explicit, and it is what keeps a handover exact: a store exists only for a partition this
/// member was assigned and restored; a record of a partition it does not own is dropped, never applied to
/// a fresh store; and a record handed over by the poll in which its partition's assignment changed is
/// dropped too, since it may have been fetched under the previous assignment (librdkafka serves the
/// rebalance from the same queue as the records, in the middle of a batch). Such a partition is read again
/// from its start position: ``startOffset(of:committed:)``.
///
/// Confined to the thread of the loop that drives it: not `Sendable`.
final class StreamTask {
    let topology: Topology
    private let detect: DetectProcessor
    private let aggregate: AggregateProcessor
    private let punctuator: WindowPunctuator
    private let clock: @Sendable () -> Int64

    private(set) var stores: [StatePartition: StateStore] = [:]
    /// What the task keeps of each partition it owns, found with one lookup per record.
    private struct OwnedPartition {
        /// The epoch in which it was assigned.
        let assignedIn: UInt64
        let source: Topology.Source?
        /// The next offset to commit for the current batch, once it read a record of the partition.
        var nextOffset: Int64?
        /// Of an input partition: the offset below which it will never be read again (where this member
        /// started it, then each commit), stamped on every match so the aggregate side can forget older ones.
        var replayFloor: Int64?
    }
    /// The partitions this member owns, with the last lookup kept: records come in runs of one partition,
    /// and hashing a topic's name for each record cost more than the rest of its bookkeeping. Keys change
    /// only through `set` and `remove`, which forget the kept lookup, so an index it returns is valid.
    private struct OwnedPartitions {
        typealias Index = Dictionary<TopicPartition, OwnedPartition>.Index
        private(set) var table: [TopicPartition: OwnedPartition] = [:]
        private var last: (partition: TopicPartition, index: Index)?

        mutating func index(of partition: TopicPartition) -> Index? {
            if let last, last.partition == partition { return last.index }
            guard let index = table.index(forKey: partition) else { return nil }
            last = (partition, index)
            return index
        }
        subscript(index: Index) -> OwnedPartition {
            get { table.values[index] }
            _modify { yield &table.values[index] }
        }
        mutating func set(_ partition: TopicPartition, _ value: OwnedPartition) {
            last = nil
            table[partition] = value
        }
        mutating func remove(_ partition: TopicPartition) {
            last = nil
            table.removeValue(forKey: partition)
        }
    }
    private var epoch: UInt64 = 0
    private var pollEpoch: UInt64 = 0
    /// What every record changes — the owned partitions' positions, the counters, the outputs — in one
    /// value, so that processing a record makes one exclusive access to the task's state rather than one per
    /// field (each a runtime exclusivity check of ~120 instructions).
    private struct RecordState {
        var owned = OwnedPartitions()
        var counts = TaskCounts()
        var output: [OutputRecord] = []
        /// The order the prefilter searches its literals in, learned from this task's records.
        var prefilterOrder = PrefilterSet.SearchOrder()
    }
    private var state = RecordState()

    init(topology: Topology, prefilter: PrefilterSet, clock: @escaping @Sendable () -> Int64) {
        self.topology = topology
        self.clock = clock
        detect = DetectProcessor(topology: topology, prefilter: prefilter, clock: clock)
        aggregate = AggregateProcessor(topology: topology)
        punctuator = WindowPunctuator(interval: topology.configuration.interimUpdateMilliseconds)
    }

    // MARK: Assignment

    /// Partitions given to this member. Their stores, if they carry any, come with ``install(_:)`` once
    /// restored; until then their records are dropped.
    func assign(_ partitions: [TopicPartition]) {
        epoch += 1
        for partition in partitions { state.owned.set(partition, OwnedPartition(assignedIn: epoch, source: topology.source(of: partition.topic))) }
    }

    /// Partitions taken away (revoked or lost): their stores go; their next owner restores them.
    func revoke(_ partitions: [TopicPartition]) {
        epoch += 1
        for partition in partitions {
            state.owned.remove(partition)
            for id in topology.statePartitions(carriedBy: partition) { stores.removeValue(forKey: id) }
        }
    }

    func owns(_ partition: TopicPartition) -> Bool { state.owned.table[partition] != nil }

    /// The member positioned an owned partition at `offset`, or committed it there.
    func floor(_ partition: TopicPartition, at offset: Int64) {
        guard let index = state.owned.index(of: partition), state.owned[index].source == .input else { return }
        state.owned[index].replayFloor = max(state.owned[index].replayFloor ?? .min, offset)
    }
    var ownedPartitions: [TopicPartition] { Array(state.owned.table.keys) }

    func restoreStore(_ id: StatePartition, latest: [[UInt8]: [UInt8]?]) throws -> StateStore {
        try StateStore.restore(id: id, empty: aggregate.emptyState(ruleIndex: id.ruleIndex), latest: latest, now: clock())
    }

    /// A restored store, for a partition still owned.
    func install(_ store: StateStore) {
        guard state.owned.table.keys.contains(where: { topology.statePartitions(carriedBy: $0).contains(store.id) }) else { return }
        stores[store.id] = store
    }

    /// Where consumption of an owned partition starts: past everything its stores already hold, and never
    /// before the committed offset.
    func startOffset(of partition: TopicPartition, committed: Int64?) -> Int64? {
        let positions = topology.statePartitions(carriedBy: partition).map { stores[$0]?.position }
        let held: Int64? = positions.contains(where: { $0 == nil }) ? nil : positions.compactMap { $0 }.min()
        switch (held, committed) {
        case let (held?, committed?): return max(held, committed)
        case let (held?, nil): return held
        case let (nil, committed): return committed
        }
    }

    // MARK: Processing

    /// Marks the start of a poll: records of partitions assigned after this call are fenced.
    func beginPoll() { pollEpoch = epoch }

    /// Owned partitions assigned during the current poll: their records were dropped and they are to be
    /// read again from ``startOffset(of:committed:)``.
    var assignedDuringPoll: [TopicPartition] { state.owned.table.filter { $0.value.assignedIn > pollEpoch }.map(\.key).sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) } }

    /// Processes one record; returns false when it was fenced (dropped).
    @discardableResult
    func process(_ record: RecordView) -> Bool { process(record, &state) }

    private func process(_ record: RecordView, _ state: inout RecordState) -> Bool {
        let partition = record.topicPartition
        guard let index = state.owned.index(of: partition), state.owned[index].assignedIn <= pollEpoch else {
            state.counts.fencedRecords += 1
            return false
        }
        // Nothing below adds or removes an owned partition: the index stays valid.
        switch state.owned[index].source {
        case .matches(let ruleIndex)?:
            let id = StatePartition(ruleIndex: ruleIndex, ruleID: topology.rules[ruleIndex].id, partition: record.partition)
            guard var store = stores.removeValue(forKey: id) else {
                state.counts.fencedRecords += 1  // not restored yet: read again once it is
                return false
            }
            defer { stores[id] = store }
            state.owned[index].nextOffset = record.offset + 1
            if store.covers(offset: record.offset) {
                state.counts.duplicateMatches += 1  // already in the restored state
                return true
            }
            store.advance(pastOffset: record.offset)
            if let key = record.key, key.elementsEqual(StateCodec.watermarkKey) {
                if let time = try? StateCodec.decodeWatermark(record.payload) {
                    for action in punctuator.apply(watermark: time, to: &store) {
                        state.output.append(aggregate.alertRecord(action, ruleIndex: ruleIndex, counts: &state.counts))
                    }
                    state.output += aggregate.executionRecords(&store, counts: &state.counts)
                }
                return true
            }
            do {
                let decoded = try StateCodec.decodeMatch(record.payload)
                if store.admit(decoded.match, floor: decoded.floor) {
                    // Activity is the time the match was written to the partition, not when it is read: idle
                    // time is then a property of the log, and a replay after a crash sees the same.
                    aggregate.apply(decoded.match, to: &store, now: record.timestamp ?? clock(), counts: &state.counts, output: &state.output)
                } else {
                    state.counts.matchesAggregated += 1
                    state.counts.duplicateMatches += 1
                }
            } catch {
                // Our own records: unreadable only if something else wrote them. Skipped, counted.
                state.counts.decodeErrors["unreadable_match", default: 0] += 1
            }
            return true
        case .input?:
            var found: [(ruleIndex: Int, match: RuleMatch)] = []
            if topology.configuration.skipRepartition {
                let ids = topology.statePartitions(carriedBy: partition)
                guard ids.allSatisfy({ stores[$0] != nil }) else {
                    state.counts.fencedRecords += 1
                    return false
                }
                // Each store applies the record once: not if it already holds it (restored past it).
                let fresh = ids.map { !stores[$0]!.covers(offset: record.offset) }
                guard fresh.contains(true) else {
                    state.owned[index].nextOffset = record.offset + 1
                    return true
                }
                detect.process(record, counts: &state.counts, output: &state.output, prefilterOrder: &state.prefilterOrder) { found.append(($0, $1)) }
                let now = clock()
                for (ruleIndex, match) in found where fresh[ruleIndex] {
                    aggregate.apply(match, to: &stores[ids[ruleIndex]]!, now: now, counts: &state.counts, output: &state.output)
                }
                for (index, id) in ids.enumerated() where fresh[index] { stores[id]!.advance(pastOffset: record.offset) }
            } else {
                detect.process(record, counts: &state.counts, output: &state.output, prefilterOrder: &state.prefilterOrder) { found.append(($0, $1)) }
                for (ruleIndex, match) in found {
                    if let repartitioned = detect.repartitionRecord(match, ruleIndex: ruleIndex, floor: state.owned[index].replayFloor) { state.output.append(repartitioned) }
                }
            }
        case nil:
            state.counts.fencedRecords += 1
            return false
        }
        state.owned[index].nextOffset = record.offset + 1
        return true
    }

    /// Idle closes and interim updates, by the wall clock.
    /// - Parameter caughtUp: whether the member has read this partition to its end (a store catching up is
    ///   not idle).
    func punctuate(caughtUp: (TopicPartition) -> Bool) {
        let now = clock()
        for id in stores.keys.sorted() {
            let matchesTopic = topology.matchesTopics[id.ruleIndex]
            let carrier = TopicPartition(matchesTopic ?? topology.configuration.inputTopics[0], id.partition)
            let (actions, watermark) = punctuator.punctuate(&stores[id]!, now: now, caughtUp: caughtUp(carrier), durable: matchesTopic != nil)
            for action in actions { state.output.append(aggregate.alertRecord(action, ruleIndex: id.ruleIndex, counts: &state.counts)) }
            state.output += aggregate.executionRecords(&stores[id]!, counts: &state.counts)
            if let watermark, let matchesTopic {
                state.output.append(OutputRecord(topic: matchesTopic, partition: id.partition, key: StateCodec.watermarkKey,
                                           value: StateCodec.encode(watermark: watermark, ruleID: id.ruleID),
                                           headers: [KafkaHeader("rule_id", id.ruleID)]))
            }
        }
    }

    /// Closes every open window now (the end of a replay or a demo; a live instance leaves its windows to
    /// the changelog instead).
    func closeAllWindows() {
        for id in stores.keys.sorted() {
            var store = stores[id]!
            let actions = store.state.suppressor.closeAll()
            for action in actions { store.state.dirtyKeys.insert(action.window.groupKey) }
            store.state.runAllExecutions()
            for action in actions { state.output.append(aggregate.alertRecord(action, ruleIndex: id.ruleIndex, counts: &state.counts)) }
            state.output += aggregate.executionRecords(&store, counts: &state.counts)
            stores[id] = store
        }
    }

    /// What one batch produces: its output records, the changelog writes of every store it changed (to be
    /// sent once the records are acknowledged), and the next offset of every partition it read.
    struct Batch {
        var records: [OutputRecord]
        var changelog: [OutputRecord]
        var offsets: [TopicPartition: Int64]
        var isEmpty: Bool { records.isEmpty && changelog.isEmpty && offsets.isEmpty }
    }

    /// The batch so far; starts the next one.
    func takeBatch() -> Batch {
        var changelog: [OutputRecord] = []
        for id in stores.keys.sorted() {
            changelog += stores[id]!.changelogRecords(topic: topology.changelogTopics[id.ruleIndex])
        }
        var offsets: [TopicPartition: Int64] = [:]
        for index in state.owned.table.indices {
            guard let next = state.owned[index].nextOffset else { continue }
            offsets[state.owned.table.keys[index]] = next
            state.owned[index].nextOffset = nil
        }
        defer { state.output.removeAll(keepingCapacity: true) }
        return Batch(records: state.output, changelog: changelog, offsets: offsets)
    }

    func takeCounts() -> TaskCounts {
        defer { state.counts = TaskCounts() }
        return state.counts
    }

    var openWindows: Int { stores.values.reduce(0) { $0 + $1.state.suppressor.openWindowCount } }
    var pendingSequences: Int { stores.values.reduce(0) { $0 + ($1.state.sequences?.pendingCount ?? 0) } }
    /// Panes of partial aggregates that aggregating ES|QL rules hold.
    var aggregationPanes: Int { stores.values.reduce(0) { $0 + ($1.state.aggregation?.paneCount ?? 0) } }
}
