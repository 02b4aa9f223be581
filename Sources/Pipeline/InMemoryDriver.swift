// The in-memory driver: the topology's stream tasks over an in-memory log, like Kafka Streams' TopologyTestDriver.
import AuditEvents
import Detection
import Kafka
import Synchronization

/// Runs the same ``StreamTask`` (processors, state stores, punctuator, changelog writes) and the same
/// delivery tracking as the Kafka runtime, over partitioned in-memory logs, with a consumer group of
/// members driven step by step: polls of any size, rebalances at any point (inside a poll, between a batch's
/// outputs and its commit), deliveries that fail (order-preserving per partition, as an idempotent producer
/// fails a suffix) and may have been written anyway, refused commits, crashes that lose everything
/// unacknowledged, and a wall clock moved by hand. `replay` runs it with one member; the simulation tests
/// run random schedules of every step. Deterministic: the same calls give the same logs.
///
/// Not thread-safe: one thread drives it.
public final class InMemoryDriver {
    public struct StoredRecord: Sendable {
        public var key: [UInt8]?
        /// The value's bytes as a slice: a replay's batch of lines shares one buffer, so a line costs no
        /// allocation of its own.
        var payload: ArraySlice<UInt8>?
        public var headers: [KafkaHeader]
        public var timestamp: Int64?

        public var value: [UInt8]? { payload.map(Array.init) }
    }

    struct PartitionLog {
        var base: Int64 = 0
        var records: [StoredRecord] = []
        /// A changelog's record count after its last compaction.
        var compacted = 0
        var end: Int64 { base + Int64(records.count) }

        mutating func dropRecords(before offset: Int64) {
            let cut = min(offset, end)
            guard cut > base else { return }
            records.removeFirst(Int(cut - base))
            base = cut
        }
    }

    final class Member {
        let id: Int
        let task: StreamTask
        let tracker = DeliveryTracker()
        var fetch: [TopicPartition: Int64] = [:]
        var inFlight: [(id: UInt64, record: OutputRecord, target: TopicPartition)] = []
        init(id: Int, task: StreamTask) {
            self.id = id
            self.task = task
        }
    }

    public let topology: Topology
    private let prefilter: PrefilterSet
    private let wallClock: WallClock
    private var logs: [TopicPartition: PartitionLog] = [:]
    private var partitionCounts: [String: Int32] = [:]
    public private(set) var committed: [TopicPartition: Int64] = [:]
    private var members: [Member] = []
    private var nextMemberID = 0
    /// Output topics (alerts, dead letters) keep their records; false for a replay that streams them out.
    public var retainsOutputs = true
    /// Called for every alert and dead-letter record as it is written, in write order.
    public var outputObserver: ((OutputRecord) -> Void)?
    /// Totals of every member, live and gone.
    public private(set) var counters = PipelineCounters()

    public init(configuration: PipelineConfiguration, rules: RuleSet, inputPartitions: Int32 = 1, wallClock start: Int64 = 1_000_000) {
        topology = Topology(configuration: configuration, rules: rules.rules)
        prefilter = rules.prefilter
        wallClock = WallClock(start)
        for topic in configuration.inputTopics { partitionCounts[topic] = inputPartitions }
        for topic in topology.topicsToCreate { partitionCounts[topic.name] = topic.partitions }
    }

    // MARK: Logs

    public var now: Int64 { wallClock.now }
    public func advanceClock(by milliseconds: Int64) { wallClock.value.add(milliseconds, ordering: .relaxed) }

    /// Appends a record to an input topic (as a producer would), returning its offset.
    @discardableResult
    public func pipe(_ value: [UInt8], key: [UInt8]? = nil, timestamp: Int64? = nil, topic: String? = nil, partition: Int32 = 0) -> Int64 {
        let target = TopicPartition(topic ?? topology.configuration.inputTopics[0], partition)
        return Self.append(StoredRecord(key: key, payload: value[...], headers: [], timestamp: timestamp), to: &logs[target, default: PartitionLog()])
    }

    /// Appends values (no key, no timestamp) to a partition of an input topic through one lookup of its log,
    /// returning the first one's offset: a replay pipes every line of its input, and a lookup per record
    /// (hashing the topic's name) cost it more than the append. The values are `ends.count` consecutive
    /// pieces of `bytes`, the first starting where `bytes` does and the i-th ending at index `ends[i]`; the
    /// log keeps slices of that one buffer.
    @discardableResult
    public func pipe(contentsOf bytes: ArraySlice<UInt8>, ends: [Int], topic: String, partition: Int32 = 0) -> Int64 {
        Self.append(bytes, ends: ends, to: &logs[TopicPartition(topic, partition), default: PartitionLog()])
    }

    /// Appends to a log reached through one dictionary access.
    private static func append(_ record: StoredRecord, to log: inout PartitionLog) -> Int64 {
        log.records.append(record)
        return log.end - 1
    }

    private static func append(_ bytes: ArraySlice<UInt8>, ends: [Int], to log: inout PartitionLog) -> Int64 {
        let first = log.end
        log.records.reserveCapacity(log.records.count + ends.count)
        var start = bytes.startIndex
        for end in ends {
            log.records.append(StoredRecord(key: nil, payload: bytes[start..<end], headers: [], timestamp: nil))
            start = end
        }
        return first
    }

    /// Every record of a topic, partition by partition, in offset order.
    public func records(of topic: String) -> [(partition: Int32, offset: Int64, record: StoredRecord)] {
        logs.filter { $0.key.topic == topic }.sorted { $0.key.partition < $1.key.partition }.flatMap { entry in
            entry.value.records.enumerated().map { (entry.key.partition, entry.value.base + Int64($0.offset), $0.element) }
        }
    }

    /// Drops what every consumer has committed from the repartition and input logs, and compacts the
    /// changelogs to their latest value per key: memory stays flat on an unbounded replay.
    public func truncateConsumed() {
        let changelogs = Set(topology.changelogTopics)
        for partition in Array(logs.keys) {
            if changelogs.contains(partition.topic) {
                let log = logs[partition]!
                // Compacted once it has doubled since the last time: the work per record written stays
                // bounded however many keys are live (every batch made a pass over every live key), and the
                // log stays within twice the live keys' records.
                guard log.records.count >= 2 * log.compacted, !log.records.isEmpty else { continue }
                var latest: [[UInt8]: Int] = [:]
                for (index, record) in log.records.enumerated() { latest[record.key ?? []] = index }
                let kept = latest.values.sorted().map { log.records[$0] }.filter { $0.payload != nil }
                logs[partition] = PartitionLog(base: log.end - Int64(kept.count), records: kept, compacted: kept.count)
            } else if let done = committed[partition], topology.source(of: partition.topic) != nil {
                // In place: a copy of the log would copy its records before dropping them.
                logs[partition]!.dropRecords(before: done)
            }
        }
    }

    // MARK: The group

    public var memberIDs: [Int] { members.map(\.id) }

    /// A new member joins; the group rebalances.
    @discardableResult
    public func join() -> Int {
        let id = nextMemberID
        nextMemberID += 1
        members.append(Member(id: id, task: StreamTask(topology: topology, prefilter: prefilter, clock: { [wallClock] in wallClock.now })))
        rebalance()
        return id
    }

    /// A member leaves cleanly (its outputs acknowledged and committed first); the group rebalances.
    public func leave(_ id: Int) {
        guard let member = member(id) else { return }
        revokeAll(member, refuseCommit: false)
        members.removeAll { $0.id == id }
        rebalance()
    }

    /// A member dies: the first `persisted` of its unacknowledged outputs reached the broker, the rest are
    /// lost, nothing more is committed; the group rebalances without it.
    public func crash(_ id: Int, persisted: Int) {
        guard let member = member(id) else { return }
        for entry in member.inFlight.prefix(persisted) { append(entry.record, to: entry.target) }
        members.removeAll { $0.id == id }
        member.task.takeCounts().add(to: &counters)
        rebalance()
    }

    /// An eager rebalance: every member settles and commits, gives up its partitions, and is assigned its
    /// share again (partitions sorted, dealt round robin). With `refuseCommits`, the revoking members' last
    /// commits are refused, as a broker does while the group rebalances.
    public func rebalance(refuseCommits: Bool = false, inPollOf polling: Int? = nil) {
        for member in members { revokeAll(member, refuseCommit: refuseCommits) }
        let partitions = topology.subscription.flatMap { topic in (0..<(partitionCounts[topic] ?? 1)).map { TopicPartition(topic, $0) } }
        guard !members.isEmpty else { return }
        var shares: [[TopicPartition]] = Array(repeating: [], count: members.count)
        for (index, partition) in partitions.enumerated() { shares[index % members.count].append(partition) }
        for (member, share) in zip(members, shares) {
            member.task.assign(share)
            // librdkafka starts a new assignment at the committed offsets.
            for partition in share { member.fetch[partition] = committed[partition] ?? logs[partition]?.base ?? 0 }
            // A member outside a poll positions its partitions at once; the polling one after its poll.
            if member.id != polling { settleAssignment(member) }
        }
    }

    private func revokeAll(_ member: Member, refuseCommit: Bool) {
        let owned = member.task.ownedPartitions
        guard !owned.isEmpty else { return }
        // Settles as the Kafka runtime does before giving partitions up: until nothing is outstanding.
        while !member.inFlight.isEmpty {
            deliver(member, count: member.inFlight.count)
            settle(member, refuseCommit: refuseCommit)
        }
        member.task.revoke(owned)
        member.tracker.forget(Set(owned))
        for partition in owned { member.fetch.removeValue(forKey: partition) }
    }

    /// Restores the stores of partitions assigned since the member's last poll began and positions them.
    private func settleAssignment(_ member: Member) {
        for partition in member.task.assignedDuringPoll {
            for id in topology.statePartitions(carriedBy: partition) {
                let changelog = TopicPartition(topology.changelogTopics[id.ruleIndex], id.partition)
                var latest: [[UInt8]: [UInt8]?] = [:]
                for record in logs[changelog]?.records ?? [] { if let key = record.key { latest[key] = record.value } }
                // The driver's own records: a decoding failure here is a bug in the codec, worth a crash.
                member.task.install(try! member.task.restoreStore(id, latest: latest))
                counters.restoredKeys += latest.count
            }
            let start = member.task.startOffset(of: partition, committed: committed[partition]) ?? logs[partition]?.base ?? 0
            member.fetch[partition] = start
            member.task.floor(partition, at: start)
        }
    }

    private func member(_ id: Int) -> Member? { members.first { $0.id == id } }

    // MARK: Steps

    /// One poll of a member: up to `maxRecords` records of its partitions, taken in runs of one partition
    /// in random order; with `rebalanceAfter`, the group rebalances once that many have been fetched (the
    /// rest of the poll comes from the new assignment, as librdkafka serves the rebalance from the same
    /// queue). Then punctuation and the batch's outputs, sent. Returns the records processed (not fenced).
    @discardableResult
    public func poll<G: RandomNumberGenerator>(_ id: Int, maxRecords: Int, rebalanceAfter: Int? = nil, refuseCommits: Bool = false, using random: inout G) -> Int {
        guard let member = member(id) else { return 0 }
        member.task.beginPoll()
        var runs: [(partition: TopicPartition, offsets: Range<Int64>)] = []
        func fetch(_ limit: Int) {
            var remaining = limit
            while remaining > 0 {
                let available = member.fetch.filter { (logs[$0.key]?.end ?? 0) > $0.value }.map(\.key).sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
                guard let partition = available.randomElement(using: &random) else { return }
                let position = member.fetch[partition]!
                let run = min(remaining, Int(logs[partition]!.end - position), Int.random(in: 1...max(1, limit), using: &random))
                runs.append((partition, position..<(position + Int64(run))))
                member.fetch[partition] = position + Int64(run)
                remaining -= run
            }
        }
        if let rebalanceAfter, rebalanceAfter < maxRecords {
            fetch(rebalanceAfter)
            rebalance(refuseCommits: refuseCommits, inPollOf: id)
            fetch(maxRecords - rebalanceAfter)
        } else {
            fetch(maxRecords)
        }
        var processed = 0
        for (partition, offsets) in runs {
            // Processing appends to no log: a run reads one snapshot of its partition's.
            guard let log = logs[partition] else { continue }
            // Each record read in place, not copied out of the log (a copy retained and released its
            // key, payload and headers).
            log.records.withUnsafeBufferPointer { records in
                for offset in offsets.clamped(to: log.base..<log.end) {
                    let index = Int(offset - log.base)
                    let accepted = (records[index].payload ?? []).withUnsafeBytes { payload in
                        withOptionalBytes(records[index].key) { key in
                            member.task.process(RecordView(topic: partition.topic, partition: partition.partition, offset: offset,
                                                           key: key, payload: payload, timestamp: records[index].timestamp))
                        }
                    }
                    if accepted { processed += 1 }
                }
            }
        }
        settleAssignment(member)
        member.task.punctuate { [logs] partition in member.fetch[partition].map { $0 >= (logs[partition]?.end ?? 0) } ?? false }
        send(member, member.task.takeBatch())
        counters.recordsConsumed += processed
        member.task.takeCounts().add(to: &counters)
        return processed
    }

    /// Closes every open window of every member (the end of a replay) and sends the updates.
    public func closeAllWindows() {
        for member in members {
            member.task.closeAllWindows()
            var batch = member.task.takeBatch()
            batch.offsets = [:]
            send(member, batch)
            member.task.takeCounts().add(to: &counters)
        }
    }

    /// Delivers the first `count` unacknowledged outputs of a member, in send order. With `failAt`, the
    /// output at that index fails, and so does every later unacknowledged output of the same partition (an
    /// idempotent producer keeps a partition's order); failed outputs reached the log anyway when
    /// `failedPersisted`. Then the member settles: failures queued for resending, completed batches committed.
    public func deliver(_ id: Int, count: Int, failAt: Int? = nil, failedPersisted: Bool = false) {
        guard let member = member(id) else { return }
        deliver(member, count: count, failAt: failAt, failedPersisted: failedPersisted)
        settle(member, refuseCommit: false)
    }

    /// Outputs a member has sent and not had acknowledged.
    public func unacknowledged(_ id: Int) -> Int { member(id)?.inFlight.count ?? 0 }

    /// Polls and delivers every member until nothing is left to read or to deliver.
    public func runUntilQuiet<G: RandomNumberGenerator>(maxRecords: Int = 1000, using random: inout G) {
        while true {
            var progress = 0
            for id in memberIDs {
                progress += poll(id, maxRecords: maxRecords, using: &random)
                let pending = unacknowledged(id)
                deliver(id, count: pending)
                progress += pending
            }
            if progress == 0 { return }
        }
    }

    private func send(_ member: Member, _ batch: StreamTask.Batch) {
        guard !batch.isEmpty else { return }
        let id = member.tracker.open(offsets: batch.offsets, deferred: batch.changelog)
        for record in batch.records {
            let outputID = member.tracker.register(record, batch: id)
            member.inFlight.append((outputID, record, target(of: record)))
        }
        member.tracker.close(id)
        release(member)
    }

    private func release(_ member: Member) {
        for (id, record) in member.tracker.releaseDeferred() { member.inFlight.append((id, record, target(of: record))) }
    }

    private func target(of record: OutputRecord) -> TopicPartition {
        if let partition = record.partition { return TopicPartition(record.topic, partition) }
        return TopicPartition(record.topic, Topology.partition(forKey: record.key ?? [], count: partitionCounts[record.topic] ?? 1))
    }

    private func deliver(_ member: Member, count: Int, failAt: Int? = nil, failedPersisted: Bool = false) {
        let taken = Array(member.inFlight.prefix(count))
        member.inFlight.removeFirst(taken.count)
        var failing: TopicPartition?
        var failedIDs: [UInt64] = []
        for (index, entry) in taken.enumerated() {
            if index == failAt { failing = entry.target }
            if entry.target == failing {
                if failedPersisted { append(entry.record, to: entry.target) }
                failedIDs.append(entry.id)
            } else {
                append(entry.record, to: entry.target)
                member.tracker.acknowledge(id: entry.id, failed: false)
            }
        }
        if let failing {
            // Later outputs of the failing partition fail with it.
            for entry in member.inFlight where entry.target == failing {
                if failedPersisted { append(entry.record, to: entry.target) }
                failedIDs.append(entry.id)
            }
            member.inFlight.removeAll { $0.target == failing }
        }
        for id in failedIDs { member.tracker.acknowledge(id: id, failed: true) }
    }

    private func settle(_ member: Member, refuseCommit: Bool) {
        for (id, record) in member.tracker.takeFailed() {
            member.inFlight.append((id, record, target(of: record)))
            counters.produceRetries += 1
        }
        release(member)
        _ = member.tracker.takeLatencies()
        let completed = member.tracker.takeCompleted()
        guard !refuseCommit else {
            if !completed.isEmpty { counters.commitRetries += 1 }
            return
        }
        for (partition, offset) in completed where member.task.owns(partition) {
            committed[partition] = offset  // as a broker does: the last commit wins, even a lower one
            member.task.floor(partition, at: offset)
        }
    }

    private func append(_ record: OutputRecord, to partition: TopicPartition) {
        let isOutput = topology.source(of: partition.topic) == nil && !topology.changelogTopics.contains(partition.topic)
        if isOutput { outputObserver?(record) }
        if isOutput && !retainsOutputs { return }
        logs[partition, default: PartitionLog()].records.append(
            StoredRecord(key: record.key, payload: record.value?[...], headers: record.headers, timestamp: record.timestamp ?? now))
    }
}

/// The driver's wall clock, read by its members' tasks.
private final class WallClock: Sendable {
    let value: Atomic<Int64>
    init(_ start: Int64) { value = Atomic(start) }
    var now: Int64 { value.load(ordering: .relaxed) }
}

private func withOptionalBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafeRawBufferPointer?) -> R) -> R {
    guard let bytes else { return body(nil) }
    return bytes.withUnsafeBytes { body($0) }
}
