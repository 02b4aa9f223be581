// The sink: sends a batch's records, resends what fails, releases changelog writes in order, commits what is acknowledged.
import Foundation
import Kafka
import Logging

/// Delivery for the Kafka runtime, at least once and pipelined, or one transaction per batch. Confined to
/// the poll loop's thread, like the runtime that owns it; only the tracker is shared with the producer's
/// delivery callback.
final class KafkaSink {
    let tracker: DeliveryTracker
    private let producer: KafkaProducer
    private let consumer: KafkaConsumer
    private let status: PipelineStatus
    private let logger: Logger
    private let maxOutstandingOutputs: Int
    /// Whether this member still owns a partition (only its own offsets are committed).
    private let owns: (TopicPartition) -> Bool
    /// Called with each offset committed (the detect side's replay floor moves with it).
    private let didCommit: (TopicPartition, Int64) -> Void
    var observer: (@Sendable (PipelineEvent) -> Void)?
    /// When each asynchronous commit still unanswered was issued, oldest first (librdkafka answers them in order).
    private var commitsInFlight: [ContinuousClock.Instant] = []

    init(producer: KafkaProducer, consumer: KafkaConsumer, tracker: DeliveryTracker, status: PipelineStatus, logger: Logger,
         maxBatch: Int, owns: @escaping (TopicPartition) -> Bool,
         committed: @escaping (TopicPartition, Int64) -> Void) {
        self.producer = producer
        self.consumer = consumer
        self.tracker = tracker
        self.status = status
        self.logger = logger
        maxOutstandingOutputs = max(10_000, maxBatch * 20)
        self.owns = owns
        didCommit = committed
    }

    var isTransactional: Bool { producer.isTransactional }

    /// Flushes the producer and waits until nothing is outstanding (revocation, stop).
    func drain(insideRebalance: Bool = false) throws {
        try producer.flush(timeout: .seconds(30))
        try settle(waitForAll: true, insideRebalance: insideRebalance)
    }

    /// At least once, pipelined: a batch's outputs are sent without waiting, and its input offsets are
    /// committed (asynchronously, in batch order) once every output of it and of every earlier batch is
    /// acknowledged. A failed output is sent again with backoff while consumption is paused; nothing is
    /// committed past it; the changelog writes of a batch follow once its other outputs are acknowledged.
    /// Exactly once: one transaction per batch, outputs, changelog and offsets together.
    func deliver(_ batch: StreamTask.Batch) throws {
        if producer.isTransactional {
            let commitOffsets = batch.offsets.map { TopicPartitionOffset($0.key.topic, $0.key.partition, offset: $0.value) }
            try producer.beginTransaction()
            do {
                let id = tracker.open(offsets: [:])
                try send(batch.records + batch.changelog, batch: id)
                try producer.flush(timeout: .seconds(60))
                try settle(waitForAll: true)
                let committing = ContinuousClock.now
                try producer.sendOffsetsToTransaction(commitOffsets, groupMetadata: consumer.groupMetadata())
                try producer.commitTransaction()
                status.update { $0.commitsSucceeded += 1 }
                observer?(.committed(latency: committing.duration(to: .now), failed: false))
            } catch let error as KafkaError where error.requiresAbort {
                try producer.abortTransaction()
                throw error
            }
            return
        }
        let id = tracker.open(offsets: batch.offsets, deferred: batch.changelog)
        try send(batch.records, batch: id)
        try settle(waitForAll: false)
    }

    private func send(_ outputs: [OutputRecord], batch: UInt64) throws {
        for output in outputs {
            let id = tracker.register(output, batch: batch)
            if let error = try enqueue(output, id: id) {
                // Refused before it was queued (e.g. a topic error librdkafka remembers): retried by `settle`.
                logger.warning("output refused", metadata: ["topic": "\(output.topic)", "error": "\(error)"])
                tracker.acknowledge(id: id, failed: true)
            }
        }
        tracker.close(batch)
    }

    /// Queues one output; waits while librdkafka's local queue is full. Returns a non-fatal refusal.
    private func enqueue(_ output: OutputRecord, id: UInt64) throws -> KafkaError? {
        let message = ProducerMessage(topic: output.topic, partition: output.partition, key: output.key, value: output.value,
                                      headers: output.headers, timestamp: output.timestamp)
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
    func settle(waitForAll: Bool, insideRebalance: Bool = false) throws {
        var backoff: Duration = .milliseconds(100)
        var paused: [TopicPartition] = []
        defer { if !paused.isEmpty { try? consumer.resume(paused) } }
        while true {
            let failed = tracker.takeFailed()
            if !failed.isEmpty {
                status.update { $0.produceRetries += failed.count }
                logger.warning("outputs not acknowledged; retrying", metadata: ["count": "\(failed.count)", "backoff": "\(backoff)"])
                if paused.isEmpty, let assignment = try? consumer.assignment() {
                    try? consumer.pause(assignment)
                    paused = assignment
                }
                if !insideRebalance { _ = try? consumer.poll(timeout: .zero) { _ in } }  // keeps the group membership alive
                Thread.sleep(forTimeInterval: Double(backoff.components.seconds) + Double(backoff.components.attoseconds) / 1e18)
                backoff = min(backoff * 2, .seconds(5))
                for (id, output) in failed {
                    if let error = try enqueue(output, id: id) {
                        logger.warning("output refused", metadata: ["topic": "\(output.topic)", "error": "\(error)"])
                        tracker.acknowledge(id: id, failed: true)
                    }
                }
                continue
            }
            for (id, output) in tracker.releaseDeferred() {
                if let error = try enqueue(output, id: id) {
                    logger.warning("output refused", metadata: ["topic": "\(output.topic)", "error": "\(error)"])
                    tracker.acknowledge(id: id, failed: true)
                }
            }
            let latencies = tracker.takeLatencies()
            if let observer { for latency in latencies { observer(.alertAcknowledged(latencyMilliseconds: latency)) } }
            commit(tracker.takeCompleted(), synchronously: waitForAll)
            let outstanding = tracker.outstanding
            if outstanding == 0 || (!waitForAll && outstanding <= maxOutstandingOutputs && paused.isEmpty) { return }
            // Too much in flight (or draining): wait for reports.
            _ = producer.poll(timeout: .milliseconds(5))
            if (!paused.isEmpty || waitForAll) && !insideRebalance { _ = try? consumer.poll(timeout: .zero) { _ in } }
            tracker.waitForReports(timeout: .milliseconds(50))
        }
    }

    private func commit(_ offsets: [TopicPartition: Int64], synchronously: Bool) {
        // Only partitions still ours: a commit for one that moved on would overwrite its new owner's progress.
        let list = offsets.filter { owns($0.key) }.map { TopicPartitionOffset($0.key.topic, $0.key.partition, offset: $0.value) }
        guard !list.isEmpty else { return }
        let issued = ContinuousClock.now
        let committed = Result { () throws(KafkaError) in
            if synchronously { try consumer.commit(list) } else { try consumer.commitAsync(list) }
        }
        switch (committed, synchronously) {
        case (.success, true): commitAnswered(failed: false, issued: issued)
        case (.success, false): commitsInFlight.append(issued)
        case (.failure, _): break
        }
        // Issued is enough: a commit that fails leaves a lower committed offset, and records between it and
        // this one were acknowledged before it was issued, so a replay of them is recognized anyway.
        for entry in list { didCommit(entry.topicPartition, entry.offset) }
        if case .failure(let error) = committed {
            // The outputs are acknowledged; only the commit was refused (a rebalance is under way). The next
            // owner starts at the stores' positions, which cover these records, or reads them again and
            // recognizes their matches by input position.
            logger.warning("offset commit refused, records may be read again", metadata: ["error": "\(error)"])
            status.update { $0.commitRetries += 1 }
            observer?(.committed(latency: issued.duration(to: .now), failed: true))
        }
    }

    /// The group coordinator's answer to an asynchronous commit (the consumer's commit callback, inside a
    /// poll on this thread). Answers with no commit in flight (a synchronous one's) are not counted twice.
    func commitAnswered(failed: Bool) {
        guard !commitsInFlight.isEmpty else { return }
        commitAnswered(failed: failed, issued: commitsInFlight.removeFirst())
    }

    private func commitAnswered(failed: Bool, issued: ContinuousClock.Instant) {
        status.update { if failed { $0.commitRetries += 1 } else { $0.commitsSucceeded += 1 } }
        observer?(.committed(latency: issued.duration(to: .now), failed: failed))
    }
}
