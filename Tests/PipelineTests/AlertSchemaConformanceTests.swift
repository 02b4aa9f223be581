// Our alert documents held against Kibana's alert-as-data field maps and OCSF 1.1's Detection Finding.
import AuditEvents
import Detection
import Foundation
import Pipeline
import TestSupport
import Testing

/// The fields Kibana's maps mark `required: true`, written out here from Kibana's public sources
/// (github.com/elastic/kibana; read for this list, nothing copied):
/// - `packages/kbn-alerts-as-data-utils/src/field_maps/alert_field_map.ts` (commit 0e99eae7, the common
///   alert map every rule type's alerts share);
/// - `x-pack/plugins/security_solution/common/field_maps/8.0.0/alerts.ts` (commit 4207b303) and
///   `…/8.0.0/rules.ts` (commit e677d982), the security solution's alert and rule maps that later
///   versions (8.4 new terms, 8.6, 8.13) extend with optional fields only.
/// `original_event.*` fields are required there as copies of the source's `event.*`: they must be present
/// whenever the source event has them. The `threat.*` fields are required for rules that have a threat.
enum KibanaAlertFields {
    static let common = [
        "@timestamp", "kibana.space_ids", "kibana.alert.uuid", "kibana.alert.instance.id", "kibana.alert.status",
        "kibana.alert.rule.uuid", "kibana.alert.rule.name", "kibana.alert.rule.category", "kibana.alert.rule.consumer",
        "kibana.alert.rule.producer", "kibana.alert.rule.revision", "kibana.alert.rule.rule_type_id",
    ]
    static let security = [
        "kibana.alert.ancestors", "kibana.alert.ancestors.depth", "kibana.alert.ancestors.id", "kibana.alert.ancestors.index",
        "kibana.alert.ancestors.type", "kibana.alert.depth", "kibana.alert.original_time",
        "kibana.alert.rule.false_positives", "kibana.alert.rule.max_signals",
    ]
    static let originalEvent = ["action", "category", "created", "dataset", "id", "ingested", "kind", "module", "original",
                                "outcome", "provider", "sequence", "type"]
    static let threat = [
        "kibana.alert.rule.threat.framework", "kibana.alert.rule.threat.tactic.id", "kibana.alert.rule.threat.tactic.name",
        "kibana.alert.rule.threat.tactic.reference", "kibana.alert.rule.threat.technique.id",
        "kibana.alert.rule.threat.technique.name", "kibana.alert.rule.threat.technique.reference",
    ]
    /// What the security solution writes beside them, and Kibana's suppression fields (every version).
    static let written = [
        "kibana.alert.rule.rule_id", "kibana.alert.rule.type", "kibana.alert.rule.version", "kibana.alert.rule.from",
        "kibana.alert.rule.to", "kibana.alert.rule.interval", "kibana.alert.rule.parameters", "kibana.alert.rule.references",
        "kibana.alert.rule.description", "kibana.alert.rule.severity", "kibana.alert.rule.risk_score", "kibana.alert.severity",
        "kibana.alert.risk_score", "kibana.alert.reason", "kibana.alert.workflow_status", "kibana.alert.suppression.terms.field",
        "kibana.alert.suppression.terms.value", "kibana.alert.suppression.start", "kibana.alert.suppression.end",
        "kibana.alert.suppression.docs_count",
    ]
}

@Suite("Alert schemas: Kibana's required fields, OCSF 1.1")
struct AlertSchemaConformanceTests {
    let queryRule = try! DetectionRule.load(file: packageRoot.appendingPathComponent("Config/rules/kubernetes_denied_service_account_request.toml").path)

    /// A new_terms rule of our own, with the descriptive fields Kibana carries into alerts.
    func newTermsRule() throws -> DetectionRule {
        try DetectionRule.parse(toml: """
            [rule]
            author = ["Audit Sentinel"]
            description = "A user reads secrets from a namespace it never read before."
            false_positives = ["A new deployment pipeline."]
            from = "now-9m"
            interval = "3m"
            max_signals = 50
            version = 4
            note = "## Triage\\nCheck the user's recent role bindings."
            index = ["logs-kubernetes.audit_logs-*"]
            language = "kuery"
            license = "Elastic License v2"
            name = "First secret read in a namespace"
            risk_score = 73
            rule_id = "5f0d2c1e-0000-4000-8000-000000000001"
            severity = "high"
            tags = ["Data Source: Kubernetes"]
            timestamp_override = "event.ingested"
            type = "new_terms"
            query = "kubernetes.audit.objectRef.resource:secrets"

            [[rule.threat]]
            framework = "MITRE ATT&CK"
            [[rule.threat.technique]]
            id = "T1552"
            name = "Unsecured Credentials"
            reference = "https://attack.mitre.org/techniques/T1552/"
            [[rule.threat.technique.subtechnique]]
            id = "T1552.007"
            name = "Container API"
            reference = "https://attack.mitre.org/techniques/T1552/007/"
            [rule.threat.tactic]
            id = "TA0006"
            name = "Credential Access"
            reference = "https://attack.mitre.org/tactics/TA0006/"

            [rule.new_terms]
            field = "new_terms_fields"
            value = ["user.name"]
            [[rule.new_terms.history_window_start]]
            field = "history_window_start"
            value = "now-7d"
            """, file: "new-terms.toml")
    }

    /// A new alert and its update (one suppressed match a minute later), as published (spliced bytes).
    func published(_ rule: DetectionRule, format: AlertFormat) throws -> (new: JSONValue, update: JSONValue) {
        let builder = AlertDocumentBuilder(rule: rule, productVersion: "test")
        var suppressor = AlertSuppressor(configuration: .init())
        let new = suppressor.apply(match("system:serviceaccount:payments:api", at: t0, offset: 7), offset: 7, now: 0)[0]
        _ = suppressor.apply(match("system:serviceaccount:payments:api", at: t0 + minute, verb: "list"), offset: 8, now: 0)
        let update = suppressor.closeAll()[0]
        return (try JSONValue.parse(builder.serialized(new, format: format)), try JSONValue.parse(builder.serialized(update, format: format)))
    }

    /// Whether a dotted path is present (through arrays of objects, as Elasticsearch flattens them).
    func has(_ document: JSONValue, _ path: String) -> Bool {
        flattened(document).contains { $0 == path || $0.hasPrefix(path + ".") }
    }

    func flattened(_ value: JSONValue, prefix: String = "") -> [String] {
        switch value {
        case .object(let object): return object.members.flatMap { flattened($0.value, prefix: prefix.isEmpty ? $0.key : prefix + "." + $0.key) }
        case .array(let items): return items.isEmpty ? [prefix] : items.flatMap { flattened($0, prefix: prefix) }
        default: return [prefix]
        }
    }

    @Test(arguments: ["query", "new_terms"])
    func kibanasRequiredFieldsOnEveryVersion(type: String) throws {
        let rule = type == "query" ? queryRule : try newTermsRule()
        let (new, update) = try published(rule, format: .ecs)
        for (name, document) in [("new", new), ("update", update)] {
            var required = KibanaAlertFields.common + KibanaAlertFields.security + KibanaAlertFields.written
            if !rule.threat.isEmpty { required += KibanaAlertFields.threat }
            for field in KibanaAlertFields.originalEvent where has(document, "event.\(field)") || field == "kind" {
                required.append("kibana.alert.original_event.\(field)")
            }
            for field in required {
                let present = has(document, field)
                #expect(present, "\(type) \(name) alert lacks \(field)")
            }
            // Values as Kibana's own engine writes them for these rule types.
            let kibanaType = type == "query" ? ("siem.queryRule", "Custom Query Rule") : ("siem.newTermsRule", "New Terms Rule")
            #expect(document[path: "kibana.alert.rule.rule_type_id"] == .string(kibanaType.0))
            #expect(document[path: "kibana.alert.rule.category"] == .string(kibanaType.1))
            #expect(document[path: "kibana.alert.rule.consumer"] == "siem" && document[path: "kibana.alert.rule.producer"] == "siem")
            #expect(document[path: "kibana.space_ids"] == ["default"])
            #expect(document[path: "kibana.alert.rule.revision"] == 0)
            #expect(document[path: "kibana.alert.rule.false_positives"]?.arrayValue?.count == rule.falsePositives.count)
            #expect(document[path: "kibana.alert.rule.max_signals"] == .number(JSONNumber(rule.maxSignals)))
            #expect(document[path: "kibana.alert.rule.version"] == .string(String(rule.version)))
            #expect(document[path: "kibana.alert.rule.parameters.query"] == .string(rule.query))
            #expect(document[path: "kibana.alert.rule.parameters.type"] == .string(rule.type.rawValue))
            // Dates parse; the suppression interval holds the window's events.
            for field in ["@timestamp", "kibana.alert.original_time", "kibana.alert.suppression.start", "kibana.alert.suppression.end"] {
                #expect(document[path: field]?.stringValue.flatMap { Timestamp.milliseconds(fromRFC3339: $0) } != nil, "\(field) is a date")
            }
        }
        #expect(new[path: "kibana.alert.suppression.start"] == .string(Timestamp.rfc3339(milliseconds: t0)))
        #expect(new[path: "kibana.alert.suppression.end"] == .string(Timestamp.rfc3339(milliseconds: t0)))
        #expect(update[path: "kibana.alert.suppression.end"] == .string(Timestamp.rfc3339(milliseconds: t0 + minute)))
        if type == "new_terms" {
            #expect(new[path: "kibana.alert.new_terms"] == ["system:serviceaccount:payments:api"])
            #expect(new[path: "kibana.alert.suppression.terms"]?.arrayValue?.first?[path: "field"] == "user.name")
            #expect(new[path: "kibana.alert.rule.note"] == "## Triage\nCheck the user's recent role bindings.")
            #expect(new[path: "kibana.alert.rule.from"] == "now-9m" && new[path: "kibana.alert.rule.interval"] == "3m")
            #expect(new[path: "kibana.alert.rule.parameters.new_terms_fields"] == ["user.name"])
            #expect(new[path: "kibana.alert.rule.parameters.history_window_start"] == "now-7d")
        }
    }

    /// OCSF 1.1 Detection Finding: the required attributes, and the recommended ones the issue names.
    @Test func ocsfRecommendedAttributes() throws {
        let (new, update) = try published(try newTermsRule(), format: .ocsf)
        for document in [new, update] {
            for field in ["activity_id", "category_uid", "class_uid", "type_uid", "severity_id", "time", "metadata.version",
                          "metadata.product.name", "finding_info.uid", "finding_info.title", "confidence_id", "timezone_offset",
                          "finding_info.first_seen_time", "finding_info.last_seen_time", "status_id"] {
                let present = has(document, field)
                #expect(present, "OCSF finding lacks \(field)")
            }
            #expect(document[path: "confidence_id"] == 3, "risk score 73: high")
            #expect(document[path: "timezone_offset"] == 0)
            let attacks = try #require(document[path: "finding_info.attacks"]?.arrayValue)
            #expect(attacks.count == 1)
            #expect(attacks.first?[path: "tactic.uid"] == "TA0006")
            #expect(attacks.first?[path: "technique.uid"] == "T1552")
            #expect(attacks.first?[path: "sub_technique.uid"] == "T1552.007")
        }
        #expect(new[path: "status_id"] == 1 && update[path: "status_id"] == 2, "an update moves the finding on")
        #expect(new[path: "finding_info.first_seen_time"] == .number(JSONNumber(t0)))
        #expect(update[path: "finding_info.last_seen_time"] == .number(JSONNumber(t0 + minute)))
    }

    /// An EQL sequence's building blocks and shell carry every field Kibana requires (no suppression
    /// fields: Elastic does not suppress sequences), Kibana's EQL rule type, and their grouping.
    @Test func sequenceAlertsCarryKibanasRequiredFields() throws {
        let rule = try DetectionRule.load(file: packageRoot.appendingPathComponent("Tests/Fixtures/rules/sequence_role_change_then_secret_access.toml").path)
        let builder = AlertDocumentBuilder(rule: rule, productVersion: "test")
        let user = "system:serviceaccount:ci:deployer"
        var first = match(user, at: t0, verb: "create", resource: "roles", offset: 3)
        first.steps = 1
        var second = match(user, at: t0 + minute, verb: "get", resource: "secrets", offset: 9)
        second.steps = 2
        let sequence = CompletedSequence(groupKey: first.groupKey, groupValues: first.groupValues, events: [first, second])
        let documents = try builder.sequenceDocuments(sequence, format: .ecs).map { try JSONValue.parse($0.bytes) }
        #expect(documents.count == 3)
        let suppressionFields = KibanaAlertFields.written.filter { $0.hasPrefix("kibana.alert.suppression") }
        for (index, document) in documents.enumerated() {
            var required = KibanaAlertFields.common + KibanaAlertFields.security
                + KibanaAlertFields.written.filter { !suppressionFields.contains($0) } + ["kibana.alert.group.id"]
            for field in KibanaAlertFields.originalEvent where has(document, "event.\(field)") || field == "kind" {
                required.append("kibana.alert.original_event.\(field)")
            }
            for field in required {
                let present = has(document, field)
                #expect(present, "sequence alert \(index) lacks \(field)")
            }
            #expect(!has(document, "kibana.alert.suppression"))
            #expect(document[path: "kibana.alert.rule.rule_type_id"] == "siem.eqlRule")
            #expect(document[path: "kibana.alert.rule.category"] == "Event Correlation Rule")
            #expect(document[path: "kibana.alert.rule.parameters.language"] == "eql")
            for field in ["@timestamp", "kibana.alert.original_time"] {
                #expect(document[path: field]?.stringValue.flatMap { Timestamp.milliseconds(fromRFC3339: $0) } != nil, "\(field) is a date")
            }
        }
        #expect(documents[0][path: "kibana.alert.group.index"] == 0 && documents[1][path: "kibana.alert.group.index"] == 1)
        #expect(documents[2][path: "kibana.alert.depth"] == 2 && documents[2][path: "kibana.alert.building_block_type"] == nil)
        #expect(documents[2][path: "kibana.alert.original_time"] == documents[0][path: "kibana.alert.original_time"], "the shell starts with the sequence")
        #expect(documents[2][path: "kubernetes.audit.verb"] == nil, "the shell keeps only what the events share")
        #expect(documents[2][path: "kibana.alert.rule.name"] == JSONValue.string(rule.name))

        let finding = try JSONValue.parse(try #require(builder.sequenceDocuments(sequence, format: .ocsf).first).bytes)
        #expect(finding[path: "evidences"]?.arrayValue?.count == 2)
        #expect(finding[path: "count"] == 2)
        #expect(finding[path: "start_time"] == JSONValue.number(JSONNumber(t0)) && finding[path: "end_time"] == JSONValue.number(JSONNumber(t0 + minute)))
        #expect(finding[path: "finding_info.uid"] == documents[2][path: "kibana.alert.uuid"])
    }
}
