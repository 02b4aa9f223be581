import CRDKafka
import Foundation
import Logging
import Synchronization

/// librdkafka's version at run time (which may differ from the headers we compiled against: see README).
public var librdkafkaVersion: String { String(cString: rd_kafka_version_str()) }

/// Swift state that librdkafka's C callbacks reach through the configuration's opaque pointer.
///
/// The C callbacks are non-capturing `@convention(c)` functions; each recovers this object from `opaque`.
/// The handlers are set once, before the client is first polled, and read afterwards; the delivery,
/// rebalance, commit and error callbacks run on the thread that polls the client, the log callback on
/// librdkafka's own threads (swift-log loggers are thread-safe).
final class ClientCallbacks: @unchecked Sendable {
    let logger: Logger
    nonisolated(unsafe) var onDelivery: ((UnsafePointer<rd_kafka_message_t>) -> Void)?
    nonisolated(unsafe) var onRebalance: ((OpaquePointer, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) -> Void)?
    nonisolated(unsafe) var onCommit: ((KafkaError?, [TopicPartitionOffset]) -> Void)?
    nonisolated(unsafe) var onError: ((KafkaError) -> Void)?
    /// Set when `statistics.interval.ms` is; runs inside the client's poll.
    nonisolated(unsafe) var onStatistics: (@Sendable (KafkaStatistics) -> Void)?

    /// Connection errors repeat for as long as a broker is unreachable: one line per message per interval.
    let repeats = RepeatFilter(interval: 30)

    init(logger: Logger) { self.logger = logger }

    static func from(_ opaque: UnsafeMutableRawPointer?) -> ClientCallbacks? {
        opaque.map { Unmanaged<ClientCallbacks>.fromOpaque($0).takeUnretainedValue() }
    }
}

/// Owns one `rd_kafka_t`. Every client type (producer, consumer, admin, mock cluster) holds exactly one and
/// destroys it with itself. librdkafka's handle functions are thread-safe; the owning type states which of
/// its own operations may run concurrently.
final class KafkaHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    let callbacks: ClientCallbacks
    let configuration: KafkaConfiguration

    /// - Parameter prepare: last changes to the native configuration (callbacks), before `rd_kafka_new`.
    init(
        type: rd_kafka_type_t, configuration: KafkaConfiguration, logger: Logger,
        prepare: (OpaquePointer) -> Void = { _ in }
    ) throws(KafkaError) {
        let callbacks = ClientCallbacks(logger: logger)
        let conf = try configuration.makeNativeConfiguration()
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(callbacks).toOpaque())
        rd_kafka_conf_set_log_cb(conf, kafkaLogCallback)
        rd_kafka_conf_set_error_cb(conf, kafkaErrorCallback)
        rd_kafka_conf_set_stats_cb(conf, kafkaStatisticsCallback)
        if configuration["security.protocol"]?.lowercased().hasSuffix("ssl") == true {
            // OpenSSL's verdict is kept; the callback only names the reason (RD_KAFKA_CONF_INVALID: no SSL here).
            _ = rd_kafka_conf_set_ssl_cert_verify_cb(conf, kafkaCertificateVerifyCallback)
        }
        prepare(conf)

        var errstr = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(type, conf, &errstr, errstr.count) else {
            // A failed rd_kafka_new leaves the configuration with us.
            rd_kafka_conf_destroy(conf)
            let reason = String(errorBuffer: errstr)
            throw KafkaError(code: .invalidArgument, message: "cannot create Kafka client: \(reason)")
        }
        self.pointer = handle
        self.callbacks = callbacks
        self.configuration = configuration
    }

    deinit {
        rd_kafka_destroy(pointer)
    }

    var name: String { String(cString: rd_kafka_name(pointer)) }

    /// The fatal error that made this client unusable, if any (idempotent/transactional producers, consumers
    /// with static membership).
    var fatalError: KafkaError? {
        var errstr = [CChar](repeating: 0, count: 512)
        let err = rd_kafka_fatal_error(pointer, &errstr, errstr.count)
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
        let reason = String(errorBuffer: errstr)
        return KafkaError(code: .init(err), message: reason, isFatal: true)
    }

    /// Cluster metadata, for one topic or all of them.
    func metadata(topic: String?, timeout: Duration) throws(KafkaError) -> ClusterMetadata {
        var metadata: UnsafePointer<rd_kafka_metadata>?
        var topicHandle: OpaquePointer?
        if let topic { topicHandle = rd_kafka_topic_new(pointer, topic, nil) }
        defer { if let topicHandle { rd_kafka_topic_destroy(topicHandle) } }
        let err = rd_kafka_metadata(pointer, topic == nil ? 1 : 0, topicHandle, &metadata, timeout.milliseconds)
        try KafkaError.check(err, "metadata request")
        guard let metadata else { throw .illegalState("metadata request returned nothing") }
        defer { rd_kafka_metadata_destroy(metadata) }
        return ClusterMetadata(metadata.pointee)
    }
}

// MARK: C callbacks: non-capturing, they find their Swift owner through the opaque pointer.

private let kafkaLogCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Void = {
    handle, level, facility, message in
    guard let handle, let callbacks = ClientCallbacks.from(rd_kafka_opaque(handle)) else { return }
    let swiftLevel: Logger.Level
    switch level {
    case ...3: swiftLevel = .error  // emerg, alert, crit, err
    case 4: swiftLevel = .warning
    case 5: swiftLevel = .notice
    case 6: swiftLevel = .info
    default: swiftLevel = .debug
    }
    let text = message.map { String(cString: $0) } ?? ""
    let facilityName = facility.map { String(cString: $0) } ?? ""
    guard let repeated = callbacks.repeats.admit(text) else { return }
    var metadata: Logger.Metadata = ["librdkafka.facility": "\(facilityName)"]
    if repeated > 0 { metadata["repeated"] = "\(repeated)" }
    callbacks.logger.log(level: swiftLevel, "\(text)\(KafkaHints.hint(for: text))", metadata: metadata, source: "librdkafka")
}

private let kafkaStatisticsCallback: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>?, Int, UnsafeMutableRawPointer?) -> Int32 = {
    _, json, length, opaque in
    guard let json, let callbacks = ClientCallbacks.from(opaque), let handler = callbacks.onStatistics else { return 0 }
    if let statistics = KafkaStatistics(json: UnsafeRawBufferPointer(start: json, count: length)) { handler(statistics) }
    return 0  // librdkafka frees the text
}

/// What librdkafka's own words leave unsaid.
enum KafkaHints {
    static func hint(for text: String) -> String {
        if text.contains("Read underflow") || text.contains("Protocol parse failure") || text.contains("protocol parse") {
            return " — the broker answered in a form this librdkafka \(String(cString: rd_kafka_version_str())) cannot parse: "
                + "a protocol version mismatch; use a librdkafka ≥ 2.2 (see README, librdkafka versions) or set "
                + "kafka.common.\"api.version.request\" and \"broker.version.fallback\" for an older broker"
        }
        if text.contains("Connection refused") { return " — nothing listens at that address: check kafka.bootstrap_servers" }
        if text.contains("Failed to resolve") { return " — the broker's host name does not resolve" }
        return ""
    }
}

/// Lets a message through once per interval; the repeats in between are counted and reported with the
/// next one let through. The key is the message without librdkafka's varying "(after N ms …)" suffix.
final class RepeatFilter: @unchecked Sendable {
    private let interval: Double
    private let state = Mutex<[String: (last: Double, suppressed: Int)]>([:])

    init(interval: Double) { self.interval = interval }

    /// nil: suppress this one; else the number of repeats suppressed since the last one let through.
    func admit(_ message: String, now: Double = Date().timeIntervalSince1970) -> Int? {
        let key = message.range(of: " (after ").map { String(message[..<$0.lowerBound]) } ?? message
        return state.withLock { seen in
            if let entry = seen[key], now - entry.last < interval {
                seen[key] = (entry.last, entry.suppressed + 1)
                return nil
            }
            let suppressed = seen[key]?.suppressed ?? 0
            if seen.count > 1000 { seen.removeAll() }
            seen[key] = (now, 0)
            return suppressed
        }
    }
}

private let kafkaErrorCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Void = {
    handle, code, reason, opaque in
    guard let callbacks = ClientCallbacks.from(opaque) else { return }
    let err = rd_kafka_resp_err_t(rawValue: code)
    var error = KafkaError(code: .init(err), message: reason.map { String(cString: $0) })
    if err == RD_KAFKA_RESP_ERR__FATAL, let handle {
        var errstr = [CChar](repeating: 0, count: 512)
        let underlying = rd_kafka_fatal_error(handle, &errstr, errstr.count)
        let text = String(errorBuffer: errstr)
        error = KafkaError(code: .init(underlying), message: text, isFatal: true)
    }
    // Broker connection errors are transient: librdkafka reconnects by itself.
    let transient = err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN
    let text = "\(error)"
    if !transient || callbacks.repeats.admit(text) != nil {
        callbacks.logger.log(level: transient ? .warning : .error, "\(text)\(KafkaHints.hint(for: text))", source: "librdkafka")
    }
    callbacks.onError?(error)
}

/// librdkafka reports every failed broker-certificate check as "certificate verify failed: broker
/// certificate could not be verified, verify that ssl.ca.location is correctly configured" — also when the
/// CA is right and the host name is wrong. This keeps OpenSSL's decision and says which check failed.
private let kafkaCertificateVerifyCallback: @convention(c) (
    OpaquePointer?, UnsafePointer<CChar>?, Int32, UnsafeMutablePointer<Int32>?, Int32, UnsafePointer<CChar>?, Int,
    UnsafeMutablePointer<CChar>?, Int, UnsafeMutableRawPointer?
) -> Int32 = { _, brokerName, _, x509Error, depth, _, _, errstr, errstrSize, _ in
    guard let code = x509Error?.pointee, code != 0 else { return 1 }
    let broker = brokerName.map { String(cString: $0) } ?? "the broker"
    let host = broker.split(separator: "/").first.map { $0.split(separator: ":").dropLast().joined(separator: ":") } ?? broker
    let reason = switch code {
    case 2, 20: "was not issued by a CA in ssl.ca.location"
    case 9: "is not valid yet"
    case 10: "has expired"
    case 18: "is self-signed and not in ssl.ca.location"
    case 19: "chains to a self-signed CA that is not in ssl.ca.location"
    case 21: "cannot be verified against ssl.ca.location"
    case 62: "does not name the host \(host) (host name mismatch: the certificate's subjectAltName must contain the broker's advertised host)"
    case 64: "does not name the IP address \(host) (IP address mismatch)"
    default: "failed OpenSSL's verification"
    }
    let message = "certificate of \(broker) (chain depth \(depth)) \(reason); OpenSSL X509 error \(code)"
    if let errstr, errstrSize > 0 {
        let bytes = Array(message.utf8.prefix(errstrSize - 1))
        bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { errstr.update(from: $0.baseAddress!, count: buffer.count) }
        }
        errstr[bytes.count] = 0
    }
    return 0
}

// MARK: Topics, partitions, offsets

public struct TopicPartition: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public init(_ topic: String, _ partition: Int32) {
        self.topic = topic
        self.partition = partition
    }
    public var description: String { "\(topic)[\(partition)]" }
}

/// A partition with an offset: a position to seek to, commit, or store (the *next* offset to read).
public struct TopicPartitionOffset: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public init(_ topic: String, _ partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }
    public var topicPartition: TopicPartition { TopicPartition(topic, partition) }
    public var description: String { "\(topic)[\(partition)]@\(offset)" }
}

/// librdkafka's logical offsets.
public enum KafkaOffset {
    public static let beginning: Int64 = Int64(RD_KAFKA_OFFSET_BEGINNING)
    public static let end: Int64 = Int64(RD_KAFKA_OFFSET_END)
    public static let stored: Int64 = Int64(RD_KAFKA_OFFSET_STORED)
    public static let invalid: Int64 = Int64(RD_KAFKA_OFFSET_INVALID)
}

/// Builds a temporary `rd_kafka_topic_partition_list_t`, hands it to `body`, destroys it.
func withPartitionList<R>(
    _ entries: [TopicPartitionOffset], _ body: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) throws(KafkaError) -> R
) throws(KafkaError) -> R {
    let list = rd_kafka_topic_partition_list_new(Int32(clamping: entries.count))!
    defer { rd_kafka_topic_partition_list_destroy(list) }
    for entry in entries {
        rd_kafka_topic_partition_list_add(list, entry.topic, entry.partition).pointee.offset = entry.offset
    }
    return try body(list)
}

func withPartitionList<R>(
    _ partitions: [TopicPartition], _ body: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) throws(KafkaError) -> R
) throws(KafkaError) -> R {
    try withPartitionList(partitions.map { TopicPartitionOffset($0.topic, $0.partition, offset: KafkaOffset.invalid) }, body)
}

extension UnsafeMutablePointer where Pointee == rd_kafka_topic_partition_list_t {
    var elements: UnsafeMutableBufferPointer<rd_kafka_topic_partition_t> {
        UnsafeMutableBufferPointer(start: pointee.elems, count: Int(pointee.cnt))
    }
    var offsets: [TopicPartitionOffset] {
        elements.map { TopicPartitionOffset(String(cString: $0.topic), $0.partition, offset: $0.offset) }
    }
    var partitions: [TopicPartition] {
        elements.map { TopicPartition(String(cString: $0.topic), $0.partition) }
    }
    /// The first per-partition error, if any.
    func firstError(_ context: String) -> KafkaError? {
        for element in elements where element.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            let partition = "\(String(cString: element.topic))[\(element.partition)]"
            return KafkaError(code: .init(element.err), message: "\(context) \(partition): \(String(cString: rd_kafka_err2str(element.err)))")
        }
        return nil
    }
}

// MARK: Metadata

public struct ClusterMetadata: Sendable {
    public struct Broker: Sendable, Hashable {
        public var id: Int32
        public var host: String
        public var port: Int32
    }
    public struct Partition: Sendable, Hashable {
        public var id: Int32
        public var leader: Int32
        public var replicas: [Int32]
        public var inSyncReplicas: [Int32]
        public var error: KafkaError.Code
    }
    public struct Topic: Sendable {
        public var name: String
        public var partitions: [Partition]
        public var error: KafkaError.Code
    }
    public var brokers: [Broker]
    public var topics: [Topic]
    public var originatingBrokerID: Int32

    public func topic(_ name: String) -> Topic? { topics.first { $0.name == name } }

    init(_ raw: rd_kafka_metadata) {
        brokers = UnsafeBufferPointer(start: raw.brokers, count: Int(raw.broker_cnt)).map {
            Broker(id: $0.id, host: String(cString: $0.host), port: $0.port)
        }
        topics = UnsafeBufferPointer(start: raw.topics, count: Int(raw.topic_cnt)).map { topic in
            Topic(
                name: String(cString: topic.topic),
                partitions: UnsafeBufferPointer(start: topic.partitions, count: Int(topic.partition_cnt)).map {
                    Partition(
                        id: $0.id, leader: $0.leader,
                        replicas: Array(UnsafeBufferPointer(start: $0.replicas, count: Int($0.replica_cnt))),
                        inSyncReplicas: Array(UnsafeBufferPointer(start: $0.isrs, count: Int($0.isr_cnt))),
                        error: .init($0.err))
                },
                error: .init(topic.err))
        }
        originatingBrokerID = raw.orig_broker_id
    }
}
