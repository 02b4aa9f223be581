import AuditEvents
import Foundation
import TestSupport
import Testing

@testable import audit_sentinel

/// The deployment files, checked by parsing them (no Docker engine or Kubernetes cluster runs here): YAML
/// read by an independent parser (PyYAML from the project's venv), structure and names cross-checked with
/// our configuration keys.
@Suite("deployment files: docker-compose.yml, Dockerfile, deploy/kubernetes, deploy/prometheus, deploy/grafana")
struct DeploymentFilesTests {
    /// Every YAML document of a file, as our JSON values.
    func yaml(_ relativePath: String) throws -> [JSONValue] {
        let python = packageRoot.appendingPathComponent(".venv/bin/python")
        guard FileManager.default.isExecutableFile(atPath: python.path) else {
            throw TestFailure(".venv/bin/python is missing: run `make deps` (scripts/deps.sh installs PyYAML there)")
        }
        let process = Process()
        process.executableURL = python
        process.arguments = ["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
                             packageRoot.appendingPathComponent(relativePath).path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("PyYAML could not parse \(relativePath)") }
        return try #require(try JSONValue.parse(Array(data)).arrayValue)
    }

    /// Environment names must be settings `run` knows (a typo would be silently ignored by the service).
    func checkEnvironment(_ names: [String], in file: String) throws {
        for name in names where name.hasPrefix(SettingsLoader.environmentPrefix) {
            let key = SettingsLoader.key(forEnvironment: name) ?? (SettingsLoader.nonSettingVariables.contains(name) ? name : nil)
            #expect(key != nil, "\(file): \(name) is not a configuration variable")
        }
    }

    @Test func composeRunsKafkaTopicsTheServiceAndAnOptionalTrafficProfile() throws {
        let compose = try #require(try yaml("docker-compose.yml").first?.objectValue)
        let services = try #require(compose["services"]?.objectValue)
        #expect(Set(services.keys) == ["kafka", "topics", "audit-sentinel", "traffic"])

        let kafka = try #require(services["kafka"]?.objectValue)
        #expect(kafka["image"]?.stringValue?.hasPrefix("apache/kafka:") == true)
        let kafkaEnvironment = try #require(kafka["environment"]?.objectValue)
        #expect(kafkaEnvironment["KAFKA_PROCESS_ROLES"]?.stringValue == "broker,controller")  // KRaft, one node
        let advertised = try #require(kafkaEnvironment["KAFKA_ADVERTISED_LISTENERS"]?.stringValue)

        let sentinel = try #require(services["audit-sentinel"]?.objectValue)
        #expect(sentinel["build"]?.stringValue == ".")
        let environment = try #require(sentinel["environment"]?.objectValue)
        try checkEnvironment(Array(environment.keys), in: "docker-compose.yml")
        // The service reaches the broker on the listener Kafka advertises inside the compose network.
        let brokers = try #require(environment["AUDIT_SENTINEL_KAFKA_BOOTSTRAP_SERVERS"]?.stringValue)
        #expect(advertised.contains("//" + brokers))
        // The configuration it gets loads.
        var variables: [String: String] = [:]
        for name in environment.keys where name != "AUDIT_SENTINEL_CONFIG" { variables[name] = environment[name]?.stringValue }
        let settings = try SettingsLoader(file: packageRoot.appendingPathComponent("Config/audit-sentinel.toml").path,
                                          environment: variables, overrides: []).settings()
        #expect(settings.bootstrapServers == brokers)
        #expect(settings.httpListen == "0.0.0.0:9464")
        #expect(sentinel["ports"]?.arrayValue?.compactMap(\.stringValue) == ["127.0.0.1:9464:9464"])
        #expect(sentinel["volumes"]?.arrayValue?.compactMap(\.stringValue) == ["./Config:/etc/audit-sentinel:ro"])

        // The one-shot creates the topics the service reads and writes.
        let topics = try #require(services["topics"]?.objectValue)
        let script = topics["command"]?.arrayValue?.compactMap(\.stringValue).joined(separator: " ") ?? ""
        for topic in settings.inputTopics + [settings.alertsTopic] + settings.inputTopics.map({ "\($0).dlq" }) {
            #expect(script.contains("--topic \(topic) "), "topic \(topic) not created")
        }

        #expect(script.contains("--topic \(settings.alertsTopic) --partitions 3 --config cleanup.policy=compact"), "alerts topic compacted")

        let traffic = try #require(services["traffic"]?.objectValue)
        #expect(traffic["profiles"]?.arrayValue?.compactMap(\.stringValue) == ["demo"])
        let command = traffic["command"]?.arrayValue?.compactMap(\.stringValue) ?? []
        #expect(command.first == "generate")
        #expect(command.contains(brokers))
        // The generate command parses these arguments.
        _ = try AuditSentinel.parseAsRoot(command)
    }

    /// The compose healthcheck's command (CMD-SHELL), as Docker runs it: `/bin/sh -c` (dash here, as in the
    /// image), with the binary on PATH, against the endpoint on `port`. ServiceTests runs it against a live
    /// service: passing when healthy, failing during start-up (503) and once it has stopped.
    static func runComposeHealthcheck(port: Int) throws -> (status: Int32, stderr: String) {
        let compose = try #require(try DeploymentFilesTests().yaml("docker-compose.yml").first)
        let test = try #require(compose[path: "services.audit-sentinel.healthcheck.test"]?.arrayValue).compactMap(\.stringValue)
        #expect(test.first == "CMD-SHELL")
        let command = try #require(test.last)
        #expect(command.contains("127.0.0.1:9464"))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command.replacingOccurrences(of: "127.0.0.1:9464", with: "127.0.0.1:\(port)")]
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = ServiceTests.binary.deletingLastPathComponent().path + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        process.environment = environment
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    // MARK: Monitoring: Prometheus rules and the Grafana dashboard

    static let rulesFile = "deploy/prometheus/audit-sentinel-rules.yml"
    static let dashboardFile = "deploy/grafana/audit-sentinel-dashboard.json"

    /// Debian's `prometheus` package (scripts/deps.sh installs it) carries promtool.
    static func promtool() throws -> String {
        let found = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) }
        return try #require(found, "promtool is missing: run `make deps` (scripts/deps.sh installs Debian's prometheus package)")
    }

    /// Runs a tool; its status and what it printed (both streams).
    static func run(_ executable: String, _ arguments: [String], input: [UInt8]? = nil, in directory: URL = packageRoot) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input)) }
        try stdin.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    /// Every metric name the alerting rules and the dashboard query.
    static func monitoringMetricNames() throws -> [String: Set<String>] {
        var names: [String: Set<String>] = [:]
        for file in [rulesFile, dashboardFile] {
            let text = try String(contentsOf: packageRoot.appendingPathComponent(file), encoding: .utf8)
            names[file] = Set(text.matches(of: /\b(?:audit_sentinel|process)_[a-z0-9_]+/).map { String($0.output) })
        }
        return names
    }

    /// The live exposition holds every metric the rules and the dashboard use, and passes `promtool check
    /// metrics` (Prometheus's own linter: names, units, help, types). Called by ServiceTests with a running
    /// service's /metrics.
    static func checkMonitoring(againstLiveMetrics body: String) throws {
        let exposed = Set(body.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap { line in
            line.split(whereSeparator: { $0 == "{" || $0 == " " }).first.map(String.init)
        })
        for (file, names) in try monitoringMetricNames() {
            #expect(names.count >= 10, "\(file) uses \(names.count) metrics")
            for name in names.sorted() { #expect(exposed.contains(name), "\(file) uses \(name), which /metrics does not expose") }
        }
        let lint = try run(try promtool(), ["check", "metrics"], input: Array(body.utf8))
        #expect(lint.status == 0, "promtool check metrics:\n\(lint.output)")
    }

    @Test func prometheusRulesPassPromtoolAndTheirOwnUnitTests() throws {
        let promtool = try Self.promtool()
        let folder = packageRoot.appendingPathComponent("deploy/prometheus")
        let check = try Self.run(promtool, ["check", "rules", "audit-sentinel-rules.yml"], in: folder)
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.contains("SUCCESS: 10 rules found"), "\(check.output)")
        // Each alert fires on the series it is written for, with its annotations rendered, and not on healthy ones.
        let unit = try Self.run(promtool, ["test", "rules", "audit-sentinel-rules.test.yml"], in: folder)
        #expect(unit.status == 0, "\(unit.output)")
        // Every alert has a severity, a summary and a description.
        let groups = try #require(try yaml(Self.rulesFile).first?[path: "groups"]?.arrayValue)
        let rules = groups.flatMap { $0[path: "rules"]?.arrayValue ?? [] }
        #expect(rules.count == 10)
        for rule in rules {
            let name = rule[path: "alert"]?.stringValue ?? "?"
            #expect(["warning", "critical"].contains(rule[path: "labels.severity"]?.stringValue ?? ""), "\(name)")
            #expect(rule[path: "annotations.summary"]?.stringValue?.isEmpty == false, "\(name)")
            #expect(rule[path: "annotations.description"]?.stringValue?.isEmpty == false, "\(name)")
        }
    }

    @Test func grafanaDashboardIsWellFormed() throws {
        let data = try Data(contentsOf: packageRoot.appendingPathComponent(Self.dashboardFile))
        let dashboard = try #require(try JSONValue.parse(Array(data)).objectValue)
        #expect(dashboard["uid"]?.stringValue == "audit-sentinel")
        let panels = try #require(dashboard["panels"]?.arrayValue)
        let ids = panels.compactMap { $0[path: "id"].flatMap(integer) }
        #expect(ids.count == panels.count && Set(ids).count == ids.count, "every panel has a unique id")
        let variables = (dashboard["templating"]?[path: "list"]?.arrayValue ?? []).compactMap { $0[path: "name"]?.stringValue }
        #expect(variables == ["datasource", "job", "instance"])
        var queried = 0
        for panel in panels where panel[path: "type"]?.stringValue != "row" {
            let title = panel[path: "title"]?.stringValue ?? "?"
            #expect(panel[path: "datasource.uid"]?.stringValue == "${datasource}", "\(title): the data source is the variable")
            let targets = panel[path: "targets"]?.arrayValue ?? []
            #expect(!targets.isEmpty, "\(title) has no query")
            for target in targets {
                let expression = try #require(target[path: "expr"]?.stringValue, "\(title)")
                #expect(expression.contains("$instance") || expression.contains("$job"), "\(title): \(expression) ignores the instance filter")
                queried += 1
            }
            // Panels stay inside the 24-column grid.
            let x = panel[path: "gridPos.x"].flatMap(integer) ?? -1, w = panel[path: "gridPos.w"].flatMap(integer) ?? 0
            #expect(x >= 0 && w > 0 && x + w <= 24, "\(title)")
        }
        #expect(queried >= 30)
    }

    @Test func dockerfileIsMultiStageWithLibrdkafkaAndASmallRuntime() throws {
        let text = try String(contentsOf: packageRoot.appendingPathComponent("Dockerfile"), encoding: .utf8)
        let stages = text.split(separator: "\n").filter { $0.hasPrefix("FROM ") }
        #expect(stages.count == 2)
        #expect(stages.first?.contains("swift:") == true && stages.first?.contains(" AS build") == true)
        #expect(stages.last?.contains("-slim") == true)
        // Both stages install the librdkafka this machine's suite ran with (Debian's package version).
        let pinned = try #require(text.firstMatch(of: /ARG LIBRDKAFKA_DEBIAN_VERSION=(\S+)/)?.output.1).description
        #expect(text.contains("\"librdkafka-dev=${LIBRDKAFKA_DEBIAN_VERSION}\""))
        #expect(text.components(separatedBy: "\"librdkafka1=${LIBRDKAFKA_DEBIAN_VERSION}\"").count == 3, "runtime and build stage")
        #expect(text.components(separatedBy: "ARG LIBRDKAFKA_DEBIAN_VERSION\n").count == 3, "each stage takes the global ARG")
        let installed = try Self.run("/usr/bin/dpkg-query", ["-W", "-f", "${Version}", "librdkafka1"])
        #expect(installed.status == 0 && installed.output == pinned, "the image pins librdkafka \(pinned); the suite ran with \(installed.output)")
        #expect(text.contains("COPY --from=build"))
        #expect(text.contains("USER 10001"))
        #expect(text.contains("ENTRYPOINT [\"audit-sentinel\"]"))
        #expect(text.contains("zlib1g-dev"), "CZlib builds against zlib")
        // Linked with --static-swift-stdlib, the binary still loads libcurl (FoundationNetworking, imported by
        // FlyingFox) and libstdc++: the runtime stage installs them, the build stage libcurl's development files.
        #expect(text.contains("--static-swift-stdlib") && text.contains("libcurl4-openssl-dev"))
        #expect(stages.count == 2 && text.components(separatedBy: stages[1]).last.map { $0.contains(" libcurl4 ") && $0.contains(" libstdc++6 ") } == true)
        #expect(text.contains("HEALTHCHECK") && text.contains("\"healthcheck\""))
        let variables = text.split(separator: "\n").flatMap { $0.split(separator: " ") }.compactMap { word -> String? in
            guard word.hasPrefix("AUDIT_SENTINEL_"), let equals = word.firstIndex(of: "=") else { return nil }
            return String(word[..<equals])
        }
        #expect(variables.count >= 3)
        try checkEnvironment(variables, in: "Dockerfile")
    }

    @Test func kubernetesManifestsAgreeWithEachOtherAndWithTheConfiguration() throws {
        let deployment = try #require(try yaml("deploy/kubernetes/deployment.yaml").first?.objectValue)
        let configMap = try #require(try yaml("deploy/kubernetes/configmap.yaml").first?.objectValue)
        let service = try #require(try yaml("deploy/kubernetes/service.yaml").first?.objectValue)
        let budget = try #require(try yaml("deploy/kubernetes/poddisruptionbudget.yaml").first?.objectValue)
        #expect(deployment["kind"]?.stringValue == "Deployment")
        #expect(configMap["kind"]?.stringValue == "ConfigMap")
        #expect(service["kind"]?.stringValue == "Service")
        #expect(budget["kind"]?.stringValue == "PodDisruptionBudget")

        let labels = try #require(deployment[path: "spec.template.metadata.labels"]?.objectValue)
        #expect(deployment[path: "spec.selector.matchLabels"]?.objectValue == labels)
        #expect(service[path: "spec.selector"]?.objectValue == labels)
        #expect(budget[path: "spec.selector.matchLabels"]?.objectValue == labels)

        let container = try #require(deployment[path: "spec.template.spec.containers"]?.arrayValue?.first?.objectValue)
        let environment = (container["env"]?.arrayValue ?? []).compactMap(\.objectValue).reduce(into: [String: String]()) {
            $0[$1["name"]?.stringValue ?? ""] = $1["value"]?.stringValue
        }
        #expect(environment.keys.filter { $0.hasPrefix(SettingsLoader.environmentPrefix) }.count >= 3)
        try checkEnvironment(Array(environment.keys), in: "deployment.yaml")
        #expect(container[path: "readinessProbe.httpGet.path"]?.stringValue == "/readyz")
        #expect(container[path: "livenessProbe.httpGet.path"]?.stringValue == "/healthz")
        #expect(container[path: "startupProbe.httpGet.path"]?.stringValue == "/healthz")
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            #expect(integer(container[path: "\(probe).timeoutSeconds"]).map { $0 >= 2 } == true, "\(probe) timeout")
        }
        // The Restricted Pod Security Standard (pod and container), and no API token: it never calls the API.
        let pod = try #require(deployment[path: "spec.template.spec"]?.objectValue)
        #expect(pod["automountServiceAccountToken"] == .bool(false))
        #expect(pod["securityContext"]?[path: "runAsNonRoot"] == .bool(true))
        #expect(pod["securityContext"]?[path: "seccompProfile.type"]?.stringValue == "RuntimeDefault")
        #expect(container[path: "securityContext.allowPrivilegeEscalation"] == .bool(false))
        #expect(container[path: "securityContext.capabilities.drop"]?.arrayValue?.compactMap(\.stringValue) == ["ALL"])
        #expect(container[path: "securityContext.readOnlyRootFilesystem"] == .bool(true))
        let port = try #require(container["ports"]?.arrayValue?.first?.objectValue)
        #expect(port["name"]?.stringValue == "metrics")
        #expect(service[path: "spec.ports"]?.arrayValue?.first?.objectValue?["targetPort"]?.stringValue == "metrics")

        // The ConfigMap's file, mounted where AUDIT_SENTINEL_CONFIG points, loads with the Deployment's
        // environment, and its endpoint listens on the port the probes use.
        let mountPath = try #require((container["volumeMounts"]?.arrayValue ?? []).compactMap(\.objectValue)
            .first { $0["name"]?.stringValue == "config" }?["mountPath"]?.stringValue)
        let fileName = try #require(configMap["data"]?.objectValue?.keys.first)
        #expect(environment["AUDIT_SENTINEL_CONFIG"] == mountPath + "/" + fileName)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("configmap-\(UUID().uuidString).toml").path
        try #require(configMap["data"]?.objectValue?[fileName]?.stringValue).write(toFile: file, atomically: true, encoding: .utf8)
        let settings = try SettingsLoader(file: file, environment: environment.filter { $0.key != "AUDIT_SENTINEL_CONFIG" }, overrides: []).settings()
        #expect(HTTPEndpoint.parseListen(settings.httpListen)?.port == integer(port["containerPort"]))
        #expect(settings.kafkaCommon["security.protocol"] == "ssl")

        // A graceful stop fits in the pod's termination grace period.
        let grace = try #require(integer(deployment[path: "spec.template.spec.terminationGracePeriodSeconds"]))
        #expect(settings.shutdownTimeoutMilliseconds < Int64(grace) * 1000)
    }

    func integer(_ value: JSONValue?) -> Int? {
        if case .number(let number)? = value { return number.intValue.map(Int.init) }
        return nil
    }
}
