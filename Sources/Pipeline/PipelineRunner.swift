// The Kafka runtime: the poll loop, the rebalance listener, state restores and delivery around one stream task.
import AuditEvents
import Detection
import Foundation
import Kafka
import Logging

/// One consumer-group member running the ``Topology`` against Kafka: it polls, hands every record to its
/// ``StreamTask``, punctuates, and produces what the task emits; offsets are committed once every output
/// of a batch (and of every earlier batch) is acknowledged, or with the batch's transaction.
///
/// Rebalances: assigned partitions that carry state are paused, their stores restored from the changelog
/// after the poll returns (outside librdkafka's callback, one restore consumer for all of them), and every
/// partition assigned during a poll is then positioned at the task's start offset and resumed. Revoked
/// partitions have their in-flight outputs acknowledged and committed first.
///
/// Confined to the thread that calls ``start()``, ``runOnce()`` and ``stop()``; other threads read
/// ``status``.
public final class PipelineRunner {
    public let configuration: PipelineConfiguration
    public let topology: Topology
    /// Counters, readiness and ownership, for metrics and probes on any thread.
    public let status = PipelineStatus()
    private let provisioner: any TopicProvisioner
    private let logger: Logger
    private let clock: @Sendable () -> Int64
    private let task: StreamTask
    private var consumer: KafkaConsumer?
    private var sink: KafkaSink?
    private var restoreConsumer: KafkaConsumer?
    /// Partitions assigned whose stores still have to be restored (kept across polls until they are).
    private var pendingRestores: Set<StatePartition> = []
    private var lagRefreshed = ContinuousClock.now - .seconds(60)
    /// The next offset to read per owned partition: where it was positioned, then past each record read.
    private var nextOffsets: [TopicPartition: Int64] = [:]

    /// Told of alert latencies, commits, rebalances, restores and librdkafka's statistics (metrics,
    /// benchmarks). Set before ``start()``.
    public var observer: (@Sendable (PipelineEvent) -> Void)?
    /// When the rebalance (or the first join) under way began; nil between rebalances.
    private var rebalanceStarted: ContinuousClock.Instant?
    /// An eager revocation (and the first join) always precedes an assignment: the rebalance is not over until it comes.
    private var awaitingAssignment = false
    /// Input topics not yet seen in the cluster's metadata, when that was last asked, and whether all are.
    private var missingInputs: [String] = []
    private var inputsChecked = ContinuousClock.now - .seconds(60)
    private var inputsKnown = false

    public init(
        configuration: PipelineConfiguration, rules: RuleSet, provisioner: any TopicProvisioner,
        logger: Logger = Logger(label: "audit-sentinel.pipeline"), clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) {
        self.configuration = configuration
        topology = Topology(configuration: configuration, rules: rules.rules)
        self.provisioner = provisioner
        self.logger = logger
        self.clock = clock
        task = StreamTask(topology: topology, prefilter: rules.prefilter, clock: clock)
    }

    public var rules: [CompiledRule] { topology.rules }

    // MARK: Lifecycle

    /// Creates the topics, the producer and the consumer, and joins the group.
    public func start() throws {
        status.updateReadiness { $0.state = .starting }
        try provisioner.create(topology.topicsToCreate)
        // Latency defaults (each overridable): a match crosses two topics before its alert is sent, so
        // neither batching on the producer nor a long fetch wait on a quiet partition should add to it.
        let statistics: [String: String] = configuration.kafkaStatisticsInterval.map { ["statistics.interval.ms": "\($0.wholeMilliseconds)"] } ?? [:]
        let observer = observer
        var onStatistics: (@Sendable (KafkaStatistics) -> Void)?
        if let observer { onStatistics = { statistics in observer(.statistics(statistics)) } }
        var producerConfiguration = configuration.kafka.merging(["linger.ms": "1"]).merging(statistics).merging(configuration.producerProperties)
        if configuration.processingGuarantee == .exactlyOnce, producerConfiguration.transactionalID == nil {
            producerConfiguration.transactionalID = "\(configuration.applicationID)-\(UUID().uuidString.prefix(8))"
        }
        let tracker = DeliveryTracker()
        let producer = try KafkaProducer(configuration: producerConfiguration, logger: logger, onDelivery: { [tracker, logger, clock] report in
            if let error = report.error { logger.warning("output not delivered", metadata: ["topic": "\(report.topic)", "error": "\(error)"]) }
            tracker.acknowledge(id: report.id, failed: report.error != nil, at: clock())
        }, onStatistics: onStatistics)
        if producer.isTransactional { try producer.initTransactions() }
        // Learn every output topic's leaders now (the first sends need them anyway), and check that the
        // internal topics have the partitions the topology writes to.
        for topic in topology.topicsToCreate {
            guard let metadata = try? producer.metadata(topic: topic.name, timeout: .seconds(5)), let found = metadata.topic(topic.name) else { continue }
            // Matches go to the partition the topology picks: a repartition or changelog topic made with
            // another partition count (by an operator, or an earlier configuration) cannot hold them.
            if topology.matchesTopics.contains(topic.name) || topology.changelogTopics.contains(topic.name), !configuration.skipRepartition,
                found.partitions.count != Int(topic.partitions)
            {
                throw KafkaError(code: .invalidArgument, message: "topic \(topic.name) has \(found.partitions.count) partitions, "
                    + "processing.internal_partitions is \(topic.partitions): make them equal (or use a new application id)")
            }
        }

        let consumerConfiguration = configuration.kafka.merging([
            "group.id": configuration.applicationID, "auto.offset.reset": "earliest", "enable.auto.commit": "false",
            "isolation.level": "read_committed", "fetch.wait.max.ms": "10", "fetch.error.backoff.ms": "50",
            // An input topic created after start (or partitions added) is seen within seconds, not after
            // librdkafka's default five minutes of metadata refresh.
            "topic.metadata.refresh.interval.ms": "3000",
        ]).merging(statistics).merging(configuration.consumerProperties)
        let confined = LoopConfined(self)
        let consumer = try KafkaConsumer(
            configuration: consumerConfiguration, logger: logger,
            onRebalance: { _, event in confined.runner?.rebalanced(event) },
            onCommit: { error, _ in confined.runner?.sink?.commitAnswered(failed: error != nil) },
            onStatistics: onStatistics)
        let task = task
        let sink = KafkaSink(producer: producer, consumer: consumer, tracker: tracker, status: status, logger: logger,
                             maxBatch: configuration.maxBatch, owns: { task.owns($0) }, committed: { task.floor($0, at: $1) })
        sink.observer = observer
        self.sink = sink
        try consumer.subscribe(topics: topology.subscription)
        self.consumer = consumer
        rebalanceStarted = .now
        awaitingAssignment = true  // the first join ends with an assignment (possibly empty), eager or cooperative
        // Not ready before the first metadata check has found every input topic.
        let inputs = configuration.inputTopics.filter { !$0.hasPrefix("^") }
        status.updateReadiness { $0.state = .joining; $0.missingInputs = inputs }
        logger.info("pipeline started", metadata: ["rules": "\(rules.count)", "inputs": "\(configuration.inputTopics)"])
    }

    /// Leaves the group after finishing what is in flight: open windows stay in the changelog for the next
    /// owner of their partitions.
    public func stop() throws {
        status.updateReadiness { $0.state = .stopping }
        defer { status.updateReadiness { $0.state = .stopped } }
        try sink?.drain()
        try consumer?.close()
        try restoreConsumer?.close()
        consumer = nil
        sink = nil
        restoreConsumer = nil
    }

    /// Runs until `shouldStop` says so.
    public func run(until shouldStop: () -> Bool) throws {
        while !shouldStop() { try runOnce() }
    }

    /// Polls once, processes what came, punctuates and produces. Returns the number of records processed.
    @discardableResult
    public func runOnce() throws -> Int {
        guard let consumer, let sink else { throw KafkaError(code: .state, message: "pipeline not started") }
        task.beginPoll()
        let (processed, received) = try consumer.poll(maxMessages: configuration.maxBatch, timeout: configuration.pollTimeout, fillBatch: configuration.fillBatches) { batch in
            var processed = 0
            // A topic's name is made once per run of its records (and the same string then compares fast).
            var topic: (identity: Int, name: String)?
            for record in batch {
                if topic?.identity != record.topicIdentity { topic = (record.topicIdentity, record.topic) }
                let view = RecordView(topic: topic!.name, partition: record.partition, offset: record.offset, key: record.key,
                                      payload: record.payload, timestamp: record.timestamp?.milliseconds)
                if task.process(view) { processed += 1 }
            }
            return (processed, batch.count)
        }
        try settleAssignment(consumer)
        finishRebalance()
        checkInputTopics(consumer)
        task.punctuate { partition in caughtUp(partition, consumer) }
        let counts = task.takeCounts()
        let maxBatch = configuration.maxBatch
        status.update { totals in
            totals.recordsConsumed += processed
            if received > 0 { totals.pollsWithRecords += 1 }
            if received >= maxBatch { totals.fullPolls += 1 }
            counts.add(to: &totals)
        }
        status.setStores(owned: task.stores.count, openWindows: task.openWindows, pendingSequences: task.pendingSequences,
                         aggregationPanes: task.aggregationPanes)
        refreshLag(consumer)
        let batch = task.takeBatch()
        nextOffsets.merge(batch.offsets) { max($0, $1) }
        if batch.isEmpty {
            // Nothing new: commit what has been acknowledged since.
            if !sink.isTransactional { try sink.settle(waitForAll: false) }
            return 0
        }
        try sink.deliver(batch)
        return processed
    }

    /// Closes every open window now and publishes their updates (the end of a demo or a bounded run).
    public func flushOpenWindows() throws {
        guard let sink else { return }
        task.closeAllWindows()
        let counts = task.takeCounts()
        status.update { counts.add(to: &$0) }
        var batch = task.takeBatch()
        batch.offsets = [:]
        try sink.deliver(batch)
        if !sink.isTransactional { try sink.settle(waitForAll: true) }
    }

    public func snapshot() -> PipelineCounters { status.counterSnapshot }
    public var isReady: Bool { status.isReady }
    /// State partitions this member owns and holds restored.
    public var ownedStatePartitions: Int { status.ownedStatePartitions }
    /// Open windows across every owned state partition.
    public var openWindows: Int { status.openWindows }
    public var pendingSequences: Int { status.pendingSequences }

    // MARK: Rebalancing and restore

    /// Inside poll, on the loop's thread, before librdkafka applies the change.
    private func rebalanced(_ event: RebalanceEvent) {
        status.update { $0.rebalances += 1 }
        if rebalanceStarted == nil { rebalanceStarted = .now }
        awaitingAssignment = event.kind != .assign && event.protocol == .eager
        status.updateReadiness { $0.rebalancing = true }
        switch event.kind {
        case .assign:
            task.assign(event.partitions)
            pendingRestores.formUnion(event.partitions.flatMap(topology.statePartitions(carriedBy:)))
            status.updateReadiness { $0.restoring = !pendingRestores.isEmpty }
        case .revoke, .lost:
            // Outputs in flight are acknowledged and their offsets committed while the partitions are still
            // ours, so the next owner neither misses nor repeats them; it restores the state from the changelog.
            if event.kind == .revoke, let sink, sink.tracker.outstanding > 0 || sink.tracker.hasCompleted {
                do {
                    try sink.drain(insideRebalance: true)
                } catch {
                    logger.warning("in-flight outputs not settled before revocation", metadata: ["error": "\(error)"])
                }
            }
            task.revoke(event.partitions)
            sink?.tracker.forget(Set(event.partitions))
            for partition in event.partitions { nextOffsets.removeValue(forKey: partition) }
            let gone = Set(event.partitions.flatMap(topology.statePartitions(carriedBy:)))
            pendingRestores.subtract(gone)
            status.updateReadiness { $0.failedRestores.subtract(gone); $0.restoring = !pendingRestores.isEmpty }
        }
    }

    /// Once nothing of a rebalance is left to do (restores done, partitions positioned): its duration.
    private func finishRebalance() {
        guard let started = rebalanceStarted, pendingRestores.isEmpty, !awaitingAssignment else { return }
        rebalanceStarted = nil
        let duration = started.duration(to: .now)
        let assigned = task.ownedPartitions.count
        status.updateReadiness { $0.joined = true; $0.rebalancing = false }
        logger.info("rebalance complete", metadata: ["duration_ms": "\(duration.wholeMilliseconds)", "assigned_partitions": "\(assigned)",
                                                     "state_partitions": "\(task.stores.count)"])
        observer?(.rebalanced(duration: duration, assignedPartitions: assigned))
    }

    /// Until every input topic is in the cluster's metadata the member is not ready: it is subscribed and
    /// picks a topic up within seconds of its creation (metadata refresh), but says what it waits for.
    /// Regular-expression subscriptions (`^…`) have nothing to wait for.
    private func checkInputTopics(_ consumer: KafkaConsumer) {
        guard !inputsKnown, inputsChecked.duration(to: .now) >= .seconds(2) else { return }
        inputsChecked = .now
        let assigned = Set(task.ownedPartitions.map(\.topic))
        var missing: [String] = []
        for topic in configuration.inputTopics where !topic.hasPrefix("^") && !assigned.contains(topic) {
            // A consumer's metadata request never creates a topic (allow.auto.create.topics=false).
            let found = (try? consumer.metadata(topic: topic, timeout: .milliseconds(500)))?.topic(topic)
            if found.map({ $0.partitions.isEmpty }) ?? true { missing.append(topic) }
        }
        if missing != missingInputs {
            if !missing.isEmpty {
                logger.warning("input topic does not exist yet; it is read within seconds of its creation", metadata: ["topics": "\(missing)"])
            } else {
                logger.info("input topics exist", metadata: ["topics": "\(missingInputs)"])
            }
        }
        missingInputs = missing
        inputsKnown = missing.isEmpty
        status.updateReadiness { $0.missingInputs = missing }
    }

    /// After a poll in which partitions were assigned: restores their stores, positions every such partition
    /// at the task's start offset (its records of that poll were fenced) and lets it fetch.
    private func settleAssignment(_ consumer: KafkaConsumer) throws {
        let fresh = task.assignedDuringPoll
        guard !fresh.isEmpty || !pendingRestores.isEmpty else { return }
        let waiting = task.ownedPartitions.filter { !pendingRestores.isDisjoint(with: topology.statePartitions(carriedBy: $0)) }
        let reposition = Array(Set(fresh).union(waiting)).sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
        try? consumer.pause(reposition)
        let started = ContinuousClock.now
        if !pendingRestores.isEmpty {
            let ids = pendingRestores.sorted()
            do {
                let restored = try restore(ids)
                for store in restored { task.install(store) }
                pendingRestores.subtract(ids)
                status.updateReadiness { $0.failedRestores.subtract(ids) }
            } catch {
                logger.error("restoring state failed; retrying", metadata: ["partitions": "\(ids)", "error": "\(error)"])
                status.update { $0.restoreFailures += 1 }
                status.updateReadiness { $0.failedRestores.formUnion(ids) }
            }
        }
        // Partitions whose stores are still missing stay paused until a later attempt restores them.
        let ready = reposition.filter { partition in topology.statePartitions(carriedBy: partition).allSatisfy { !pendingRestores.contains($0) } }
        if !ready.isEmpty {
            let committed = Dictionary((try consumer.committed(ready)).map { ($0.topicPartition, $0.offset) }, uniquingKeysWith: max)
            let positions = ready.map { partition in
                let committedOffset = committed[partition].flatMap { $0 >= 0 ? $0 : nil }
                return TopicPartitionOffset(partition.topic, partition.partition,
                                            offset: task.startOffset(of: partition, committed: committedOffset) ?? KafkaOffset.beginning)
            }
            try consumer.seek(positions)
            for position in positions {
                task.floor(position.topicPartition, at: position.offset >= 0 ? position.offset : (try? consumer.watermarks(position.topicPartition))??.low ?? .min)
                if position.offset >= 0 { nextOffsets[position.topicPartition] = position.offset } else { nextOffsets.removeValue(forKey: position.topicPartition) }
            }
            try consumer.resume(ready)
            logger.debug("partitions positioned", metadata: ["positions": "\(positions)"])
        }
        let elapsed = started.duration(to: .now)
        status.update { $0.restoreMilliseconds += elapsed.wholeMilliseconds }
        status.updateReadiness { $0.restoring = !pendingRestores.isEmpty }
        status.setStores(owned: task.stores.count, openWindows: task.openWindows, pendingSequences: task.pendingSequences,
                         aggregationPanes: task.aggregationPanes)
    }

    /// Reads the changelog partitions of these stores to their ends (by the end-of-partition signal of fetch,
    /// which tansu reports correctly, unlike its ListOffsets) with one consumer, and rebuilds the stores.
    private func restore(_ ids: [StatePartition]) throws -> [StateStore] {
        let started = ContinuousClock.now
        let reader: KafkaConsumer
        if let restoreConsumer {
            reader = restoreConsumer
        } else {
            reader = try KafkaConsumer(
                configuration: configuration.kafka.merging([
                    "group.id": "\(configuration.applicationID)-restore", "enable.partition.eof": "true", "enable.auto.commit": "false",
                    "auto.offset.reset": "earliest",
                ]), logger: logger)
            restoreConsumer = reader
        }
        let changelogs = Dictionary(uniqueKeysWithValues: ids.map { (TopicPartition(topology.changelogTopics[$0.ruleIndex], $0.partition), $0) })
        try reader.assign(changelogs.keys.map { TopicPartitionOffset($0.topic, $0.partition, offset: KafkaOffset.beginning) })
        defer { try? reader.assign([]) }
        var latest: [TopicPartition: [[UInt8]: [UInt8]?]] = [:]
        var ended = Set<TopicPartition>()
        let deadline = ContinuousClock.now + .seconds(60)
        while ended.count < changelogs.count, ContinuousClock.now < deadline {
            try reader.poll(maxMessages: 10_000, timeout: .milliseconds(100)) { batch in
                for record in batch {
                    guard let key = record.key else { continue }
                    latest[record.topicPartition, default: [:]][Array(key)] = record.hasPayload ? Array(record.payload) : nil
                }
                for case .partitionEOF(let partition, _) in batch.notices where changelogs[partition] != nil { ended.insert(partition) }
            }
        }
        guard ended.count == changelogs.count else {
            throw KafkaError(code: .timedOut, message: "changelog partitions not read to their ends: \(Set(changelogs.keys).subtracting(ended).sorted { $0.description < $1.description })")
        }
        var stores: [StateStore] = []
        for (partition, id) in changelogs.sorted(by: { $0.value < $1.value }) {
            let entries = latest[partition] ?? [:]
            let store = try task.restoreStore(id, latest: entries)
            status.update { $0.restoredKeys += entries.count }
            logger.info("state restored", metadata: ["state_partition": "\(id)", "open_windows": "\(store.state.suppressor.openWindowCount)", "keys": "\(entries.count)",
                                                     "position": "\(store.position.map(String.init) ?? "none")"])
            stores.append(store)
        }
        observer?(.restored(duration: started.duration(to: .now), keys: latest.values.reduce(0) { $0 + $1.count }, statePartitions: stores.count))
        return stores
    }

    /// Whether this member has read the partition to the high watermark of the last fetch response (no
    /// broker request; unknown counts as behind).
    private func caughtUp(_ partition: TopicPartition, _ consumer: KafkaConsumer) -> Bool {
        guard let marks = try? consumer.watermarks(partition) else { return false }
        return (nextOffsets[partition] ?? marks.low) >= marks.high
    }

    /// Lag of every assigned partition (input and internal), from the last fetch responses (no broker request), every few seconds.
    private func refreshLag(_ consumer: KafkaConsumer) {
        guard lagRefreshed.duration(to: .now) >= .seconds(2) else { return }
        lagRefreshed = .now
        guard let lag = try? consumer.lag(fallback: nextOffsets) else { return }
        status.update { $0.lag = lag }
    }
}

/// Carries the runner into the consumer's rebalance handler. The handler's type is `@Sendable`, but
/// librdkafka calls it only from inside `poll`, on the loop's own thread, so the runner never crosses threads.
private struct LoopConfined: @unchecked Sendable {
    weak var runner: PipelineRunner?
    init(_ runner: PipelineRunner) { self.runner = runner }
}
