/// The shapes one Kafka record can arrive in.
public enum InputShape: String, Sendable, CaseIterable {
    /// A raw `audit.k8s.io/v1` (or `v1beta1`) `Event`.
    case event
    /// One item of an `EventList` (the API server's webhook backend in batch mode).
    case eventListItem
    /// A GKE Cloud Logging entry (`protoPayload`, `insertId`, `receiveTimestamp`, …).
    case gke
    /// An AKS diagnostic record: the event in `properties.log`, as a JSON string or an object.
    case aks
    /// An ECS document that Elastic Agent / Filebeat already built (`kubernetes.audit.*` present).
    case ecs
    /// A Filebeat-style wrapper whose `message` holds the raw audit JSON as a string.
    case filebeat
}

public struct DecoderLimits: Sendable, Equatable {
    /// Records larger than this are rejected whole, unread.
    public var maxRecordBytes: Int
    /// Deeper JSON nesting is rejected (protects the stack and the CPU from hostile input).
    public var maxDepth: Int
    /// After this many bad events in one record, the rest of the record is reported as one error.
    public var maxErrorsPerRecord: Int

    public init(maxRecordBytes: Int = 1 << 20, maxDepth: Int = 100, maxErrorsPerRecord: Int = 16) {
        self.maxRecordBytes = maxRecordBytes
        self.maxDepth = maxDepth
        self.maxErrorsPerRecord = maxErrorsPerRecord
    }
}

/// Why (part of) a record could not be turned into an audit event.
public struct AuditDecodeError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        case empty = "empty_record"
        case tooLarge = "record_too_large"
        case invalidJSON = "invalid_json"
        case invalidUTF8 = "invalid_utf8"
        case tooDeep = "nesting_too_deep"
        case notAnObject = "not_an_object"
        case unrecognizedShape = "unrecognized_shape"
        case wrongType = "wrong_field_type"
        case tooManyErrors = "too_many_errors"
    }
    public var reason: Reason
    public var message: String
    /// Byte offset in the record (for embedded JSON: of the field holding it).
    public var offset: Int
    /// Which event of the record (line, or batch item) failed; 0 for a single event.
    public var eventIndex: Int

    public var description: String { "\(reason.rawValue): \(message) (event \(eventIndex), byte \(offset))" }
}

/// Turns the bytes of one Kafka record into the audit events it holds.
///
/// Reusable and allocation-light: one decoder per processing thread, not shared (not thread-safe). Events
/// handed to the body borrow the record's bytes and the decoder's buffers: use them inside the body only.
public final class AuditRecordDecoder {
    public let limits: DecoderLimits
    private let tape = JSONTape()
    /// Tapes for JSON embedded in string fields (AKS `properties.log`, wrapper `message`), one per nesting level.
    private var embeddedTapes: [JSONTape] = []
    private var embeddedDepth = 0

    public init(limits: DecoderLimits = DecoderLimits()) {
        self.limits = limits
    }

    /// Decodes every event in `record` and hands each, or the error that replaced it, to `body` in order.
    /// A bad event never hides the other events of the record.
    /// - Parameters:
    ///   - ingestTime: `event.ingested` in milliseconds (the Kafka record's timestamp), used unless the record
    ///     is an ECS document carrying its own.
    ///   - clusterName: `orchestrator.cluster.name` for events that carry none (the input's configured name).
    public func decode<E: Error>(
        _ record: UnsafeRawBufferPointer, ingestTime: Int64? = nil, clusterName: String? = nil,
        _ body: (Result<AuditEvent, AuditDecodeError>) throws(E) -> Void
    ) throws(E) {
        if record.count > limits.maxRecordBytes {
            try body(.failure(AuditDecodeError(
                reason: .tooLarge, message: "record of \(record.count) bytes exceeds the limit of \(limits.maxRecordBytes)",
                offset: limits.maxRecordBytes, eventIndex: 0)))
            return
        }
        tape.removeAll()
        var scanner = JSONScanner(record, from: 0, maxDepth: limits.maxDepth)
        scanner.skipWhitespace()
        if scanner.position == record.count {
            try body(.failure(AuditDecodeError(reason: .empty, message: "the record holds no JSON", offset: 0, eventIndex: 0)))
            return
        }
        // Values one after another: one event, or newline-delimited events (Fluent Bit, Vector batches).
        var valueIndex = 0
        var errors = 0
        while scanner.position < record.count {
            let start = scanner.position
            let root = tape.count
            do throws(JSONSyntaxError) {
                try scanner.scanValue(into: tape, depth: 0)
            } catch {
                tape.truncate(to: root)
                errors += 1
                if errors > limits.maxErrorsPerRecord {
                    try body(.failure(AuditDecodeError(
                        reason: .tooManyErrors, message: "more than \(limits.maxErrorsPerRecord) bad events; the rest of the record is skipped",
                        offset: start, eventIndex: valueIndex)))
                    return
                }
                try body(.failure(AuditDecodeError(syntax: error, eventIndex: valueIndex)))
                // Resynchronize at the next line: the events after a bad line are still read.
                guard let newline = record[start...].firstIndex(of: UInt8(ascii: "\n")) else { return }
                scanner.position = newline + 1
                scanner.skipWhitespace()
                valueIndex += 1
                continue
            }
            let document = JSONDocument(bytes: record, tape: tape)
            try dispatch(document, root: root, span: start..<scanner.position, eventIndex: valueIndex, ingestTime: ingestTime, clusterName: clusterName,
                         insideWrapper: false, body)
            scanner.skipWhitespace()
            valueIndex += 1
        }
    }

    /// Recognizes the shape of one top-level value and emits its events.
    private func dispatch<E: Error>(
        _ document: JSONDocument, root: Int, span: Range<Int>, eventIndex: Int, ingestTime: Int64?, clusterName: String?, insideWrapper: Bool,
        _ body: (Result<AuditEvent, AuditDecodeError>) throws(E) -> Void
    ) throws(E) {
        let offset = Int(document.entries[root].start)
        guard document.kind(root) == .object else {
            try body(.failure(AuditDecodeError(reason: .notAnObject, message: "a \(document.kind(root)) is not an audit event", offset: offset, eventIndex: eventIndex)))
            return
        }
        let index = RootIndex(document, root)
        func emit(_ shape: InputShape, _ doc: JSONDocument, _ eventRoot: Int, _ eventIndexes: RootIndex,
                  aks: (JSONDocument, Int)? = nil, span: Range<Int>?) throws(E) {
            if let problem = AuditEvent.validateTypes(doc, eventIndexes, prefix: shape == .ecs ? "kubernetes.audit." : "") {
                try body(.failure(AuditDecodeError(reason: .wrongType, message: problem.message, offset: problem.offset, eventIndex: eventIndex)))
                return
            }
            try body(.success(AuditEvent(
                shape: shape, document: doc, root: eventRoot, index: eventIndexes, aksRecord: aks, wrapper: nil,
                originalSpan: span, ingestTime: ingestTime, clusterName: clusterName, eventIndex: eventIndex)))
        }

        if let kubernetes = index[.kubernetes], let audit = document.member("audit", of: kubernetes), document.kind(audit) == .object {
            try emit(.ecs, document, root, RootIndex(document, audit), span: span)
        } else if let items = index[.items], document.kind(items) == .array, let kind = index[.kind], document.stringEquals(kind, "EventList") {
            var elements: [Int] = []
            var failures: [AuditDecodeError] = []
            document.forEachElement(of: items) { item in
                if document.kind(item) == .object {
                    elements.append(item)
                } else {
                    failures.append(AuditDecodeError(reason: .notAnObject, message: "an EventList item is not an object",
                                                     offset: Int(document.entries[item].start), eventIndex: eventIndex))
                }
                return true
            }
            for failure in failures { try body(.failure(failure)) }
            for item in elements { try emit(.eventListItem, document, item, RootIndex(document, item), span: nil) }
        } else if index[.protoPayload] != nil {
            try emit(.gke, document, root, index, span: span)
        } else if let properties = index[.properties], let log = document.member("log", of: properties) {
            switch document.kind(log) {
            case .object: try emit(.aks, document, log, RootIndex(document, log), aks: (document, root), span: nil)
            case .string:
                try withEmbeddedJSON(document, string: log, eventIndex: eventIndex, body) { (inner, innerRoot, innerSpan) throws(E) in
                    try emit(.aks, inner, innerRoot, RootIndex(inner, innerRoot), aks: (document, root), span: innerSpan)
                }
            default:
                try body(.failure(AuditDecodeError(reason: .wrongType, message: "properties.log must be a JSON string or object",
                                                   offset: Int(document.entries[log].start), eventIndex: eventIndex)))
            }
        } else if !insideWrapper, let message = index[.message], document.kind(message) == .string {
            try withEmbeddedJSON(document, string: message, eventIndex: eventIndex, body) { (inner, innerRoot, innerSpan) throws(E) in
                // The wrapped text is itself a raw event, a GKE entry or an AKS record.
                try dispatch(inner, root: innerRoot, span: innerSpan, eventIndex: eventIndex, ingestTime: ingestTime, clusterName: clusterName,
                             insideWrapper: true) { (result) throws(E) in
                    guard case .success(let event) = result else { return try body(result) }
                    try body(.success(event.wrapped(in: document, root: root)))
                }
            }
        } else if AuditEvent.looksLikeAuditEvent(document, index) {
            try emit(.event, document, root, index, span: span)
        } else {
            try body(.failure(AuditDecodeError(
                reason: .unrecognizedShape,
                message: "not a Kubernetes audit Event, EventList, GKE or AKS record, ECS document, or wrapper with a message",
                offset: offset, eventIndex: eventIndex)))
        }
    }

    /// Decodes a JSON text held in a string field into a buffer of its own, scans it, and hands it over.
    private func withEmbeddedJSON<E: Error>(
        _ document: JSONDocument, string index: Int, eventIndex: Int,
        _ body: (Result<AuditEvent, AuditDecodeError>) throws(E) -> Void,
        _ use: (JSONDocument, Int, Range<Int>) throws(E) -> Void
    ) throws(E) {
        let text = document.hasEscapes(index) ? unescape(document.rawBytes(index)) : Array(document.rawBytes(index))
        let fieldOffset = Int(document.entries[index].start)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, text.count), alignment: 1)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: text)
        let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<text.count])
        if embeddedTapes.count <= embeddedDepth { embeddedTapes.append(JSONTape()) }
        let innerTape = embeddedTapes[embeddedDepth]
        innerTape.removeAll()
        embeddedDepth += 1
        defer { embeddedDepth -= 1 }
        var scanner = JSONScanner(bytes, from: 0, maxDepth: limits.maxDepth)
        do throws(JSONSyntaxError) {
            try scanner.scanValue(into: innerTape, depth: 0)
            scanner.skipWhitespace()
            if scanner.position != bytes.count {
                throw JSONSyntaxError(kind: .syntax, reason: "unexpected data after the JSON value", offset: scanner.position)
            }
        } catch {
            var failure = AuditDecodeError(syntax: error, eventIndex: eventIndex)
            failure.message = "embedded JSON: \(failure.message) (byte \(failure.offset) of the embedded text)"
            failure.offset = fieldOffset
            try body(.failure(failure))
            return
        }
        try use(JSONDocument(bytes: bytes, tape: innerTape), 0, 0..<bytes.count)
    }
}

extension AuditDecodeError {
    init(syntax error: JSONSyntaxError, eventIndex: Int) {
        let reason: Reason
        switch error.kind {
        case .syntax: reason = .invalidJSON
        case .invalidUTF8: reason = .invalidUTF8
        case .tooDeep: reason = .tooDeep
        }
        self.init(reason: reason, message: error.reason, offset: error.offset, eventIndex: eventIndex)
    }
}

/// A prefilter over raw record bytes: a record that cannot contain what a rule needs is rejected before it
/// is parsed. Conservative by construction: it rejects only when sure.
///
/// `requirements` is a conjunction of alternatives: every group must have one of its literals somewhere in
/// the record. Where JSON could spell a literal differently (`\u0066orbid`, `\/`), the record passes.
public struct Prefilter: Sendable, Equatable {
    public let requirements: [[[UInt8]]]
    /// Per literal, the two bytes compared first (``SearchAnchors``).
    let anchors: [[SearchAnchors]]

    public init(requirements: [[String]]) {
        // A literal with bytes JSON escapes (quote, backslash, controls) cannot be searched for verbatim.
        self.requirements = requirements.compactMap { group -> [[UInt8]]? in
            let literals = group.map { Array($0.utf8) }
            if literals.isEmpty || literals.contains(where: { $0.isEmpty || $0.contains { $0 == 0x22 || $0 == 0x5C || $0 < 0x20 } }) {
                return nil
            }
            return literals
        }
        anchors = self.requirements.map { group in
            group.map { literal in SearchAnchors(literal, commonness: Self.commonness) }
        }
    }

    /// A rough rank of how often a byte occurs in audit events (lowercase letters, digits and JSON
    /// punctuation are everywhere; capitals, rare letters and other bytes are not).
    static func commonness(_ byte: UInt8) -> Int {
        switch byte {
        case UInt8(ascii: "e"), UInt8(ascii: "t"), UInt8(ascii: "a"), UInt8(ascii: "s"), UInt8(ascii: "i"), UInt8(ascii: "o"),
            UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "\""), UInt8(ascii: ":"), UInt8(ascii: ","), UInt8(ascii: "-"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            3
        case UInt8(ascii: "c"), UInt8(ascii: "d"), UInt8(ascii: "l"), UInt8(ascii: "u"), UInt8(ascii: "m"), UInt8(ascii: "p"),
            UInt8(ascii: "/"), UInt8(ascii: "."), UInt8(ascii: "h"), UInt8(ascii: "g"), UInt8(ascii: "f"):
            2
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "{"), UInt8(ascii: "}"):
            1
        default: 0
        }
    }

    /// Whether the record might match (false only when it certainly cannot).
    public func mightMatch(_ record: UnsafeRawBufferPointer) -> Bool {
        guard !requirements.isEmpty, record.baseAddress != nil else { return true }
        // Escapes that can spell any character (`\u`, `\/`) make byte search unsure: the full path decides.
        if Self.hasUnsureEscape(record) { return true }
        for (group, anchors) in zip(requirements, anchors) {
            var found = false
            for (literal, anchor) in zip(group, anchors) where literal.withUnsafeBytes({ contains(record, $0, anchors: anchor) }) {
                found = true
                break
            }
            if !found { return false }
        }
        return true
    }

    /// One pass over the backslashes: is any the start of `\u` or `\/`? (An escaped backslash is skipped
    /// with the character it escapes.)
    static func hasUnsureEscape(_ record: UnsafeRawBufferPointer) -> Bool {
        guard let base = record.baseAddress else { return false }
        var index = 0
        while index < record.count - 1, let hit = memchr(base + index, Int32(UInt8(ascii: "\\")), record.count - 1 - index) {
            let at = UnsafeRawPointer(hit) - base
            let next = record[at + 1]
            if next == UInt8(ascii: "u") || next == UInt8(ascii: "/") { return true }
            index = at + 2
        }
        return false
    }
}

/// The prefilters of several rules: a record passes if any rule might match it. A rule without a
/// prefilter (nothing to require) lets every record through.
///
/// Many rules share literals (`ResponseComplete`, `allow`, `create`): each distinct literal is searched
/// for at most once per record, and the escape check runs once, however many rules there are.
public struct PrefilterSet: Sendable {
    public let filters: [Prefilter]
    public let acceptsEverything: Bool
    /// The distinct literals of every filter, with the bytes each search compares first.
    private let literals: [[UInt8]]
    private let anchors: [SearchAnchors]
    /// Per filter, per group: the group's literals as indices into ``literals``.
    private let groups: [[[Int]]]

    public init(_ filters: [Prefilter?]) {
        self.filters = filters.compactMap { $0 }
        acceptsEverything = filters.isEmpty || filters.contains { $0 == nil || $0!.requirements.isEmpty }
        var literals: [[UInt8]] = []
        var anchors: [SearchAnchors] = []
        var positions: [[UInt8]: Int] = [:]
        groups = self.filters.map { filter in
            zip(filter.requirements, filter.anchors).map { group, groupAnchors in
                zip(group, groupAnchors).map { literal, anchor in
                    if let known = positions[literal] { return known }
                    positions[literal] = literals.count
                    literals.append(literal)
                    anchors.append(anchor)
                    return literals.count - 1
                }
            }
        }
        self.literals = literals
        self.anchors = anchors
    }

    /// Whether any filter might match: the same verdict as asking each ``Prefilter`` in turn. Searches the
    /// groups in their written order (no ``SearchOrder`` to learn into).
    public func mightMatch(_ record: UnsafeRawBufferPointer) -> Bool {
        // The literals first: a record that holds them passes whatever its escapes.
        var unused = SearchOrder()
        return searchLiterals(record, order: &unused, learning: false) || Prefilter.hasUnsureEscape(record)
    }

    /// The order in which each filter's groups are searched, learned from the records: a group that rejects
    /// a record moves one place forward, so the group that rejects most records comes to be searched first
    /// (a rule's clauses are written in no particular order: the seed rule names the service account before
    /// the `forbid` decision, which almost every record lacks). The order changes what a verdict costs,
    /// never the verdict. Empty until first used; one per processing thread, kept by its caller.
    public struct SearchOrder: Sendable {
        /// Per filter, its groups' indices in the order they are searched.
        fileprivate(set) var groups: [[Int]] = []
        public init() {}
    }

    /// The literal search alone, each filter's groups searched in `order` and the order updated: whether
    /// every group of some filter has a literal in the bytes as written. A false is the set's verdict only
    /// for a record without `\u` or `\/` escapes (``Prefilter/hasUnsureEscape(_:)``), which the caller rules
    /// out some other way (``AuditRecordDecoder/screen(_:prefilter:order:validate:_:)``).
    func literalsPresent(_ record: UnsafeRawBufferPointer, reordering order: inout SearchOrder) -> Bool {
        searchLiterals(record, order: &order, learning: true)
    }

    /// True at once for a set that accepts everything (a rule without literals) or a record without bytes.
    @inline(__always)
    private func searchLiterals(_ record: UnsafeRawBufferPointer, order: inout SearchOrder, learning: Bool) -> Bool {
        if acceptsEverything || record.baseAddress == nil { return true }
        if learning, order.groups.count != groups.count { order.groups = groups.map { Array($0.indices) } }
        return withUnsafeTemporaryAllocation(of: Int8.self, capacity: literals.count) { found in
            found.initialize(repeating: -1)
            func present(_ index: Int) -> Bool {
                if found[index] < 0 { found[index] = literals[index].withUnsafeBytes { contains(record, $0, anchors: anchors[index]) } ? 1 : 0 }
                return found[index] == 1
            }
            for filter in groups.indices {
                var rejectedAt: Int?
                for position in groups[filter].indices {
                    let group = learning ? order.groups[filter][position] : position
                    if !groups[filter][group].contains(where: present) {
                        rejectedAt = position
                        break
                    }
                }
                guard let position = rejectedAt else { return true }
                if learning, position > 0 { order.groups[filter].swapAt(position, position - 1) }
            }
            return false
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
