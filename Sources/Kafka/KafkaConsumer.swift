import CRDKafka
import Logging
import Synchronization

/// A change of the consumer's assignment, handed to the rebalance handler *before* librdkafka applies it:
/// on ``Kind/revoke`` the partitions are still owned (flush state, commit), on ``Kind/assign`` no record
/// of them has been fetched yet (restore state first).
public struct RebalanceEvent: Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case assign
        case revoke
        /// Revoked without a clean hand-over (session timed out, fenced): another member may own the
        /// partitions already, so committing for them will fail.
        case lost
    }
    public enum RebalanceProtocol: String, Sendable {
        /// Every rebalance revokes the whole assignment, then assigns the new one.
        case eager = "EAGER"
        /// Incremental (cooperative-sticky): only the partitions that move are revoked or assigned.
        case cooperative = "COOPERATIVE"
    }
    public var kind: Kind
    public var partitions: [TopicPartition]
    public var `protocol`: RebalanceProtocol
    public var description: String { "\(kind) \(partitions) (\(`protocol`.rawValue))" }
}

/// What a poll turned up besides records.
public enum ConsumerNotice: Sendable, Equatable {
    /// The consumer reached the end of a partition (`enable.partition.eof=true`); `offset` is the next offset.
    case partitionEOF(TopicPartition, offset: Int64)
    /// A consumer error, possibly tied to a partition (unknown topic, offset out of range, broker errors).
    case error(KafkaError, TopicPartition?)
}

/// One consumed record, borrowed from librdkafka: its ``payload`` and ``key`` point into librdkafka's own
/// fetch buffer and are valid only inside the ``KafkaConsumer/poll(maxMessages:timeout:_:)`` body that
/// received the record. Copy what must outlive it.
public struct ConsumerRecord: @unchecked Sendable {
    let message: UnsafeMutablePointer<rd_kafka_message_t>

    public var topic: String { String(cString: rd_kafka_topic_name(message.pointee.rkt)) }
    /// The same for every record of one topic from this consumer: tells topics apart without building
    /// the name (`topic` makes a String each time).
    public var topicIdentity: Int { Int(bitPattern: message.pointee.rkt.map { UnsafeRawPointer($0) }) }
    public var partition: Int32 { message.pointee.partition }
    public var offset: Int64 { message.pointee.offset }
    public var topicPartition: TopicPartition { TopicPartition(topic, partition) }
    /// The offset to commit or store once this record is processed (the next one to read).
    public var nextOffset: TopicPartitionOffset { TopicPartitionOffset(topic, partition, offset: offset + 1) }

    public var payload: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: message.pointee.payload, count: message.pointee.payload == nil ? 0 : message.pointee.len)
    }
    public var hasPayload: Bool { message.pointee.payload != nil }
    public var key: UnsafeRawBufferPointer? {
        message.pointee.key.map { UnsafeRawBufferPointer(start: $0, count: message.pointee.key_len) }
    }

    public enum TimestampType: Sendable { case createTime, logAppendTime }
    /// The record's timestamp in milliseconds since the epoch, and what kind it is; `nil` if the broker sent none.
    public var timestamp: (milliseconds: Int64, type: TimestampType)? {
        var type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let value = rd_kafka_message_timestamp(message, &type)
        switch type {
        case RD_KAFKA_TIMESTAMP_CREATE_TIME: return (value, .createTime)
        case RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME: return (value, .logAppendTime)
        default: return nil
        }
    }

    /// All headers, copied.
    public var headers: [KafkaHeader] {
        var headers: OpaquePointer?
        guard rd_kafka_message_headers(message, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR, let headers else { return [] }
        var result: [KafkaHeader] = []
        var index = 0
        var name: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while rd_kafka_header_get_all(headers, index, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
            let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }
            result.append(KafkaHeader(name.map { String(cString: $0) } ?? "", bytes))
            index += 1
        }
        return result
    }

    /// The last header with this name, borrowed like the payload.
    public func header(_ name: String) -> UnsafeRawBufferPointer? {
        var headers: OpaquePointer?
        guard rd_kafka_message_headers(message, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR, let headers else { return nil }
        var value: UnsafeRawPointer?
        var size = 0
        guard rd_kafka_header_get_last(headers, name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
        return UnsafeRawBufferPointer(start: value, count: size)
    }
}

/// The records of one poll, in fetch order (per partition, offset order), plus any notices.
public struct MessageBatch: RandomAccessCollection {
    let messages: UnsafeBufferPointer<UnsafeMutablePointer<rd_kafka_message_t>?>
    public let notices: [ConsumerNotice]

    public var startIndex: Int { 0 }
    public var endIndex: Int { messages.count }
    public subscript(position: Int) -> ConsumerRecord { ConsumerRecord(message: messages[position]!) }
}

/// The consumer's group membership, for ``KafkaProducer/sendOffsetsToTransaction(_:groupMetadata:timeout:)``.
public final class ConsumerGroupMetadata: @unchecked Sendable {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { rd_kafka_consumer_group_metadata_destroy(pointer) }
}

/// A consumer group member: subscribe, poll batches of borrowed records, store and commit offsets by hand.
///
/// Every event (records, rebalances, errors, async commit results) is drained from one queue, the consumer
/// queue, by ``poll(maxMessages:timeout:_:)``: the rebalance handler and commit callbacks run inside poll, on
/// the polling thread. Only one thread may poll at a time (a second concurrent poll throws); the other
/// methods are thread-safe, and may be called from inside the rebalance handler.
///
/// Defaults differ from librdkafka in one place: `enable.auto.offset.store=false`, so only offsets the
/// application stores (after processing) are committed — at-least-once unless the caller decides otherwise.
public final class KafkaConsumer: @unchecked Sendable {
    public typealias RebalanceHandler = @Sendable (KafkaConsumer, RebalanceEvent) -> Void

    let handle: KafkaHandle
    private let queue: OpaquePointer
    private let logger: Logger
    private let rebalanceHandler: RebalanceHandler?
    private let polling = Atomic<Bool>(false)
    private let closed = Atomic<Bool>(false)
    /// The batch buffer, reused by every poll (guarded by `polling`).
    nonisolated(unsafe) private var buffer: UnsafeMutableBufferPointer<UnsafeMutablePointer<rd_kafka_message_t>?>

    public init(
        configuration: KafkaConfiguration, logger: Logger = Logger(label: "kafka.consumer"),
        onRebalance: RebalanceHandler? = nil, onCommit: (@Sendable (KafkaError?, [TopicPartitionOffset]) -> Void)? = nil,
        onStatistics: (@Sendable (KafkaStatistics) -> Void)? = nil
    ) throws(KafkaError) {
        var configuration = configuration
        guard configuration.groupID != nil else {
            throw .invalidConfiguration("group.id", "a consumer needs group.id")
        }
        if configuration.enableAutoOffsetStore == nil { configuration.enableAutoOffsetStore = false }
        self.logger = logger
        self.rebalanceHandler = onRebalance
        self.handle = try KafkaHandle(type: RD_KAFKA_CONSUMER, configuration: configuration, logger: logger) { conf in
            rd_kafka_conf_set_rebalance_cb(conf, rebalanceCallback)
            rd_kafka_conf_set_offset_commit_cb(conf, offsetCommitCallback)
        }
        // One queue for everything: errors and callbacks are served by the same poll that returns records.
        rd_kafka_poll_set_consumer(handle.pointer)
        self.queue = rd_kafka_queue_get_consumer(handle.pointer)
        self.buffer = .allocate(capacity: 1024)
        handle.callbacks.onRebalance = { [unowned self] rk, err, partitions in
            self.rebalance(rk, err, partitions)
        }
        handle.callbacks.onCommit = onCommit
        handle.callbacks.onStatistics = onStatistics
    }

    deinit {
        // The handler reaches `self`, which is going away: librdkafka's default assignment handling takes over.
        handle.callbacks.onRebalance = nil
        if !closed.load(ordering: .acquiring) {
            let err = rd_kafka_consumer_close(handle.pointer)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { logger.warning("consumer close failed", metadata: ["error.message": "\(KafkaError(code: .init(err)))"]) }
        }
        rd_kafka_queue_destroy(queue)
        buffer.deallocate()
    }

    public var name: String { handle.name }

    /// This member's id in the group (empty before the first join).
    public var memberID: String {
        guard let id = rd_kafka_memberid(handle.pointer) else { return "" }
        defer { rd_kafka_mem_free(handle.pointer, id) }
        return String(cString: id)
    }

    // MARK: Subscription and polling

    /// Joins the group for these topics (names starting with `^` are regular expressions).
    public func subscribe(topics: [String]) throws(KafkaError) {
        try withPartitionList(topics.map { TopicPartition($0, RD_KAFKA_PARTITION_UA) }) { (list) throws(KafkaError) in
            try KafkaError.check(rd_kafka_subscribe(handle.pointer, list), "subscribe \(topics)")
        }
    }

    /// Reads these partitions from these offsets without group management (no rebalances): for restoring
    /// state from a changelog. Use ``KafkaOffset/beginning`` to read a partition from its start.
    public func assign(_ offsets: [TopicPartitionOffset]) throws(KafkaError) {
        try withPartitionList(offsets) { (list) throws(KafkaError) in
            try KafkaError.check(rd_kafka_assign(handle.pointer, list), "assign \(offsets)")
        }
    }

    public func unsubscribe() throws(KafkaError) {
        try KafkaError.check(rd_kafka_unsubscribe(handle.pointer), "unsubscribe")
    }

    /// Hands the records already fetched (up to `maxMessages`) to `body` in one batch, waiting up to
    /// `timeout` only when there are none, serving rebalances and errors on the way. Records are borrowed:
    /// see ``ConsumerRecord``. A rebalance served by this call may come between records of the batch, as
    /// librdkafka serves it from the same queue: records of a partition assigned or revoked by it may
    /// belong to the previous assignment (the caller fences them).
    /// - Parameter fillBatch: wait up to `timeout` for a full batch instead (librdkafka's own batch call):
    ///   fewer, larger batches at the cost of latency.
    public func poll<R>(
        maxMessages: Int = 1024, timeout: Duration, fillBatch: Bool = false, _ body: (MessageBatch) throws -> R
    ) throws -> R {
        guard !polling.exchange(true, ordering: .acquiring) else {
            throw KafkaError.illegalState("KafkaConsumer.poll called while another poll is running")
        }
        defer { polling.store(false, ordering: .releasing) }
        if buffer.count < maxMessages {
            buffer.deallocate()
            buffer = .allocate(capacity: maxMessages)
        }
        // librdkafka's batch call waits until the batch is full or the timeout passes: at 10 000 records/s a
        // batch of 1 000 would sit for 100 ms. Take what is there; only when nothing is, wait for the first
        // record, then take what came with it.
        var received = rd_kafka_consume_batch_queue(queue, fillBatch ? timeout.milliseconds : 0, buffer.baseAddress, maxMessages)
        if received == 0 && timeout > .zero && !fillBatch {
            received = rd_kafka_consume_batch_queue(queue, timeout.milliseconds, buffer.baseAddress, 1)
            if received == 1 && maxMessages > 1 {
                let more = rd_kafka_consume_batch_queue(queue, 0, buffer.baseAddress! + 1, maxMessages - 1)
                if more > 0 { received += more }
            }
        }
        guard received >= 0 else {
            throw KafkaError(code: .init(rd_kafka_last_error()), message: "consume failed")
        }
        // Compact the good records to the front; turn error messages into notices and free them.
        var good = 0
        var notices: [ConsumerNotice] = []
        for index in 0..<received {
            let message = buffer[index]!
            if message.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR {
                buffer[good] = message
                good += 1
            } else {
                notices.append(notice(for: message))
                rd_kafka_message_destroy(message)
            }
        }
        defer { for index in 0..<good { rd_kafka_message_destroy(buffer[index]) } }
        return try body(MessageBatch(messages: UnsafeBufferPointer(rebasing: buffer[0..<good]), notices: notices))
    }

    private func notice(for message: UnsafeMutablePointer<rd_kafka_message_t>) -> ConsumerNotice {
        let raw = message.pointee
        let partition = raw.rkt.map { TopicPartition(String(cString: rd_kafka_topic_name($0)), raw.partition) }
        if raw.err == RD_KAFKA_RESP_ERR__PARTITION_EOF, let partition {
            return .partitionEOF(partition, offset: raw.offset)
        }
        let text = raw.payload.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: raw.len), as: UTF8.self) }
        let error = KafkaError(code: .init(raw.err), message: text ?? String(cString: rd_kafka_err2str(raw.err)))
        logger.warning("consumer error", metadata: ["error.message": "\(error)", "partition": "\(partition.map(\.description) ?? "-")"])
        return .error(error, partition)
    }

    // MARK: Rebalancing

    private func rebalance(_ rk: OpaquePointer, _ err: rd_kafka_resp_err_t, _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) {
        let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
        let partitions = list?.partitions ?? []
        let kind: RebalanceEvent.Kind
        switch err {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS: kind = .assign
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS: kind = rd_kafka_assignment_lost(rk) != 0 ? .lost : .revoke
        default:
            logger.error("rebalance failed", metadata: ["error.message": "\(KafkaError(code: .init(err)))"])
            _ = rd_kafka_assign(rk, nil)
            return
        }
        let event = RebalanceEvent(kind: kind, partitions: partitions, protocol: cooperative ? .cooperative : .eager)
        logger.info("rebalance", metadata: ["kind": "\(event.kind)", "protocol": "\(event.protocol)", "partitions": "\(event.partitions)"])
        rebalanceHandler?(self, event)
        // Applied after the handler: revoked partitions stay ours while it flushes, assigned ones fetch only
        // once it has restored their state.
        var failure: KafkaError?
        switch (kind, cooperative) {
        case (.assign, true): failure = rd_kafka_incremental_assign(rk, list).map { KafkaError(consuming: $0) }
        case (_, true): failure = rd_kafka_incremental_unassign(rk, list).map { KafkaError(consuming: $0) }
        case (.assign, false):
            let err = rd_kafka_assign(rk, list)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { failure = KafkaError(code: .init(err)) }
        case (_, false):
            let err = rd_kafka_assign(rk, nil)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { failure = KafkaError(code: .init(err)) }
        }
        if let failure { logger.error("applying the rebalance failed", metadata: ["kind": "\(kind)", "error.message": "\(failure)"]) }
    }

    /// The partitions currently assigned to this member.
    public func assignment() throws(KafkaError) -> [TopicPartition] {
        var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
        try KafkaError.check(rd_kafka_assignment(handle.pointer, &list), "assignment")
        guard let list else { return [] }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        return list.partitions
    }

    // MARK: Offsets

    /// Marks offsets as processed; the next commit (or auto-commit) commits them.
    /// - Parameter offsets: the next offset to read per partition, e.g. ``ConsumerRecord/nextOffset``.
    public func store(_ offsets: [TopicPartitionOffset]) throws(KafkaError) {
        try withPartitionList(offsets) { (list) throws(KafkaError) in
            try KafkaError.check(rd_kafka_offsets_store(handle.pointer, list), "offset store")
            if let error = list.firstError("offset store") { throw error }
        }
    }

    /// Commits `offsets` (or, with `nil`, every stored offset) and waits for the broker's answer.
    public func commit(_ offsets: [TopicPartitionOffset]? = nil) throws(KafkaError) {
        try commit(offsets, async: false)
    }

    /// Starts a commit; its result reaches the `onCommit` handler during a later poll.
    public func commitAsync(_ offsets: [TopicPartitionOffset]? = nil) throws(KafkaError) {
        try commit(offsets, async: true)
    }

    private func commit(_ offsets: [TopicPartitionOffset]?, async: Bool) throws(KafkaError) {
        guard let offsets else {
            let err = rd_kafka_commit(handle.pointer, nil, async ? 1 : 0)
            // Nothing stored since the last commit is not a failure.
            if err == RD_KAFKA_RESP_ERR__NO_OFFSET { return }
            try KafkaError.check(err, "commit")
            return
        }
        guard !offsets.isEmpty else { return }
        try withPartitionList(offsets) { (list) throws(KafkaError) in
            try KafkaError.check(rd_kafka_commit(handle.pointer, list, async ? 1 : 0), "commit")
            if !async, let error = list.firstError("commit") { throw error }
        }
    }

    /// The group's committed offsets for these partitions (``KafkaOffset/invalid`` where none).
    public func committed(_ partitions: [TopicPartition], timeout: Duration = .seconds(10)) throws(KafkaError) -> [TopicPartitionOffset] {
        try withPartitionList(partitions) { (list) throws(KafkaError) in
            try KafkaError.check(rd_kafka_committed(handle.pointer, list, timeout.milliseconds), "committed offsets")
            return list.offsets
        }
    }

    /// The consumer's fetch position (next offset to return) per partition.
    public func position(_ partitions: [TopicPartition]) throws(KafkaError) -> [TopicPartitionOffset] {
        try withPartitionList(partitions) { (list) throws(KafkaError) in
            try KafkaError.check(rd_kafka_position(handle.pointer, list), "position")
            return list.offsets
        }
    }

    /// Moves the fetch position of assigned partitions.
    public func seek(_ offsets: [TopicPartitionOffset], timeout: Duration = .seconds(10)) throws(KafkaError) {
        try withPartitionList(offsets) { (list) throws(KafkaError) in
            try KafkaError.check(rd_kafka_seek_partitions(handle.pointer, list, timeout.milliseconds))
            if let error = list.firstError("seek") { throw error }
        }
    }

    /// Stops fetching these partitions (records already fetched are discarded) until ``resume(_:)``.
    public func pause(_ partitions: [TopicPartition]) throws(KafkaError) {
        try withPartitionList(partitions) { (list) throws(KafkaError) in
            try KafkaError.check(rd_kafka_pause_partitions(handle.pointer, list), "pause")
            if let error = list.firstError("pause") { throw error }
        }
    }

    public func resume(_ partitions: [TopicPartition]) throws(KafkaError) {
        try withPartitionList(partitions) { (list) throws(KafkaError) in
            try KafkaError.check(rd_kafka_resume_partitions(handle.pointer, list), "resume")
            if let error = list.firstError("resume") { throw error }
        }
    }

    /// Low and high watermarks of a partition: from the broker (`timeout` set) or from the last fetch
    /// response (`timeout` nil, no request; `nil` until something was fetched).
    public func watermarks(_ partition: TopicPartition, timeout: Duration? = nil) throws(KafkaError) -> (low: Int64, high: Int64)? {
        var low: Int64 = KafkaOffset.invalid
        var high: Int64 = KafkaOffset.invalid
        if let timeout {
            try KafkaError.check(
                rd_kafka_query_watermark_offsets(handle.pointer, partition.topic, partition.partition, &low, &high, timeout.milliseconds),
                "watermarks of \(partition)")
        } else {
            let err = rd_kafka_get_watermark_offsets(handle.pointer, partition.topic, partition.partition, &low, &high)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR || high == KafkaOffset.invalid { return nil }
        }
        return (low, high)
    }

    /// Records behind the high watermark per assigned partition, from the last fetch responses (no broker
    /// request). A partition with no position yet (nothing read since it was assigned or positioned) counts
    /// from `fallback` when that holds it, else from its low watermark (all of it unread); one not fetched
    /// yet, whose watermarks are unknown, is left out.
    public func lag(fallback: [TopicPartition: Int64] = [:]) throws(KafkaError) -> [TopicPartition: Int64] {
        var result: [TopicPartition: Int64] = [:]
        for position in try position(assignment()) {
            guard let marks = try watermarks(position.topicPartition) else { continue }
            let next = position.offset >= 0 ? position.offset : fallback[position.topicPartition] ?? marks.low
            result[position.topicPartition] = max(0, marks.high - max(next, marks.low))
        }
        return result
    }

    /// For transactional producers: this member's generation, to fence zombies.
    public func groupMetadata() throws(KafkaError) -> ConsumerGroupMetadata {
        guard let metadata = rd_kafka_consumer_group_metadata(handle.pointer) else {
            throw .illegalState("no consumer group metadata")
        }
        return ConsumerGroupMetadata(metadata)
    }

    public func metadata(topic: String? = nil, timeout: Duration = .seconds(10)) throws(KafkaError) -> ClusterMetadata {
        try handle.metadata(topic: topic, timeout: timeout)
    }

    public var fatalError: KafkaError? { handle.fatalError }

    /// Leaves the group cleanly: the rebalance handler sees the final revoke, stored offsets are committed
    /// if auto-commit is on. Further calls do nothing.
    public func close() throws(KafkaError) {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try KafkaError.check(rd_kafka_consumer_close(handle.pointer), "consumer close")
    }
}

private let rebalanceCallback: @convention(c) (OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?) -> Void = {
    rk, err, partitions, opaque in
    guard let rk else { return }
    guard let callbacks = ClientCallbacks.from(opaque), let handler = callbacks.onRebalance else {
        // No owner any more (closing from deinit): apply the change as librdkafka would.
        let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
        switch (err, cooperative) {
        case (RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, true): rd_kafka_incremental_assign(rk, partitions).map { rd_kafka_error_destroy($0) }
        case (RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, false): _ = rd_kafka_assign(rk, partitions)
        case (_, true): rd_kafka_incremental_unassign(rk, partitions).map { rd_kafka_error_destroy($0) }
        default: _ = rd_kafka_assign(rk, nil)
        }
        return
    }
    handler(rk, err, partitions)
}

private let offsetCommitCallback: @convention(c) (OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?) -> Void = {
    _, err, offsets, opaque in
    guard let callbacks = ClientCallbacks.from(opaque) else { return }
    let list = offsets?.offsets ?? []
    var error: KafkaError? = nil
    if err != RD_KAFKA_RESP_ERR_NO_ERROR, err != RD_KAFKA_RESP_ERR__NO_OFFSET {
        error = KafkaError(code: .init(err), message: "commit failed: \(String(cString: rd_kafka_err2str(err)))")
    } else if let offsets {
        error = offsets.firstError("commit")
    }
    if let error { callbacks.logger.warning("offset commit failed", metadata: ["error.message": "\(error)"]) }
    callbacks.onCommit?(error, list)
}
