import CRDKafka
import Foundation
import Logging
import Synchronization

public struct KafkaHeader: Sendable, Hashable {
    public var name: String
    public var value: [UInt8]?
    public init(_ name: String, _ value: [UInt8]?) {
        self.name = name
        self.value = value
    }
    public init(_ name: String, _ value: String) {
        self.init(name, Array(value.utf8))
    }
}

/// A record to produce, owning its bytes. For the hot path, ``KafkaProducer/send(topic:partition:key:value:headers:timestamp:)``
/// takes borrowed buffers instead (librdkafka copies them either way).
public struct ProducerMessage: Sendable {
    public var topic: String
    /// `nil` lets the configured partitioner choose (by key hash, or sticky for `nil` keys).
    public var partition: Int32?
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    /// Milliseconds since the epoch; `nil` stamps the time of sending.
    public var timestamp: Int64?

    public init(
        topic: String, partition: Int32? = nil, key: [UInt8]? = nil, value: [UInt8]?,
        headers: [KafkaHeader] = [], timestamp: Int64? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
    }

    public init(topic: String, partition: Int32? = nil, key: String? = nil, value: String, headers: [KafkaHeader] = [], timestamp: Int64? = nil) {
        self.init(topic: topic, partition: partition, key: key.map { Array($0.utf8) }, value: Array(value.utf8), headers: headers, timestamp: timestamp)
    }
}

/// The outcome of one produced record, as the broker (or librdkafka's timeout) decided it.
public struct DeliveryReport: Sendable {
    /// The id ``KafkaProducer/send(topic:partition:key:value:headers:timestamp:)`` returned for the record.
    public var id: UInt64
    public var topic: String
    public var partition: Int32
    /// The record's offset, or ``KafkaOffset/invalid`` when it failed.
    public var offset: Int64
    public var error: KafkaError?
    public var isSuccess: Bool { error == nil }
}

/// A Kafka producer: asynchronous sends with per-record delivery reports, idempotent by default, and
/// Kafka transactions when `transactional.id` is set.
///
/// Thread safety: sending, flushing and reading state are safe from any thread. The transaction calls must
/// not overlap each other (one transaction at a time, as librdkafka requires). Delivery reports are handed to
/// `onDelivery` on the polling thread: the producer's own background thread (``Polling/background``), or the
/// caller's thread inside ``poll(timeout:)`` (``Polling/manual``).
public final class KafkaProducer: @unchecked Sendable {
    public enum Polling: Sendable {
        /// A dedicated thread serves delivery reports and errors.
        case background
        /// The owner calls ``KafkaProducer/poll(timeout:)`` itself (e.g. from its processing loop).
        case manual
    }

    let handle: KafkaHandle
    private let logger: Logger
    private let onDelivery: (@Sendable (DeliveryReport) -> Void)?
    private let nextID = Atomic<UInt64>(1)
    private let pending = Mutex<[UInt64: CheckedContinuation<Result<DeliveryReport, KafkaError>, Never>]>([:])
    /// Topic handles by name: produce by `rd_kafka_topic_t` avoids a name lookup per record.
    private let topics = Mutex<[String: OpaquePointer]>([:])
    private var poller: BackgroundPoller?
    public let isTransactional: Bool

    /// - Parameters:
    ///   - configuration: librdkafka producer properties. `enable.idempotence` defaults to `true`.
    ///   - onDelivery: receives every delivery report except those of records sent with the `async` ``send(_:)``
    ///     (whose caller receives the report instead).
    ///   - onStatistics: receives librdkafka's statistics every `statistics.interval.ms` (set it), on the poll thread.
    public init(
        configuration: KafkaConfiguration, logger: Logger = Logger(label: "kafka.producer"),
        polling: Polling = .background, onDelivery: (@Sendable (DeliveryReport) -> Void)? = nil,
        onStatistics: (@Sendable (KafkaStatistics) -> Void)? = nil
    ) throws(KafkaError) {
        var configuration = configuration
        if configuration.isIdempotent == nil { configuration.isIdempotent = true }
        self.logger = logger
        self.onDelivery = onDelivery
        self.isTransactional = configuration.transactionalID != nil
        self.handle = try KafkaHandle(type: RD_KAFKA_PRODUCER, configuration: configuration, logger: logger) { conf in
            rd_kafka_conf_set_dr_msg_cb(conf, deliveryReportCallback)
        }
        handle.callbacks.onDelivery = { [unowned self] message in self.deliver(message) }
        handle.callbacks.onStatistics = onStatistics
        if case .background = polling {
            poller = BackgroundPoller(name: "kafka-producer-poll") { [handle] in
                rd_kafka_poll(handle.pointer, 100)
            }
        }
    }

    deinit {
        poller?.stop()
        handle.callbacks.onDelivery = nil
        for topic in topics.withLock({ $0.values }) { rd_kafka_topic_destroy(topic) }
        // rd_kafka_destroy follows when `handle` is released; records still queued are purged by it.
    }

    public var name: String { handle.name }

    // MARK: Sending

    /// Queues one record. The bytes are copied before this returns.
    /// - Returns: the id its ``DeliveryReport`` will carry.
    /// - Throws: `QUEUE_FULL` when `queue.buffering.max.messages`/`kbytes` is reached (poll, then retry),
    ///   `MSG_SIZE_TOO_LARGE`, `UNKNOWN_PARTITION`, or the producer's fatal error.
    @discardableResult
    public func send(
        topic: String, partition: Int32? = nil, key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer?,
        headers: [KafkaHeader] = [], timestamp: Int64? = nil
    ) throws(KafkaError) -> UInt64 {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        try produce(id: id, topic: topic, partition: partition, key: key, value: value, headers: headers, timestamp: timestamp)
        return id
    }

    /// Queues one owned record; see ``send(topic:partition:key:value:headers:timestamp:)``.
    @discardableResult
    public func send(_ message: ProducerMessage, id: UInt64? = nil) throws(KafkaError) -> UInt64 {
        let id = id ?? nextID.add(1, ordering: .relaxed).oldValue
        let result: Result<Void, KafkaError> = message.key.withOptionalBytes { key in
            message.value.withOptionalBytes { value in
                Result { () throws(KafkaError) in
                    try produce(
                        id: id, topic: message.topic, partition: message.partition, key: key, value: value,
                        headers: message.headers, timestamp: message.timestamp)
                }
            }
        }
        try result.get()
        return id
    }

    /// Sends one record and waits for its delivery report. A full local queue is waited out, not thrown.
    /// Needs ``Polling/background`` (or another task calling ``poll(timeout:)``).
    public func send(_ message: ProducerMessage) async throws(KafkaError) -> DeliveryReport {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<DeliveryReport, KafkaError>, Never>) in
            pending.withLock { $0[id] = continuation }
            while true {
                do throws(KafkaError) {
                    try send(message, id: id)
                    return
                } catch where error.code == .queueFull {
                    Thread.sleep(forTimeInterval: 0.002)
                } catch {
                    pending.withLock { _ = $0.removeValue(forKey: id) }
                    continuation.resume(returning: .failure(error))
                    return
                }
            }
        }
        let report = try result.get()
        if let error = report.error { throw error }
        return report
    }

    private func produce(
        id: UInt64, topic: String, partition: Int32?, key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer?,
        headers: [KafkaHeader], timestamp: Int64?
    ) throws(KafkaError) {
        let topicHandle = try topicHandle(topic)
        var nativeHeaders: OpaquePointer? = nil
        if !headers.isEmpty {
            nativeHeaders = rd_kafka_headers_new(headers.count)
            for header in headers {
                let err: rd_kafka_resp_err_t
                if let bytes = header.value {
                    err = bytes.withUnsafeBytes { rd_kafka_header_add(nativeHeaders, header.name, -1, $0.baseAddress, $0.count) }
                } else {
                    err = rd_kafka_header_add(nativeHeaders, header.name, -1, nil, 0)
                }
                if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                    rd_kafka_headers_destroy(nativeHeaders)
                    try KafkaError.check(err, "header \(header.name)")
                }
            }
        }
        let error = withUnsafeTemporaryAllocation(of: rd_kafka_vu_t.self, capacity: 8) { vus -> OpaquePointer? in
            var count = 0
            func append(_ type: rd_kafka_vtype_t, _ fill: (inout rd_kafka_vu_t) -> Void) {
                var vu = rd_kafka_vu_t()
                vu.vtype = type
                fill(&vu)
                vus[count] = vu
                count += 1
            }
            append(RD_KAFKA_VTYPE_RKT) { $0.u.rkt = topicHandle }
            append(RD_KAFKA_VTYPE_PARTITION) { $0.u.i32 = partition ?? RD_KAFKA_PARTITION_UA }
            append(RD_KAFKA_VTYPE_MSGFLAGS) { $0.u.i = RD_KAFKA_MSG_F_COPY }
            append(RD_KAFKA_VTYPE_OPAQUE) { $0.u.ptr = UnsafeMutableRawPointer(bitPattern: UInt(id)) }
            if let value {
                append(RD_KAFKA_VTYPE_VALUE) {
                    $0.u.mem.ptr = UnsafeMutableRawPointer(mutating: value.baseAddress)
                    $0.u.mem.size = value.count
                }
            }
            if let key {
                append(RD_KAFKA_VTYPE_KEY) {
                    $0.u.mem.ptr = UnsafeMutableRawPointer(mutating: key.baseAddress)
                    $0.u.mem.size = key.count
                }
            }
            if let timestamp { append(RD_KAFKA_VTYPE_TIMESTAMP) { $0.u.i64 = timestamp } }
            if let nativeHeaders { append(RD_KAFKA_VTYPE_HEADERS) { $0.u.headers = nativeHeaders } }
            return rd_kafka_produceva(handle.pointer, vus.baseAddress, count)
        }
        if let error {
            // On failure the headers stay ours.
            if let nativeHeaders { rd_kafka_headers_destroy(nativeHeaders) }
            throw KafkaError(consuming: error)
        }
    }

    private func topicHandle(_ name: String) throws(KafkaError) -> OpaquePointer {
        let result: Result<OpaquePointer, KafkaError> = topics.withLock { topics in
            if let existing = topics[name] { return .success(existing) }
            guard let created = rd_kafka_topic_new(handle.pointer, name, nil) else {
                return .failure(KafkaError(code: .init(rd_kafka_last_error()), message: "cannot use topic \(name)"))
            }
            topics[name] = created
            return .success(created)
        }
        return try result.get()
    }

    /// Called on the polling thread for every delivery report.
    private func deliver(_ message: UnsafePointer<rd_kafka_message_t>) {
        let raw = message.pointee
        let id = UInt64(UInt(bitPattern: raw._private))
        let report = DeliveryReport(
            id: id,
            topic: raw.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? "",
            partition: raw.partition,
            offset: raw.err == RD_KAFKA_RESP_ERR_NO_ERROR ? raw.offset : KafkaOffset.invalid,
            error: raw.err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : KafkaError(code: .init(raw.err)))
        if let waiting = pending.withLock({ $0.removeValue(forKey: id) }) {
            waiting.resume(returning: .success(report))
        } else {
            onDelivery?(report)
        }
    }

    // MARK: Polling and flushing

    /// Serves delivery reports and errors on the calling thread (``Polling/manual``).
    /// - Returns: the number of events served.
    @discardableResult
    public func poll(timeout: Duration = .zero) -> Int {
        Int(rd_kafka_poll(handle.pointer, timeout.milliseconds))
    }

    /// Records queued or in flight, not yet reported.
    public var outstandingCount: Int { Int(rd_kafka_outq_len(handle.pointer)) }

    /// Waits until every queued record is reported (serving reports in the meantime).
    /// - Throws: `_TIMED_OUT` if records are still outstanding after `timeout`.
    public func flush(timeout: Duration) throws(KafkaError) {
        let err = rd_kafka_flush(handle.pointer, timeout.milliseconds)
        try KafkaError.check(err, "flush: \(outstandingCount) records still outstanding")
    }

    /// The fatal error that made this producer unusable (fenced, idempotence sequence lost), if any.
    public var fatalError: KafkaError? { handle.fatalError }

    /// Cluster metadata as this producer sees it.
    public func metadata(topic: String? = nil, timeout: Duration = .seconds(10)) throws(KafkaError) -> ClusterMetadata {
        try handle.metadata(topic: topic, timeout: timeout)
    }

    // MARK: Transactions (`transactional.id` set)

    /// Registers the transactional id with the coordinator and fences older instances with the same id.
    public func initTransactions(timeout: Duration = .seconds(30)) throws(KafkaError) {
        try requireTransactional()
        try KafkaError.check(rd_kafka_init_transactions(handle.pointer, timeout.milliseconds))
    }

    public func beginTransaction() throws(KafkaError) {
        try requireTransactional()
        try KafkaError.check(rd_kafka_begin_transaction(handle.pointer))
    }

    /// Adds the consumer's next offsets to the transaction: they commit with it, or not at all.
    /// - Parameter offsets: the next offset to read per partition (last processed + 1).
    public func sendOffsetsToTransaction(
        _ offsets: [TopicPartitionOffset], groupMetadata: ConsumerGroupMetadata, timeout: Duration = .seconds(30)
    ) throws(KafkaError) {
        try requireTransactional()
        try withPartitionList(offsets) { (list) throws(KafkaError) in
            try KafkaError.check(
                rd_kafka_send_offsets_to_transaction(handle.pointer, list, groupMetadata.pointer, timeout.milliseconds))
        }
    }

    /// Flushes the transaction's records and commits it. On a retriable error call again; on an abortable
    /// one call ``abortTransaction(timeout:)``; a fatal one needs a new producer.
    public func commitTransaction(timeout: Duration = .seconds(30)) throws(KafkaError) {
        try requireTransactional()
        try KafkaError.check(rd_kafka_commit_transaction(handle.pointer, timeout.milliseconds))
    }

    /// Purges the transaction's unsent records and aborts it.
    public func abortTransaction(timeout: Duration = .seconds(30)) throws(KafkaError) {
        try requireTransactional()
        try KafkaError.check(rd_kafka_abort_transaction(handle.pointer, timeout.milliseconds))
    }

    private func requireTransactional() throws(KafkaError) {
        guard isTransactional else { throw .illegalState("producer has no transactional.id") }
    }
}

private let deliveryReportCallback: @convention(c) (OpaquePointer?, UnsafePointer<rd_kafka_message_t>?, UnsafeMutableRawPointer?) -> Void = {
    _, message, opaque in
    guard let message, let callbacks = ClientCallbacks.from(opaque) else { return }
    callbacks.onDelivery?(message)
}

/// A thread that calls `body` until stopped: how a client's events get served without an owner's loop.
final class BackgroundPoller: @unchecked Sendable {
    private let running = Atomic<Bool>(true)
    private let finished = DispatchSemaphore(value: 0)

    init(name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread { [self] in
            while running.load(ordering: .acquiring) { body() }
            finished.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Stops the loop and waits for the thread's current iteration to end.
    func stop() {
        if running.exchange(false, ordering: .acquiringAndReleasing) { finished.wait() }
    }
}

extension Optional where Wrapped == [UInt8] {
    func withOptionalBytes<R>(_ body: (UnsafeRawBufferPointer?) -> R) -> R {
        switch self {
        case .some(let bytes): bytes.withUnsafeBytes { body($0) }
        case .none: body(nil)
        }
    }
}
