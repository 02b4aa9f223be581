// The pipeline's configuration, and how its topics come to exist (admin API, existing topics, mock cluster).
import AuditEvents
import Detection
import Foundation
import Kafka
import Logging

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
    /// `orchestrator.cluster.name` per input topic, for events that carry none (raw API-server events do
    /// not name their cluster): alerts from several clusters' topics are told apart.
    public var clusterNames: [String: String] = [:]
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
    /// How long a pending EQL sequence waits for its next step when the rule states no `maxspan`.
    public var sequenceSpanMilliseconds: Int64 = Self.defaultSequenceSpan
    public static let defaultSequenceSpan: Int64 = 60 * 60_000
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
    /// Poll mode: false (default) takes the records already fetched, waiting only when there are none;
    /// true waits up to `pollTimeout` for `maxBatch` records. Results are the same either way.
    public var fillBatches = false
    /// An open window that suppressed matches since its last published version is published again (same
    /// alert id, `update`) this often by wall clock, as Elastic updates a suppressed alert on every rule run.
    /// Zero: only when the window closes.
    public var interimUpdateMilliseconds: Int64 = 5 * 60_000
    /// `event.ingested` of an event that has none, in a record without a Kafka timestamp (a replayed file):
    /// the event's own stage timestamp (else its request timestamp) when true, the wall clock when false.
    public var ingestTimeFromEvent = false
    public var productVersion = "0.1.0"
    /// How often librdkafka reports its statistics (``PipelineEvent/statistics(_:)``); nil: never.
    public var kafkaStatisticsInterval: Duration? = nil

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
