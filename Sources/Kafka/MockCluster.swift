import CRDKafka
import Logging

/// librdkafka's in-process mock Kafka cluster (`rdkafka_mock.h`): real Kafka protocol on loopback ports, no
/// external broker. For the demo and for tests.
///
/// Known limits of librdkafka 2.0.2's mock (see README): the first group join takes about 3 s; a rebalance
/// waits about `session.timeout.ms`; each partition keeps only about 5 MiB; `TxnOffsetCommit` is accepted
/// but discarded and no abort markers are written, so transactions can be tested for their call sequence,
/// not for isolation. Topics are created here (the mock answers no CreateTopics request in 2.0.2) or
/// automatically on first use.
public final class MockCluster: @unchecked Sendable {
    private let handle: KafkaHandle
    private let cluster: OpaquePointer
    public let brokerCount: Int

    public init(brokers: Int = 1, logger: Logger = Logger(label: "kafka.mock")) throws(KafkaError) {
        // The cluster lives in a client instance of its own, which it needs for bookkeeping only.
        handle = try KafkaHandle(type: RD_KAFKA_PRODUCER, configuration: KafkaConfiguration(), logger: logger)
        guard let cluster = rd_kafka_mock_cluster_new(handle.pointer, Int32(brokers)) else {
            throw KafkaError(code: .fatal, message: "cannot start the mock cluster")
        }
        self.cluster = cluster
        self.brokerCount = brokers
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
    }

    /// `host:port,…` of the mock brokers, for `bootstrap.servers`.
    public var bootstrapServers: String { String(cString: rd_kafka_mock_cluster_bootstraps(cluster)) }

    public func createTopic(_ name: String, partitions: Int32, replicationFactor: Int32 = 1) throws(KafkaError) {
        try KafkaError.check(
            rd_kafka_mock_topic_create(cluster, name, partitions, replicationFactor), "mock topic \(name)")
    }

    /// Broker ids run from 1 to ``brokerCount``; `nil` means every broker.
    public func setBrokerDown(_ id: Int32? = nil) throws(KafkaError) {
        try KafkaError.check(rd_kafka_mock_broker_set_down(cluster, id ?? -1), "mock broker down")
    }

    public func setBrokerUp(_ id: Int32? = nil) throws(KafkaError) {
        try KafkaError.check(rd_kafka_mock_broker_set_up(cluster, id ?? -1), "mock broker up")
    }

    /// Adds a round-trip delay to a broker's responses.
    public func setRoundTripTime(_ rtt: Duration, broker id: Int32? = nil) throws(KafkaError) {
        try KafkaError.check(rd_kafka_mock_broker_set_rtt(cluster, id ?? -1, rtt.milliseconds), "mock broker rtt")
    }

    /// The next requests of this Kafka API (`ApiKey`, e.g. 0 = Produce, 1 = Fetch, 8 = OffsetCommit) fail, one
    /// error each, in order, whichever broker serves them.
    public func pushRequestErrors(apiKey: Int16, _ errors: [KafkaError.Code]) {
        let raw = errors.map { $0.rawC }
        raw.withUnsafeBufferPointer { rd_kafka_mock_push_request_errors_array(cluster, apiKey, $0.count, $0.baseAddress) }
    }

    public func clearRequestErrors(apiKey: Int16) {
        rd_kafka_mock_clear_request_errors(cluster, apiKey)
    }

    /// Metadata and AddPartitionsToTxn requests for this topic fail with `error` (``KafkaError/Code/noError``
    /// clears it).
    public func setTopicError(_ topic: String, _ error: KafkaError.Code) {
        rd_kafka_mock_topic_set_error(cluster, topic, error.rawC)
    }

    /// Moves a partition's leadership (e.g. to a broker that is down).
    public func setPartitionLeader(topic: String, partition: Int32, broker: Int32) throws(KafkaError) {
        try KafkaError.check(rd_kafka_mock_partition_set_leader(cluster, topic, partition, broker), "mock leader")
    }

    /// Makes `broker` the coordinator of a consumer group (`type` "group") or transactional id ("transaction").
    public func setCoordinator(_ type: String = "group", key: String, broker: Int32) throws(KafkaError) {
        try KafkaError.check(rd_kafka_mock_coordinator_set(cluster, type, key, broker), "mock coordinator")
    }

    /// Kafka API keys the mock understands, for ``pushRequestErrors(apiKey:_:)``.
    public enum ApiKey {
        public static let produce: Int16 = 0
        public static let fetch: Int16 = 1
        public static let listOffsets: Int16 = 2
        public static let metadata: Int16 = 3
        public static let offsetCommit: Int16 = 8
        public static let offsetFetch: Int16 = 9
        public static let findCoordinator: Int16 = 10
        public static let joinGroup: Int16 = 11
        public static let heartbeat: Int16 = 12
        public static let syncGroup: Int16 = 14
        public static let initProducerId: Int16 = 22
        public static let addPartitionsToTxn: Int16 = 24
        public static let endTxn: Int16 = 26
        public static let txnOffsetCommit: Int16 = 28
    }
}
