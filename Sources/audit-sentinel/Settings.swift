import Detection
import Foundation
import Kafka
import Pipeline

/// The service's configuration, from three layers in rising precedence: a TOML file, `AUDIT_SENTINEL_…`
/// environment variables, and command-line flags. Every setting has one dotted key (`processing.grace`);
/// its environment variable is the key upper-cased with `.` → `_` and the prefix (`AUDIT_SENTINEL_PROCESSING_GRACE`);
/// `--set key=value` reaches any key from the command line. librdkafka properties pass through under
/// `kafka.common.*`, `kafka.consumer.*` and `kafka.producer.*`; `kafka.secret_files.<property>` names a file
/// whose content becomes that property (so secrets need not sit in the file or the environment).
struct Settings: Equatable {
    var applicationID = "audit-sentinel"
    var bootstrapServers = ""
    var kafkaCommon: [String: String] = [:]
    var kafkaConsumer: [String: String] = [:]
    var kafkaProducer: [String: String] = [:]
    /// Property → file path (the paths are shown; the contents never are).
    var kafkaSecretFiles: [String: String] = [:]
    var inputTopics: [String] = ["k8s-audit"]
    /// "topic=cluster" entries: `orchestrator.cluster.name` for the events of an input that carry none.
    var clusterNames: [String: String] = [:]
    var alertsTopic = "k8s-alerts"
    /// Empty: `<input>.dlq` for each input.
    var deadLetterTopic = ""
    var rulePaths: [String] = ["Config/rules"]
    var defaultSuppression = DetectionRule.AlertSuppression.pipelineDefault
    var suppressionOverrides: [String: SuppressionOverride] = [:]
    var format: AlertFormat = .ecs
    var guarantee: PipelineConfiguration.ProcessingGuarantee = .atLeastOnce
    var graceMilliseconds: Int64 = 30_000
    var idleTimeoutMilliseconds: Int64 = 60_000
    var sequenceSpanMilliseconds: Int64 = PipelineConfiguration.defaultSequenceSpan
    var skipRepartition = false
    var createTopics = true
    var internalPartitions = 6
    var replicationFactor = -1
    var maxBatch = 1000
    var fillBatches = false
    var interimUpdatesMilliseconds: Int64 = 5 * 60_000
    var validateEveryRecord = true
    var maxRecordBytes = 1 << 20
    var maxDepth = 100
    var httpEnabled = true
    var httpListen = "127.0.0.1:9464"
    /// librdkafka's statistics (broker round trips, producer queue) for /metrics; 0 turns them off.
    var kafkaStatisticsIntervalMilliseconds: Int64 = 15_000
    var logLevel = "info"
    var logFormat = "text"
    var shutdownTimeoutMilliseconds: Int64 = 30_000

    struct SuppressionOverride: Equatable {
        var groupBy: [String]?
        var durationMilliseconds: Int64?
    }

    /// The pipeline's configuration, with secret files read.
    func pipelineConfiguration(productVersion: String) throws(SettingsError) -> PipelineConfiguration {
        var common = kafkaCommon
        common["bootstrap.servers"] = bootstrapServers
        for (property, path) in kafkaSecretFiles {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw SettingsError(key: "kafka.secret_files.\(property)", message: "cannot read the file \(path)")
            }
            var value = String(decoding: data, as: UTF8.self)
            while value.last == "\n" || value.last == "\r" { value.removeLast() }
            common[property] = value
        }
        var configuration = PipelineConfiguration(
            applicationID: applicationID, kafka: KafkaConfiguration(common), inputTopics: inputTopics, alertsTopic: alertsTopic)
        configuration.consumerProperties = kafkaConsumer
        configuration.clusterNames = clusterNames
        configuration.producerProperties = kafkaProducer
        configuration.deadLetterTopicName = deadLetterTopic.isEmpty ? nil : deadLetterTopic
        configuration.alertFormat = format
        configuration.processingGuarantee = guarantee
        if kafkaStatisticsIntervalMilliseconds > 0, httpEnabled {
            configuration.kafkaStatisticsInterval = .milliseconds(kafkaStatisticsIntervalMilliseconds)
        }
        configuration.graceMilliseconds = graceMilliseconds
        configuration.idleTimeoutMilliseconds = idleTimeoutMilliseconds
        configuration.sequenceSpanMilliseconds = sequenceSpanMilliseconds
        configuration.skipRepartition = skipRepartition
        configuration.internalPartitions = Int32(internalPartitions)
        configuration.replicationFactor = Int32(replicationFactor)
        configuration.maxBatch = maxBatch
        configuration.fillBatches = fillBatches
        configuration.interimUpdateMilliseconds = interimUpdatesMilliseconds
        configuration.validateEveryRecord = validateEveryRecord
        configuration.decoderLimits = .init(maxRecordBytes: maxRecordBytes, maxDepth: maxDepth)
        configuration.defaultSuppression = defaultSuppression
        configuration.productVersion = productVersion
        return configuration
    }

    /// Per-rule overrides applied over each rule's own suppression (or the default).
    func suppressionOverrides(for rules: [DetectionRule]) -> [String: DetectionRule.AlertSuppression] {
        var result: [String: DetectionRule.AlertSuppression] = [:]
        for rule in rules {
            guard let override = suppressionOverrides[rule.ruleID] else { continue }
            var suppression = rule.alertSuppression ?? defaultSuppression
            if let groupBy = override.groupBy { suppression.groupBy = groupBy }
            if let duration = override.durationMilliseconds { suppression.durationMilliseconds = duration }
            result[rule.ruleID] = suppression
        }
        return result
    }
}

/// A configuration error: names the key (and where its value came from) and what to fix.
struct SettingsError: Error, Equatable, CustomStringConvertible {
    var key: String
    var message: String
    var source: String?
    /// Further errors of the same reading (every unknown key of a file), one line each after this one.
    var more: [SettingsError] = []
    var description: String {
        ([self] + more).map { "configuration: \($0.key): \($0.message)" + ($0.source.map { " (from \($0))" } ?? "") }
            .joined(separator: "\n")
    }
}

// MARK: The schema

/// What a setting holds; values from the environment and flags are parsed by it, values from TOML must
/// already have its type.
enum SettingKind: Equatable {
    case string, strings, int, bool, duration
    case choice([String])

    var name: String {
        switch self {
        case .string: "a string"
        case .strings: "a list of strings"
        case .int: "an integer"
        case .bool: "true or false"
        case .duration: "a duration such as \"500ms\", \"30s\", \"5m\""
        case .choice(let options): "one of " + options.joined(separator: ", ")
        }
    }
}

/// A setting's value, typed by its kind.
enum SettingValue: Equatable, CustomStringConvertible {
    case string(String)
    case strings([String])
    case int(Int)
    case bool(Bool)
    case duration(Int64)

    var description: String {
        switch self {
        case .string(let value): "\"\(value)\""
        case .strings(let values): "[" + values.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
        case .int(let value): "\(value)"
        case .bool(let value): "\(value)"
        case .duration(let ms): "\"\(SettingsLoader.formatDuration(ms))\""
        }
    }
}

struct SettingSpec {
    var key: String
    var kind: SettingKind
    /// nil: required, no default.
    var defaultValue: SettingValue?

    init(_ key: String, _ kind: SettingKind, _ defaultValue: SettingValue?) {
        self.key = key
        self.kind = kind
        self.defaultValue = defaultValue
    }

    var environmentName: String { SettingsLoader.environmentPrefix + key.uppercased().replacingOccurrences(of: ".", with: "_") }
}

/// Reads the three layers and builds ``Settings``.
struct SettingsLoader {
    static let environmentPrefix = "AUDIT_SENTINEL_"
    /// Environment variables of ours that are not settings (the config file's path, test harness variables).
    static let nonSettingVariables: Set<String> = ["AUDIT_SENTINEL_CONFIG", "AUDIT_SENTINEL_SHARED_TESTDATA",
                                                   "AUDIT_SENTINEL_TANSU_BOOTSTRAP", "AUDIT_SENTINEL_PYTHON"]
    static func isHarnessVariable(_ name: String) -> Bool {
        let rest = name.dropFirst(environmentPrefix.count)
        return nonSettingVariables.contains(name) || rest.hasPrefix("TEST_") || rest.hasPrefix("SIM_") || rest.hasPrefix("FUZZ")
            || rest.hasSuffix("_SEED")
    }

    /// Every key, its kind and its default (taken from ``Settings``'s own defaults, so they cannot drift).
    /// What each key means is documented in the shipped Config/audit-sentinel.toml.
    static let specs: [SettingSpec] = {
        let d = Settings()
        return [
            .init("application_id", .string, .string(d.applicationID)),
            .init("kafka.bootstrap_servers", .string, nil),
            .init("topics.input", .strings, .strings(d.inputTopics)),
            .init("topics.cluster_names", .strings, .strings([])),
            .init("topics.alerts", .string, .string(d.alertsTopic)),
            .init("topics.dead_letter", .string, .string(d.deadLetterTopic)),
            .init("rules.paths", .strings, .strings(d.rulePaths)),
            .init("suppression.group_by", .strings, .strings(d.defaultSuppression.groupBy)),
            .init("suppression.duration", .duration, .duration(d.defaultSuppression.durationMilliseconds)),
            .init("suppression.interim_updates", .duration, .duration(d.interimUpdatesMilliseconds)),
            .init("output.format", .choice(AlertFormat.allCases.map(\.rawValue)), .string(d.format.rawValue)),
            .init("processing.guarantee", .choice(["at_least_once", "exactly_once"]), .string(d.guarantee.rawValue)),
            .init("processing.grace", .duration, .duration(d.graceMilliseconds)),
            .init("processing.idle_timeout", .duration, .duration(d.idleTimeoutMilliseconds)),
            .init("processing.sequence_span", .duration, .duration(d.sequenceSpanMilliseconds)),
            .init("processing.skip_repartition", .bool, .bool(d.skipRepartition)),
            .init("processing.create_topics", .bool, .bool(d.createTopics)),
            .init("processing.internal_partitions", .int, .int(d.internalPartitions)),
            .init("processing.replication_factor", .int, .int(d.replicationFactor)),
            .init("processing.max_batch", .int, .int(d.maxBatch)),
            .init("processing.fill_batches", .bool, .bool(d.fillBatches)),
            .init("processing.validate_every_record", .bool, .bool(d.validateEveryRecord)),
            .init("limits.max_record_bytes", .int, .int(d.maxRecordBytes)),
            .init("limits.max_depth", .int, .int(d.maxDepth)),
            .init("http.enabled", .bool, .bool(d.httpEnabled)),
            .init("http.listen", .string, .string(d.httpListen)),
            .init("metrics.kafka_statistics_interval", .duration, .duration(d.kafkaStatisticsIntervalMilliseconds)),
            .init("log.level", .choice(["trace", "debug", "info", "notice", "warning", "error", "critical"]), .string(d.logLevel)),
            .init("log.format", .choice(["text", "json"]), .string(d.logFormat)),
            .init("shutdown.timeout", .duration, .duration(d.shutdownTimeoutMilliseconds)),
        ]
    }()
    static let specsByKey = Dictionary(uniqueKeysWithValues: specs.map { ($0.key, $0) })
    /// Tables whose keys pass through to librdkafka.
    static let passThroughTables = ["kafka.common", "kafka.consumer", "kafka.producer", "kafka.secret_files"]

    /// Each key's value and where it came from, after all layers.
    private(set) var values: [String: (value: SettingValue, source: String)] = [:]
    /// What was read but names nothing (a misspelled `AUDIT_SENTINEL_…` variable): logged at start.
    private(set) var warnings: [String] = []
    /// Unknown keys of the file, all reported together.
    private var unknownKeys: [SettingsError] = []

    /// - Parameters:
    ///   - file: the TOML file (nil: none).
    ///   - environment: the process environment.
    ///   - overrides: `key=value` pairs from the command line, in order.
    init(file: String?, environment: [String: String], overrides: [(key: String, value: String, flag: String)]) throws(SettingsError) {
        if let file { try loadFile(file) }
        if var first = unknownKeys.first {
            first.more = Array(unknownKeys.dropFirst())
            throw first
        }
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) where name.hasPrefix(Self.environmentPrefix) {
            guard !Self.isHarnessVariable(name) else { continue }
            guard let key = Self.key(forEnvironment: name) else {
                let suggestion = Self.specs.map(\.environmentName).min { Self.distance($0, name) < Self.distance($1, name) }
                let hint = suggestion.map { Self.distance($0, name) <= 4 ? "; did you mean \($0)?" : "" } ?? ""
                warnings.append("environment variable \(name) names no setting; ignored\(hint)")
                continue
            }
            try set(key, parsing: value, source: "environment \(name)")
        }
        for override in overrides { try set(override.key, parsing: override.value, source: override.flag) }
    }

    /// The dotted key an environment variable names, or nil when it names none (ignored: it may belong to
    /// something else, like a test harness).
    static func key(forEnvironment name: String) -> String? {
        if let spec = specs.first(where: { $0.environmentName == name }) { return spec.key }
        let rest = String(name.dropFirst(environmentPrefix.count))
        // librdkafka property names use dots only: KAFKA_COMMON_SASL_PASSWORD → kafka.common.sasl.password.
        for table in passThroughTables {
            let prefix = table.uppercased().replacingOccurrences(of: ".", with: "_") + "_"
            if rest.hasPrefix(prefix) {
                return table + "." + rest.dropFirst(prefix.count).lowercased().replacingOccurrences(of: "_", with: ".")
            }
        }
        return nil
    }

    private mutating func loadFile(_ path: String) throws(SettingsError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SettingsError(key: "--config", message: "cannot read \(path)")
        }
        let table: TOMLTable
        do throws(TOMLParseError) {
            table = try TOMLTable(parsing: String(decoding: data, as: UTF8.self))
        } catch {
            throw SettingsError(key: path, message: error.description)
        }
        try walk(table, prefix: "", file: path)
    }

    private mutating func walk(_ table: TOMLTable, prefix: String, file: String) throws(SettingsError) {
        for key in table.keys.sorted() {
            guard let value = table[key] else { continue }
            let dotted = prefix.isEmpty ? key : prefix + "." + key
            let source = "file \(file)"
            if Self.passThroughTables.contains(where: { dotted.hasPrefix($0 + ".") }) {
                // librdkafka takes strings; TOML numbers and booleans are written as librdkafka spells them.
                let text: String
                if let string = value.string { text = string }
                else if let int = value.int { text = String(int) }
                else if let bool = value.bool { text = String(bool) }
                else if let table = value.table {
                    // `[kafka.common]` written with dotted keys unquoted: `ssl.ca.location = "…"` nests tables.
                    try walk(table, prefix: dotted, file: file)
                    continue
                } else {
                    throw SettingsError(key: dotted, message: "expected a string, number or boolean", source: source)
                }
                values[dotted] = (.string(text), source)
                continue
            }
            if let table = value.table {
                if dotted.hasPrefix("rules.suppression.") || Self.isSection(dotted) {
                    try walk(table, prefix: dotted, file: file)
                    continue
                }
                unknownKeys.append(unknownKey(dotted, source: source))
                continue
            }
            if !Self.isKnown(dotted) {
                unknownKeys.append(unknownKey(dotted, source: source))
                continue
            }
            try set(dotted, typed: value, source: source)
        }
    }

    /// Whether a key names a setting (a per-rule suppression key included).
    static func isKnown(_ key: String) -> Bool {
        specsByKey[key] != nil || (key.hasPrefix("rules.suppression.") && (key.hasSuffix(".group_by") || key.hasSuffix(".duration")))
    }

    static func isSection(_ key: String) -> Bool {
        specs.contains { $0.key.hasPrefix(key + ".") } || passThroughTables.contains(key) || key == "rules.suppression"
    }

    private func unknownKey(_ key: String, source: String) -> SettingsError {
        let suggestion = Self.specs.map(\.key).min { Self.distance($0, key) < Self.distance($1, key) }
        let hint = suggestion.map { Self.distance($0, key) <= 4 ? "; did you mean \($0)?" : "" } ?? ""
        return SettingsError(key: key, message: "unknown key\(hint)", source: source)
    }

    /// The kind of a key, including the per-rule suppression keys.
    private func kind(of key: String, source: String) throws(SettingsError) -> SettingKind {
        if let spec = Self.specsByKey[key] { return spec.kind }
        if Self.passThroughTables.contains(where: { key.hasPrefix($0 + ".") }) { return .string }
        if key.hasPrefix("rules.suppression.") {
            if key.hasSuffix(".group_by") { return .strings }
            if key.hasSuffix(".duration") { return .duration }
        }
        throw unknownKey(key, source: source)
    }

    private mutating func set(_ key: String, typed value: TOMLValue, source: String) throws(SettingsError) {
        let kind = try kind(of: key, source: source)
        let wrong = SettingsError(key: key, message: "expected \(kind.name)", source: source)
        switch kind {
        case .string:
            guard let string = value.string else { throw wrong }
            values[key] = (.string(string), source)
        case .choice:
            guard let string = value.string else { throw wrong }
            try set(key, parsing: string, source: source)
        case .strings:
            if let string = value.string { values[key] = (.strings([string]), source); return }
            guard let array = value.array else { throw wrong }
            var strings: [String] = []
            for element in array {
                guard let string = element.string else { throw wrong }
                strings.append(string)
            }
            values[key] = (.strings(strings), source)
        case .int:
            guard let int = value.int else { throw wrong }
            values[key] = (.int(int), source)
        case .bool:
            guard let bool = value.bool else { throw wrong }
            values[key] = (.bool(bool), source)
        case .duration:
            guard let string = value.string else { throw wrong }
            try set(key, parsing: string, source: source)
        }
    }

    /// Sets a key from text (environment, flags).
    mutating func set(_ key: String, parsing text: String, source: String) throws(SettingsError) {
        let kind = try kind(of: key, source: source)
        let wrong = SettingsError(key: key, message: "expected \(kind.name), got \"\(text)\"", source: source)
        switch kind {
        case .string:
            values[key] = (.string(text), source)
        case .choice(let options):
            guard options.contains(text) else { throw wrong }
            values[key] = (.string(text), source)
        case .strings:
            values[key] = (.strings(text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }), source)
        case .int:
            guard let int = Int(text.trimmingCharacters(in: .whitespaces)) else { throw wrong }
            values[key] = (.int(int), source)
        case .bool:
            switch text.lowercased() {
            case "true", "1", "yes", "on": values[key] = (.bool(true), source)
            case "false", "0", "no", "off": values[key] = (.bool(false), source)
            default: throw wrong
            }
        case .duration:
            guard let ms = Self.parseDuration(text) else { throw wrong }
            values[key] = (.duration(ms), source)
        }
    }

    // MARK: Building

    func settings() throws(SettingsError) -> Settings {
        var settings = Settings()
        func string(_ key: String) -> String? { if case .string(let v)? = values[key]?.value { v } else { nil } }
        func strings(_ key: String) -> [String]? { if case .strings(let v)? = values[key]?.value { v } else { nil } }
        func int(_ key: String) -> Int? { if case .int(let v)? = values[key]?.value { v } else { nil } }
        func bool(_ key: String) -> Bool? { if case .bool(let v)? = values[key]?.value { v } else { nil } }
        func duration(_ key: String) -> Int64? { if case .duration(let v)? = values[key]?.value { v } else { nil } }
        func check(_ condition: Bool, _ key: String, _ message: String) throws(SettingsError) {
            if !condition { throw SettingsError(key: key, message: message, source: values[key]?.source) }
        }

        settings.applicationID = string("application_id") ?? settings.applicationID
        try check(!settings.applicationID.isEmpty && settings.applicationID.allSatisfy { $0.isLetter || $0.isNumber || "._-".contains($0) },
                  "application_id", "must be non-empty letters, digits, '.', '_' or '-' (it names topics and the group)")
        guard let brokers = string("kafka.bootstrap_servers"), !brokers.isEmpty else {
            throw SettingsError(key: "kafka.bootstrap_servers", message:
                "required: set it in the file, with AUDIT_SENTINEL_KAFKA_BOOTSTRAP_SERVERS, or with --brokers")
        }
        settings.bootstrapServers = brokers
        for (key, entry) in values {
            guard case .string(let value) = entry.value else { continue }
            for table in Self.passThroughTables where key.hasPrefix(table + ".") {
                let property = String(key.dropFirst(table.count + 1))
                switch table {
                case "kafka.common": settings.kafkaCommon[property] = value
                case "kafka.consumer": settings.kafkaConsumer[property] = value
                case "kafka.producer": settings.kafkaProducer[property] = value
                default: settings.kafkaSecretFiles[property] = value
                }
            }
        }
        settings.inputTopics = strings("topics.input") ?? settings.inputTopics
        try check(!settings.inputTopics.isEmpty, "topics.input", "at least one input topic is required")
        for entry in strings("topics.cluster_names") ?? [] {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            try check(parts.count == 2 && !parts[0].isEmpty && !parts[1].isEmpty, "topics.cluster_names", "expected topic=cluster, got \"\(entry)\"")
            try check(settings.inputTopics.contains(parts[0]), "topics.cluster_names", "\(parts[0]) is not an input topic (topics.input)")
            try check(settings.clusterNames[parts[0]] == nil, "topics.cluster_names", "\(parts[0]) is named twice")
            settings.clusterNames[parts[0]] = parts[1]
        }
        settings.alertsTopic = string("topics.alerts") ?? settings.alertsTopic
        try check(!settings.alertsTopic.isEmpty, "topics.alerts", "must not be empty")
        try check(!settings.inputTopics.contains(settings.alertsTopic), "topics.alerts", "must differ from the input topics")
        settings.deadLetterTopic = string("topics.dead_letter") ?? ""
        settings.rulePaths = strings("rules.paths") ?? settings.rulePaths
        try check(!settings.rulePaths.isEmpty, "rules.paths", "at least one rule file or directory is required")
        settings.defaultSuppression.groupBy = strings("suppression.group_by") ?? settings.defaultSuppression.groupBy
        settings.defaultSuppression.durationMilliseconds = duration("suppression.duration") ?? settings.defaultSuppression.durationMilliseconds
        for (key, entry) in values where key.hasPrefix("rules.suppression.") {
            let parts = key.dropFirst("rules.suppression.".count)
            guard let dot = parts.lastIndex(of: ".") else { continue }
            let ruleID = String(parts[..<dot])
            var override = settings.suppressionOverrides[ruleID] ?? .init()
            switch entry.value {
            case .strings(let groupBy): override.groupBy = groupBy
            case .duration(let ms): override.durationMilliseconds = ms
            default: break
            }
            settings.suppressionOverrides[ruleID] = override
        }
        settings.format = string("output.format").flatMap(AlertFormat.init(rawValue:)) ?? settings.format
        settings.guarantee = string("processing.guarantee").flatMap(PipelineConfiguration.ProcessingGuarantee.init(rawValue:)) ?? settings.guarantee
        settings.graceMilliseconds = duration("processing.grace") ?? settings.graceMilliseconds
        settings.idleTimeoutMilliseconds = duration("processing.idle_timeout") ?? settings.idleTimeoutMilliseconds
        try check(settings.idleTimeoutMilliseconds > 0, "processing.idle_timeout", "must be positive")
        settings.sequenceSpanMilliseconds = duration("processing.sequence_span") ?? settings.sequenceSpanMilliseconds
        try check(settings.sequenceSpanMilliseconds > 0, "processing.sequence_span", "must be positive")
        settings.skipRepartition = bool("processing.skip_repartition") ?? settings.skipRepartition
        settings.createTopics = bool("processing.create_topics") ?? settings.createTopics
        settings.internalPartitions = int("processing.internal_partitions") ?? settings.internalPartitions
        try check((1...10_000).contains(settings.internalPartitions), "processing.internal_partitions", "must be 1…10000")
        settings.replicationFactor = int("processing.replication_factor") ?? settings.replicationFactor
        try check(settings.replicationFactor == -1 || settings.replicationFactor >= 1, "processing.replication_factor", "must be -1 or ≥ 1")
        settings.maxBatch = int("processing.max_batch") ?? settings.maxBatch
        try check((1...100_000).contains(settings.maxBatch), "processing.max_batch", "must be 1…100000")
        settings.fillBatches = bool("processing.fill_batches") ?? settings.fillBatches
        settings.interimUpdatesMilliseconds = duration("suppression.interim_updates") ?? settings.interimUpdatesMilliseconds
        try check(settings.interimUpdatesMilliseconds >= 0, "suppression.interim_updates", "must be 0 (off) or a duration")
        settings.validateEveryRecord = bool("processing.validate_every_record") ?? settings.validateEveryRecord
        settings.maxRecordBytes = int("limits.max_record_bytes") ?? settings.maxRecordBytes
        try check((1024...(64 << 20)).contains(settings.maxRecordBytes), "limits.max_record_bytes", "must be 1 KiB…64 MiB")
        settings.maxDepth = int("limits.max_depth") ?? settings.maxDepth
        try check((4...1000).contains(settings.maxDepth), "limits.max_depth", "must be 4…1000")
        settings.httpEnabled = bool("http.enabled") ?? settings.httpEnabled
        settings.httpListen = string("http.listen") ?? settings.httpListen
        try check(HTTPEndpoint.parseListen(settings.httpListen) != nil, "http.listen", "expected host:port, e.g. 127.0.0.1:9464 or [::1]:9464")
        settings.kafkaStatisticsIntervalMilliseconds = duration("metrics.kafka_statistics_interval") ?? settings.kafkaStatisticsIntervalMilliseconds
        try check(settings.kafkaStatisticsIntervalMilliseconds == 0 || settings.kafkaStatisticsIntervalMilliseconds >= 100,
                  "metrics.kafka_statistics_interval", "must be 0 (off) or at least 100ms")
        settings.logLevel = string("log.level") ?? settings.logLevel
        settings.logFormat = string("log.format") ?? settings.logFormat
        settings.shutdownTimeoutMilliseconds = duration("shutdown.timeout") ?? settings.shutdownTimeoutMilliseconds
        return settings
    }

    /// The effective configuration as TOML, with the source of every value set and secrets redacted: what
    /// `run --print-config` shows.
    func render() -> String {
        var lines: [String] = ["# Effective configuration (file < environment < flags); secrets redacted."]
        var section = ""
        for key in values.keys.sorted(by: Self.renderOrder) {
            guard let entry = values[key] else { continue }
            let (table, name): (String, String) = {
                if let table = Self.passThroughTables.first(where: { key.hasPrefix($0 + ".") }) {
                    return (table, "\"" + key.dropFirst(table.count + 1) + "\"")
                }
                if key.hasPrefix("rules.suppression."), let dot = key.lastIndex(of: ".") {
                    let ruleID = key[key.index(key.startIndex, offsetBy: "rules.suppression.".count)..<dot]
                    return ("rules.suppression.\"\(ruleID)\"", String(key[key.index(after: dot)...]))
                }
                guard let dot = key.lastIndex(of: ".") else { return ("", key) }
                return (String(key[..<dot]), String(key[key.index(after: dot)...]))
            }()
            if table != section {
                section = table
                lines.append("")
                lines.append("[\(table)]")
            }
            let isSecret = table != "kafka.secret_files" && Self.passThroughTables.contains(table)
                && KafkaConfiguration.isSecret(String(key.dropFirst(table.count + 1)))
            let shown = isSecret ? "\"\(KafkaConfiguration.redactedValue)\"" : entry.value.description
            lines.append("\(name) = \(shown)  # \(entry.source)")
        }
        return lines.joined(separator: "\n")
    }

    /// Top-level keys first, then tables in alphabetical order.
    static func renderOrder(_ a: String, _ b: String) -> Bool {
        let aTop = !a.contains("."), bTop = !b.contains(".")
        if aTop != bTop { return aTop }
        return a < b
    }

    /// Adds every default to the values not set, so that --print-config shows the whole configuration.
    mutating func fillDefaults() {
        for spec in Self.specs where values[spec.key] == nil {
            if let value = spec.defaultValue { values[spec.key] = (value, "default") }
        }
    }

    // MARK: Helpers

    /// "250ms", "30s", "5m", "1h" → milliseconds.
    static func parseDuration(_ text: String) -> Int64? {
        let text = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for (unit, scale) in units where text.hasSuffix(unit) {
            guard let number = Int64(text.dropLast(unit.count)), number >= 0 else { return nil }
            return number.multipliedReportingOverflow(by: scale).overflow ? nil : number * scale
        }
        return nil
    }

    static func formatDuration(_ ms: Int64) -> String {
        if ms % 3_600_000 == 0, ms > 0 { return "\(ms / 3_600_000)h" }
        if ms % 60_000 == 0, ms > 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }

    /// Edit distance, for "did you mean".
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(1, b.count) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
