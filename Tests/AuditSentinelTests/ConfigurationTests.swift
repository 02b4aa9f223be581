import Foundation
import Kafka
import TestSupport
import Testing

@testable import audit_sentinel

/// `run`'s configuration: layers, precedence, validation errors naming the key, secrets.
@Suite("configuration")
struct ConfigurationTests {
    func file(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sentinel-\(UUID().uuidString).toml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func load(file text: String? = nil, environment: [String: String] = [:], flags: [(String, String)] = []) throws -> Settings {
        let path = try text.map(file)
        let loader = try SettingsLoader(file: path, environment: environment, overrides: flags.map { ($0.0, $0.1, "--set") })
        return try loader.settings()
    }

    func error(file text: String? = nil, environment: [String: String] = [:], flags: [(String, String)] = []) -> SettingsError? {
        do {
            _ = try load(file: text, environment: environment, flags: flags)
            return nil
        } catch let error as SettingsError {
            return error
        } catch {
            return SettingsError(key: "?", message: "\(error)")
        }
    }

    @Test func theShippedDefaultFileLoadsAndMatchesTheBuiltInDefaults() throws {
        let text = try String(contentsOf: packageRoot.appendingPathComponent("Config/audit-sentinel.toml"), encoding: .utf8)
        let settings = try load(file: text, environment: ["AUDIT_SENTINEL_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"])
        var expected = Settings()
        expected.bootstrapServers = "127.0.0.1:9092"
        #expect(settings == expected)
    }

    @Test func flagsOverrideEnvironmentOverridesFile() throws {
        let text = """
            application_id = "from-file"
            [kafka]
            bootstrap_servers = "file:9092"
            [processing]
            grace = "10s"
            max_batch = 10
            [topics]
            input = ["a", "b"]
            """
        let fileOnly = try load(file: text)
        #expect(fileOnly.applicationID == "from-file")
        #expect(fileOnly.bootstrapServers == "file:9092")
        #expect(fileOnly.graceMilliseconds == 10_000)
        #expect(fileOnly.inputTopics == ["a", "b"])

        let environment = ["AUDIT_SENTINEL_KAFKA_BOOTSTRAP_SERVERS": "env:9092", "AUDIT_SENTINEL_PROCESSING_GRACE": "2m",
                           "AUDIT_SENTINEL_TOPICS_INPUT": "x, y,z", "AUDIT_SENTINEL_PROCESSING_MAX_BATCH": "20"]
        let withEnvironment = try load(file: text, environment: environment)
        #expect(withEnvironment.bootstrapServers == "env:9092")
        #expect(withEnvironment.graceMilliseconds == 120_000)
        #expect(withEnvironment.inputTopics == ["x", "y", "z"])
        #expect(withEnvironment.maxBatch == 20)
        #expect(withEnvironment.applicationID == "from-file")

        let withFlags = try load(file: text, environment: environment, flags: [("kafka.bootstrap_servers", "flag:9092"), ("processing.max_batch", "30")])
        #expect(withFlags.bootstrapServers == "flag:9092")
        #expect(withFlags.maxBatch == 30)
        #expect(withFlags.graceMilliseconds == 120_000)
    }

    @Test func unknownKeysWrongTypesAndMissingBrokersNameTheKey() {
        let brokers = ["AUDIT_SENTINEL_KAFKA_BOOTSTRAP_SERVERS": "b:1"]
        #expect(error() == SettingsError(key: "kafka.bootstrap_servers", message:
            "required: set it in the file, with AUDIT_SENTINEL_KAFKA_BOOTSTRAP_SERVERS, or with --brokers"))
        let unknown = error(file: "[processing]\ngrase = \"1s\"\n", environment: brokers)
        #expect(unknown?.key == "processing.grase")
        #expect(unknown?.description.contains("did you mean processing.grace?") == true)
        #expect(error(file: "[nonsense]\nx = 1\n", environment: brokers)?.key == "nonsense")
        // Every unknown key of a file, not the first only.
        let several = error(file: "application_idd = \"a\"\n[processing]\ngrase = \"1s\"\nmax_bach = 3\n", environment: brokers)
        #expect(several?.description == """
            configuration: application_idd: unknown key; did you mean application_id? (from file \(several?.source?.dropFirst(5) ?? ""))
            configuration: processing.grase: unknown key; did you mean processing.grace? (from file \(several?.source?.dropFirst(5) ?? ""))
            configuration: processing.max_bach: unknown key; did you mean processing.max_batch? (from file \(several?.source?.dropFirst(5) ?? ""))
            """)
        let wrongType = error(file: "[processing]\nmax_batch = \"many\"\n", environment: brokers)
        #expect(wrongType?.key == "processing.max_batch")
        #expect(wrongType?.message == "expected an integer")
        #expect(error(environment: brokers.merging(["AUDIT_SENTINEL_PROCESSING_GRACE": "soon"]) { $1 })?.key == "processing.grace")
        #expect(error(environment: brokers, flags: [("output.format", "xml")])?.message == "expected one of ecs, ocsf, got \"xml\"")
        #expect(error(environment: brokers, flags: [("processing.max_batch", "0")])?.key == "processing.max_batch")
        #expect(error(environment: brokers, flags: [("http.listen", "nowhere")])?.key == "http.listen")
        #expect(error(environment: brokers, flags: [("topics.alerts", "k8s-audit")])?.message == "must differ from the input topics")
        #expect(error(file: "application_id = [1]\n", environment: brokers)?.key == "application_id")
        let malformed = error(file: "[kafka\n", environment: brokers)
        #expect(malformed?.message.hasPrefix("line 1") == true)
        // A header toml++ would assert on (fuzz finding) is an error naming the line, not an abort.
        #expect(error(file: "[kafka]\n[ \u{FFFD}]\n", environment: brokers)?.message.hasPrefix("line 2: expected a key") == true)
    }

    /// `topics.cluster_names`: topic=cluster entries for input topics, reaching the pipeline's configuration.
    @Test func clusterNamesPerInputTopic() throws {
        let environment = ["AUDIT_SENTINEL_KAFKA_BOOTSTRAP_SERVERS": "b:1", "AUDIT_SENTINEL_TOPICS_INPUT": "audit-prod,audit-dev",
                           "AUDIT_SENTINEL_TOPICS_CLUSTER_NAMES": "audit-prod=prod-eu-1,audit-dev=dev"]
        let settings = try SettingsLoader(file: nil, environment: environment, overrides: []).settings()
        #expect(settings.clusterNames == ["audit-prod": "prod-eu-1", "audit-dev": "dev"])
        #expect(try settings.pipelineConfiguration(productVersion: "t").clusterNames == ["audit-prod": "prod-eu-1", "audit-dev": "dev"])
        func failure(_ value: String) -> String? {
            let merged = environment.merging(["AUDIT_SENTINEL_TOPICS_CLUSTER_NAMES": value]) { $1 }
            switch Result(catching: { () throws(SettingsError) in try SettingsLoader(file: nil, environment: merged, overrides: []).settings() }) {
            case .success: return nil
            case .failure(let error): return error.key == "topics.cluster_names" ? error.message : "wrong key \(error.key)"
            }
        }
        #expect(failure("audit-prod") == "expected topic=cluster, got \"audit-prod\"")
        #expect(failure("audit-staging=stg") == "audit-staging is not an input topic (topics.input)")
        #expect(failure("audit-prod=a,audit-prod=b") == "audit-prod is named twice")
        #expect(failure("audit-prod=") == "expected topic=cluster, got \"audit-prod=\"")
    }

    /// A misspelled variable is warned about by name, with the nearest setting's variable; the harness's
    /// own variables are not settings and are left alone.
    @Test func misspelledEnvironmentVariablesAreWarnedAbout() throws {
        let loader = try SettingsLoader(file: nil, environment: [
            "AUDIT_SENTINEL_KAFKA_BOOTSTRAP_SERVERS": "b:1", "AUDIT_SENTINEL_PROCESING_GRACE": "1m",
            "AUDIT_SENTINEL_SHARED_TESTDATA": "/x", "AUDIT_SENTINEL_SIM_SEED": "3", "AUDIT_SENTINEL_WHATEVER": "1",
        ], overrides: [])
        #expect(loader.warnings == [
            "environment variable AUDIT_SENTINEL_PROCESING_GRACE names no setting; ignored; did you mean AUDIT_SENTINEL_PROCESSING_GRACE?",
            "environment variable AUDIT_SENTINEL_WHATEVER names no setting; ignored",
        ])
        #expect(try loader.settings().graceMilliseconds == Settings().graceMilliseconds)
    }

    @Test func passThroughPropertiesPerClientAndPerRuleSuppression() throws {
        let text = """
            [kafka]
            bootstrap_servers = "b:1"
            [kafka.common]
            "security.protocol" = "ssl"
            "socket.keepalive.enable" = true
            [kafka.consumer]
            "fetch.max.bytes" = 1048576
            [kafka.producer]
            compression.type = "lz4"
            [rules.suppression."rule-1"]
            group_by = ["user.name", "source.ip"]
            duration = "10m"
            """
        let settings = try load(file: text, environment: ["AUDIT_SENTINEL_KAFKA_CONSUMER_QUEUED_MIN_MESSAGES": "5000"])
        #expect(settings.kafkaCommon == ["security.protocol": "ssl", "socket.keepalive.enable": "true"])
        #expect(settings.kafkaConsumer == ["fetch.max.bytes": "1048576", "queued.min.messages": "5000"])
        #expect(settings.kafkaProducer == ["compression.type": "lz4"])
        #expect(settings.suppressionOverrides["rule-1"] == .init(groupBy: ["user.name", "source.ip"], durationMilliseconds: 600_000))
        let pipeline = try settings.pipelineConfiguration(productVersion: "test")
        #expect(pipeline.kafka["bootstrap.servers"] == "b:1")
        #expect(pipeline.kafka["security.protocol"] == "ssl")
    }

    @Test func secretsComeFromFilesAndAreRedactedInPrintConfig() throws {
        let secret = FileManager.default.temporaryDirectory.appendingPathComponent("secret-\(UUID().uuidString)").path
        try "s3cr3t-from-file\n".write(toFile: secret, atomically: true, encoding: .utf8)
        let environment = ["AUDIT_SENTINEL_KAFKA_BOOTSTRAP_SERVERS": "b:1", "AUDIT_SENTINEL_KAFKA_COMMON_SASL_PASSWORD": "hunter2-env",
                           "AUDIT_SENTINEL_KAFKA_SECRET_FILES_SSL_KEY_PASSWORD": secret]
        var loader = try SettingsLoader(file: nil, environment: environment, overrides: [])
        let settings = try loader.settings()
        let pipeline = try settings.pipelineConfiguration(productVersion: "test")
        #expect(pipeline.kafka["ssl.key.password"] == "s3cr3t-from-file")
        #expect(pipeline.kafka["sasl.password"] == "hunter2-env")
        loader.fillDefaults()
        let printed = loader.render()
        #expect(!printed.contains("hunter2"))
        #expect(!printed.contains("s3cr3t"))
        #expect(printed.contains("\"sasl.password\" = \"[redacted]\""))
        #expect(printed.contains(secret))  // the path is shown, not the content
        #expect(printed.contains("grace = \"30s\"  # default"))
        #expect(!pipeline.kafka.description.contains("hunter2"))

        var missing = settings
        missing.kafkaSecretFiles = ["sasl.password": "/nonexistent/secret"]
        #expect(throws: SettingsError.self) { try missing.pipelineConfiguration(productVersion: "test") }
    }

    @Test func durationsAndListenAddresses() {
        #expect(SettingsLoader.parseDuration("250ms") == 250)
        #expect(SettingsLoader.parseDuration("30s") == 30_000)
        #expect(SettingsLoader.parseDuration("5m") == 300_000)
        #expect(SettingsLoader.parseDuration("1h") == 3_600_000)
        #expect(SettingsLoader.parseDuration("30") == nil)
        #expect(SettingsLoader.parseDuration("-1s") == nil)
        #expect(HTTPEndpoint.parseListen("127.0.0.1:9464")! == ("127.0.0.1", 9464))
        #expect(HTTPEndpoint.parseListen("[::1]:80")! == ("::1", 80))
        #expect(HTTPEndpoint.parseListen("localhost") == nil)
        #expect(HTTPEndpoint.parseListen("1.2.3.4:70000") == nil)
    }
}

