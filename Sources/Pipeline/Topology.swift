// The topology: which topics the pipeline reads and writes, what each partition carries, how matches are partitioned.
import Detection
import Kafka

/// One rule's aggregation state for one partition: of the rule's repartition (matches) topic, or of the
/// input when the repartition hop is skipped. The same partition of the rule's changelog backs it.
public struct StatePartition: Hashable, Sendable, CustomStringConvertible, Comparable {
    public var ruleIndex: Int
    public var ruleID: String
    public var partition: Int32
    public var description: String { "\(ruleID)[\(partition)]" }
    public static func < (lhs: StatePartition, rhs: StatePartition) -> Bool {
        (lhs.ruleIndex, lhs.partition) < (rhs.ruleIndex, rhs.partition)
    }
}

/// Two sub-topologies in one consumer-group member, as Kafka Streams would draw them:
/// 1. input topics → detect processor → repartition topic `<app>-<rule_id>-matches` (keyed and partitioned
///    by the rule's group key), dead letters to `<input>.dlq`;
/// 2. repartition topic → aggregate processor (state store backed by the compacted changelog
///    `<app>-<rule_id>-state`, same partition) → alerts topic, keyed by alert id.
/// With `skipRepartition` the second hangs directly off the first, on the input's partitions.
public struct Topology: Sendable {
    public enum Source: Sendable, Equatable {
        case input
        case matches(ruleIndex: Int)
    }

    public let configuration: PipelineConfiguration
    public let rules: [CompiledRule]
    /// Per rule index: its repartition topic (none when the hop is skipped).
    public let matchesTopics: [String?]
    public let changelogTopics: [String]
    private let sources: [String: Source]

    public init(configuration: PipelineConfiguration, rules: [CompiledRule]) {
        self.configuration = configuration
        self.rules = rules
        matchesTopics = rules.map { configuration.skipRepartition ? nil : configuration.matchesTopic($0.id) }
        changelogTopics = rules.map { configuration.stateTopic($0.id) }
        var sources: [String: Source] = [:]
        for topic in configuration.inputTopics { sources[topic] = .input }
        for (index, topic) in matchesTopics.enumerated() { if let topic { sources[topic] = .matches(ruleIndex: index) } }
        self.sources = sources
    }

    public func source(of topic: String) -> Source? { sources[topic] }

    /// Every topic the consumer group subscribes to: the inputs, then the repartition topics.
    public var subscription: [String] { configuration.inputTopics + matchesTopics.compactMap { $0 } }

    /// The state partitions a consumed partition carries (none for an input partition that feeds a
    /// repartition topic).
    public func statePartitions(carriedBy partition: TopicPartition) -> [StatePartition] {
        switch sources[partition.topic] {
        case .matches(let index)?:
            return [StatePartition(ruleIndex: index, ruleID: rules[index].id, partition: partition.partition)]
        case .input? where configuration.skipRepartition:
            return rules.indices.map { StatePartition(ruleIndex: $0, ruleID: rules[$0].id, partition: partition.partition) }
        default:
            return []
        }
    }

    /// The partition a match goes to: chosen here, not by the client's partitioner, so that the live
    /// pipeline and the in-memory driver put every group key in the same partition (FNV-1a of the key).
    public func matchesPartition(forKey key: [UInt8]) -> Int32 {
        Self.partition(forKey: key, count: configuration.internalPartitions)
    }

    /// FNV-1a of the key modulo the partition count.
    public static func partition(forKey key: [UInt8], count: Int32) -> Int32 {
        Int32(truncatingIfNeeded: fnv1a(key) % UInt64(max(1, count)))
    }

    /// 64-bit FNV-1a: partitions, and the fingerprints of a sequence's events in its alert ids.
    static func fnv1a(_ bytes: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    /// Internal topics (repartition, compacted changelogs) and outputs (dead letters, alerts) to create.
    public var topicsToCreate: [NewTopic] {
        let factor = configuration.replicationFactor
        let internalTopics = rules.indices.flatMap { index -> [NewTopic] in
            let changelog = NewTopic(name: changelogTopics[index], partitions: configuration.internalPartitions,
                                     replicationFactor: factor, configs: ["cleanup.policy": "compact"])
            guard let matches = matchesTopics[index] else { return [changelog] }
            return [NewTopic(name: matches, partitions: configuration.internalPartitions, replicationFactor: factor), changelog]
        }
        let outputs = Set(configuration.inputTopics.map(configuration.deadLetterTopic)).sorted().map {
            NewTopic(name: $0, partitions: 1, replicationFactor: factor)
        } + [NewTopic(name: configuration.alertsTopic, partitions: 3, replicationFactor: factor,
                      // Keyed by alert id: compaction keeps each alert's last version (an update replaces it).
                      configs: ["cleanup.policy": "compact"])]
        return internalTopics + outputs
    }
}
