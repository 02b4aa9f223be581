// The record collector: output records, their delivery tracking, and the offsets that become committable.
import Foundation
import Kafka

/// One record the topology writes: a repartitioned match, a dead letter, a changelog entry or an alert.
public struct OutputRecord: Sendable {
    public var topic: String
    /// Chosen by the topology (repartition and changelog records); nil lets the producer's partitioner
    /// choose by key.
    public var partition: Int32?
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    /// For a new alert: the `event.ingested` of the match that raised it (alert latency is measured from it).
    public var latencyOrigin: Int64?
    /// A later output with the same topic and key replaces this one (alert versions, changelog state): if
    /// this one fails after a later one was sent, it is not sent again, so the newest stays the last.
    public var lastWriteWins: Bool
    /// The record's timestamp (milliseconds, by the pipeline's clock); nil lets the producer stamp it.
    public var timestamp: Int64?

    public init(topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader] = [],
                latencyOrigin: Int64? = nil, lastWriteWins: Bool = false, timestamp: Int64? = nil) {
        self.timestamp = timestamp
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
        self.latencyOrigin = latencyOrigin
        self.lastWriteWins = lastWriteWins
    }
}

/// Outputs in flight and the input offsets that wait for them, in batch order. Delivery reports arrive on the
/// producer's poll thread; everything else runs on the pipeline's thread.
///
/// Thread-safe (every member behind one condition lock), hence `@unchecked Sendable`: the producer's
/// delivery callback acknowledges from librdkafka's thread while the poll loop registers and takes.
final class DeliveryTracker: @unchecked Sendable {
    private struct Batch {
        var offsets: [TopicPartition: Int64]
        var unacknowledged = 0
        var sealed = false
        /// Sent only once every other output of this batch and every output of every earlier batch is
        /// acknowledged: the changelog, which must never say a record is done before its alerts are durable.
        var deferred: [OutputRecord] = []
        var released: Bool { deferred.isEmpty }
    }
    private let condition = NSCondition()
    private var nextOutputID: UInt64 = 1
    private var nextBatch: UInt64 = 1
    private var oldestBatch: UInt64 = 1
    /// The oldest batch whose deferred outputs may still wait.
    private var nextRelease: UInt64 = 1
    private var batches: [UInt64: Batch] = [:]
    private var pending: [UInt64: (batch: UInt64, output: OutputRecord)] = [:]
    private var failed: [(id: UInt64, batch: UInt64, output: OutputRecord)] = []
    /// New alerts' latencies (origin → acknowledgement, milliseconds) not yet taken.
    private var latencies: [Int64] = []
    /// For last-write-wins outputs: the newest output id per topic and key.
    private var newest: [String: UInt64] = [:]
    /// Per output id: the batches of failed outputs it replaced. They count as delivered when it is (not
    /// before: a batch whose changelog record was replaced by a later batch's must not commit its offsets
    /// while that later record can still be lost).
    private var waiting: [UInt64: [UInt64]] = [:]

    private static func replacementKey(_ output: OutputRecord) -> String? {
        guard output.lastWriteWins else { return nil }
        return output.topic + "\u{0}" + String(decoding: output.key ?? [], as: UTF8.self)
    }

    private func locked<R>(_ body: () -> R) -> R {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }

    func open(offsets: [TopicPartition: Int64], deferred: [OutputRecord] = []) -> UInt64 {
        locked {
            defer { nextBatch += 1 }
            batches[nextBatch] = Batch(offsets: offsets, deferred: deferred)
            return nextBatch
        }
    }

    /// The deferred outputs now due, in batch order, registered under their batches: those of each leading
    /// batch whose other outputs are all acknowledged, once every output of every earlier batch is — its
    /// changelog records included. A batch's changelog never overtakes an earlier one's: a record that
    /// failed and is sent again goes to the end of its partition, and a later batch's position record
    /// written before it would say its matches were applied while the state they made is lost in a crash
    /// (simulation seed 29899: a window gone, its first match then skipped as applied).
    func releaseDeferred() -> [(UInt64, OutputRecord)] {
        locked {
            var released: [(UInt64, OutputRecord)] = []
            while nextRelease < nextBatch {
                guard let batch = batches[nextRelease] else { nextRelease += 1; continue }
                guard batch.sealed, batch.unacknowledged == 0 else { break }
                if batch.released {
                    nextRelease += 1
                    continue
                }
                for output in batch.deferred {
                    let id = nextOutputID
                    nextOutputID += 1
                    pending[id] = (nextRelease, output)
                    if let key = Self.replacementKey(output) { newest[key] = id }
                    released.append((id, output))
                }
                batches[nextRelease]!.unacknowledged += batch.deferred.count
                batches[nextRelease]!.deferred = []
                // Not past it yet: the next batch's records wait until these are acknowledged too.
            }
            return released
        }
    }

    /// Tracks an output about to be sent; returns the id its delivery report will carry.
    func register(_ output: OutputRecord, batch: UInt64) -> UInt64 {
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

    /// - Parameter time: when the acknowledgement came (the pipeline's clock), for alert latency.
    func acknowledge(id: UInt64, failed isFailure: Bool, at time: Int64? = nil) {
        locked {
            guard let entry = pending.removeValue(forKey: id) else { return }
            if isFailure {
                failed.append((id, entry.batch, entry.output))
            } else {
                batches[entry.batch]?.unacknowledged -= 1
                for batch in waiting.removeValue(forKey: id) ?? [] { batches[batch]?.unacknowledged -= 1 }
                if let origin = entry.output.latencyOrigin, let time { latencies.append(max(0, time - origin)) }
                if let key = Self.replacementKey(entry.output), newest[key] == id { newest.removeValue(forKey: key) }
            }
            condition.broadcast()
        }
    }

    /// Failed outputs to send again, in their original order, registered again under their batches. One
    /// that a later output with the same topic and key replaces is not sent again (it would put an old
    /// version after the new one): it counts as delivered once its replacement is.
    func takeFailed() -> [(UInt64, OutputRecord)] {
        locked {
            defer { failed.removeAll() }
            var resend: [(UInt64, OutputRecord)] = []
            for entry in failed.sorted(by: { $0.id < $1.id }) {
                if let key = Self.replacementKey(entry.output), let latest = newest[key], latest != entry.id {
                    waiting[latest, default: []] += [entry.batch] + (waiting.removeValue(forKey: entry.id) ?? [])
                    continue
                }
                pending[entry.id] = (entry.batch, entry.output)
                resend.append((entry.id, entry.output))
            }
            return resend
        }
    }

    /// The offsets of the leading batches whose outputs are all acknowledged (highest per partition), and
    /// The latencies of the new alerts acknowledged since the last call.
    func takeLatencies() -> [Int64] {
        locked {
            defer { latencies.removeAll() }
            return latencies
        }
    }

    /// The offsets of the leading batches whose outputs are all acknowledged (highest per partition).
    func takeCompleted() -> [TopicPartition: Int64] {
        locked {
            var offsets: [TopicPartition: Int64] = [:]
            while let batch = batches[oldestBatch], batch.sealed, batch.released, batch.unacknowledged == 0 {
                offsets.merge(batch.offsets, uniquingKeysWith: max)
                batches.removeValue(forKey: oldestBatch)
                oldestBatch += 1
            }
            return offsets
        }
    }

    /// Partitions this member no longer owns: their offsets are never committed by it.
    func forget(_ partitions: Set<TopicPartition>) {
        locked {
            for id in batches.keys { batches[id]!.offsets = batches[id]!.offsets.filter { !partitions.contains($0.key) } }
        }
    }

    /// Outputs sent and not yet acknowledged (or failed and not yet resent).
    var outstanding: Int { locked { pending.count + failed.count + batches.values.reduce(0) { $0 + $1.deferred.count } } }

    /// Whether a batch is complete but not yet committed.
    var hasCompleted: Bool { locked { batches[oldestBatch].map { $0.sealed && $0.released && $0.unacknowledged == 0 } ?? false } }

    func waitForReports(timeout: Duration) {
        condition.lock()
        defer { condition.unlock() }
        _ = condition.wait(until: Date().addingTimeInterval(Double(timeout.components.attoseconds) / 1e18 + Double(timeout.components.seconds)))
    }
}
