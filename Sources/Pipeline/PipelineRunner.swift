import AuditEvents
import Detection
import Foundation
import Kafka
import Logging
import Synchronization

/// How Audit Sentinel runs against Kafka.
public struct PipelineConfiguration: Sendable {
    public enum ProcessingGuarantee: String, Sendable {
        /// Idempotent producer; offsets committed only after every output they depend on is acknowledged.
        case atLeastOnce = "at_least_once"
        /// Kafka transactions: outputs, changelog and consumer offsets commit together.
        case exactlyOnce = "exactly_once"
    }

    /// The consumer group and the prefix of internal topics.
    public var applicationID: String
    /// Properties for every client (bootstrap servers, security, …).
    public var kafka: KafkaConfiguration
    public var consumerProperties: [String: String] = [:]
    public var producerProperties: [String: String] = [:]
    public var inputTopics: [String]
    public var alertsTopic: String
    /// One dead-letter topic for every input; nil: `<input>.dlq` per input.
    public var deadLetterTopicName: String?
    public var alertFormat: AlertFormat = .ecs
    public var processingGuarantee: ProcessingGuarantee = .atLeastOnce
    /// Partitions of the repartition and changelog topics (co-partitioned).
    public var internalPartitions: Int32 = 6
    public var replicationFactor: Int32 = -1
    /// Suppression when a rule has no `[rule.alert_suppression]` of its own.
    public var defaultSuppression = DetectionRule.AlertSuppression.pipelineDefault
    /// Per-rule suppression overrides, by rule_id.
    public var suppressionOverrides: [String: DetectionRule.AlertSuppression] = [:]
    public var graceMilliseconds: Int64 = 30_000
    public var idleTimeoutMilliseconds: Int64 = 60_000
    public var decoderLimits = DecoderLimits()
    /// Decode every input record, so that every malformed one reaches the dead-letter topic (default). When
    /// false, records the rules' prefilter rejects are skipped before parsing: faster, but malformed records
    /// that could not match any rule are not dead-lettered.
    public var validateEveryRecord = true
    /// Skip the repartition hop: aggregate right where the events are detected, with each input partition's
    /// state in the same partition of the changelog. Correct only when the input is already partitioned by
    /// every rule's group key (e.g. produced with the username as key), since a key's windows must live in
    /// one partition; the changelog topics then need as many partitions as the input topic.
    public var skipRepartition = false
    public var maxBatch = 1000
    public var pollTimeout: Duration = .milliseconds(100)
    public var productVersion = "0.1.0"

    public init(applicationID: String, kafka: KafkaConfiguration, inputTopics: [String], alertsTopic: String) {
        self.applicationID = applicationID
        self.kafka = kafka
        self.inputTopics = inputTopics
        self.alertsTopic = alertsTopic
    }

    public func matchesTopic(_ ruleID: String) -> String { "\(applicationID)-\(ruleID)-matches" }
    public func stateTopic(_ ruleID: String) -> String { "\(applicationID)-\(ruleID)-state" }
    public func deadLetterTopic(_ input: String) -> String { deadLetterTopicName ?? "\(input).dlq" }

    public func suppression(for rule: DetectionRule) -> DetectionRule.AlertSuppression {
        suppressionOverrides[rule.ruleID] ?? rule.alertSuppression ?? defaultSuppression
    }
}

/// Creates topics: through the admin API on a real broker, through the mock API on the mock cluster.
public protocol TopicProvisioner: Sendable {
    func create(_ topics: [NewTopic]) throws
}

public struct AdminTopicProvisioner: TopicProvisioner {
    let admin: KafkaAdmin
    public init(configuration: KafkaConfiguration, logger: Logger) throws {
        admin = try KafkaAdmin(configuration: configuration, logger: logger)
    }
    public func create(_ topics: [NewTopic]) throws { try admin.createTopics(topics, ignoreExisting: true) }
}

/// Creates nothing: checks that every topic exists (for clusters where applications may not create topics;
/// an operator creates them, as listed by the error).
public struct ExistingTopicsProvisioner: TopicProvisioner {
    let admin: KafkaAdmin
    public init(configuration: KafkaConfiguration, logger: Logger) throws {
        admin = try KafkaAdmin(configuration: configuration, logger: logger)
    }
    public func create(_ topics: [NewTopic]) throws {
        let metadata = try admin.metadata()
        let missing = topics.filter { metadata.topic($0.name) == nil }
        guard missing.isEmpty else {
            throw KafkaError(code: .unknownTopicOrPartition, message: "topics missing (processing.create_topics is false): "
                + missing.map { "\($0.name) (\($0.partitions) partitions\($0.configs.isEmpty ? "" : ", " + $0.configs.map { "\($0.key)=\($0.value)" }.joined(separator: ",")))" }
                    .joined(separator: ", "))
        }
    }
}

public struct MockTopicProvisioner: TopicProvisioner {
    let cluster: MockCluster
    public init(cluster: MockCluster) { self.cluster = cluster }
    public func create(_ topics: [NewTopic]) throws {
        for topic in topics {
            let result = Result { () throws(KafkaError) in try cluster.createTopic(topic.name, partitions: topic.partitions) }
            if case .failure(let error) = result, error.code != .topicAlreadyExists { throw error }
        }
    }
}

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
    /// Records behind the end of each assigned input partition (refreshed every few seconds).
    public var lag: [TopicPartition: Int64] = [:]

    public init() {}
}

/// The consume → detect → repartition → aggregate → produce loop of one instance. Every instance of an
/// application runs both stages in one consumer-group member:
/// 1. detect: input records are decoded, stamped with `event.ingested` (their own, else the Kafka record
///    timestamp), evaluated against every rule; matches go to `<app>-<rule_id>-matches` keyed by the rule's
///    group key, undecodable records to `<input>.dlq` with the error in headers;
/// 2. aggregate: each partition of a matches topic has its suppression state, backed by the same partition
///    of the compacted `<app>-<rule_id>-state` topic and restored from it when the partition is assigned,
///    before any of its records is processed; alerts go to the alerts topic keyed by alert id.
/// Offsets are committed after every output of a batch is acknowledged (or with the transaction).
///
/// Not thread-safe: one thread calls ``start()``, ``runOnce()`` and ``stop()``.
public final class PipelineRunner: @unchecked Sendable {
    public let configuration: PipelineConfiguration
    public let rules: [CompiledRule]
    private let provisioner: any TopicProvisioner
    private let logger: Logger
    private let clock: @Sendable () -> Int64
    private let prefilter: PrefilterSet
    private let decoder: AuditRecordDecoder
    private var consumer: KafkaConsumer?
    private var producer: KafkaProducer?
    private let builders: [String: AlertDocumentBuilder]
    private let rulesByID: [String: CompiledRule]
    private let groupFields: [String: [FieldPath]]
    private let matchTopics: [String: String]  // topic → rule id
    /// Rule id → its repartition topic (none when the hop is skipped).
    private let matchesTopicByRule: [String: String]
    /// Suppression state per rule and partition (of the rule's matches topic, or of the input when the
    /// repartition hop is skipped); the same partition of the rule's changelog backs it.
    private let state = Mutex<[StateKey: RuleState]>([:])

    struct StateKey: Hashable, Sendable, CustomStringConvertible {
        var ruleID: String
        var partition: Int32
        var description: String { "\(ruleID)[\(partition)]" }
    }

    /// The state partitions a consumed partition carries.
    private func stateKeys(for partition: TopicPartition) -> [StateKey] {
        if let ruleID = matchTopics[partition.topic] { return [StateKey(ruleID: ruleID, partition: partition.partition)] }
        if configuration.skipRepartition, configuration.inputTopics.contains(partition.topic) {
            return rules.map { StateKey(ruleID: $0.id, partition: partition.partition) }
        }
        return []
    }
    private let countersLock = Mutex(PipelineCounters())

    public init(
        configuration: PipelineConfiguration, rules: RuleSet, provisioner: any TopicProvisioner,
        logger: Logger = Logger(label: "audit-sentinel.pipeline"), clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) {
        self.configuration = configuration
        self.rules = rules.rules
        self.provisioner = provisioner
        self.logger = logger
        self.clock = clock
        prefilter = rules.prefilter
        decoder = AuditRecordDecoder(limits: configuration.decoderLimits)
        builders = Dictionary(uniqueKeysWithValues: rules.rules.map { ($0.id, AlertDocumentBuilder(rule: $0.rule, productVersion: configuration.productVersion)) })
        rulesByID = Dictionary(uniqueKeysWithValues: rules.rules.map { ($0.id, $0) })
        groupFields = Dictionary(uniqueKeysWithValues: rules.rules.map { rule in
            (rule.id, configuration.suppression(for: rule.rule).groupBy.map(FieldPath.init))
        })
        matchesTopicByRule = configuration.skipRepartition
            ? [:] : Dictionary(uniqueKeysWithValues: rules.rules.map { ($0.id, configuration.matchesTopic($0.id)) })
        matchTopics = Dictionary(uniqueKeysWithValues: matchesTopicByRule.map { ($0.value, $0.key) })
    }

    // MARK: Lifecycle

    /// Creates the internal topics, the producer and the consumer, and joins the group.
    public func start() throws {
        let internalTopics = rules.flatMap { rule in
            let changelog = NewTopic(name: configuration.stateTopic(rule.id), partitions: configuration.internalPartitions,
                                     replicationFactor: configuration.replicationFactor, configs: ["cleanup.policy": "compact"])
            if configuration.skipRepartition { return [changelog] }
            return [NewTopic(name: configuration.matchesTopic(rule.id), partitions: configuration.internalPartitions,
                             replicationFactor: configuration.replicationFactor), changelog]
        }
        let outputs = Set(configuration.inputTopics.map(configuration.deadLetterTopic)).sorted().map {
            NewTopic(name: $0, partitions: 1, replicationFactor: configuration.replicationFactor)
        }
            + [NewTopic(name: configuration.alertsTopic, partitions: 3, replicationFactor: configuration.replicationFactor)]
        try provisioner.create(internalTopics + outputs)

        var producerConfiguration = configuration.kafka.merging(["linger.ms": "5"]).merging(configuration.producerProperties)
        if configuration.processingGuarantee == .exactlyOnce, producerConfiguration.transactionalID == nil {
            producerConfiguration.transactionalID = "\(configuration.applicationID)-\(UUID().uuidString.prefix(8))"
        }
        let producer = try KafkaProducer(configuration: producerConfiguration, logger: logger) { [weak self] report in
            self?.delivered(report)
        }
        if producer.isTransactional { try producer.initTransactions() }
        self.producer = producer

        let consumerConfiguration = configuration.kafka.merging([
            "group.id": configuration.applicationID, "auto.offset.reset": "earliest", "enable.auto.commit": "false",
            "isolation.level": "read_committed",
        ]).merging(configuration.consumerProperties)
        let consumer = try KafkaConsumer(configuration: consumerConfiguration, logger: logger) { [weak self] _, event in
            self?.rebalanced(event)
        }
        try consumer.subscribe(topics: configuration.inputTopics + Array(matchTopics.keys).sorted())
        self.consumer = consumer
        logger.info("pipeline started", metadata: ["rules": "\(rules.count)", "inputs": "\(configuration.inputTopics)"])
    }

    /// Leaves the group after closing nothing prematurely: open windows stay in the changelog for the next
    /// owner of their partitions.
    public func stop() throws {
        if let consumer, let producer {
            // Finish what is in flight and commit it, so that the next owner starts right after it.
            try producer.flush(timeout: .seconds(30))
            try settle(consumer: consumer, producer: producer, waitForAll: true)
        }
        try consumer?.close()
        consumer = nil
        producer = nil
    }

    /// Polls once and processes what came. Returns the number of records processed.
    @discardableResult
    public func runOnce() throws -> Int {
        guard let consumer, let producer else { throw KafkaError(code: .state, message: "pipeline not started") }
        var outputs: [Output] = []
        var offsets: [TopicPartition: Int64] = [:]
        // Per-record counts are kept here and merged once per batch: no lock per record.
        var counts = BatchCounts()
        let processed: Int = try consumer.poll(maxMessages: configuration.maxBatch, timeout: configuration.pollTimeout) { batch in
            // Records come in runs of one partition: the topic's name, its rule and the offset map are
            // touched once per run, not per record.
            var run: (topic: Int, name: String, ruleID: String?, partition: Int32, next: Int64)?
            for record in batch {
                if run?.topic != record.topicIdentity || run?.partition != record.partition {
                    if let run { offsets[TopicPartition(run.name, run.partition)] = run.next }
                    let name = run?.topic == record.topicIdentity ? run!.name : record.topic
                    let ruleID = run?.topic == record.topicIdentity ? run!.ruleID : matchTopics[name]
                    run = (record.topicIdentity, name, ruleID, record.partition, 0)
                }
                run!.next = record.offset + 1
                if let ruleID = run!.ruleID {
                    aggregate(record, ruleID: ruleID, counts: &counts, into: &outputs)
                } else {
                    detect(record, counts: &counts, into: &outputs)
                }
            }
            if let run { offsets[TopicPartition(run.name, run.partition)] = run.next }
            return batch.count
        }
        outputs += closeIdleWindows()
        outputs += changelogRecords()
        update { totals in
            totals.recordsConsumed += processed
            counts.add(to: &totals)
        }
        refreshLag(consumer)
        if outputs.isEmpty && offsets.isEmpty {
            // Nothing new: commit what has been acknowledged since.
            if !producer.isTransactional { try settle(consumer: consumer, producer: producer, waitForAll: false) }
            return 0
        }
        try deliver(outputs, offsets: offsets, consumer: consumer, producer: producer)
        return processed
    }

    /// Closes every open window now, publishing the updates of those that suppressed matches (the end of a
    /// demo or a bounded run; a live instance leaves its windows to the changelog instead).
    public func flushOpenWindows() throws {
        guard let consumer, let producer else { return }
        let closed: [(String, AlertAction)] = state.withLock { states in
            var result: [(String, AlertAction)] = []
            for (stateKey, var partitionState) in states {
                let actions = partitionState.suppressor.closeAll()
                for action in actions { partitionState.dirtyKeys.insert(action.window.groupKey) }
                result += actions.map { (stateKey.ruleID, $0) }
                states[stateKey] = partitionState
            }
            return result
        }
        let outputs = closed.compactMap { ruleID, action in builders[ruleID].map { alertOutput(action, builder: $0) } } + changelogRecords()
        try deliver(outputs, offsets: [:], consumer: consumer, producer: producer)
        if !producer.isTransactional { try settle(consumer: consumer, producer: producer, waitForAll: true) }
    }

    /// Lag of the input partitions, from the last fetch responses (no broker request), every few seconds.
    private func refreshLag(_ consumer: KafkaConsumer) {
        guard lagRefreshed.duration(to: .now) >= .seconds(2) else { return }
        lagRefreshed = .now
        guard let lag = try? consumer.lag() else { return }
        let inputs = Set(configuration.inputTopics)
        update { $0.lag = lag.filter { inputs.contains($0.key.topic) } }
    }
    private var lagRefreshed = ContinuousClock.now - .seconds(60)

    /// Ready: this member has joined its group and restored the state of every partition it was given.
    public var isReady: Bool { readiness.withLock { $0.joined && !$0.restoring && $0.failedRestores.isEmpty } }
    private let readiness = Mutex<(joined: Bool, restoring: Bool, failedRestores: Set<StateKey>)>((false, false, []))

    /// Runs until `shouldStop` says so.
    public func run(until shouldStop: () -> Bool) throws {
        while !shouldStop() { try runOnce() }
    }

    public func snapshot() -> PipelineCounters { countersLock.withLock { $0 } }

    private func update(_ change: (inout PipelineCounters) -> Void) {
        countersLock.withLock { counters in change(&counters) }
    }

    /// Partitions of the matches topics this instance owns (and holds state for).
    public var ownedStatePartitions: Int { state.withLock { $0.count } }

    /// Open windows across every assigned partition (for metrics and memory accounting).
    public var openWindows: Int { state.withLock { $0.values.reduce(0) { $0 + $1.suppressor.openWindowCount } } }

    // MARK: Detect stage

    struct Output {
        var topic: String
        var partition: Int32?
        var key: [UInt8]?
        var value: [UInt8]?
        var headers: [KafkaHeader]
        var isAlert = false
        /// For a new alert: the `event.ingested` of the match that raised it (alert latency is measured from it).
        var latencyOrigin: Int64?
        /// A later output with the same topic and key replaces this one (alert versions, changelog state): if
        /// this one fails after a later one was sent, it is not sent again, so the newest stays the last.
        var lastWriteWins = false
    }

    /// What one batch did, added to the totals once per batch.
    struct BatchCounts {
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
        }
    }

    private func detect(_ record: ConsumerRecord, counts: inout BatchCounts, into outputs: inout [Output]) {
        let payload = record.payload
        counts.inputRecords += 1
        let candidate = prefilter.mightMatch(payload)
        if !candidate {
            counts.prefilterRejected += 1
            if !configuration.validateEveryRecord { return }
        }
        let ingest = record.timestamp?.milliseconds ?? clock()
        var decodeFailure: AuditDecodeError?
        var events = 0
        decoder.decode(payload, ingestTime: ingest) { result in
            switch result {
            case .failure(let error):
                if decodeFailure == nil { decodeFailure = error }
                counts.decodeErrors[error.reason.rawValue, default: 0] += 1
            case .success(let event):
                events += 1
                guard candidate else { return }
                for rule in rules where rule.matches(event) {
                    counts.matches[rule.id, default: 0] += emitMatches(
                        rule, event, source: RecordPosition(topic: record.topic, partition: record.partition, offset: record.offset),
                        sequence: events - 1, ingestTime: ingest, counts: &counts, into: &outputs)
                }
            }
        }
        counts.eventsDecoded += events
        if let decodeFailure {
            // The original bytes, untouched, with what went wrong and where they came from.
            outputs.append(Output(
                topic: configuration.deadLetterTopic(record.topic), partition: nil, key: record.key.map(Array.init), value: Array(payload),
                headers: [
                    KafkaHeader("error.reason", decodeFailure.reason.rawValue), KafkaHeader("error.message", decodeFailure.message),
                    KafkaHeader("error.offset", "\(decodeFailure.offset)"), KafkaHeader("error.event_index", "\(decodeFailure.eventIndex)"),
                    KafkaHeader("source.topic", record.topic), KafkaHeader("source.partition", "\(record.partition)"),
                    KafkaHeader("source.offset", "\(record.offset)"),
                ]))
            counts.deadLettered += 1
        }
    }

    /// - Returns: how many matches the event brought.
    private func emitMatches(
        _ rule: CompiledRule, _ event: AuditEvent, source: RecordPosition, sequence: Int, ingestTime: Int64,
        counts: inout BatchCounts, into outputs: inout [Output]
    ) -> Int {
        let matches = rule.ruleMatches(for: event, groupBy: groupFields[rule.id]!, source: source, sequence: sequence, ingestTime: ingestTime)
        for match in matches {
            guard let matchesTopic = matchesTopicByRule[rule.id] else {
                apply(match, rule: rule, key: StateKey(ruleID: rule.id, partition: source.partition), counts: &counts, into: &outputs)
                continue
            }
            outputs.append(Output(topic: matchesTopic, partition: nil, key: Array(match.groupKey.utf8),
                                  value: StateCodec.encode(match, ruleID: rule.id), headers: [KafkaHeader("rule_id", rule.id)]))
        }
        return matches.count
    }

    // MARK: Aggregate stage

    private func aggregate(_ record: ConsumerRecord, ruleID: String, counts: inout BatchCounts, into outputs: inout [Output]) {
        guard let rule = rulesByID[ruleID] else { return }
        let decoded: (ruleID: String, match: RuleMatch)
        do {
            decoded = try StateCodec.decodeMatch(record.payload)
        } catch {
            logger.error("unreadable match record", metadata: ["topic": "\(record.topic)", "offset": "\(record.offset)"])
            return
        }
        apply(decoded.match, rule: rule, key: StateKey(ruleID: ruleID, partition: record.partition), counts: &counts, into: &outputs)
    }

    /// Applies one match to its partition's suppression (and, for `new_terms` rules, history) state.
    private func apply(_ match: RuleMatch, rule: CompiledRule, key stateKey: StateKey, counts: inout BatchCounts, into outputs: inout [Output]) {
        guard let builder = builders[rule.id] else { return }
        let now = clock()
        counts.matchesAggregated += 1
        let (actions, late, duplicate): ([AlertAction], Int, Int) = state.withLock { states in
            var partitionState = states[stateKey] ?? makeState(for: rule)
            defer { states[stateKey] = partitionState }
            let before = (partitionState.suppressor.lateCount, partitionState.suppressor.duplicateCount)
            let actions = partitionState.apply(match, rule: rule.rule, now: now)
            return (actions, partitionState.suppressor.lateCount - before.0, partitionState.suppressor.duplicateCount - before.1)
        }
        counts.lateMatches += late
        counts.duplicateMatches += duplicate
        if duplicate == 0 && !actions.contains(where: { $0.kind == .new }) { counts.suppressedMatches += 1 }
        outputs += actions.map { alertOutput($0, builder: builder) }
    }

    private func makeState(for rule: CompiledRule) -> RuleState {
        RuleState(rule: rule.rule, suppression: configuration.suppression(for: rule.rule),
                  graceMilliseconds: configuration.graceMilliseconds, idleTimeoutMilliseconds: configuration.idleTimeoutMilliseconds)
    }

    private func alertOutput(_ action: AlertAction, builder: AlertDocumentBuilder) -> Output {
        update {
            if action.kind == .new {
                $0.alertsNew += 1
                $0.alertsNewByRule[builder.rule.ruleID, default: 0] += 1
            } else {
                $0.alertsUpdated += 1
                $0.alertsUpdatedByRule[builder.rule.ruleID, default: 0] += 1
            }
        }
        return Output(
            topic: configuration.alertsTopic, partition: nil, key: Array(builder.alertID(for: action.window).utf8),
            value: builder.serialized(action, format: configuration.alertFormat),
            headers: builder.headers(format: configuration.alertFormat).map { KafkaHeader($0.0, $0.1) } + [KafkaHeader("alert.kind", action.kind.rawValue)],
            isAlert: true, latencyOrigin: action.kind == .new ? action.window.first.eventTime : nil, lastWriteWins: true)
    }

    private func closeIdleWindows() -> [Output] {
        let now = clock()
        let closed: [(String, AlertAction)] = state.withLock { states in
            var result: [(String, AlertAction)] = []
            for (stateKey, var partitionState) in states {
                result += partitionState.tick(now: now).map { (stateKey.ruleID, $0) }
                states[stateKey] = partitionState
            }
            return result
        }
        return closed.compactMap { ruleID, action in builders[ruleID].map { alertOutput(action, builder: $0) } }
    }

    /// One changelog record per key changed since the last batch: its windows, or a tombstone.
    private func changelogRecords() -> [Output] {
        state.withLock { states in
            var outputs: [Output] = []
            for (stateKey, var partitionState) in states {
                let partition = stateKey
                let topic = configuration.stateTopic(stateKey.ruleID)
                for key in partitionState.dirtyKeys.sorted() {
                    let windows = partitionState.suppressor.state(of: key)
                    outputs.append(Output(
                        topic: topic, partition: partition.partition, key: Array("w|\(key)".utf8),
                        value: windows.map { StateCodec.encode(windows: $0, streamTime: partitionState.suppressor.streamTime) },
                        headers: [], lastWriteWins: true))
                }
                for key in partitionState.dirtyTerms {
                    let seen = partitionState.history.lastSeen(key) ?? 0
                    outputs.append(Output(
                        topic: topic, partition: partition.partition, key: Array(("t|" + key.values.joined(separator: "\u{1F}")).utf8),
                        value: Array("{\"last_seen\":\(seen)}".utf8), headers: [], lastWriteWins: true))
                }
                partitionState.dirtyKeys.removeAll()
                partitionState.dirtyTerms.removeAll()
                states[stateKey] = partitionState
            }
            return outputs
        }
    }

    // MARK: Delivery

    /// At least once, pipelined: a batch's outputs are sent without waiting, and its input offsets are
    /// committed (asynchronously, in batch order) once every output of it and of every earlier batch is
    /// acknowledged. A failed output is sent again with backoff while consumption is paused; nothing is
    /// committed past it. Exactly once: one transaction per batch, outputs and offsets together.
    private func deliver(_ outputs: [Output], offsets: [TopicPartition: Int64], consumer: KafkaConsumer, producer: KafkaProducer) throws {
        let commitOffsets = offsets.map { TopicPartitionOffset($0.key.topic, $0.key.partition, offset: $0.value) }
        if producer.isTransactional {
            try producer.beginTransaction()
            do {
                try sendAndWait(outputs, producer: producer, consumer: consumer)
                try producer.sendOffsetsToTransaction(commitOffsets, groupMetadata: consumer.groupMetadata())
                try producer.commitTransaction()
            } catch let error as KafkaError where error.requiresAbort {
                try producer.abortTransaction()
                throw error
            }
            return
        }
        let batch = tracker.open(offsets: offsets)
        try send(outputs, batch: batch, producer: producer)
        try settle(consumer: consumer, producer: producer, waitForAll: false)
    }

    /// Sends outputs under a tracked batch (non-transactional path).
    private func send(_ outputs: [Output], batch: UInt64, producer: KafkaProducer) throws {
        for output in outputs {
            let id = tracker.register(output, batch: batch)
            if let error = try enqueue(output, id: id, producer: producer) {
                // Refused before it was queued (e.g. a topic error librdkafka remembers): retried by `settle`.
                logger.warning("output refused: \(error)", metadata: ["topic": "\(output.topic)"])
                tracker.acknowledge(id: id, failed: true)
            }
        }
        tracker.close(batch)
    }

    /// Queues one output; waits while librdkafka's local queue is full. Returns a non-fatal refusal.
    private func enqueue(_ output: Output, id: UInt64, producer: KafkaProducer) throws -> KafkaError? {
        let message = ProducerMessage(topic: output.topic, partition: output.partition, key: output.key, value: output.value, headers: output.headers)
        while true {
            switch Result(catching: { () throws(KafkaError) in try producer.send(message, id: id) }) {
            case .success:
                return nil
            case .failure(let error) where error.code == .queueFull:
                producer.poll(timeout: .milliseconds(10))
            case .failure(let error) where !error.isFatal && producer.fatalError == nil:
                return error
            case .failure(let error):
                throw error
            }
        }
    }

    /// Resends failed outputs (with consumption paused and backoff), commits every batch whose outputs are
    /// all acknowledged, and keeps the number of unacknowledged outputs bounded. With `waitForAll`, returns
    /// only when nothing is outstanding (rebalance, stop).
    private func settle(consumer: KafkaConsumer, producer: KafkaProducer, waitForAll: Bool, insideRebalance: Bool = false) throws {
        var backoff: Duration = .milliseconds(100)
        var paused: [TopicPartition] = []
        defer { if !paused.isEmpty { try? consumer.resume(paused) } }
        while true {
            let failed = tracker.takeFailed()
            if !failed.isEmpty {
                update { $0.produceRetries += failed.count }
                logger.warning("\(failed.count) outputs not acknowledged; retrying in \(backoff)")
                if paused.isEmpty, let assignment = try? consumer.assignment() {
                    try? consumer.pause(assignment)
                    paused = assignment
                }
                if !insideRebalance { _ = try? consumer.poll(timeout: .zero) { _ in } }  // keeps the group membership alive
                Thread.sleep(forTimeInterval: Double(backoff.components.seconds) + Double(backoff.components.attoseconds) / 1e18)
                backoff = min(backoff * 2, .seconds(5))
                for (id, output) in failed {
                    if let error = try enqueue(output, id: id, producer: producer) {
                        logger.warning("output refused: \(error)", metadata: ["topic": "\(output.topic)"])
                        tracker.acknowledge(id: id, failed: true)
                    }
                }
                continue
            }
            let completed = tracker.takeCompleted()
            observeLatency(of: completed.alerts)
            commit(completed.offsets, consumer: consumer, synchronously: waitForAll)
            let outstanding = tracker.outstanding
            if outstanding == 0 || (!waitForAll && outstanding <= maxOutstandingOutputs && paused.isEmpty) { return }
            // Too much in flight (or draining): wait for reports.
            _ = producer.poll(timeout: .milliseconds(5))
            if (!paused.isEmpty || waitForAll) && !insideRebalance { _ = try? consumer.poll(timeout: .zero) { _ in } }
            tracker.waitForReports(timeout: .milliseconds(50))
        }
    }

    /// Unacknowledged outputs beyond which consumption waits.
    private var maxOutstandingOutputs: Int { max(10_000, configuration.maxBatch * 20) }

    private func commit(_ offsets: [TopicPartition: Int64], consumer: KafkaConsumer, synchronously: Bool) {
        guard !offsets.isEmpty else { return }
        let list = offsets.map { TopicPartitionOffset($0.key.topic, $0.key.partition, offset: $0.value) }
        let committed = Result { () throws(KafkaError) in
            if synchronously { try consumer.commit(list) } else { try consumer.commitAsync(list) }
        }
        if case .failure(let error) = committed {
            // The outputs are acknowledged; only the commit was refused (a rebalance is under way, or this
            // member lost its partitions). The next owner reads these records again: their matches are
            // recognized as replays by their input position, their alerts carry the same ids.
            logger.warning("offset commit refused, records will be read again: \(error)")
            update { $0.commitRetries += 1 }
        }
    }

    /// Alert latency: from the `event.ingested` of the match that raised a new alert to its acknowledgement.
    private func observeLatency(of outputs: [Output]) {
        guard let observer = alertLatencyObserver else { return }
        let now = clock()
        for output in outputs { if let origin = output.latencyOrigin { observer(max(0, now - origin)) } }
    }

    /// Called with each new alert's latency in milliseconds once it is acknowledged (metrics, benchmarks).
    public var alertLatencyObserver: (@Sendable (Int64) -> Void)?

    /// Transactional path: sends and waits for every acknowledgement, retrying failures with backoff.
    private func sendAndWait(_ outputs: [Output], producer: KafkaProducer, consumer: KafkaConsumer) throws {
        let batch = tracker.open(offsets: [:])
        try send(outputs, batch: batch, producer: producer)
        try producer.flush(timeout: .seconds(60))
        try settle(consumer: consumer, producer: producer, waitForAll: true)
    }

    /// Called by the producer for every delivery report.
    func delivered(_ report: DeliveryReport) {
        if let error = report.error {
            logger.warning("output not delivered: \(error)", metadata: ["topic": "\(report.topic)"])
        }
        tracker.acknowledge(id: report.id, failed: report.error != nil)
    }

    private let tracker = DeliveryTracker()

    // MARK: Rebalancing and restore

    private func rebalanced(_ event: RebalanceEvent) {
        update { $0.rebalances += 1 }
        let owned = event.partitions.flatMap(stateKeys(for:))
        switch event.kind {
        case .assign:
            readiness.withLock { $0.restoring = true }
            for stateKey in owned {
                do {
                    try restore(stateKey)
                    readiness.withLock { _ = $0.failedRestores.remove(stateKey) }
                } catch {
                    logger.error("restoring \(stateKey) failed: \(error)")
                    update { $0.restoreFailures += 1 }
                    readiness.withLock { _ = $0.failedRestores.insert(stateKey) }
                }
            }
            readiness.withLock { $0.joined = true; $0.restoring = false }
        case .revoke, .lost:
            // Outputs in flight are acknowledged and their offsets committed before the partitions go, so the
            // next owner neither misses nor repeats them; it restores the state from the changelog.
            if event.kind == .revoke, let consumer, let producer, tracker.outstanding > 0 || tracker.hasCompleted {
                do {
                    try producer.flush(timeout: .seconds(30))
                    try settle(consumer: consumer, producer: producer, waitForAll: true, insideRebalance: true)
                } catch {
                    logger.warning("in-flight outputs not settled before revocation: \(error)")
                }
            }
            state.withLock { states in for stateKey in owned { states.removeValue(forKey: stateKey) } }
            readiness.withLock { for stateKey in owned { $0.failedRestores.remove(stateKey) } }
        }
    }

    /// Reads the partition's changelog to its end (by the end-of-partition signal of fetch, which tansu
    /// reports correctly, unlike its ListOffsets) and rebuilds the partition's suppression state.
    func restore(_ partition: StateKey) throws {
        let ruleID = partition.ruleID
        guard let rule = rulesByID[ruleID] else { return }
        var partitionState = makeState(for: rule)
        let restoreConsumer = try KafkaConsumer(
            configuration: configuration.kafka.merging([
                "group.id": "\(configuration.applicationID)-restore", "enable.partition.eof": "true", "enable.auto.commit": "false",
                "auto.offset.reset": "earliest",
            ]), logger: logger)
        defer { try? restoreConsumer.close() }
        let stateTopic = configuration.stateTopic(ruleID)
        try restoreConsumer.assign([TopicPartitionOffset(stateTopic, partition.partition, offset: KafkaOffset.beginning)])
        var latest: [String: [UInt8]?] = [:]
        var reachedEnd = false
        let deadline = ContinuousClock.now + .seconds(60)
        while !reachedEnd, ContinuousClock.now < deadline {
            try restoreConsumer.poll(timeout: .milliseconds(100)) { batch in
                for record in batch {
                    guard let key = record.key else { continue }
                    latest[String(decoding: key, as: UTF8.self)] = record.hasPayload ? Array(record.payload) : nil
                }
                if batch.notices.contains(where: { if case .partitionEOF(let p, _) = $0 { p.topic == stateTopic } else { false } }) {
                    reachedEnd = true
                }
            }
        }
        guard reachedEnd else { throw KafkaError(code: .timedOut, message: "changelog \(stateTopic)[\(partition.partition)] not read to its end") }
        for (key, value) in latest {
            if key.hasPrefix("w|") {
                let groupKey = String(key.dropFirst(2))
                guard let value else { continue }
                let decoded = try value.withUnsafeBytes { try StateCodec.decodeWindows($0) }
                partitionState.suppressor.restore(key: groupKey, windows: decoded.windows)
                partitionState.suppressor.restore(streamTime: decoded.streamTime)
            } else if key.hasPrefix("t|"), let value, let object = try? JSONValue.parse(value).objectValue,
                case .number(let seen)? = object["last_seen"], let time = seen.intValue
            {
                partitionState.history.record(TermsKey(String(key.dropFirst(2)).split(separator: "\u{1F}", omittingEmptySubsequences: false).map(String.init)), at: time)
            }
        }
        partitionState.suppressor.markActive(now: clock())
        update { $0.restoredKeys += latest.count }
        state.withLock { $0[partition] = partitionState }
        logger.info("restored \(partition): \(partitionState.suppressor.openWindowCount) open windows from \(latest.count) changelog keys")
    }
}

/// Outputs in flight and the input offsets that wait for them, in batch order. Delivery reports arrive on the
/// producer's poll thread; everything else runs on the pipeline's thread.
final class DeliveryTracker: @unchecked Sendable {
    private struct Batch {
        var offsets: [TopicPartition: Int64]
        var unacknowledged = 0
        var sealed = false
        var alerts: [PipelineRunner.Output] = []
    }
    private let condition = NSCondition()
    private var nextOutputID: UInt64 = 1
    private var nextBatch: UInt64 = 1
    private var oldestBatch: UInt64 = 1
    private var batches: [UInt64: Batch] = [:]
    private var pending: [UInt64: (batch: UInt64, output: PipelineRunner.Output)] = [:]
    private var failed: [(id: UInt64, batch: UInt64, output: PipelineRunner.Output)] = []
    /// For last-write-wins outputs: the newest output id per topic and key.
    private var newest: [String: UInt64] = [:]

    private static func replacementKey(_ output: PipelineRunner.Output) -> String? {
        guard output.lastWriteWins else { return nil }
        return output.topic + "\u{0}" + String(decoding: output.key ?? [], as: UTF8.self)
    }

    private func locked<R>(_ body: () -> R) -> R {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }

    func open(offsets: [TopicPartition: Int64]) -> UInt64 {
        locked {
            defer { nextBatch += 1 }
            batches[nextBatch] = Batch(offsets: offsets)
            return nextBatch
        }
    }

    /// Tracks an output about to be sent; returns the id its delivery report will carry.
    func register(_ output: PipelineRunner.Output, batch: UInt64) -> UInt64 {
        locked {
            let id = nextOutputID
            nextOutputID += 1
            pending[id] = (batch, output)
            batches[batch]?.unacknowledged += 1
            if let key = Self.replacementKey(output) { newest[key] = id }
            return id
        }
    }

    /// Every output of the batch is registered: it may complete.
    func close(_ batch: UInt64) { locked { batches[batch]?.sealed = true } }

    func acknowledge(id: UInt64, failed isFailure: Bool) {
        locked {
            guard let entry = pending.removeValue(forKey: id) else { return }
            if isFailure {
                failed.append((id, entry.batch, entry.output))
            } else {
                batches[entry.batch]?.unacknowledged -= 1
                if entry.output.latencyOrigin != nil { batches[entry.batch]?.alerts.append(entry.output) }
                if let key = Self.replacementKey(entry.output), newest[key] == id { newest.removeValue(forKey: key) }
            }
            condition.broadcast()
        }
    }

    /// Failed outputs to send again, in their original order, registered again under their batches. One
    /// that a later output with the same topic and key replaces counts as delivered: sending it now would
    /// put an old version after the new one.
    func takeFailed() -> [(UInt64, PipelineRunner.Output)] {
        locked {
            defer { failed.removeAll() }
            var resend: [(UInt64, PipelineRunner.Output)] = []
            for entry in failed.sorted(by: { $0.id < $1.id }) {
                if let key = Self.replacementKey(entry.output), let latest = newest[key], latest != entry.id {
                    batches[entry.batch]?.unacknowledged -= 1
                    continue
                }
                pending[entry.id] = (entry.batch, entry.output)
                resend.append((entry.id, entry.output))
            }
            return resend
        }
    }

    /// The offsets of the leading batches whose outputs are all acknowledged (highest per partition), and
    /// their new alerts.
    func takeCompleted() -> (offsets: [TopicPartition: Int64], alerts: [PipelineRunner.Output]) {
        locked {
            var offsets: [TopicPartition: Int64] = [:]
            var alerts: [PipelineRunner.Output] = []
            while let batch = batches[oldestBatch], batch.sealed, batch.unacknowledged == 0 {
                offsets.merge(batch.offsets, uniquingKeysWith: max)
                alerts += batch.alerts
                batches.removeValue(forKey: oldestBatch)
                oldestBatch += 1
            }
            return (offsets, alerts)
        }
    }

    /// Outputs sent and not yet acknowledged (or failed and not yet resent).
    var outstanding: Int { locked { pending.count + failed.count } }

    /// Whether a batch is complete but not yet committed.
    var hasCompleted: Bool { locked { batches[oldestBatch].map { $0.sealed && $0.unacknowledged == 0 } ?? false } }

    func waitForReports(timeout: Duration) {
        condition.lock()
        defer { condition.unlock() }
        _ = condition.wait(until: Date().addingTimeInterval(Double(timeout.components.attoseconds) / 1e18 + Double(timeout.components.seconds)))
    }
}
