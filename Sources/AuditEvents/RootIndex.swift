#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Top-level members of an audit event (and of the envelopes around one) that normalization, validation
/// and rules look at. One pass over an object's members finds them all (``RootIndex``), so a field lookup
/// jumps straight to its first component instead of scanning the event again.
enum RootKey: Int, CaseIterable, Sendable {
    case kind, apiVersion, items, protoPayload, properties, kubernetes, message, auditID, verb, user, sourceIPs,
        annotations, labels, objectRef, responseStatus, userAgent, requestURI, stage, level, requestReceivedTimestamp,
        stageTimestamp, insertId, receiveTimestamp, timestamp, resource, requestObject, responseObject, category, time

    @inline(__always)
    static func classify(_ name: UnsafeRawBufferPointer) -> RootKey? {
        // A switch over lengths with literal comparisons: no tables, so no reference counting on the hot path.
        guard let base = name.baseAddress else { return nil }
        @inline(__always) func equals(_ literal: StaticString) -> Bool { bytesEqual(base, literal.utf8Start, count: name.count) }
        switch name.count {
        case 4: return equals("kind") ? .kind : equals("verb") ? .verb : equals("user") ? .user : equals("time") ? .time : nil
        case 5: return equals("items") ? .items : equals("stage") ? .stage : equals("level") ? .level : nil
        case 6: return equals("labels") ? .labels : nil
        case 7: return equals("message") ? .message : equals("auditID") ? .auditID : nil
        case 8: return equals("insertId") ? .insertId : equals("resource") ? .resource : equals("category") ? .category : nil
        case 9: return equals("sourceIPs") ? .sourceIPs : equals("objectRef") ? .objectRef : equals("userAgent") ? .userAgent : equals("timestamp") ? .timestamp : nil
        case 10: return equals("apiVersion") ? .apiVersion : equals("properties") ? .properties : equals("kubernetes") ? .kubernetes : equals("requestURI") ? .requestURI : nil
        case 11: return equals("annotations") ? .annotations : nil
        case 12: return equals("protoPayload") ? .protoPayload : nil
        case 13: return equals("requestObject") ? .requestObject : nil
        case 14: return equals("responseStatus") ? .responseStatus : equals("stageTimestamp") ? .stageTimestamp : equals("responseObject") ? .responseObject : nil
        case 16: return equals("receiveTimestamp") ? .receiveTimestamp : nil
        case 24: return equals("requestReceivedTimestamp") ? .requestReceivedTimestamp : nil
        default: return nil
        }
    }

    static func classify(_ name: String) -> RootKey? {
        Array(name.utf8).withUnsafeBytes { classify($0) }
    }
}

/// Where each ``RootKey`` member's value sits in the tape (the last one, if a key repeats).
struct RootIndex: Sendable, Equatable {
    private var slots = InlineArray<29, Int32>(repeating: -1)

    init() {}

    mutating func set(_ key: RootKey, _ value: Int32) { slots[key.rawValue] = value }

    init(_ document: JSONDocument, _ object: Int) {
        guard document.kind(object) == .object else { return }
        document.forEachMember(of: object) { key, value in
            let found: RootKey?
            if document.hasEscapes(key) {
                found = unescape(document.rawBytes(key)).withUnsafeBytes { RootKey.classify($0) }
            } else {
                found = RootKey.classify(document.rawBytes(key))
            }
            if let found { slots[found.rawValue] = Int32(value) }
            return true
        }
    }

    static func == (lhs: RootIndex, rhs: RootIndex) -> Bool {
        RootKey.allCases.allSatisfy { lhs[$0] == rhs[$0] }
    }

    subscript(_ key: RootKey) -> Int? {
        let slot = slots[key.rawValue]
        return slot < 0 ? nil : Int(slot)
    }
}

/// A `kubernetes.audit.<sub>` field, resolved once against the pipeline's renames and removals and the
/// event's top-level members.
final class AuditAccess: Hashable, Sendable {
    /// The whole sub-path, for the generic walk.
    let sub: [UInt8]
    /// Renamed away or removed by the pipeline: never has a value.
    let removed: Bool
    /// `annotations` (empty key) or `annotations.<key>` (keys read with dots as underscores).
    let annotationKey: [UInt8]?
    /// A pipeline rename whose source wins when present: its top-level member and the path below it.
    let renamedFrom: (key: RootKey, rest: [UInt8])?
    /// The first component when it is a known top-level member, and the path below it.
    let first: RootKey?
    let rest: [UInt8]
    /// The sources of renames whose target lies below this path (GKE's `protoPayload.status.code` for
    /// `responseStatus`): the object is in the document when one of them has a value.
    let renamedInto: [(key: RootKey, rest: [UInt8])]

    init(_ sub: String) {
        self.sub = Array(sub.utf8)
        func under(_ prefix: String) -> Bool { sub == prefix || sub.hasPrefix(prefix + ".") }
        removed = ECSNormalizer.renames.map(\.from).contains(where: under) || under("requestObject.metadata") || under("responseObject.metadata")
        annotationKey = sub == "annotations" ? [] : (sub.hasPrefix("annotations.") ? Array(sub.dropFirst("annotations.".count).utf8) : nil)
        var renamed: (RootKey, [UInt8])?
        for rename in ECSNormalizer.renames where rename.to != "annotations" && under(rename.to) {
            let source = rename.from + sub.dropFirst(rename.to.count)
            let parts = source.split(separator: ".", maxSplits: 1)
            if let key = RootKey.classify(String(parts[0])) {
                renamed = (key, parts.count > 1 ? Array(parts[1].utf8) : [])
            }
        }
        renamedFrom = renamed
        renamedInto = sub.isEmpty ? [] : ECSNormalizer.renames.filter { $0.to.hasPrefix(sub + ".") }.compactMap { rename in
            let parts = rename.from.split(separator: ".", maxSplits: 1)
            return RootKey.classify(String(parts[0])).map { ($0, parts.count > 1 ? Array(parts[1].utf8) : []) }
        }
        let parts = sub.split(separator: ".", maxSplits: 1)
        first = parts.first.flatMap { RootKey.classify(String($0)) }
        rest = parts.count > 1 ? Array(parts[1].utf8) : []
    }

    static func == (lhs: AuditAccess, rhs: AuditAccess) -> Bool { lhs.sub == rhs.sub }
    func hash(into hasher: inout Hasher) { hasher.combine(sub) }

    static let userUID = AuditAccess("user.uid")
    static let username = AuditAccess("user.username")
    static let decision = AuditAccess("annotations.authorization_k8s_io/decision")
    static let resourceType = AuditAccess("resource.type")
    static let objectResource = AuditAccess("objectRef.resource")
    static let objectName = AuditAccess("objectRef.name")
    static let protoResourceName = AuditAccess("protoPayload.resourceName")
    static let requestReceived = AuditAccess("requestReceivedTimestamp")
    static let sourceIPs = AuditAccess("sourceIPs")
}
