import AuditEvents
import Detection

/// Alert documents: Elastic Security's alert schema for a query rule (ECS), or an OCSF Detection Finding.
/// Everything in them derives from the records (rule, group key, window, events), never from the wall
/// clock, so reprocessing the same input yields the same bytes.
public enum AlertFormat: String, Sendable, CaseIterable {
    case ecs
    case ocsf
}

public struct AlertDocumentBuilder: Sendable {
    public let rule: DetectionRule
    /// The Kafka topic the source events were read from (`kibana.alert.ancestors[].index`).
    public var ecsVersion = "8.11.0"
    public var productVersion: String

    public init(rule: DetectionRule, productVersion: String) {
        self.rule = rule
        self.productVersion = productVersion
        ruleObject = Self.ruleObject(rule)
        var bytes: [UInt8] = []
        JSONValue.object(ruleObject).write(to: &bytes, sortedKeys: true)
        ruleBytes = bytes
    }

    let ruleObject: JSONObject
    /// ``ruleObject`` serialized with sorted keys: spliced into every ECS alert (its investigation guide
    /// and description are kilobytes of text, escaped once here instead of once per alert).
    let ruleBytes: [UInt8]

    /// The alert id: a name-based UUID (v5) of rule id, group key and window start.
    public func alertID(for window: SuppressionWindow) -> String {
        UUIDv5.make(namespace: UUIDv5.alertNamespace, name: "\(rule.ruleID)|\(window.groupKey)|\(window.start)")
    }

    public func document(for action: AlertAction, format: AlertFormat) -> JSONObject {
        switch format {
        case .ecs: ecsDocument(for: action)
        case .ocsf: ocsfDocument(for: action)
        }
    }

    /// Serialized with sorted keys: the canonical, byte-for-byte reproducible form. An ECS alert is the
    /// source document's members spliced as they are, with the alert's own members merged in key order.
    public func serialized(_ action: AlertAction, format: AlertFormat) -> [UInt8] {
        serialized(action, format: format, alertID: alertID(for: action.window))
    }

    /// ``serialized(_:format:)`` with the window's ``alertID(for:)`` formed already (for the record's key).
    func serialized(_ action: AlertAction, format: AlertFormat, alertID: String) -> [UInt8] {
        if format == .ecs, let source = try? CanonicalDocument(action.window.first.documentBytes) {
            return splicedECSDocument(for: action, source: source, alertID: alertID)
        }
        var bytes: [UInt8] = []
        JSONValue.object(document(for: action, format: format)).write(to: &bytes, sortedKeys: true)
        return bytes
    }

    /// Writes `value` with sorted keys, the member at `path` replaced by bytes already serialized so.
    static func write(_ value: JSONValue, replacing path: ArraySlice<String>, with raw: [UInt8], to output: inout [UInt8]) {
        guard let key = path.first, case .object(let object) = value else { return value.write(to: &output, sortedKeys: true) }
        output.append(UInt8(ascii: "{"))
        for (index, member) in object.members.sorted(by: { $0.key < $1.key }).enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            writeJSONString(member.key, to: &output)
            output.append(UInt8(ascii: ":"))
            if member.key != key {
                member.value.write(to: &output, sortedKeys: true)
            } else if path.count == 1 {
                output.append(contentsOf: raw)
            } else {
                write(member.value, replacing: path.dropFirst(), with: raw, to: &output)
            }
        }
        output.append(UInt8(ascii: "}"))
    }

    static let sourceIP = FieldPath("source.ip")
    static let userName = FieldPath("user.name")

    /// Kafka headers for an alert record.
    public func headers(format: AlertFormat) -> [(String, String)] {
        [("rule_id", rule.ruleID), ("severity", rule.severity),
         ("content-type", format == .ecs ? "application/vnd.elastic.alert+json" : "application/vnd.ocsf.detection-finding+json")]
    }

    // MARK: ECS

    func ecsDocument(for action: AlertAction) -> JSONObject {
        ecsDocument(for: action, source: action.window.first.document)
    }

    /// - Parameter source: the action's first document, already parsed.
    func ecsDocument(for action: AlertAction, source: JSONObject) -> JSONObject {
        var document = source
        for (key, value) in ecsMembers(for: action, sourceEvent: source["event"]?.objectValue, sourceTimestamp: source[path: "@timestamp"],
                                       sourceIP: firstString(source, "source.ip"), userName: firstString(source, "user.name")) {
            document[key] = value
        }
        return document
    }

    /// The members an ECS alert sets over its source document's, in key order.
    func ecsMembers(for action: AlertAction, sourceEvent: JSONObject?, sourceTimestamp: JSONValue?, sourceIP: String?, userName: String?)
        -> [(key: String, value: JSONValue)]
    {
        let window = action.window
        let id = alertID(for: window)
        let originalTime = sourceTimestamp ?? .string(Timestamp.rfc3339(milliseconds: window.start))
        let ingested = Timestamp.rfc3339(milliseconds: window.first.eventTime)

        var event = sourceEvent ?? JSONObject()
        event["kind"] = "signal"
        event["ingested"] = .string(ingested)

        var originalEvent = sourceEvent ?? JSONObject()
        originalEvent.removeValue(forKey: "original")
        // Kibana's map requires it: the source's own, else the time we took as its ingest time.
        if originalEvent["ingested"] == nil { originalEvent["ingested"] = .string(ingested) }

        var alert: JSONObject = [
            "uuid": .string(id),
            "original_time": originalTime,
            "original_event": .object(originalEvent),
            "instance": ["id": .string(UUIDv5.make(namespace: UUIDv5.alertNamespace, name: "instance|\(rule.ruleID)|\(window.groupKey)"))],
            "status": "active",
            "workflow_status": "open",
            "depth": 1,
            "ancestors": [[
                "id": .string("\(window.first.source.topic)/\(window.first.source.partition)/\(window.first.source.offset)"),
                "type": "event", "index": .string(window.first.source.topic), "depth": 0,
                "partition": .number(JSONNumber(Int(window.first.source.partition))),
                "offset": .number(JSONNumber(window.first.source.offset)),
            ]],
            "reason": .string(reason(sourceIP: sourceIP, userName: userName)),
            "severity": .string(rule.severity),
            "risk_score": .number(JSONNumber(rule.riskScore)),
            "rule": .object(ruleObject),
        ]
        var suppression: JSONObject = [
            "terms": .array(zip(groupByFields, window.groupValues).map { field, value in
                ["field": .string(field), "value": value.map { .array([.string($0)]) } ?? .null]
            }),
            "docs_count": .number(JSONNumber(window.suppressed)),
        ]
        // On every version (Kibana writes them on the first alert too: start = end = its event).
        suppression["start"] = .string(Timestamp.rfc3339(milliseconds: window.seen.first))
        suppression["end"] = .string(Timestamp.rfc3339(milliseconds: window.seen.last))
        suppression["window"] = ["start": .string(Timestamp.rfc3339(milliseconds: window.start)),
                                 "end": .string(Timestamp.rfc3339(milliseconds: window.end))]
        if action.kind == .update { suppression["summary"] = .object(Self.summary(window.summary)) }
        if action.late { suppression["late"] = true }
        alert["suppression"] = .object(suppression)
        if rule.type == .newTerms { alert["new_terms"] = .array(window.groupValues.map { $0.map(JSONValue.string) ?? .null }) }
        return [("@timestamp", .string(ingested)), ("ecs", ["version": .string(ecsVersion)]), ("event", .object(event)),
                ("kibana", ["alert": .object(alert), "space_ids": ["default"]])]
    }

    /// `kibana.alert.rule`: the same for every alert of the rule, so built (and serialized) once.
    static func ruleObject(_ rule: DetectionRule) -> JSONObject {
        var ruleObject: JSONObject = [
            "uuid": .string(rule.ruleID), "rule_id": .string(rule.ruleID), "name": .string(rule.name),
            "description": .string(rule.description), "type": .string(rule.type.rawValue),
            "references": .array(rule.references.map(JSONValue.string)), "tags": .array(rule.tags.map(JSONValue.string)),
            "author": .array(rule.author.map(JSONValue.string)), "severity": .string(rule.severity),
            "risk_score": .number(JSONNumber(rule.riskScore)),
            "threat": .array(rule.threat.map(Self.threat)),
        ]
        if let license = rule.license { ruleObject["license"] = .string(license) }
        if let timestampOverride = rule.timestampOverride { ruleObject["timestamp_override"] = .string(timestampOverride) }
        // What Kibana's detection engine writes for its own rule types (the alert field maps' required
        // fields; see AlertSchemaConformanceTests for the files): the security solution as consumer and
        // producer, the rule type's id and category, the rule's descriptive fields and its parameters.
        let kind = kibanaRuleType(rule.type)
        ruleObject["consumer"] = "siem"
        ruleObject["producer"] = "siem"
        ruleObject["rule_type_id"] = .string(kind.id)
        ruleObject["category"] = .string(kind.category)
        ruleObject["revision"] = 0
        ruleObject["version"] = .string(String(rule.version))
        ruleObject["enabled"] = true
        ruleObject["false_positives"] = .array(rule.falsePositives.map(JSONValue.string))
        ruleObject["max_signals"] = .number(JSONNumber(rule.maxSignals))
        ruleObject["from"] = .string(rule.from ?? "now-6m")
        ruleObject["to"] = "now"
        ruleObject["interval"] = .string(rule.interval ?? "5m")
        if let note = rule.note { ruleObject["note"] = .string(note) }
        ruleObject["parameters"] = .object(Self.parameters(ruleObject, rule: rule))
        return ruleObject
    }

    /// A `new_terms` rule's groups are its term combinations; other rules group by their suppression fields.
    var groupByFields: [String] {
        if rule.type == .newTerms, let terms = rule.newTerms { return terms.fields }
        return rule.alertSuppression?.groupBy ?? ["kubernetes.audit.user.username"]
    }

    /// Kibana's rule type id and category for ours.
    static func kibanaRuleType(_ type: DetectionRule.RuleType) -> (id: String, category: String) {
        switch type {
        case .query: ("siem.queryRule", "Custom Query Rule")
        case .newTerms: ("siem.newTermsRule", "New Terms Rule")
        case .eql: ("siem.eqlRule", "Event Correlation Rule")
        case .esql: ("siem.esqlRule", "ES|QL Rule")
        }
    }

    /// `kibana.alert.rule.parameters`: the rule's parameters as Kibana keeps them (a flattened field).
    static func parameters(_ ruleObject: JSONObject, rule: DetectionRule) -> JSONObject {
        var parameters: JSONObject = [:]
        for key in ["author", "description", "false_positives", "from", "license", "max_signals", "note", "references", "risk_score",
                    "rule_id", "severity", "threat", "timestamp_override", "to", "type", "version"] {
            if let value = ruleObject[key] { parameters[key] = value }
        }
        parameters["language"] = .string(rule.language)
        parameters["query"] = .string(rule.query)
        parameters["index"] = .array(rule.index.map(JSONValue.string))
        if let terms = rule.newTerms {
            parameters["new_terms_fields"] = .array(terms.fields.map(JSONValue.string))
            parameters["history_window_start"] = .string(terms.historyWindowStart)
        }
        if let suppression = rule.alertSuppression {
            let milliseconds = suppression.durationMilliseconds
            let (value, unit): (Int64, String) = milliseconds % 3_600_000 == 0 ? (milliseconds / 3_600_000, "h")
                : milliseconds % 60_000 == 0 ? (milliseconds / 60_000, "m") : (milliseconds / 1000, "s")
            parameters["alert_suppression"] = [
                "group_by": .array(suppression.groupBy.map(JSONValue.string)),
                "duration": ["value": .number(JSONNumber(value)), "unit": .string(unit)],
                "missing_fields_strategy": .string(suppression.missingFieldsStrategy.rawValue),
            ]
        }
        return parameters
    }

    /// Elastic's reason sentence: "event with source 10.0.0.1 by system:serviceaccount:a:b created medium
    /// alert Kubernetes Denied Service Account Request."
    func reason(_ source: JSONObject) -> String {
        reason(sourceIP: firstString(source, "source.ip"), userName: firstString(source, "user.name"))
    }

    func reason(sourceIP: String?, userName: String?) -> String {
        var text = ""
        forEachReasonPiece(sourceIP: sourceIP, userName: userName) { text += $0 }
        return text
    }

    /// The reason sentence in the order of its pieces: joined into ``reason(sourceIP:userName:)``, or
    /// written one after another into an alert's bytes (``splicedECSDocument(for:source:alertID:)``).
    func forEachReasonPiece(sourceIP: String?, userName: String?, _ body: (String) -> Void) {
        body("event")
        if let sourceIP {
            body(" with source ")
            body(sourceIP)
        }
        if let userName {
            body(" by ")
            body(userName)
        }
        body(" created ")
        body(rule.severity)
        body(" alert ")
        body(rule.name)
        body(".")
    }

    private func firstString(_ document: JSONObject, _ path: String) -> String? {
        var result: String?
        document.forEachValue(of: FieldPath(path)) { value in
            result = value.stringValue
            return false
        }
        return result
    }

    static func threat(_ threat: DetectionRule.Threat) -> JSONValue {
        func entry(_ entry: DetectionRule.Threat.Entry) -> JSONValue {
            ["id": .string(entry.id), "name": .string(entry.name), "reference": .string(entry.reference)]
        }
        return [
            "framework": .string(threat.framework), "tactic": entry(threat.tactic),
            "technique": .array(threat.technique.map { technique in
                ["id": .string(technique.id), "name": .string(technique.name), "reference": .string(technique.reference),
                 "subtechnique": .array(technique.subtechnique.map(entry))]
            }),
        ]
    }

    /// OCSF's MITRE ATT&CK objects: one per technique (or sub-technique), or per tactic without one.
    static func attacks(_ threats: [DetectionRule.Threat]) -> [JSONValue] {
        threats.filter { $0.framework == "MITRE ATT&CK" }.flatMap { threat -> [JSONValue] in
            let tactic: JSONValue = ["uid": .string(threat.tactic.id), "name": .string(threat.tactic.name)]
            guard !threat.technique.isEmpty else { return [["tactic": tactic]] }
            return threat.technique.flatMap { technique -> [JSONValue] in
                let base: JSONObject = ["tactic": tactic, "technique": ["uid": .string(technique.id), "name": .string(technique.name)]]
                guard !technique.subtechnique.isEmpty else { return [.object(base)] }
                return technique.subtechnique.map { sub in
                    var attack = base
                    attack["sub_technique"] = ["uid": .string(sub.id), "name": .string(sub.name)]
                    return .object(attack)
                }
            }
        }
    }

    static func summary(_ summary: SuppressionSummary) -> JSONObject {
        func list(_ values: [String]) -> JSONValue { .array(values.map(JSONValue.string)) }
        return [
            "count": .number(JSONNumber(summary.count)),
            "verbs": list(summary.verbs), "resources": list(summary.resources), "namespaces": list(summary.namespaces),
            "source_ips": list(summary.sourceIPs), "user_agents": list(summary.userAgents),
            "response_codes": list(summary.responseCodes),
            "first_seen": .string(Timestamp.rfc3339(milliseconds: summary.firstSeen)),
            "last_seen": .string(Timestamp.rfc3339(milliseconds: summary.lastSeen)),
        ]
    }

    // MARK: OCSF

    /// OCSF 1.1 Detection Finding (class 2004).
    func ocsfDocument(for action: AlertAction) -> JSONObject {
        let window = action.window
        let source = window.first.document
        let activity = action.kind == .new ? 1 : 2
        let severityID: Int = ["informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5][rule.severity] ?? 0
        // The rule's risk score as OCSF's confidence: Elastic's bands (21 low, 47 medium, 73 high, 99 critical).
        let confidence: (id: Int, name: String) = rule.riskScore <= 21 ? (1, "Low") : rule.riskScore <= 47 ? (2, "Medium") : (3, "High")
        var resources: [JSONValue] = []
        if let type = firstString(source, "orchestrator.resource.type") {
            var resource: JSONObject = ["type": .string(type)]
            if let name = firstString(source, "orchestrator.resource.name") { resource["name"] = .string(name) }
            if let namespace = firstString(source, "orchestrator.namespace") { resource["namespace"] = .string(namespace) }
            resources.append(.object(resource))
        }
        var document: JSONObject = [
            "class_uid": 2004, "class_name": "Detection Finding", "category_uid": 2, "category_name": "Findings",
            "activity_id": .number(JSONNumber(activity)), "activity_name": .string(activity == 1 ? "Create" : "Update"),
            "type_uid": .number(JSONNumber(2004 * 100 + activity)),
            "severity_id": .number(JSONNumber(severityID)), "severity": .string(rule.severity.capitalized),
            // An update moves the finding on from New: the window it summarizes has closed or grown.
            "status_id": .number(JSONNumber(activity == 1 ? 1 : 2)), "status": .string(activity == 1 ? "New" : "In Progress"),
            "confidence_id": .number(JSONNumber(confidence.id)), "confidence": .string(confidence.name),
            "timezone_offset": 0,
            "time": .number(JSONNumber(window.first.eventTime)),
            "start_time": .number(JSONNumber(window.start)),
            "end_time": .number(JSONNumber(window.end)),
            "count": .number(JSONNumber(window.suppressed + 1)),
            "message": .string(reason(source)),
            "finding_info": [
                "uid": .string(alertID(for: window)), "title": .string(rule.name), "desc": .string(rule.description),
                "analytic": ["uid": .string(rule.ruleID), "name": .string(rule.name), "type_id": 1, "type": "Rule"],
                "types": .array(rule.tags.map(JSONValue.string)),
                "attacks": .array(Self.attacks(rule.threat)),
                "first_seen_time": .number(JSONNumber(window.seen.first)),
                "last_seen_time": .number(JSONNumber(window.seen.last)),
            ],
            "evidences": [.object(evidence(source))],
            "resources": .array(resources),
            "metadata": [
                "version": "1.1.0",
                "product": ["name": "Audit Sentinel", "vendor_name": "Audit Sentinel", "version": .string(productVersion)],
            ],
        ]
        if action.kind == .update { document["unmapped"] = ["suppression_summary": .object(Self.summary(window.summary))] }
        return document
    }

    /// OCSF's evidence of one event: the normalized document, its actor and source address.
    func evidence(_ source: JSONObject) -> JSONObject {
        var evidence: JSONObject = ["data": .object(source)]
        if let user = firstString(source, "user.name") { evidence["actor"] = ["user": ["name": .string(user)]] }
        if let ip = firstString(source, "source.ip") { evidence["src_endpoint"] = ["ip": .string(ip)] }
        return evidence
    }

    // MARK: EQL sequences

    /// One alert document of a completed sequence.
    public struct SequenceDocument: Sendable {
        public var id: String
        public var bytes: [UInt8]
        /// `building_block`, `shell` (ECS) or `finding` (OCSF).
        public var role: String
    }

    /// The ids of a sequence's alerts: name-based from the rule, the join key and each event's time and
    /// document (a 64-bit FNV-1a of its canonical bytes), so a sequence completed again after a restart, or
    /// by `replay` of the same events however the input was partitioned, has the same ids.
    public func sequenceIDs(_ sequence: CompletedSequence) -> (group: String, shell: String, buildingBlocks: [String]) {
        let name = "\(rule.ruleID)|sequence|\(sequence.groupKey)|"
            + sequence.events.map { "\($0.eventTime):\(String(Topology.fnv1a($0.documentBytes), radix: 16))" }.joined(separator: ",")
        return (UUIDv5.make(namespace: UUIDv5.alertNamespace, name: "group|" + name),
                UUIDv5.make(namespace: UUIDv5.alertNamespace, name: "shell|" + name),
                sequence.events.indices.map { UUIDv5.make(namespace: UUIDv5.alertNamespace, name: "building_block|\($0)|" + name) })
    }

    /// The alerts of a completed sequence, as Elastic's EQL rules write them: in ECS, one building-block
    /// alert per event (`kibana.alert.building_block_type`, `kibana.alert.group.id` and `.index`), then the
    /// shell alert (the fields every event shares, its ancestors the events and the building blocks); in
    /// OCSF, one Detection Finding whose evidences are the events, in sequence order.
    public func sequenceDocuments(_ sequence: CompletedSequence, format: AlertFormat) -> [SequenceDocument] {
        let ids = sequenceIDs(sequence)
        let documents = sequence.events.map(\.document)
        func window(_ first: RuleMatch) -> SuppressionWindow {
            SuppressionWindow(groupKey: sequence.groupKey, groupValues: sequence.groupValues, start: sequence.start, end: sequence.end,
                              first: first, suppressed: 0, summary: SuppressionSummary(), applied: [:])
        }
        func serialized(_ object: JSONObject) -> [UInt8] {
            var bytes: [UInt8] = []
            Self.write(.object(object), replacing: ["kibana", "alert", "rule"], with: ruleBytes, to: &bytes)
            return bytes
        }
        if format == .ocsf {
            var finding = ocsfDocument(for: AlertAction(kind: .new, window: window(sequence.events[0]), late: false))
            finding["time"] = .number(JSONNumber(sequence.end))
            finding["count"] = .number(JSONNumber(sequence.events.count))
            finding["evidences"] = .array(documents.map { .object(evidence($0)) })
            if case .object(var info)? = finding["finding_info"] {
                info["uid"] = .string(ids.shell)
                info["last_seen_time"] = .number(JSONNumber(sequence.end))
                finding["finding_info"] = .object(info)
            }
            return [SequenceDocument(id: ids.shell, bytes: serialized(finding), role: "finding")]
        }
        var result: [SequenceDocument] = []
        var buildingBlockAncestors: [JSONValue] = []
        var eventAncestors: [JSONValue] = []
        for (index, event) in sequence.events.enumerated() {
            var document = ecsDocument(for: AlertAction(kind: .new, window: window(event), late: false), source: documents[index])
            var alert = document[path: "kibana.alert"]?.objectValue ?? [:]
            eventAncestors += alert["ancestors"]?.arrayValue ?? []
            alert["uuid"] = .string(ids.buildingBlocks[index])
            alert["building_block_type"] = "default"
            alert["group"] = ["id": .string(ids.group), "index": .number(JSONNumber(index))]
            alert.removeValue(forKey: "suppression")
            document["kibana"] = ["alert": .object(alert), "space_ids": ["default"]]
            result.append(SequenceDocument(id: ids.buildingBlocks[index], bytes: serialized(document), role: "building_block"))
            buildingBlockAncestors.append(["id": .string(ids.buildingBlocks[index]), "type": "signal",
                                           "index": .string("alerts"), "depth": 1, "rule": .string(rule.ruleID)])
        }
        // The shell: what every event has in common, as the source of an alert at depth 2.
        let common = documents.dropFirst().reduce(documents[0]) { Self.intersection($0, $1) }
        var shell = ecsDocument(for: AlertAction(kind: .new, window: window(sequence.events[sequence.events.count - 1]), late: false), source: common)
        var alert = shell[path: "kibana.alert"]?.objectValue ?? [:]
        alert["uuid"] = .string(ids.shell)
        alert["group"] = ["id": .string(ids.group)]
        alert["depth"] = 2
        alert["ancestors"] = .array(eventAncestors + buildingBlockAncestors)
        alert["original_time"] = documents[0]["@timestamp"] ?? .string(Timestamp.rfc3339(milliseconds: sequence.start))
        alert.removeValue(forKey: "suppression")
        shell["kibana"] = ["alert": .object(alert), "space_ids": ["default"]]
        result.append(SequenceDocument(id: ids.shell, bytes: serialized(shell), role: "shell"))
        return result
    }

    // MARK: ES|QL executions

    /// The id of an aggregating ES|QL rule's alert: name-based from the rule, the group and the execution.
    public func executionID(_ result: ESQLExecutionResult) -> String {
        UUIDv5.make(namespace: UUIDv5.alertNamespace, name: "\(rule.ruleID)|esql|\(result.groupKey)|\(result.execution)")
    }

    /// The row of one execution as its source document: the columns by their dotted names, nulls left out.
    public static func rowDocument(_ result: ESQLExecutionResult) -> JSONObject {
        var row = JSONObject()
        for column in result.columns where !column.value.isNull { row.setValue(column.value.json, atDottedPath: column.name) }
        return row
    }

    /// An aggregating ES|QL rule's alert, as Kibana writes one: in ECS, the row's columns are the alert's
    /// source fields (no source event: the one ancestor is the row), `@timestamp` is the execution time and
    /// `kibana.alert.original_time` the start of its window; in OCSF, one finding with the row as evidence.
    public func executionDocument(_ result: ESQLExecutionResult, format: AlertFormat) -> (id: String, bytes: [UInt8]) {
        let id = executionID(result)
        let row = Self.rowDocument(result)
        var rowBytes: [UInt8] = []
        JSONValue.object(row).write(to: &rowBytes, sortedKeys: true)
        let first = RuleMatch(groupValues: result.keys.map(\.text), eventTime: result.execution, documentBytes: rowBytes,
                              source: RecordPosition(topic: "", partition: 0, offset: 0))
        let window = SuppressionWindow(groupKey: result.groupKey, groupValues: first.groupValues, start: result.windowStart,
                                       end: result.execution, first: first, suppressed: 0, summary: SuppressionSummary(), applied: [:])
        let action = AlertAction(kind: .new, window: window, late: false)
        var document: JSONObject
        if format == .ocsf {
            document = ocsfDocument(for: action)
            if case .object(var info)? = document["finding_info"] {
                info["uid"] = .string(id)
                info["first_seen_time"] = .number(JSONNumber(result.windowStart))
                info["last_seen_time"] = .number(JSONNumber(result.execution))
                document["finding_info"] = .object(info)
            }
            document["evidences"] = [.object(evidence(row))]
        } else {
            document = ecsDocument(for: action, source: row)
            var alert = document[path: "kibana.alert"]?.objectValue ?? [:]
            alert["uuid"] = .string(id)
            // As Kibana writes it for a row with no document behind it: one ancestor, the row itself.
            alert["ancestors"] = [["id": .string("\(result.groupKey)@\(result.execution)"), "type": "event", "index": "", "depth": 0]]
            alert["original_time"] = .string(Timestamp.rfc3339(milliseconds: result.windowStart))
            alert.removeValue(forKey: "suppression")
            document["kibana"] = ["alert": .object(alert), "space_ids": ["default"]]
        }
        var bytes: [UInt8] = []
        Self.write(.object(document), replacing: ["kibana", "alert", "rule"], with: ruleBytes, to: &bytes)
        return (id, bytes)
    }

    /// The members two documents share with equal values (objects compared member by member).
    static func intersection(_ left: JSONObject, _ right: JSONObject) -> JSONObject {
        var common = JSONObject()
        for member in left {
            let (key, value) = (member.key, member.value)
            guard let other = right[key] else { continue }
            if case .object(let leftObject) = value, case .object(let rightObject) = other {
                let inner = intersection(leftObject, rightObject)
                if !inner.isEmpty { common[key] = .object(inner) }
            } else if value == other {
                common[key] = value
            }
        }
        return common
    }
}

extension SuppressionWindow {
    /// Event times of the window's first match and of its latest one (the summary counts only the
    /// suppressed matches after the first).
    var seen: (first: Int64, last: Int64) {
        let suppressed = summary.count > 0 ? (summary.firstSeen, summary.lastSeen) : (first.eventTime, first.eventTime)
        return (min(first.eventTime, suppressed.0), max(first.eventTime, suppressed.1))
    }
}

/// Name-based UUIDs (RFC 9562 version 5, SHA-1): the same name always gives the same id.
public enum UUIDv5 {
    /// Audit Sentinel's namespace for alert ids.
    public static let alertNamespace: [UInt8] = [0x6f, 0x1e, 0x3c, 0x52, 0x8a, 0x4b, 0x4d, 0x7e, 0x9c, 0x21, 0x55, 0x0a, 0xb3, 0x6d, 0x4f, 0x10]

    /// RFC 9562's name-based UUID (SHA-1), in its 36-character form. Every alert record takes two or more.
    public static func make(namespace: [UInt8], name: String) -> String {
        var message = namespace
        message.append(contentsOf: name.utf8)
        var digest = SHA1.hash(message)
        digest.6 = (digest.6 & 0x0F) | 0x50
        digest.8 = (digest.8 & 0x3F) | 0x80
        return withUnsafeBytes(of: &digest) { bytes in
            String(unsafeUninitializedCapacity: 36) { text in
                let hex: StaticString = "0123456789abcdef"
                var count = 0
                for index in 0..<16 {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        text[count] = UInt8(ascii: "-")
                        count += 1
                    }
                    text[count] = hex.utf8Start[Int(bytes[index] >> 4)]
                    text[count + 1] = hex.utf8Start[Int(bytes[index] & 0x0F)]
                    count += 2
                }
                return count
            }
        }
    }
}

/// SHA-1, for name-based UUIDs only (not for security).
enum SHA1 {
    typealias Digest = (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                        UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    static func hash(_ message: [UInt8]) -> Digest {
        var h: (UInt32, UInt32, UInt32, UInt32, UInt32) = (0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0)
        // The message, its 0x80 terminator, zeros and its bit length fill whole 64-byte blocks.
        let blocks = (message.count + 8) / 64 + 1
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: blocks * 64) { padded in
            _ = padded.initialize(from: message)
            padded.baseAddress!.advanced(by: message.count).initialize(repeating: 0, count: blocks * 64 - message.count)
            padded[message.count] = 0x80
            let bitLength = UInt64(message.count) * 8
            for index in 0..<8 { padded[blocks * 64 - 1 - index] = UInt8(truncatingIfNeeded: bitLength >> (8 * UInt64(index))) }
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 80) { w in
                for block in 0..<blocks {
                    let chunk = block * 64
                    for i in 0..<16 {
                        w[i] = UInt32(padded[chunk + 4 * i]) << 24 | UInt32(padded[chunk + 4 * i + 1]) << 16
                            | UInt32(padded[chunk + 4 * i + 2]) << 8 | UInt32(padded[chunk + 4 * i + 3])
                    }
                    for i in 16..<80 {
                        let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
                        w[i] = (x << 1) | (x >> 31)
                    }
                    var (a, b, c, d, e) = h
                    // The four rounds of twenty as four loops: no choice of function inside the loop.
                    @inline(__always) func round(_ f: UInt32, _ k: UInt32, _ word: UInt32) {
                        let temp = ((a << 5) | (a >> 27)) &+ f &+ e &+ k &+ word
                        e = d
                        d = c
                        c = (b << 30) | (b >> 2)
                        b = a
                        a = temp
                    }
                    for i in 0..<20 { round((b & c) | (~b & d), 0x5A82_7999, w[i]) }
                    for i in 20..<40 { round(b ^ c ^ d, 0x6ED9_EBA1, w[i]) }
                    for i in 40..<60 { round((b & c) | (b & d) | (c & d), 0x8F1B_BCDC, w[i]) }
                    for i in 60..<80 { round(b ^ c ^ d, 0xCA62_C1D6, w[i]) }
                    h = (h.0 &+ a, h.1 &+ b, h.2 &+ c, h.3 &+ d, h.4 &+ e)
                }
            }
        }
        var digest: Digest = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &digest) { bytes in
            bytes.storeBytes(of: h.0.bigEndian, toByteOffset: 0, as: UInt32.self)
            bytes.storeBytes(of: h.1.bigEndian, toByteOffset: 4, as: UInt32.self)
            bytes.storeBytes(of: h.2.bigEndian, toByteOffset: 8, as: UInt32.self)
            bytes.storeBytes(of: h.3.bigEndian, toByteOffset: 12, as: UInt32.self)
            bytes.storeBytes(of: h.4.bigEndian, toByteOffset: 16, as: UInt32.self)
        }
        return digest
    }
}
