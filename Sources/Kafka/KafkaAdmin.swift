import CRDKafka
import Logging

/// A topic to create: partitions, replication and topic-level configs (`cleanup.policy=compact`, …).
public struct NewTopic: Sendable, Hashable {
    public var name: String
    public var partitions: Int32
    /// `-1` uses the broker's `default.replication.factor`.
    public var replicationFactor: Int32
    public var configs: [String: String]

    public init(name: String, partitions: Int32, replicationFactor: Int32 = -1, configs: [String: String] = [:]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.configs = configs
    }
}

/// Cluster administration: create and delete topics, read metadata.
///
/// Thread-safe: each call waits for its own result on a queue of its own.
public final class KafkaAdmin: @unchecked Sendable {
    let handle: KafkaHandle

    public init(configuration: KafkaConfiguration, logger: Logger = Logger(label: "kafka.admin")) throws(KafkaError) {
        handle = try KafkaHandle(type: RD_KAFKA_PRODUCER, configuration: configuration, logger: logger)
    }

    /// Creates topics.
    /// - Parameter ignoreExisting: a topic that already exists is not an error (its settings are not checked).
    /// - Throws: the first per-topic failure, naming the topic.
    public func createTopics(_ topics: [NewTopic], ignoreExisting: Bool = false, timeout: Duration = .seconds(30)) throws(KafkaError) {
        var errstr = [CChar](repeating: 0, count: 512)
        var specs: [OpaquePointer?] = []
        defer { for spec in specs { rd_kafka_NewTopic_destroy(spec) } }
        for topic in topics {
            guard let spec = rd_kafka_NewTopic_new(topic.name, topic.partitions, topic.replicationFactor, &errstr, errstr.count) else {
                throw KafkaError(code: .invalidArgument, message: "topic \(topic.name): \(String(errorBuffer: errstr))")
            }
            specs.append(spec)
            for (key, value) in topic.configs.sorted(by: { $0.key < $1.key }) {
                try KafkaError.check(rd_kafka_NewTopic_set_config(spec, key, value), "topic \(topic.name) config \(key)")
            }
        }
        try run(RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout: timeout, start: { options, queue in
            specs.withUnsafeMutableBufferPointer { rd_kafka_CreateTopics(handle.pointer, $0.baseAddress, $0.count, options, queue) }
        }, results: { event in
            var count = 0
            let results = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &count)
            return (results, count)
        }, ignoring: ignoreExisting ? RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS : nil)
    }

    /// Deletes topics.
    /// - Parameter ignoreMissing: a topic that does not exist is not an error.
    public func deleteTopics(_ names: [String], ignoreMissing: Bool = false, timeout: Duration = .seconds(30)) throws(KafkaError) {
        var specs: [OpaquePointer?] = names.map { rd_kafka_DeleteTopic_new($0) }
        defer { for spec in specs { rd_kafka_DeleteTopic_destroy(spec) } }
        try run(RD_KAFKA_ADMIN_OP_DELETETOPICS, timeout: timeout, start: { options, queue in
            specs.withUnsafeMutableBufferPointer { rd_kafka_DeleteTopics(handle.pointer, $0.baseAddress, $0.count, options, queue) }
        }, results: { event in
            var count = 0
            let results = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(event), &count)
            return (results, count)
        }, ignoring: ignoreMissing ? RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART : nil)
    }

    /// Cluster metadata: brokers, and topics with their partitions, leaders and replicas.
    public func metadata(topic: String? = nil, timeout: Duration = .seconds(10)) throws(KafkaError) -> ClusterMetadata {
        try handle.metadata(topic: topic, timeout: timeout)
    }

    /// Runs one topic admin operation and checks its per-topic results.
    private func run(
        _ operation: rd_kafka_admin_op_t, timeout: Duration,
        start: (OpaquePointer, OpaquePointer) -> Void,
        results: (OpaquePointer) -> (UnsafeMutablePointer<OpaquePointer?>?, Int),
        ignoring ignored: rd_kafka_resp_err_t?
    ) throws(KafkaError) {
        let queue = rd_kafka_queue_new(handle.pointer)!
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(handle.pointer, operation)!
        defer { rd_kafka_AdminOptions_destroy(options) }
        var errstr = [CChar](repeating: 0, count: 512)
        try KafkaError.check(
            rd_kafka_AdminOptions_set_operation_timeout(options, timeout.milliseconds, &errstr, errstr.count),
            "admin operation timeout")
        start(options, queue)
        // The admin request has its own timeout; wait a little longer for its result event.
        guard let event = rd_kafka_queue_poll(queue, (timeout + .seconds(5)).milliseconds) else {
            throw KafkaError(code: .timedOut, message: "admin operation timed out")
        }
        defer { rd_kafka_event_destroy(event) }
        let err = rd_kafka_event_error(event)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            let text = rd_kafka_event_error_string(event).map { String(cString: $0) }
            throw KafkaError(code: .init(err), message: text)
        }
        let (list, count) = results(event)
        for index in 0..<count {
            guard let result = list?[index] else { continue }
            let topicErr = rd_kafka_topic_result_error(result)
            if topicErr == RD_KAFKA_RESP_ERR_NO_ERROR || topicErr == ignored { continue }
            let name = String(cString: rd_kafka_topic_result_name(result))
            let text = rd_kafka_topic_result_error_string(result).map { String(cString: $0) } ?? ""
            throw KafkaError(code: .init(topicErr), message: "topic \(name): \(text)")
        }
    }
}
