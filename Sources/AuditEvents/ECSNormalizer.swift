#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The ECS document Elastic's Kubernetes integration (`kubernetes.audit_logs` ingest pipeline) builds from
/// one audit event, step by step as the pipeline does it. This is the definition the fast field view
/// (``AuditEvent/forEachValue(of:_:)``) must agree with; it runs only for records whose full document is
/// needed (matches, the `match` command, conformance tests).
///
/// Deviations from the pipeline, on purpose:
/// - `@timestamp` is the event's `requestReceivedTimestamp` (the pipeline uses the agent's read time, which
///   we do not have); an AKS record's is its `time` at millisecond precision, as Elastic's AKS pipeline does.
/// - `event.dataset` and `data_stream.dataset` are both `kubernetes.audit_logs` (the index sets the latter in
///   Elastic; rule versions test one or the other).
/// - `event.ingested` comes from the caller (the pipeline stamps it from the Kafka record timestamp).
/// - An ECS document that already went through Elastic's pipeline keeps its own fields, `@timestamp` and
///   `event.ingested` included; only missing dataset fields are added.
public enum ECSNormalizer {
    public static let dataset = "kubernetes.audit_logs"

    /// Pipeline renames inside `kubernetes.audit` (source path, target path). The pipeline guards them
    /// with `ctx.audit?...` (always null), so they always apply when the source exists.
    static let renames: [(from: String, to: String)] = [
        ("insertId", "auditID"),
        ("receiveTimestamp", "requestReceivedTimestamp"),
        ("timestamp", "stageTimestamp"),
        ("protoPayload.status.code", "responseStatus.code"),
        ("labels", "annotations"),
    ]

    /// Normalizes one audit event.
    /// - Parameters:
    ///   - audit: the event: a raw `audit.k8s.io` Event, or a GKE Cloud Logging entry.
    ///   - aks: the AKS diagnostic record the event came in, if any.
    ///   - original: the event's original text, for `event.original` (Elastic keeps it with the
    ///     `preserve_original_event` tag).
    ///   - ingested: `event.ingested`, milliseconds since the epoch.
    ///   - clusterName: `orchestrator.cluster.name` when the event has none (the input's configured name).
    public static func normalize(audit: JSONObject, aks: JSONObject? = nil, original: String? = nil, ingested: Int64? = nil,
                                 clusterName: String? = nil) -> JSONObject {
        var audit = audit
        for field in ["responseObject", "requestObject"] {
            if var object = audit[field]?.objectValue, object["metadata"] != nil {
                object.removeValue(forKey: "metadata")
                audit[field] = .object(object)
            }
        }
        for rename in renames {
            if let value = removeValue(at: rename.from, in: &audit) { set(value, at: rename.to, in: &audit) }
        }
        var document = JSONObject()
        var event = JSONObject()
        event["kind"] = "event"
        if let verb = nonEmpty(audit[path: "verb"]) { event["action"] = verb }
        if var annotations = audit["annotations"]?.objectValue {
            var renamed = JSONObject()
            for member in annotations {
                renamed[member.key.replacingOccurrences(of: ".", with: "_")] = member.value
                if member.key == "authorization.k8s.io/decision" {
                    switch member.value {
                    case "allow": event["outcome"] = "success"
                    case "forbid": event["outcome"] = "failure"
                    default: break
                    }
                }
            }
            annotations = renamed
            audit["annotations"] = .object(annotations)
        }
        var user = JSONObject()
        if let name = nonEmpty(audit[path: "user.username"]) { user["name"] = name }
        if let id = nonEmpty(audit[path: "user.uid"]) { user["id"] = id }
        if !user.isEmpty { document["user"] = .object(user) }
        if let agent = nonEmpty(audit[path: "userAgent"]) { document["user_agent"] = ["original": agent] }
        let sourceIP = audit["sourceIPs"].flatMap(convertIP)
        if let sourceIP {
            document["source"] = ["ip": sourceIP]
            document["client"] = ["ip": sourceIP]
        }

        var orchestrator = JSONObject()
        orchestrator["type"] = "kubernetes"
        var resource = JSONObject()
        if let apiVersion = nonEmpty(audit[path: "apiVersion"]) { orchestrator["api_version"] = apiVersion }
        if let type = nonEmpty(audit[path: "objectRef.resource"]) { resource["type"] = type }
        if let namespace = nonEmpty(audit[path: "objectRef.namespace"]) { orchestrator["namespace"] = namespace }
        if let name = nonEmpty(audit[path: "objectRef.name"]) { resource["name"] = name }
        if resource["name"] == nil, let name = nonEmpty(audit[path: "protoPayload.resourceName"]) { resource["name"] = name }
        if let type = nonEmpty(audit[path: "resource.type"]) { resource["type"] = type }
        if !resource.isEmpty { orchestrator["resource"] = .object(resource) }
        var cluster = JSONObject()
        if let name = nonEmpty(audit[path: "resource.labels.cluster_name"]) { cluster["name"] = name } else if let clusterName { cluster["name"] = .string(clusterName) }
        if let id = nonEmpty(audit[path: "resource.labels.project_id"]) { cluster["id"] = id }
        if !cluster.isEmpty { orchestrator["cluster"] = .object(cluster) }
        document["orchestrator"] = .object(orchestrator)

        var relatedUsers: [JSONValue] = []
        for path in ["user.uid", "user.username"] {
            if let value = audit[path: path], value != .null {
                let rendered = JSONValue.string(renderTemplate(value))
                if !relatedUsers.contains(rendered) { relatedUsers.append(rendered) }
            }
        }
        var related = JSONObject()
        if !relatedUsers.isEmpty { related["user"] = .array(relatedUsers) }
        if case .array(let ips)? = sourceIP {
            var unique: [JSONValue] = []
            for ip in ips where !unique.contains(ip) { unique.append(ip) }
            related["ip"] = .array(unique)
        }
        if !related.isEmpty { document["related"] = .object(related) }

        event["dataset"] = .string(dataset)
        if let original { event["original"] = .string(original) }
        if let ingested { event["ingested"] = .string(Timestamp.rfc3339(milliseconds: ingested)) }
        document["event"] = .object(event)
        document["data_stream"] = ["dataset": .string(dataset)]

        if let aks {
            let properties = aks["properties"]?.objectValue ?? JSONObject()
            var metadata = JSONObject()
            for (key, target) in [("category", "category"), ("operationName", "operation_name"), ("resourceId", "resource_id"),
                                  ("serviceBuild", "service_build"), ("time", "time")] {
                if let value = aks[key] { metadata[target] = value }
            }
            for (key, target) in [("containerID", "container_id"), ("pod", "pod"), ("stream", "stream")] {
                if let value = properties[key] { metadata[target] = value }
            }
            audit["aks_metadata"] = .object(metadata)
        }
        document["kubernetes"] = ["audit": .object(audit)]
        if let timestamp = timestampMilliseconds(audit: audit, aks: aks) {
            document["@timestamp"] = .string(Timestamp.rfc3339(milliseconds: timestamp))
        }
        return dropEmpty(document)
    }

    /// `@timestamp`: an AKS record's `time`, else the event's `requestReceivedTimestamp`.
    static func timestampMilliseconds(audit: JSONObject, aks: JSONObject?) -> Int64? {
        if aks != nil, let time = audit[path: "aks_metadata.time"]?.stringValue, let ms = Timestamp.milliseconds(fromRFC3339: time) {
            return ms
        }
        return audit[path: "requestReceivedTimestamp"]?.stringValue.flatMap { Timestamp.milliseconds(fromRFC3339: $0) }
    }

    /// An ECS document from Elastic Agent / Filebeat: kept as it is, with the dataset fields added if missing.
    public static func completeECSDocument(_ document: JSONObject, clusterName: String? = nil) -> JSONObject {
        var document = document
        if let clusterName, document[path: "orchestrator.cluster.name"] == nil, document["orchestrator.cluster.name"] == nil {
            var orchestrator = document["orchestrator"]?.objectValue ?? JSONObject()
            var cluster = orchestrator["cluster"]?.objectValue ?? JSONObject()
            cluster["name"] = .string(clusterName)
            orchestrator["cluster"] = .object(cluster)
            document["orchestrator"] = .object(orchestrator)
        }
        for (parent, key) in [("event", "dataset"), ("data_stream", "dataset")] where document[path: "\(parent).\(key)"] == nil && document["\(parent).\(key)"] == nil {
            var object = document[parent]?.objectValue ?? JSONObject()
            object[key] = .string(dataset)
            document[parent] = .object(object)
        }
        return document
    }

    // MARK: Pipeline helpers

    /// The `convert` processor with `type: ip`: every element must be an IP address, else the field is not set.
    static func convertIP(_ value: JSONValue) -> JSONValue? {
        switch value {
        case .string(let text): return isIPAddress(text) ? .string(text) : nil
        case .array(let elements):
            var converted: [JSONValue] = []
            for element in elements {
                guard case .string(let text) = element, isIPAddress(text) else { return nil }
                converted.append(element)
            }
            return .array(converted)
        default: return nil
        }
    }

    /// A value `copy_from` with `ignore_empty_value` would copy: not null, not an empty string.
    static func nonEmpty(_ value: JSONValue?) -> JSONValue? {
        switch value {
        case nil, .null?: nil
        case .string(let text)? where text.isEmpty: nil
        default: value
        }
    }

    /// How a mustache template renders a value.
    static func renderTemplate(_ value: JSONValue) -> String {
        switch value {
        case .string(let text): text
        case .number(let number): number.text
        case .bool(let flag): flag ? "true" : "false"
        default: value.serialized()
        }
    }

    static func removeValue(at path: String, in object: inout JSONObject) -> JSONValue? {
        let components = path.split(separator: ".").map(String.init)
        if components.count == 1 { return object.removeValue(forKey: components[0]) }
        guard case .object(var child)? = object[components[0]] else { return nil }
        let removed = removeValue(at: components.dropFirst().joined(separator: "."), in: &child)
        if removed != nil { object[components[0]] = .object(child) }
        return removed
    }

    static func set(_ value: JSONValue, at path: String, in object: inout JSONObject) {
        let components = path.split(separator: ".").map(String.init)
        if components.count == 1 {
            object[components[0]] = value
            return
        }
        var child = object[components[0]]?.objectValue ?? JSONObject()
        set(value, at: components.dropFirst().joined(separator: "."), in: &child)
        object[components[0]] = .object(child)
    }

    /// The pipeline's last step: null, empty strings, empty maps and empty lists removed, recursively.
    static func dropEmpty(_ object: JSONObject) -> JSONObject {
        var result = JSONObject()
        for member in object {
            if let value = dropEmpty(member.value) { result.appendNew(member.key, value) }
        }
        return result
    }

    static func dropEmpty(_ value: JSONValue) -> JSONValue? {
        switch value {
        case .null: return nil
        case .string(let text): return text.isEmpty ? nil : value
        case .object(let object):
            let cleaned = dropEmpty(object)
            return cleaned.isEmpty ? nil : .object(cleaned)
        case .array(let elements):
            let cleaned = elements.compactMap(dropEmpty)
            return cleaned.isEmpty ? nil : .array(cleaned)
        default: return value
        }
    }
}

/// Whether `text` is an IPv4 or IPv6 address (as Elasticsearch's `ip` type accepts it).
public func isIPAddress(_ text: String) -> Bool {
    var buffer = [UInt8](repeating: 0, count: 16)
    return text.withCString { pointer in
        inet_pton(AF_INET, pointer, &buffer) == 1 || inet_pton(AF_INET6, pointer, &buffer) == 1
    }
}

/// ``isIPAddress(_:)`` for the bytes of a string without escapes (no NUL in them), copied to the stack.
func isIPAddress(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard bytes.count < 64 else { return false }
    return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { text in
        UnsafeMutableRawBufferPointer(text).copyMemory(from: bytes)
        text[bytes.count] = 0
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 16) { address in
            inet_pton(AF_INET, text.baseAddress!, address.baseAddress!) == 1 || inet_pton(AF_INET6, text.baseAddress!, address.baseAddress!) == 1
        }
    }
}

extension String {
    func replacingOccurrences(of target: Character, with replacement: Character) -> String {
        String(map { $0 == target ? replacement : $0 })
    }
}
