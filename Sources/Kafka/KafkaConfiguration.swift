import CRDKafka

/// librdkafka properties for one client: typed accessors for the settings Audit Sentinel relies on, and
/// pass-through of any other property (`security.protocol`, `sasl.*`, `ssl.*`, fetch tuning, …) unchanged.
///
/// Validation is librdkafka's own: building a client applies every property with `rd_kafka_conf_set` and an
/// unknown property or a bad value fails with a ``KafkaError`` naming the property and carrying librdkafka's
/// explanation. Printing a configuration (``description``, ``redacted``) never shows a secret.
public struct KafkaConfiguration: Sendable, Equatable, CustomStringConvertible {
    public private(set) var properties: [String: String]

    public init(_ properties: [String: String] = [:]) {
        self.properties = properties
    }

    public subscript(_ key: String) -> String? {
        get { properties[key] }
        set { properties[key] = newValue }
    }

    /// Returns a copy with `other`'s properties laid over this one's.
    public func merging(_ other: [String: String]) -> KafkaConfiguration {
        KafkaConfiguration(properties.merging(other) { _, new in new })
    }

    // MARK: Typed settings

    public var bootstrapServers: String? {
        get { self["bootstrap.servers"] }
        set { self["bootstrap.servers"] = newValue }
    }
    public var clientID: String? {
        get { self["client.id"] }
        set { self["client.id"] = newValue }
    }
    public var groupID: String? {
        get { self["group.id"] }
        set { self["group.id"] = newValue }
    }
    public var transactionalID: String? {
        get { self["transactional.id"] }
        set { self["transactional.id"] = newValue }
    }
    public var isIdempotent: Bool? {
        get { self["enable.idempotence"].map { $0 == "true" } }
        set { self["enable.idempotence"] = newValue.map { String($0) } }
    }
    public var autoOffsetReset: OffsetReset? {
        get { self["auto.offset.reset"].flatMap(OffsetReset.init(rawValue:)) }
        set { self["auto.offset.reset"] = newValue?.rawValue }
    }
    public var enableAutoCommit: Bool? {
        get { self["enable.auto.commit"].map { $0 == "true" } }
        set { self["enable.auto.commit"] = newValue.map { String($0) } }
    }
    public var enableAutoOffsetStore: Bool? {
        get { self["enable.auto.offset.store"].map { $0 == "true" } }
        set { self["enable.auto.offset.store"] = newValue.map { String($0) } }
    }
    public var enablePartitionEOF: Bool? {
        get { self["enable.partition.eof"].map { $0 == "true" } }
        set { self["enable.partition.eof"] = newValue.map { String($0) } }
    }
    public var partitionAssignmentStrategy: AssignmentStrategy? {
        get { self["partition.assignment.strategy"].flatMap(AssignmentStrategy.init(rawValue:)) }
        set { self["partition.assignment.strategy"] = newValue?.rawValue }
    }
    public var isolationLevel: IsolationLevel? {
        get { self["isolation.level"].flatMap(IsolationLevel.init(rawValue:)) }
        set { self["isolation.level"] = newValue?.rawValue }
    }
    public var sessionTimeout: Duration? {
        get { self["session.timeout.ms"].flatMap(Int64.init).map { .milliseconds($0) } }
        set { self["session.timeout.ms"] = newValue.map { String($0.milliseconds) } }
    }
    public var heartbeatInterval: Duration? {
        get { self["heartbeat.interval.ms"].flatMap(Int64.init).map { .milliseconds($0) } }
        set { self["heartbeat.interval.ms"] = newValue.map { String($0.milliseconds) } }
    }
    public var lingerTime: Duration? {
        get { self["linger.ms"].flatMap(Int64.init).map { .milliseconds($0) } }
        set { self["linger.ms"] = newValue.map { String($0.milliseconds) } }
    }

    public enum OffsetReset: String, Sendable { case earliest, latest, error }
    public enum IsolationLevel: String, Sendable { case readCommitted = "read_committed", readUncommitted = "read_uncommitted" }
    public enum AssignmentStrategy: String, Sendable {
        case range, roundrobin
        case cooperativeSticky = "cooperative-sticky"
    }

    // MARK: Secrets

    /// Whether a property holds a secret: passwords, private keys, OAuth/OIDC secrets, SASL JAAS-like configs.
    public static func isSecret(_ key: String) -> Bool {
        let key = key.lowercased()
        return ["password", "secret", "ssl.key.pem", "ssl_key", "sasl.oauthbearer.config", "private", "token"]
            .contains { key.contains($0) }
    }

    public static let redactedValue = "[redacted]"

    /// The properties with every secret replaced by `[redacted]`: what may be logged or printed.
    public var redacted: [String: String] {
        properties.reduce(into: [:]) { result, entry in
            result[entry.key] = Self.isSecret(entry.key) ? Self.redactedValue : entry.value
        }
    }

    public var description: String {
        redacted.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
    }

    // MARK: Building the C configuration

    /// A new `rd_kafka_conf_t` with every property applied, in a stable order so errors are reproducible.
    /// The caller owns the result (and must destroy it unless `rd_kafka_new` succeeds with it).
    func makeNativeConfiguration() throws(KafkaError) -> OpaquePointer {
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError(code: .fatal, message: "rd_kafka_conf_new returned NULL")
        }
        var errstr = [CChar](repeating: 0, count: 512)
        for (key, value) in properties.sorted(by: { $0.key < $1.key }) {
            let result = rd_kafka_conf_set(conf, key, value, &errstr, errstr.count)
            guard result == RD_KAFKA_CONF_OK else {
                rd_kafka_conf_destroy(conf)
                // librdkafka's explanation may quote the value: never for a secret.
                let reason = Self.isSecret(key)
                    ? "rejected by librdkafka"
                    : String(errorBuffer: errstr)
                let shown = Self.isSecret(key) ? Self.redactedValue : value
                let what = result == RD_KAFKA_CONF_UNKNOWN ? "unknown property" : "invalid value \"\(shown)\""
                throw .invalidConfiguration(key, "Kafka property \(key): \(what): \(reason)")
            }
        }
        return conf
    }
}
