import CRDKafka

/// Every failure the `Kafka` module reports: a librdkafka error code (`rd_kafka_resp_err_t`) with its
/// symbolic name, a human message, and the classes that decide what a caller does next.
///
/// - `isRetriable`: the same call may succeed if repeated (e.g. a transaction commit that timed out).
/// - `requiresAbort`: the current transaction must be aborted, then work can go on (abortable).
/// - `isFatal`: the client instance is unusable; create a new one (e.g. a fenced transactional producer).
public struct KafkaError: Error, Sendable, CustomStringConvertible, Equatable {
    public let code: Code
    /// librdkafka's symbolic name, e.g. `UNKNOWN_TOPIC_OR_PART` or `_PARTITION_EOF`.
    public let name: String
    public let message: String
    public let isRetriable: Bool
    public let isFatal: Bool
    public let requiresAbort: Bool
    /// For configuration errors: the property that was rejected.
    public let property: String?

    public init(
        code: Code, message: String? = nil, isRetriable: Bool = false, isFatal: Bool = false,
        requiresAbort: Bool = false, property: String? = nil
    ) {
        self.code = code
        self.name = String(cString: rd_kafka_err2name(code.rawC))
        self.message = message ?? String(cString: rd_kafka_err2str(code.rawC))
        self.isRetriable = isRetriable
        self.isFatal = isFatal
        self.requiresAbort = requiresAbort
        self.property = property
    }

    /// Takes ownership of an `rd_kafka_error_t` (transactions and newer APIs) and destroys it.
    init(consuming error: OpaquePointer) {
        defer { rd_kafka_error_destroy(error) }
        self.init(
            code: Code(rd_kafka_error_code(error)),
            message: rd_kafka_error_string(error).map { String(cString: $0) },
            isRetriable: rd_kafka_error_is_retriable(error) != 0,
            isFatal: rd_kafka_error_is_fatal(error) != 0,
            requiresAbort: rd_kafka_error_txn_requires_abort(error) != 0
        )
    }

    /// Throws when `err` is not `NO_ERROR`.
    static func check(_ err: rd_kafka_resp_err_t, _ context: @autoclosure () -> String? = nil) throws(KafkaError) {
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return }
        let code = Code(err)
        let text = String(cString: rd_kafka_err2str(err))
        throw KafkaError(code: code, message: context().map { "\($0): \(text)" } ?? text)
    }

    /// Throws for a non-nil `rd_kafka_error_t`, taking ownership of it.
    static func check(_ error: OpaquePointer?) throws(KafkaError) {
        if let error { throw KafkaError(consuming: error) }
    }

    static func invalidConfiguration(_ property: String, _ message: String) -> KafkaError {
        KafkaError(code: .invalidArgument, message: message, property: property)
    }

    static func illegalState(_ message: String) -> KafkaError {
        KafkaError(code: .state, message: message)
    }

    public var description: String {
        var flags: [String] = []
        if isRetriable { flags.append("retriable") }
        if requiresAbort { flags.append("abortable") }
        if isFatal { flags.append("fatal") }
        let suffix = flags.isEmpty ? "" : " [\(flags.joined(separator: ", "))]"
        return "Kafka error \(name) (\(code.rawValue)): \(message)\(suffix)"
    }

    /// A librdkafka error code. Negative values are librdkafka's own (`RD_KAFKA_RESP_ERR__*`), positive ones
    /// are Kafka protocol errors.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        init(_ err: rd_kafka_resp_err_t) { self.rawValue = err.rawValue }
        var rawC: rd_kafka_resp_err_t { rd_kafka_resp_err_t(rawValue: rawValue) }

        public var name: String { String(cString: rd_kafka_err2name(rawC)) }
        public var description: String { name }

        public static let noError = Code(RD_KAFKA_RESP_ERR_NO_ERROR)
        public static let partitionEOF = Code(RD_KAFKA_RESP_ERR__PARTITION_EOF)
        public static let timedOut = Code(RD_KAFKA_RESP_ERR__TIMED_OUT)
        public static let queueFull = Code(RD_KAFKA_RESP_ERR__QUEUE_FULL)
        public static let invalidArgument = Code(RD_KAFKA_RESP_ERR__INVALID_ARG)
        public static let state = Code(RD_KAFKA_RESP_ERR__STATE)
        public static let fatal = Code(RD_KAFKA_RESP_ERR__FATAL)
        public static let transport = Code(RD_KAFKA_RESP_ERR__TRANSPORT)
        public static let allBrokersDown = Code(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        public static let unknownTopic = Code(RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
        public static let messageTimedOut = Code(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)
        public static let noOffset = Code(RD_KAFKA_RESP_ERR__NO_OFFSET)
        public static let unknownTopicOrPartition = Code(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        public static let topicAlreadyExists = Code(RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        public static let notLeaderForPartition = Code(RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION)
        public static let requestTimedOut = Code(RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT)
        public static let rebalanceInProgress = Code(RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS)
        public static let illegalGeneration = Code(RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION)
        public static let unknownMemberID = Code(RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID)
        public static let messageSizeTooLarge = Code(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
        public static let topicAuthorizationFailed = Code(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
        public static let brokerNotAvailable = Code(RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE)
        public static let leaderNotAvailable = Code(RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
        public static let notCoordinator = Code(RD_KAFKA_RESP_ERR_NOT_COORDINATOR)
        public static let coordinatorNotAvailable = Code(RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE)
        public static let producerFenced = Code(RD_KAFKA_RESP_ERR_PRODUCER_FENCED)
        public static let invalidProducerEpoch = Code(RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH)
        public static let invalidTransactionState = Code(RD_KAFKA_RESP_ERR_INVALID_TXN_STATE)
        public static let notEnoughReplicas = Code(RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS)
    }
}

/// Milliseconds for librdkafka's `int timeout_ms` parameters; negative durations mean "wait forever".
extension Duration {
    var milliseconds: Int32 {
        let (seconds, attoseconds) = components
        if seconds < 0 { return -1 }
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return Int32(clamping: ms)
    }
}

extension String {
    /// Reads librdkafka's NUL-terminated `errstr` output buffers.
    init(errorBuffer buffer: [CChar]) {
        self = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}
