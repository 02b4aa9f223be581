import AuditEvents
import Detection
import Foundation
import TestSupport
import Testing

/// Builds raw audit events for rule tests: a plain allowed request, changed at dotted paths.
func auditEvent(_ changes: KeyValuePairs<String, JSONValue> = [:], removing: [String] = []) -> [UInt8] {
    let base: JSONValue = [
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "00000000-test", "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/default/pods", "verb": "get",
        "user": ["username": "alice@example.com", "uid": "u-1", "groups": ["oidc:developers", "system:authenticated"]],
        "sourceIPs": ["203.0.113.5"], "userAgent": "curl/8.5.0",
        "objectRef": ["resource": "pods", "namespace": "default", "apiVersion": "v1"],
        "responseStatus": ["metadata": [:], "code": 200],
        "requestReceivedTimestamp": "2026-11-20T09:00:00.000000Z", "stageTimestamp": "2026-11-20T09:00:00.002000Z",
        "annotations": ["authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""],
    ]
    var event = base.objectValue!
    for path in removing { _ = remove(path, from: &event) }
    for (path, value) in changes { set(value, at: path, in: &event) }
    return Array(JSONValue.object(event).serialized().utf8)
}

private func set(_ value: JSONValue, at path: String, in object: inout JSONObject) {
    // Annotation keys contain dots: `annotations.<key>` sets one key.
    if path.hasPrefix("annotations.") {
        var annotations = object["annotations"]?.objectValue ?? JSONObject()
        annotations[String(path.dropFirst("annotations.".count))] = value
        object["annotations"] = .object(annotations)
        return
    }
    let parts = path.split(separator: ".", maxSplits: 1).map(String.init)
    if parts.count == 1 {
        object[parts[0]] = value
        return
    }
    var child = object[parts[0]]?.objectValue ?? JSONObject()
    set(value, at: parts[1], in: &child)
    object[parts[0]] = .object(child)
}

private func remove(_ path: String, from object: inout JSONObject) -> Bool {
    let parts = path.split(separator: ".", maxSplits: 1).map(String.init)
    if parts.count == 1 { return object.removeValue(forKey: parts[0]) != nil }
    guard var child = object[parts[0]]?.objectValue else { return false }
    let removed = remove(parts[1], from: &child)
    object[parts[0]] = .object(child)
    return removed
}

/// Whether a rule alerts on the record: its query matches and, for `new_terms`, a term is new.
func alerts(_ rule: CompiledRule, _ record: [UInt8], history: InMemoryNewTermsHistory = InMemoryNewTermsHistory()) -> Bool {
    var result = false
    record.withUnsafeBytes { buffer in
        AuditRecordDecoder().decode(buffer, ingestTime: 1_763_629_200_000) { decoded in
            guard case .success(let event) = decoded else { return }
            // The flat program and the tree evaluator agree.
            let document: any KQLDocument = event
            #expect(rule.matches(document) == rule.matches(event), "\(rule.name): program and tree disagree")
            guard rule.matches(event) else { return }
            if rule.rule.type == .newTerms {
                result = !rule.newTerms(event, at: rule.eventTime(event) ?? 0, history: history).isEmpty
            } else {
                result = true
            }
        }
    }
    return result
}

/// A pod spec for requestObject-based rules.
func pod(image: String = "registry.example.com/app:1.0", securityContext: JSONValue = [:], spec extra: KeyValuePairs<String, JSONValue> = [:]) -> JSONValue {
    let containers: JSONValue = [["name": "app", "image": .string(image), "securityContext": securityContext]]
    var spec = JSONObject()
    spec["containers"] = containers
    for (key, value) in extra { spec[key] = value }
    return ["kind": "Pod", "apiVersion": "v1", "metadata": ["name": "p"], "spec": .object(spec)]
}

/// Elastic's own Kubernetes rules: every KQL rule loads, compiles, and tells a matching event from a near miss.
@Suite("Elastic detection rules", .enabled(if: SharedTestData.rulesAvailable, SharedTestData.rulesSkipReason))
struct ElasticRulesTests {
    /// For each KQL rule: an event that must alert, and a near miss (one thing changed) that must not.
    static let cases: [String: (positive: [UInt8], negative: [UInt8])] = {
        let sa = "system:serviceaccount:payments:checkout-api"
        let forbid: JSONValue = "forbid"
        let created: KeyValuePairs<String, JSONValue> = ["verb": "create", "objectRef.resource": "pods"]
        _ = created
        return [
            "credential_access_get_secrets_access.toml": (
                auditEvent(["objectRef.resource": "secrets", "verb": "get"]),
                auditEvent(["objectRef.resource": "secrets", "verb": "get", "userAgent": "kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/$Format"])),
            "credential_access_kubernetes_secret_access_scripting_http_clients.toml": (
                auditEvent(["objectRef.resource": "secrets", "verb": "list", "userAgent": "python-requests/2.32.3"]),
                auditEvent(["objectRef.resource": "secrets", "verb": "list", "userAgent": "kubectl/v1.31.2"])),
            "credential_access_kubernetes_secret_read_by_node_or_pod_service_account.toml": (
                auditEvent(["objectRef.resource": "secrets", "user.username": .string(sa), "user.groups": ["system:serviceaccounts", "system:serviceaccounts:payments"]]),
                auditEvent(["objectRef.resource": "secrets", "user.username": .string(sa), "user.groups": ["system:serviceaccounts", "system:serviceaccounts:kyverno"]])),
            "credential_access_kubernetes_secrets_list_cluster_and_sensitive_namespaces.toml": (
                auditEvent(["verb": "list", "objectRef.resource": "secrets", "requestURI": "/api/v1/secrets?limit=500"]),
                auditEvent(["verb": "list", "objectRef.resource": "secrets", "requestURI": "/api/v1/namespaces/payments/secrets"])),
            "credential_access_kubernetes_service_account_token_created_via_tokenrequest.toml": (
                auditEvent(["verb": "create", "objectRef.resource": "serviceaccounts", "objectRef.subresource": "token"]),
                auditEvent(["verb": "create", "objectRef.resource": "serviceaccounts", "objectRef.subresource": "token", "user.username": "system:kube-controller-manager"])),
            "discovery_denied_service_account_request.toml": (
                auditEvent(["user.username": .string(sa), "annotations.authorization.k8s.io/decision": forbid]),
                auditEvent(["user.username": .string(sa), "annotations.authorization.k8s.io/decision": forbid, "userAgent": "Prometheus/2.53.0"])),
            "discovery_suspicious_self_subject_review.toml": (
                auditEvent(["verb": "create", "objectRef.resource": "selfsubjectrulesreviews", "user.username": .string(sa)]),
                auditEvent(["verb": "create", "objectRef.resource": "selfsubjectrulesreviews"])),
            "execution_forbidden_request_from_unsual_user_agent.toml": (
                auditEvent(["annotations.authorization.k8s.io/decision": forbid]),
                auditEvent(["annotations.authorization.k8s.io/decision": forbid, "stage": "ResponseStarted"])),
            "execution_unusual_request_response_by_user_agent.toml": (
                auditEvent(["userAgent": "kubelet/v1.31.2 (linux/amd64)", "objectRef.resource": "deployments", "verb": "create"]),
                auditEvent(["userAgent": "kubelet/v1.31.2 (linux/amd64)", "objectRef.resource": "deployments", "verb": "get"])),
            "impact_kubernetes_coredns_or_kube_dns_configuration_modified.toml": (
                auditEvent(["objectRef.resource": "configmaps", "objectRef.name": "coredns", "objectRef.namespace": "kube-system", "verb": "patch"]),
                auditEvent(["objectRef.resource": "configmaps", "objectRef.name": "coredns", "objectRef.namespace": "kube-system", "verb": "patch",
                            "user.username": "system:serviceaccount:kube-system:coredns"])),
            "initial_access_anonymous_request_authorized.toml": (
                auditEvent(["user.username": "system:anonymous", "requestURI": "/api/v1/namespaces/default/secrets"]),
                auditEvent(["user.username": "system:anonymous", "requestURI": "/healthz?verbose"])),
            "persistence_cluster_admin_rolebinding_created.toml": (
                auditEvent(["verb": "create", "objectRef.resource": "clusterrolebindings", "level": "RequestResponse",
                            "requestObject": ["roleRef": ["kind": "ClusterRole", "name": "cluster-admin"]]]),
                auditEvent(["verb": "create", "objectRef.resource": "clusterrolebindings", "level": "RequestResponse",
                            "requestObject": ["roleRef": ["kind": "ClusterRole", "name": "view"]]])),
            "persistence_exposed_service_created_with_type_nodeport.toml": (
                auditEvent(["verb": "create", "objectRef.resource": "services", "requestObject": ["spec": ["type": "NodePort"]]]),
                auditEvent(["verb": "create", "objectRef.resource": "services", "requestObject": ["spec": ["type": "ClusterIP"]]])),
            "persistence_kubernetes_admission_webhook_created_or_modified.toml": (
                auditEvent(["verb": "create", "objectRef.resource": "mutatingwebhookconfigurations", "objectRef.name": "inject-everything"]),
                auditEvent(["verb": "create", "objectRef.resource": "mutatingwebhookconfigurations", "objectRef.name": "gke-managed-hook"])),
            "persistence_kubernetes_client_certificate_signing_request_created_or_approved.toml": (
                auditEvent(["verb": "create", "objectRef.resource": "certificatesigningrequests"]),
                auditEvent(["verb": "create", "objectRef.resource": "certificatesigningrequests", "user.username": "system:node:ip-10-0-1-7"])),
            "persistence_kubernetes_eks_aws_auth_configmap_modified.toml": (
                auditEvent(["verb": "update", "objectRef.resource": "configmaps", "objectRef.name": "aws-auth", "objectRef.namespace": "kube-system"]),
                auditEvent(["verb": "update", "objectRef.resource": "configmaps", "objectRef.name": "aws-auth", "objectRef.namespace": "kube-system",
                            "user.username": "eks:kms-storage-migrator"])),
            "persistence_service_account_bound_to_clusterrole.toml": (
                auditEvent(["verb": "create", "objectRef.resource": "clusterrolebindings", "requestObject": ["spec": ["serviceAccountName": "builder"]]]),
                auditEvent(["verb": "create", "objectRef.resource": "clusterrolebindings", "requestObject": ["subjects": [["kind": "User", "name": "bob"]]]])),
            "privilege_escalation_api_proxy_to_node.toml": (
                auditEvent(["objectRef.resource": "nodes", "objectRef.subresource": "proxy", "requestURI": "/api/v1/nodes/node-1/proxy/run/default/p/app"]),
                auditEvent(["objectRef.resource": "nodes", "objectRef.subresource": "proxy", "requestURI": "/api/v1/nodes/node-1/proxy/metrics/cadvisor"])),
            "privilege_escalation_container_created_with_excessive_linux_capabilities.toml": (
                auditEvent(["verb": "create", "requestObject": pod(securityContext: ["capabilities": ["add": ["SYS_ADMIN"]]])]),
                auditEvent(["verb": "create", "requestObject": pod(securityContext: ["capabilities": ["add": ["CHOWN"]]])])),
            "privilege_escalation_kubernetes_api_request_impersonating_privileged_identity.toml": (
                auditEvent(["impersonatedUser": ["username": "system:admin"]]),
                auditEvent(["impersonatedUser": ["username": "bob@example.com"]])),
            "privilege_escalation_kubernetes_ephemeral_container_added_to_pod.toml": (
                auditEvent(["verb": "patch", "objectRef.subresource": "ephemeralcontainers"]),
                auditEvent(["verb": "patch", "objectRef.subresource": "exec"])),
            "privilege_escalation_pod_created_with_hostipc.toml": (
                auditEvent(["verb": "create", "requestObject": pod(spec: ["hostIPC": true])]),
                auditEvent(["verb": "create", "requestObject": pod(spec: ["hostIPC": false])])),
            "privilege_escalation_pod_created_with_hostnetwork.toml": (
                auditEvent(["verb": "create", "requestObject": pod(spec: ["hostNetwork": true])]),
                auditEvent(["verb": "create", "objectRef.namespace": "kube-system", "requestObject": pod(spec: ["hostNetwork": true])])),
            "privilege_escalation_pod_created_with_hostpid.toml": (
                auditEvent(["verb": "create", "requestObject": pod(spec: ["hostPID": true])]),
                auditEvent(["verb": "create", "requestObject": pod(image: "ghcr.io/kubereboot/kured:1.15.0", spec: ["hostPID": true])])),
            "privilege_escalation_pod_created_with_sensitive_hostpath_volume.toml": (
                auditEvent(["verb": "create", "requestObject": pod(spec: ["volumes": [["name": "sock", "hostPath": ["path": "/var/run/docker.sock"]]]])]),
                auditEvent(["verb": "create", "requestObject": pod(spec: ["volumes": [["name": "data", "hostPath": ["path": "/data/cache"]]]])])),
            "privilege_escalation_privileged_pod_created.toml": (
                auditEvent(["verb": "create", "requestObject": pod(securityContext: ["privileged": true])]),
                auditEvent(["verb": "create", "requestObject": pod(securityContext: ["privileged": false])])),
            "privilege_escalation_sensitive_workload_modification_by_user_agent.toml": (
                auditEvent(["verb": "patch", "objectRef.resource": "daemonsets"]),
                auditEvent(["verb": "patch", "objectRef.resource": "daemonsets", "user.groups": ["system:masters", "system:authenticated"]])),
            "privilege_escalation_service_account_rbac_write_operation.toml": (
                auditEvent(["verb": "create", "objectRef.resource": "clusterrolebindings", "user.username": .string(sa)]),
                auditEvent(["verb": "create", "objectRef.resource": "clusterrolebindings", "user.username": "system:serviceaccount:kube-system:generic-garbage-collector"])),
            "privilege_escalation_suspicious_assignment_of_controller_service_account.toml": (
                auditEvent(["verb": "create", "objectRef.namespace": "kube-system", "requestObject": pod(spec: ["serviceAccountName": "replicaset-controller"])]),
                auditEvent(["verb": "create", "objectRef.namespace": "kube-system", "requestObject": pod(spec: ["serviceAccountName": "coredns"])])),
        ]
    }()

    static func ruleFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: SharedTestData.rules.path).filter { $0.hasSuffix(".toml") }.sorted()
    }

    @Test func everyKQLRuleHasAPositiveAndANegativeEvent() throws {
        var kql = 0
        for name in try Self.ruleFiles() {
            let path = SharedTestData.rules.appendingPathComponent(name).path
            let text = try String(contentsOfFile: path, encoding: .utf8)
            guard text.contains(#"language = "kuery""#) else { continue }
            kql += 1
            let rule = try CompiledRule.load(file: path)
            let events = try #require(Self.cases[name], "no events for \(name)")
            #expect(alerts(rule, events.positive), "\(name) misses its positive event")
            #expect(!alerts(rule, events.negative), "\(name) alerts on its near miss")
            // The prefilter never rejects the positive event.
            if let prefilter = rule.prefilter {
                #expect(events.positive.withUnsafeBytes { prefilter.mightMatch($0) }, "\(name): prefilter rejects a match")
            }
        }
        #expect(kql == 29)
        #expect(Self.cases.count == 29)
    }

    /// The five EQL rules load, the sequence included (EQLEvaluatorTests runs them on events), and so do
    /// the 11 ES|QL rules (the pipeline tests run them), five of them aggregating on Elastic's schedule.
    @Test func eqlAndESQLRulesLoad() throws {
        var eql = 0
        var sequences = 0
        var esql = 0
        var aggregating = 0
        for name in try Self.ruleFiles() {
            let path = SharedTestData.rules.appendingPathComponent(name).path
            let text = try String(contentsOfFile: path, encoding: .utf8)
            guard !text.contains(#"language = "kuery""#) else { continue }
            let rule = try CompiledRule.load(file: path)
            if text.contains(#"language = "eql""#) {
                #expect(rule.rule.type == .eql && rule.query == nil)
                if rule.sequence != nil { sequences += 1 }
                eql += 1
            } else {
                let program = try #require(rule.esql, "\(name) is ES|QL")
                if program.isAggregating { aggregating += 1 }
                esql += 1
            }
        }
        #expect(eql == 5)
        #expect(sequences == 1)
        #expect(esql == 11)
        #expect(aggregating == 5)
    }

    @Test func upstreamSeedRuleIsANewTermsRuleWithTheSameID() throws {
        let upstream = try CompiledRule.load(file: SharedTestData.rules.appendingPathComponent("discovery_denied_service_account_request.toml").path)
        let shipped = try CompiledRule.load(file: packageRoot.appendingPathComponent("Config/rules/kubernetes_denied_service_account_request.toml").path)
        #expect(upstream.id == shipped.id)
        #expect(upstream.rule.type == .newTerms)
        #expect(upstream.rule.newTerms?.fields == ["user_agent.original"])
        #expect(upstream.rule.newTerms?.historyWindowMilliseconds == Int64(7 * 86_400_000))

        // The second request with the same user agent within seven days is not new; another agent is.
        let history = InMemoryNewTermsHistory()
        let denied: KeyValuePairs<String, JSONValue> = ["user.username": "system:serviceaccount:ci:deployer", "annotations.authorization.k8s.io/decision": "forbid"]
        #expect(alerts(upstream, auditEvent(denied), history: history))
        #expect(!alerts(upstream, auditEvent(denied), history: history))
        #expect(alerts(upstream, auditEvent(["user.username": "system:serviceaccount:ci:deployer", "annotations.authorization.k8s.io/decision": "forbid",
                                              "userAgent": "python-requests/2.32.3"]), history: history))
        #expect(history.count == 2)
    }
}

/// The shipped seed rule, exactly as the user gave it.
@Suite("Shipped rules")
struct ShippedRuleTests {
    static let seedPath = packageRoot.appendingPathComponent("Config/rules/kubernetes_denied_service_account_request.toml").path

    @Test func seedRuleLoadsWithEveryField() throws {
        let rule = try CompiledRule.load(file: Self.seedPath)
        #expect(rule.id == "63c056a0-339a-11ed-a261-0242ac120002")
        #expect(rule.name == "Kubernetes Denied Service Account Request")
        #expect(rule.rule.type == .query)
        #expect(rule.rule.severity == "medium")
        #expect(rule.rule.riskScore == 47)
        #expect(rule.rule.timestampOverride == "event.ingested")
        #expect(rule.rule.tags == ["Data Source: Kubernetes", "Tactic: Discovery"])
        #expect(rule.rule.references.count == 2)
        #expect(rule.rule.author == ["Elastic"])
        #expect(rule.rule.license == "Elastic License v2")
        #expect(rule.rule.threat.first?.tactic.id == "TA0007")
        #expect(rule.rule.threat.first?.technique.first?.id == "T1613")
        #expect(rule.rule.creationDate == "2022/09/13")
        #expect(rule.rule.falsePositives.count == 1)
        #expect(rule.prefilter?.requirements.count == 2)
    }

    @Test func seedRuleMatchesDeniedServiceAccountsOnly() throws {
        let rule = try CompiledRule.load(file: Self.seedPath)
        #expect(alerts(rule, auditEvent(["user.username": "system:serviceaccount:payments:api", "annotations.authorization.k8s.io/decision": "forbid"])))
        #expect(!alerts(rule, auditEvent(["user.username": "system:serviceaccount:payments:api"])))
        #expect(!alerts(rule, auditEvent(["annotations.authorization.k8s.io/decision": "forbid"])))
        // The plural group-like name is not a service account.
        #expect(!alerts(rule, auditEvent(["user.username": "system:serviceaccounts:payments", "annotations.authorization.k8s.io/decision": "forbid"])))
        // An unknown decision, or none, is not a denial.
        #expect(!alerts(rule, auditEvent(["user.username": "system:serviceaccount:a:b"], removing: ["annotations"])))
    }

    @Test func malformedAndIncompleteRulesFailEarlyWithFileAndLine() throws {
        let broken = "[rule]\nname = \"x\"\nquery = '''\nunterminated"
        let error = #expect(throws: RuleLoadError.self) { try DetectionRule.parse(toml: broken, file: "broken.toml") }
        #expect(error?.line != nil)
        #expect(error?.description.hasPrefix("broken.toml:") == true)

        let missing = "[rule]\nname = \"No ID\"\ntype = \"query\"\nlanguage = \"kuery\"\nquery = \"a:b\""
        let missingError = #expect(throws: RuleLoadError.self) { try DetectionRule.parse(toml: missing, file: "missing.toml") }
        #expect(missingError?.message.contains("rule_id") == true || missingError?.message.contains("description") == true)
        #expect(missingError?.ruleName == "No ID")

        var text = try String(contentsOfFile: Self.seedPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "kubernetes.audit.annotations.authorization_k8s_io/decision: \"forbid\"", with: "kubernetes.audit.annotations.authorization_k8s_io/decision: (\"forbid\"")
        let queryError = #expect(throws: RuleLoadError.self) { try CompiledRule(DetectionRule.parse(toml: text, file: "seed.toml")) }
        #expect(queryError?.message.contains("KQL syntax error") == true)
    }

    @Test func aRuleSetReportsEveryFailingFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rules-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.copyItem(atPath: Self.seedPath, toPath: directory.appendingPathComponent("seed.toml").path)
        try "[rule]\nname = \"EQL\"\ntype = \"eql\"\nlanguage = \"eql\"\n".write(to: directory.appendingPathComponent("eql.toml"), atomically: true, encoding: .utf8)
        try "not toml [".write(to: directory.appendingPathComponent("junk.toml"), atomically: true, encoding: .utf8)
        let error = #expect(throws: RuleSetError.self) { try RuleSet.load(directory: directory.path) }
        #expect(error?.failures.count == 2)
        try FileManager.default.removeItem(at: directory.appendingPathComponent("eql.toml"))
        try FileManager.default.removeItem(at: directory.appendingPathComponent("junk.toml"))
        #expect(try RuleSet.load(directory: directory.path).rules.count == 1)
    }
}

@Suite("New terms history")
struct NewTermsHistoryTests {
    @Test func combinationsAreNewOutsideTheWindowOnly() throws {
        let history = InMemoryNewTermsHistory()
        let key = TermsKey(["curl/8.5.0"])
        #expect(history.lastSeen(key) == nil)
        history.record(key, at: 1000)
        #expect(history.lastSeen(key) == 1000)
        history.record(key, at: 500)
        #expect(history.lastSeen(key) == 1000, "the latest sighting wins")
        history.evict(before: 2000)
        #expect(history.count == 0)
    }

    @Test func historyIsBounded() {
        let history = InMemoryNewTermsHistory(capacity: 100)
        for index in 0..<1000 { history.record(TermsKey(["agent-\(index)"]), at: Int64(index)) }
        #expect(history.count <= 100)
        #expect(history.lastSeen(TermsKey(["agent-999"])) == 999, "the newest survive")
        #expect(history.lastSeen(TermsKey(["agent-0"])) == nil, "the oldest go first")
    }
}

