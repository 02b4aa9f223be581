#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One audit event as a rule sees it: the ECS field view of ``ECSNormalizer``, resolved lazily from the
/// record's bytes. Valid only inside the ``AuditRecordDecoder/decode(_:ingestTime:_:)`` body that produced it.
public struct AuditEvent: @unchecked Sendable {
    /// The form the event arrived in (the outermost one: a Filebeat wrapper around an AKS record is `.filebeat`).
    public let shape: InputShape
    /// The document holding the event; `root` is the Event object (for `.ecs`, the ECS document).
    let document: JSONDocument
    let root: Int
    /// The event's top-level members (for `.ecs`, those of `kubernetes.audit`).
    let index: RootIndex
    /// The AKS diagnostic record around the event, if any.
    let aksRecord: (JSONDocument, Int)?
    /// The Filebeat-style wrapper around the event, if any.
    let wrapper: (JSONDocument, Int)?
    /// The event's own text in `document`, when it is one contiguous value (for `event.original`).
    let originalSpan: Range<Int>?
    let ingestTime: Int64?
    /// `orchestrator.cluster.name` for events that carry none (GKE's `resource.labels.cluster_name`, an
    /// ECS document's own): the name the operator gave the event's input.
    let clusterName: String?
    /// Which event of its record this is (line or batch position).
    public let eventIndex: Int

    init(shape: InputShape, document: JSONDocument, root: Int, index: RootIndex, aksRecord: (JSONDocument, Int)?, wrapper: (JSONDocument, Int)?,
         originalSpan: Range<Int>?, ingestTime: Int64?, clusterName: String? = nil, eventIndex: Int) {
        self.shape = shape
        self.document = document
        self.root = root
        self.index = index
        self.aksRecord = aksRecord
        self.wrapper = wrapper
        self.originalSpan = originalSpan
        self.ingestTime = ingestTime
        self.clusterName = clusterName?.isEmpty == true ? nil : clusterName
        self.eventIndex = eventIndex
    }

    func wrapped(in wrapperDocument: JSONDocument, root wrapperRoot: Int) -> AuditEvent {
        AuditEvent(shape: .filebeat, document: document, root: root, index: index, aksRecord: aksRecord, wrapper: (wrapperDocument, wrapperRoot),
                   originalSpan: originalSpan, ingestTime: ingestTime, clusterName: clusterName, eventIndex: eventIndex)
    }

    // MARK: Field view

    /// Calls `body` with every value of an ECS field (array elements one by one), as the normalized document
    /// would hold it: empty strings, nulls and empty containers are absent. `body` returns false to stop.
    /// - Returns: false if `body` stopped the walk.
    @discardableResult
    public func forEachValue(of field: FieldPath, _ body: (FieldValue) -> Bool) -> Bool {
        if shape == .ecs {
            if case .clusterName = field.mapping, let clusterName, !exists(inECS: field) { return body(FieldValue(owned: clusterName)) }
            return visitECS(field, body)
        }
        // The common case first, reading the access without touching its reference count.
        if let access = field.access { return visitAudit(access, body) }
        switch field.mapping {
        case .audit(let access), .alias(let access): return visitAudit(access, body)
        case .sourceIP: return visitSourceIPs(body)
        case .relatedIP: return visitSourceIPs(distinct: true, body)
        case .relatedUser: return visitAudit(.userUID, body) && visitAudit(.username, body)
        case .outcome:
            var outcome: StaticString?
            visitAudit(.decision) { value in
                if value.equals("allow") { outcome = "success" } else if value.equals("forbid") { outcome = "failure" }
                return true
            }
            return outcome.map { body(FieldValue(constant: $0)) } ?? true
        case .constant(let value): return body(FieldValue(constant: value))
        // The pipeline's `set` processors: GKE's resource type overrides objectRef's; objectRef's name wins
        // over GKE's resourceName (`override: false`).
        case .resourceType: return visitFirst(.resourceType, else: .objectResource, body)
        case .resourceName: return visitFirst(.objectName, else: .protoResourceName, body)
        case .timestamp:
            guard let milliseconds = timestampMilliseconds else { return true }
            return body(FieldValue(owned: Timestamp.rfc3339(milliseconds: milliseconds)))
        case .clusterName(let access):
            var found = false
            let result = visitAudit(access) { value in
                found = true
                return body(value)
            }
            if !found, let clusterName { return body(FieldValue(owned: clusterName)) }
            return result
        case .ingested:
            guard let ingestTime else { return true }
            return body(FieldValue(owned: Timestamp.rfc3339(milliseconds: ingestTime)))
        case .aksMetadata(let source, let inProperties):
            guard let (aks, aksRoot) = aksRecord else { return true }
            let container = inProperties ? aks.member("properties", of: aksRoot) : aksRoot
            guard let container else { return true }
            return Self.visit(aks, container, source, body)
        case .original:
            return true  // event.original is kept only on request (``normalized(preserveOriginal:)``).
        case .object(let members):
            // An object the normalization builds: in the document when one of its fields has a value (a
            // wrapper's own object of that name, otherwise).
            if members.contains(where: { exists($0) }) { return body(FieldValue(objectMarker: ())) }
            guard let (wrapperDocument, wrapperRoot) = wrapper else { return true }
            return Self.visit(wrapperDocument, wrapperRoot, field.bytes, body)
        case .other:
            // Fields the pipeline does not produce: a wrapper's own (agent, host, …), if any.
            guard let (wrapperDocument, wrapperRoot) = wrapper, !field.isUnder("message") else { return true }
            return Self.visit(wrapperDocument, wrapperRoot, field.bytes, body)
        }
    }

    /// Whether the field has at least one value.
    public func exists(_ field: FieldPath) -> Bool {
        var found = false
        forEachValue(of: field) { _ in
            found = true
            return false
        }
        return found
    }

    /// The first value of a field as a string (for keys and summaries; allocates).
    public func firstString(_ field: FieldPath) -> String? {
        var result: String?
        forEachValue(of: field) { value in
            result = value.stringValue
            return false
        }
        return result
    }

    /// Every value of a field as strings.
    public func strings(_ field: FieldPath) -> [String] {
        var result: [String] = []
        forEachValue(of: field) { value in
            result.append(value.stringValue)
            return true
        }
        return result
    }

    /// `event.ingested` in milliseconds: an ECS document's own, else the ingest time the caller gave.
    public var ingestedMilliseconds: Int64? {
        if shape == .ecs, let text = firstString(FieldPath("event.ingested")), let ms = Timestamp.milliseconds(fromRFC3339: text) {
            return ms
        }
        return ingestTime
    }

    /// `@timestamp` in milliseconds (see ``ECSNormalizer`` for where it comes from).
    public var timestampMilliseconds: Int64? {
        if shape == .ecs {
            return firstString(FieldPath("@timestamp")).flatMap { Timestamp.milliseconds(fromRFC3339: $0) }
        }
        if let (aks, aksRoot) = aksRecord, let time = aks.member("time", of: aksRoot), aks.kind(time) == .string,
            let ms = Timestamp.milliseconds(fromRFC3339: Array(aks.string(time).utf8))
        {
            return ms
        }
        var result: Int64?
        visitAudit(.requestReceived) { value in
            result = Timestamp.milliseconds(fromRFC3339: value.stringValue)
            return false
        }
        return result
    }

    // MARK: Materialization (the slow path)

    /// The full ECS document, as ``ECSNormalizer`` builds it.
    public func normalized(preserveOriginal: Bool = false) -> JSONObject {
        if shape == .ecs {
            return ECSNormalizer.completeECSDocument(document.value(at: root).objectValue ?? JSONObject(), clusterName: clusterName)
        }
        let audit = document.value(at: root).objectValue ?? JSONObject()
        let aks = aksRecord.flatMap { $0.0.value(at: $0.1).objectValue }
        var original: String?
        if preserveOriginal {
            if let (wrapperDocument, wrapperRoot) = wrapper, let message = wrapperDocument.member("message", of: wrapperRoot) {
                original = wrapperDocument.string(message)
            } else if let originalSpan {
                original = String(decoding: UnsafeRawBufferPointer(rebasing: document.bytes[originalSpan]), as: UTF8.self)
            } else {
                original = JSONValue.object(audit).serialized()
            }
        }
        var result = ECSNormalizer.normalize(audit: audit, aks: aks, original: original, ingested: ingestTime, clusterName: clusterName)
        if let (wrapperDocument, wrapperRoot) = wrapper, let fields = wrapperDocument.value(at: wrapperRoot).objectValue {
            for member in fields where member.key != "message" && result[member.key] == nil {
                if let value = ECSNormalizer.dropEmpty(member.value) { result[member.key] = value }
            }
        }
        return result
    }

    // MARK: Lookups

    /// `kubernetes.audit.<sub>` with the pipeline's renames, annotation-key rewriting and removals.
    @discardableResult
    func visitAudit(_ access: AuditAccess, _ body: (FieldValue) -> Bool) -> Bool {
        if access.renamedInto.isEmpty { return visitAuditMember(access, body) }
        var found = false
        let result = visitAuditMember(access) { value in
            found = true
            return body(value)
        }
        if found { return result }
        for (key, rest) in access.renamedInto {
            if let value = index[key], Self.exists(document, value, rest) { return body(FieldValue(objectMarker: ())) }
        }
        return true
    }

    private func visitAuditMember(_ access: AuditAccess, _ body: (FieldValue) -> Bool) -> Bool {
        if access.removed { return true }
        if let key = access.annotationKey {
            guard let container = index[.labels] ?? index[.annotations] else { return true }
            if key.isEmpty { return Self.emit(document, container, body) }
            return key.withUnsafeBytes { Self.visitAnnotations(document, container, $0, body) }
        }
        if let (source, rest) = access.renamedFrom, let value = index[source], Self.exists(document, value, rest) {
            return Self.visit(document, value, rest, body)
        }
        if let first = access.first {
            guard let value = index[first] else { return true }
            return Self.visit(document, value, access.rest, body)
        }
        return Self.visit(document, root, access.sub, body)
    }

    /// The values of `primary`, or, when it has none, those of `fallback`.
    private func visitFirst(_ primary: AuditAccess, else fallback: AuditAccess, _ body: (FieldValue) -> Bool) -> Bool {
        var found = false
        let result = visitAudit(primary) { value in
            found = true
            return body(value)
        }
        return found ? result : visitAudit(fallback, body)
    }

    private func visitSourceIPs(distinct: Bool = false, _ body: (FieldValue) -> Bool) -> Bool {
        // The pipeline's `convert` to `ip`: one invalid element and the field is not set at all.
        var values: [FieldValue] = []
        if let array = index[.sourceIPs], document.kind(array) == .array {
            // The array's own elements, as the document writer reads them (the field lookup below passes
            // over nulls and empty strings, which must void the field too).
            guard let addresses = document.ipAddresses(array) else { return true }
            values = addresses.map { FieldValue(kind: .string, raw: document.rawBytes($0), escaped: document.hasEscapes($0)) }
        } else {
            var valid = true
            visitAudit(.sourceIPs) { value in
                guard value.kind == .string, isIPAddress(value.stringValue) else {
                    valid = false
                    return false
                }
                values.append(value)
                return true
            }
            guard valid else { return true }
        }
        var seen: Set<String> = []
        for value in values where !distinct || seen.insert(value.stringValue).inserted {
            if !body(value) { return false }
        }
        return true
    }

    private func exists(inECS field: FieldPath) -> Bool {
        var found = false
        _ = visitECS(field) { _ in
            found = true
            return false
        }
        return found
    }

    private func visitECS(_ field: FieldPath, _ body: (FieldValue) -> Bool) -> Bool {
        var found = false
        let result = field.bytes.withUnsafeBytes { path in
            Self.visit(document, root, path) { value in
                found = true
                return body(value)
            }
        }
        if !found, case .constant(let value) = field.mapping, field.name.hasSuffix(".dataset") {
            return body(FieldValue(constant: value))
        }
        return result
    }

    /// Every value at a dotted `path` below the value at `index`, ES-style: keys may themselves contain dots
    /// (flattened documents), arrays of objects are walked element by element.
    static func visit(_ document: JSONDocument, _ index: Int, _ path: UnsafeRawBufferPointer, _ body: (FieldValue) -> Bool) -> Bool {
        if path.isEmpty { return emit(document, index, body) }
        switch document.kind(index) {
        case .object:
            var keepGoing = true
            document.forEachMember(of: index) { key, value in
                withKeyBytes(document, key) { keyBytes in
                    if keyBytes.count == path.count {
                        if bytesEqual(keyBytes.baseAddress!, path.baseAddress!, count: path.count) { keepGoing = emit(document, value, body) }
                    } else if keyBytes.count < path.count, path[keyBytes.count] == UInt8(ascii: "."),
                        keyBytes.count == 0 || bytesEqual(keyBytes.baseAddress!, path.baseAddress!, count: keyBytes.count)
                    {
                        keepGoing = visit(document, value, UnsafeRawBufferPointer(rebasing: path[(keyBytes.count + 1)...]), body)
                    }
                }
                return keepGoing
            }
            return keepGoing
        case .array:
            var keepGoing = true
            document.forEachElement(of: index) { element in
                keepGoing = visit(document, element, path, body)
                return keepGoing
            }
            return keepGoing
        default:
            return true
        }
    }

    static func visit(_ document: JSONDocument, _ index: Int, _ path: [UInt8], _ body: (FieldValue) -> Bool) -> Bool {
        path.withUnsafeBytes { visit(document, index, $0, body) }
    }

    /// Annotation keys are matched with their dots read as underscores (`authorization.k8s.io/decision`
    /// is `authorization_k8s_io/decision`).
    static func visitAnnotations(_ document: JSONDocument, _ container: Int, _ key: UnsafeRawBufferPointer, _ body: (FieldValue) -> Bool) -> Bool {
        guard document.kind(container) == .object else { return true }
        var keepGoing = true
        document.forEachMember(of: container) { keyIndex, value in
            withKeyBytes(document, keyIndex) { keyBytes in
                guard keyBytes.count == key.count else { return }
                for offset in 0..<key.count {
                    let byte = keyBytes[offset] == UInt8(ascii: ".") ? UInt8(ascii: "_") : keyBytes[offset]
                    if byte != key[offset] { return }
                }
                keepGoing = emit(document, value, body)
            }
            return keepGoing
        }
        return keepGoing
    }

    /// Emits a found value: scalars as they are, arrays element by element, objects only when not empty.
    static func emit(_ document: JSONDocument, _ index: Int, _ body: (FieldValue) -> Bool) -> Bool {
        switch document.kind(index) {
        case .null: return true
        case .string:
            let raw = document.rawBytes(index)
            if raw.isEmpty { return true }
            return body(FieldValue(kind: .string, raw: raw, escaped: document.hasEscapes(index)))
        case .number: return body(FieldValue(kind: .number, raw: document.rawBytes(index), escaped: false))
        case .true, .false: return body(FieldValue(kind: .bool, raw: document.rawBytes(index), escaped: false))
        case .array:
            var keepGoing = true
            document.forEachElement(of: index) { element in
                keepGoing = emit(document, element, body)
                return keepGoing
            }
            return keepGoing
        case .object:
            guard !isEmpty(document, index) else { return true }
            return body(FieldValue(kind: .object, raw: UnsafeRawBufferPointer(start: nil, count: 0), escaped: false))
        }
    }

    /// Whether the pipeline's empty-value removal would delete this value.
    static func isEmpty(_ document: JSONDocument, _ index: Int) -> Bool {
        switch document.kind(index) {
        case .null: return true
        case .string: return document.rawBytes(index).isEmpty
        case .object, .array:
            var empty = true
            var child = index + 1
            let end = Int(document.entries[index].end)
            let isObject = document.kind(index) == .object
            while child < end {
                let value = isObject ? child + 1 : child
                if !isEmpty(document, value) {
                    empty = false
                    break
                }
                child = document.next(value)
            }
            return empty
        default: return false
        }
    }

    static func exists(_ document: JSONDocument, _ index: Int, _ path: [UInt8]) -> Bool {
        var found = false
        _ = visit(document, index, path) { _ in
            found = true
            return false
        }
        return found
    }

    static func withKeyBytes(_ document: JSONDocument, _ key: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        if document.hasEscapes(key) {
            unescape(document.rawBytes(key)).withUnsafeBytes(body)
        } else {
            body(document.rawBytes(key))
        }
    }

    // MARK: Shape checks

    static func looksLikeAuditEvent(_ document: JSONDocument, _ index: RootIndex) -> Bool {
        if let kind = index[.kind], document.stringEquals(kind, "Event") { return true }
        if let apiVersion = index[.apiVersion], document.kind(apiVersion) == .string,
            document.rawBytes(apiVersion).starts(with: "audit.k8s.io/".utf8)
        {
            return true
        }
        return index[.auditID] != nil && index[.verb] != nil
    }

    /// JSON kinds a field may have.
    struct Kinds: OptionSet {
        let rawValue: UInt8
        init(rawValue: UInt8) { self.rawValue = rawValue }
        init(_ kind: JSONTape.Kind) { rawValue = 1 << kind.rawValue }
        static let string = Kinds(.string), object = Kinds(.object), array = Kinds(.array), number = Kinds(.number)
        var names: String {
            [(Kinds.string, "string"), (.object, "object"), (.array, "array"), (.number, "number")]
                .filter { contains($0.0) }.map(\.1).joined(separator: " or ")
        }
    }

    /// Known fields with the wrong JSON type: the event cannot be judged, so it is rejected with a reason.
    /// - Parameter index: the event's top-level members (of `kubernetes.audit` for ECS documents).
    static func validateTypes(_ document: JSONDocument, _ index: RootIndex, prefix: String) -> (message: String, offset: Int)? {
        // Names are built only for the message of a failure: the check itself allocates nothing.
        func check(_ value: Int?, _ allowed: Kinds, _ name: @autoclosure () -> String) -> (String, Int)? {
            guard let value else { return nil }
            let kind = document.kind(value)
            guard kind != .null, !allowed.contains(Kinds(kind)) else { return nil }
            return ("\(prefix)\(name()) must be \(allowed.names), not \(kind)", Int(document.entries[value].start))
        }
        func checkElements(_ value: Int?, _ allowed: Kinds, _ name: @autoclosure () -> String) -> (String, Int)? {
            guard let value, document.kind(value) == .array else { return nil }
            var problem: (String, Int)?
            document.forEachElement(of: value) { element in
                problem = check(element, allowed, "\(name())[]")
                return problem == nil
            }
            return problem
        }
        for key: RootKey in [.verb, .auditID, .userAgent, .requestURI, .stage, .level, .requestReceivedTimestamp, .stageTimestamp] {
            if let problem = check(index[key], .string, "\(key)") { return problem }
        }
        if let problem = check(index[.user], .object, "user") { return problem }
        if let user = index[.user], document.kind(user) == .object {
            var problem: (String, Int)?
            document.forEachMember(of: user) { key, value in
                if document.stringEquals(key, "username") || document.stringEquals(key, "uid") {
                    problem = check(value, .string, "user.\(document.string(key))")
                } else if document.stringEquals(key, "groups") {
                    problem = check(value, .array, "user.groups") ?? checkElements(value, .string, "user.groups")
                }
                return problem == nil
            }
            if let problem { return problem }
        }
        if let problem = check(index[.sourceIPs], .array, "sourceIPs") ?? checkElements(index[.sourceIPs], .string, "sourceIPs") {
            return problem
        }
        for key: RootKey in [.annotations, .objectRef, .responseStatus] {
            if let problem = check(index[key], .object, "\(key)") { return problem }
        }
        // Annotations and objectRef members are all strings.
        for key: RootKey in [.annotations, .objectRef] {
            guard let object = index[key], document.kind(object) == .object else { continue }
            var problem: (String, Int)?
            document.forEachMember(of: object) { member, value in
                problem = check(value, .string, "\(key).\(document.string(member))")
                return problem == nil
            }
            if let problem { return problem }
        }
        if let status = index[.responseStatus], document.kind(status) == .object, let code = document.member("code", of: status) {
            if let problem = check(code, .number, "responseStatus.code") { return problem }
        }
        return nil
    }
}

/// An ECS field name, resolved once against the normalization so that lookups do no string work.
/// A class: rules hold many and pass them on every evaluation, where a reference costs one retain.
public final class FieldPath: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let name: String
    let bytes: [UInt8]
    let mapping: Mapping
    /// For `.audit`/`.alias` mappings: the access, held strongly by `mapping`.
    unowned(unsafe) let access: AuditAccess?

    enum Mapping: Hashable, Sendable {
        case audit(AuditAccess)
        case alias(AuditAccess)
        case sourceIP
        /// The source addresses, each once (the document's `related.ip`).
        case relatedIP
        case relatedUser
        case outcome
        case constant(StaticStringBox)
        case resourceType
        case resourceName
        case timestamp
        case ingested
        /// GKE's label, else the input's configured name.
        case clusterName(AuditAccess)
        case aksMetadata(source: [UInt8], inProperties: Bool)
        case original
        /// An object of the document outside `kubernetes.audit` (`event`, `orchestrator.resource`, …): exists
        /// (as one marker value) when any of these fields has a value.
        case object([FieldPath])
        case other
    }

    public init(_ name: String) {
        self.name = name
        self.bytes = Array(name.utf8)
        self.mapping = Self.resolve(name)
        switch mapping {
        case .audit(let access), .alias(let access): self.access = access
        default: self.access = nil
        }
    }

    public convenience init(stringLiteral name: String) { self.init(name) }

    public static func == (lhs: FieldPath, rhs: FieldPath) -> Bool { lhs.name == rhs.name }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }

    public var description: String { name }

    /// Whether the field's values appear verbatim in the record's bytes (so a record lacking a literal
    /// cannot match it): fields copied from the event, not derived or constant ones.
    public var valuesAreVerbatim: Bool {
        switch mapping {
        case .audit, .alias, .relatedUser, .resourceType, .resourceName, .aksMetadata, .other: true
        // A configured cluster name is not in the record's bytes.
        case .sourceIP, .relatedIP, .outcome, .constant, .timestamp, .ingested, .original, .clusterName, .object: false
        }
    }


    func isUnder(_ prefix: String) -> Bool { name == prefix || name.hasPrefix(prefix + ".") }


    private static let aliases: [String: String] = [
        "event.action": "verb",
        "user.name": "user.username",
        "user.id": "user.uid",
        "user_agent.original": "userAgent",
        "orchestrator.api_version": "apiVersion",
        "orchestrator.namespace": "objectRef.namespace",
        "orchestrator.cluster.id": "resource.labels.project_id",
    ]

    private static let aksMetadata: [String: (String, Bool)] = [
        "category": ("category", false), "operation_name": ("operationName", false), "resource_id": ("resourceId", false),
        "service_build": ("serviceBuild", false), "time": ("time", false),
        "container_id": ("containerID", true), "pod": ("pod", true), "stream": ("stream", true),
    ]

    /// The fields the normalization derives (constants, conversions, the event's own under ECS names).
    private static let derivedFields: [String: Mapping] = [
        "event.kind": .constant("event"), "event.dataset": .constant("kubernetes.audit_logs"),
        "data_stream.dataset": .constant("kubernetes.audit_logs"), "orchestrator.type": .constant("kubernetes"),
        "event.outcome": .outcome, "source.ip": .sourceIP, "client.ip": .sourceIP, "related.ip": .relatedIP,
        "related.user": .relatedUser, "orchestrator.resource.type": .resourceType, "orchestrator.resource.name": .resourceName,
        "@timestamp": .timestamp, "event.ingested": .ingested,
        "orchestrator.cluster.name": .clusterName(AuditAccess("resource.labels.cluster_name")), "event.original": .original,
        // The event itself (`kubernetes` holds nothing else).
        "kubernetes": .audit(AuditAccess("")), "kubernetes.audit": .audit(AuditAccess("")),
    ]

    /// The objects that hold the fields the normalization writes beside the event (`event` → `event.action`,
    /// `event.dataset`, …; `orchestrator` → `orchestrator.resource`, …), from the tables above.
    private static let synthesizedObjects: [String: [String]] = {
        var objects: [String: [String]] = [:]
        for field in (derivedFields.keys.filter { !$0.hasPrefix("kubernetes") } + aliases.keys).sorted() {
            var parts = field.split(separator: ".").map(String.init)
            while parts.count > 1 {
                let member = parts.joined(separator: ".")
                parts.removeLast()
                let parent = parts.joined(separator: ".")
                if !objects[parent, default: []].contains(member) { objects[parent, default: []].append(member) }
            }
        }
        return objects
    }()

    private static func resolve(_ name: String) -> Mapping {
        if let mapping = derivedFields[name] { return mapping }
        if let members = synthesizedObjects[name] { return .object(members.map(FieldPath.init)) }
        if let source = aliases[name] { return .alias(AuditAccess(source)) }
        // Below an alias (its value copied whole, an object too).
        if let (alias, source) = aliases.first(where: { name.hasPrefix($0.key + ".") }) {
            return .alias(AuditAccess(source + name.dropFirst(alias.count)))
        }
        let auditPrefix = "kubernetes.audit."
        if name.hasPrefix(auditPrefix) {
            let sub = String(name.dropFirst(auditPrefix.count))
            let aksPrefix = "aks_metadata."
            if sub.hasPrefix(aksPrefix), let (source, inProperties) = aksMetadata[String(sub.dropFirst(aksPrefix.count))] {
                return .aksMetadata(source: Array(source.utf8), inProperties: inProperties)
            }
            if sub == "aks_metadata" { return .object(aksMetadata.keys.sorted().map { FieldPath(name + "." + $0) }) }
            return .audit(AuditAccess(sub))
        }
        return .other
    }
}

/// A `StaticString` that can live in hashable enums.
struct StaticStringBox: Hashable, Sendable, ExpressibleByStringLiteral {
    let value: StaticString
    init(stringLiteral value: StaticString) { self.value = value }
    static func == (lhs: StaticStringBox, rhs: StaticStringBox) -> Bool { lhs.value.description == rhs.value.description }
    func hash(into hasher: inout Hasher) { hasher.combine(value.description) }
}

/// One value of a field, borrowed from the record: strings are compared as bytes without building `String`s.
public struct FieldValue: @unchecked Sendable {
    public enum Kind: Sendable { case string, number, bool, object }
    public let kind: Kind
    /// Strings: the text between the quotes, escapes not decoded (see ``escaped``). Numbers and booleans: their text.
    public let raw: UnsafeRawBufferPointer
    public let escaped: Bool
    private let owned: [UInt8]?

    init(kind: Kind, raw: UnsafeRawBufferPointer, escaped: Bool) {
        self.kind = kind
        self.raw = raw
        self.escaped = escaped
        self.owned = nil
    }

    init(constant: StaticString) {
        self.init(kind: .string, raw: UnsafeRawBufferPointer(start: constant.utf8Start, count: constant.utf8CodeUnitCount), escaped: false)
    }

    init(constant: StaticStringBox) { self.init(constant: constant.value) }

    init(owned text: String) { self.init(kind: .string, owning: Array(text.utf8)) }

    private init(kind: Kind, owning bytes: [UInt8]?) {
        self.kind = kind
        raw = UnsafeRawBufferPointer(start: nil, count: 0)
        escaped = false
        owned = bytes
    }

    /// Values of materialized documents (they own their bytes).
    public init(string: String) { self.init(kind: .string, owning: Array(string.utf8)) }
    public init(number text: String) { self.init(kind: .number, owning: Array(text.utf8)) }
    public init(bool: Bool) { self.init(kind: .bool, owning: Array((bool ? "true" : "false").utf8)) }
    /// A non-empty object: it exists, but equals no scalar.
    public init(objectMarker: ()) { self.init(kind: .object, owning: nil) }

    /// The value's UTF-8 bytes, escapes decoded.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        if let owned { return try owned.withUnsafeBytes(body) }
        if escaped { return try unescape(raw).withUnsafeBytes(body) }
        return try body(raw)
    }

    public var stringValue: String { withBytes { String(decoding: $0, as: UTF8.self) } }

    public var doubleValue: Double? {
        switch kind {
        case .number: Double(stringValue)
        case .string: Double(stringValue)
        default: nil
        }
    }

    public var boolValue: Bool? { kind == .bool ? withBytes { $0.first == UInt8(ascii: "t") } : nil }

    /// Exact comparison with a literal.
    public func equals(_ literal: StaticString) -> Bool {
        withBytes { bytes in
            bytes.count == literal.utf8CodeUnitCount && (bytes.count == 0 || bytesEqual(bytes.baseAddress!, literal.utf8Start, count: bytes.count))
        }
    }
}
