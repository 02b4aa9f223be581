// The ECS document of a match, written as canonical JSON bytes straight from the record's tape.

/// Writes the document ``ECSNormalizer`` builds for a raw audit event (an `Event`, or an `EventList` item)
/// as canonical JSON — compact, members in key order, what `JSONValue.write(sortedKeys: true)` makes of
/// ``AuditEvent/normalized(preserveOriginal:)`` — without building the tree: values are copied from the
/// record's bytes, objects are sorted through a reused index stack.
///
/// It declines (``Decline``) whatever it cannot prove equal to the tree path, which then runs instead:
/// other shapes (GKE renames, AKS metadata, wrappers, ECS input), keys with escapes or non-ASCII bytes (the
/// tree orders and merges them as Swift strings), annotation keys that collide once their dots become
/// underscores, and `event.original`. A differential test and fuzz target hold the two paths together.
struct ECSDocumentWriter {
    struct Decline: Error {}

    static let renamedMembers: [RootKey] = [.insertId, .receiveTimestamp, .timestamp, .protoPayload, .labels, .resource]

    let document: JSONDocument
    private(set) var output: ByteBuffer
    /// Members of the objects being written, innermost last: (key, value) tape indexes and the key's
    /// ordering prefix (``orderingPrefix(_:underscoringDots:)``).
    private var stack: MemberStack

    fileprivate struct Member {
        var key: Int32
        var value: Int32
        var prefix: UInt64
    }

    init(document: JSONDocument, capacity: Int) {
        self.document = document
        output = ByteBuffer(capacity: capacity)
        stack = MemberStack()
    }

    /// How an object's members are written besides sorting: annotation keys read with dots as underscores;
    /// `requestObject` / `responseObject` lose `metadata`; the event root gets both rules one level down.
    private enum Rules { case plain, annotationKeys, withoutMetadata, auditRoot }

    /// Frees the output and the member stack (the writer is not used again).
    func deallocate() {
        output.deallocate()
        stack.deallocate()
    }

    // MARK: The document

    mutating func writeEvent(root: Int, index: RootIndex, ingested: Int64?, clusterName: String? = nil) throws(Decline) {
        // Members the pipeline renames (GKE) or reads from elsewhere: the tree path applies the renames.
        for key in Self.renamedMembers where index[key] != nil { throw Decline() }
        let user = index[.user].flatMap { document.kind($0) == .object ? $0 : nil }
        let objectRef = index[.objectRef].flatMap { document.kind($0) == .object ? $0 : nil }
        let username = user.flatMap { document.member("username", of: $0) }
        let uid = user.flatMap { document.member("uid", of: $0) }
        let sourceIPs = try convertedIPs(index[.sourceIPs])

        var object = ObjectWriter(&output)
        if let received = index[.requestReceivedTimestamp], document.kind(received) == .string,
            let milliseconds = document.hasEscapes(received)
                ? Timestamp.milliseconds(fromRFC3339: document.string(received)) : Timestamp.milliseconds(fromRFC3339: document.rawBytes(received))
        {
            object.key("@timestamp", &output)
            writeTimestamp(milliseconds)
        }
        if let sourceIPs, !sourceIPs.isEmpty {
            object.key("client", &output)
            writeIPObject(sourceIPs)
        }
        object.key("data_stream", &output)
        output.append(#"{"dataset":"kubernetes.audit_logs"}"#)

        object.key("event", &output)
        var event = ObjectWriter(&output)
        if let verb = index[.verb] { try event.member("action", &self) { (writer) throws(Decline) in try writer.writeNonEmpty(verb) } }
        event.key("dataset", &output)
        writeString("kubernetes.audit_logs")
        if let ingested {
            event.key("ingested", &output)
            writeTimestamp(ingested)
        }
        event.key("kind", &output)
        writeString("event")
        if let outcome = outcome(index[.annotations]) {
            event.key("outcome", &output)
            writeString(outcome)
        }
        event.close(&output)

        object.key("kubernetes", &output)
        var kubernetes = ObjectWriter(&output)
        try kubernetes.member("audit", &self) { (writer) throws(Decline) in try writer.writeObject(root, rules: .auditRoot) }
        kubernetes.close(&output)

        object.key("orchestrator", &output)
        var orchestrator = ObjectWriter(&output)
        if let apiVersion = index[.apiVersion] {
            try orchestrator.member("api_version", &self) { (writer) throws(Decline) in try writer.writeNonEmpty(apiVersion) }
        }
        // (GKE's own cluster label is a renamed member: such events take the tree path.)
        if let clusterName {
            orchestrator.key("cluster", &output)
            output.append(#"{"name":""#)
            var escaped: [UInt8] = []
            appendEscapedJSONText(clusterName.utf8, to: &escaped)
            escaped.withUnsafeBytes { output.append(contentsOf: $0) }
            output.append(#""}"#)
        }
        if let objectRef {
            if let namespace = document.member("namespace", of: objectRef) {
                try orchestrator.member("namespace", &self) { (writer) throws(Decline) in try writer.writeNonEmpty(namespace) }
            }
            let name = document.member("name", of: objectRef)
            let type = document.member("resource", of: objectRef)
            try orchestrator.member("resource", &self) { (writer) throws(Decline) in
                var resource = ObjectWriter(&writer.output)
                if let name { try resource.member("name", &writer) { (writer) throws(Decline) in try writer.writeNonEmpty(name) } }
                if let type { try resource.member("type", &writer) { (writer) throws(Decline) in try writer.writeNonEmpty(type) } }
                return resource.close(&writer.output)
            }
        }
        orchestrator.key("type", &output)
        writeString("kubernetes")
        orchestrator.close(&output)

        // related.user: uid then username, each once, empty ones dropped; related.ip: the addresses, each once.
        for value in [uid, username] {
            if let value, document.kind(value) != .null, document.kind(value) != .string { throw Decline() }
        }
        let relatedUID = uid.flatMap { document.kind($0) == .string && !document.rawBytes($0).isEmpty ? $0 : nil }
        var relatedUsername = username.flatMap { document.kind($0) == .string && !document.rawBytes($0).isEmpty ? $0 : nil }
        if let relatedUID, let name = relatedUsername, sameString(relatedUID, name) { relatedUsername = nil }
        var uniqueIPs: [Int] = []
        for ip in sourceIPs ?? [] where !uniqueIPs.contains(where: { sameString($0, ip) }) { uniqueIPs.append(ip) }
        if relatedUID != nil || relatedUsername != nil || !uniqueIPs.isEmpty {
            object.key("related", &output)
            var related = ObjectWriter(&output)
            if !uniqueIPs.isEmpty {
                related.key("ip", &output)
                writeStrings(uniqueIPs)
            }
            if relatedUID != nil || relatedUsername != nil {
                related.key("user", &output)
                output.append(UInt8(ascii: "["))
                if let relatedUID { writeStringValue(relatedUID) }
                if let relatedUsername {
                    if relatedUID != nil { output.append(UInt8(ascii: ",")) }
                    writeStringValue(relatedUsername)
                }
                output.append(UInt8(ascii: "]"))
            }
            related.close(&output)
        }
        if let sourceIPs, !sourceIPs.isEmpty {
            object.key("source", &output)
            writeIPObject(sourceIPs)
        }
        try object.member("user", &self) { (writer) throws(Decline) in
            var userObject = ObjectWriter(&writer.output)
            if let uid { try userObject.member("id", &writer) { (writer) throws(Decline) in try writer.writeNonEmpty(uid) } }
            if let username { try userObject.member("name", &writer) { (writer) throws(Decline) in try writer.writeNonEmpty(username) } }
            return userObject.close(&writer.output)
        }
        if let agent = index[.userAgent] {
            try object.member("user_agent", &self) { (writer) throws(Decline) in
                var agentObject = ObjectWriter(&writer.output)
                try agentObject.member("original", &writer) { (writer) throws(Decline) in try writer.writeNonEmpty(agent) }
                return agentObject.close(&writer.output)
            }
        }
        object.close(&output)
    }

    /// `event.outcome` from the decision annotation (the last one, if repeated).
    private func outcome(_ annotations: Int?) -> StaticString? {
        guard let annotations, document.kind(annotations) == .object else { return nil }
        var decision: Int?
        document.forEachMember(of: annotations) { key, value in
            if document.stringEquals(key, "authorization.k8s.io/decision") { decision = value }
            return true
        }
        guard let decision else { return nil }
        if document.stringEquals(decision, "allow") { return "success" }
        if document.stringEquals(decision, "forbid") { return "failure" }
        return nil
    }

    /// The `convert` processor with `type: ip` on `sourceIPs`: every element an address, or no field.
    /// - Returns: the addresses' tape indexes.
    private func convertedIPs(_ value: Int?) throws(Decline) -> [Int]? {
        guard let value else { return nil }
        switch document.kind(value) {
        case .array: return document.ipAddresses(value)
        case .string: throw Decline()  // not an audit event's type; the tree path converts it
        default: return nil
        }
    }

    private mutating func writeIPObject(_ addresses: [Int]) {
        output.append(#"{"ip":"#)
        writeStrings(addresses)
        output.append(UInt8(ascii: "}"))
    }

    private mutating func writeStrings(_ strings: [Int]) {
        output.append(UInt8(ascii: "["))
        for (position, string) in strings.enumerated() {
            if position > 0 { output.append(UInt8(ascii: ",")) }
            writeStringValue(string)
        }
        output.append(UInt8(ascii: "]"))
    }

    private mutating func writeString(_ text: StaticString) {
        output.append(UInt8(ascii: "\""))
        output.append(text)
        output.append(UInt8(ascii: "\""))
    }

    private mutating func writeTimestamp(_ milliseconds: Int64) {
        output.append(UInt8(ascii: "\""))
        Timestamp.appendRFC3339(milliseconds: milliseconds, to: &output)
        output.append(UInt8(ascii: "\""))
    }

    /// Whether two strings of the document are equal as Swift strings (byte equality for plain ASCII).
    private func sameString(_ a: Int, _ b: Int) -> Bool {
        if document.entries[a].flags == 0 && document.entries[b].flags == 0 { return rawKeysEqual(Int32(a), Int32(b)) }
        return document.string(a) == document.string(b)
    }

    // MARK: Values

    /// `copy_from` with `ignore_empty_value`, then the pipeline's final removal of empty values.
    /// - Returns: whether anything was written.
    private mutating func writeNonEmpty(_ index: Int) throws(Decline) -> Bool {
        try writeValue(index, rules: .plain)
    }

    /// Writes a value canonically, empty values (null, "", and containers with nothing left) omitted.
    /// - Returns: whether anything was written.
    private mutating func writeValue(_ index: Int, rules: Rules) throws(Decline) -> Bool {
        switch document.kind(index) {
        case .null: return false
        case .string:
            if document.rawBytes(index).isEmpty { return false }
            writeStringValue(index)
            return true
        case .number, .true, .false:
            output.append(contentsOf: document.rawBytes(index))
            return true
        case .array:
            let start = output.count
            output.append(UInt8(ascii: "["))
            var wrote = false
            var failure: Decline?
            document.forEachElement(of: index) { element in
                let mark = output.count
                if wrote { output.append(UInt8(ascii: ",")) }
                do throws(Decline) {
                    if try writeValue(element, rules: .plain) { wrote = true } else { output.removeSubrange(mark...) }
                } catch {
                    failure = error
                    return false
                }
                return true
            }
            if let failure { throw failure }
            guard wrote else {
                output.removeSubrange(start...)
                return false
            }
            output.append(UInt8(ascii: "]"))
            return true
        case .object:
            return try writeObject(index, rules: rules)
        }
    }

    /// Writes an object with its members in key order, a repeated key keeping its last value.
    private mutating func writeObject(_ index: Int, rules: Rules) throws(Decline) -> Bool {
        let base = stack.count
        defer { stack.truncate(to: base) }
        var declined = false
        let renames = rules == .annotationKeys
        document.forEachMember(of: index) { key, value in
            // Escaped or non-ASCII keys compare as Swift strings in the tree (canonical equivalence).
            if document.entries[key].flags != 0 { declined = true; return false }
            if rules == .withoutMetadata, document.stringEquals(key, "metadata") { return true }
            stack.append(Member(key: Int32(key), value: Int32(value), prefix: Self.orderingPrefix(document.rawBytes(key), underscoringDots: renames)))
            return true
        }
        if declined { throw Decline() }
        sortMembers(from: base, underscoringDots: renames)

        let start = output.count
        output.append(UInt8(ascii: "{"))
        var wrote = false
        var position = base
        while position < stack.count {
            // Of a run of equal keys, the last one in the document wins.
            var last = position
            while last + 1 < stack.count, stack[last + 1].prefix == stack[position].prefix,
                compareKeys(stack[last + 1].key, stack[position].key, underscoringDots: renames) == 0
            {
                // Two different keys that become one (`a.b`, `a_b`): the tree merges them in document order.
                if renames, !rawKeysEqual(stack[last + 1].key, stack[position].key) { throw Decline() }
                last += 1
            }
            let (key, value) = (Int(stack[last].key), Int(stack[last].value))
            position = last + 1
            let mark = output.count
            if wrote { output.append(UInt8(ascii: ",")) }
            if renames {
                output.append(UInt8(ascii: "\""))
                for byte in document.rawBytes(key) { output.append(byte == UInt8(ascii: ".") ? UInt8(ascii: "_") : byte) }
                output.append(UInt8(ascii: "\""))
                output.append(UInt8(ascii: ":"))
            } else {
                output.appendKey(document.rawBytes(key))
            }
            let childRules: Rules
            if rules == .auditRoot, document.kind(value) == .object {
                if document.stringEquals(key, "annotations") {
                    childRules = .annotationKeys
                } else if document.stringEquals(key, "requestObject") || document.stringEquals(key, "responseObject") {
                    childRules = .withoutMetadata
                } else {
                    childRules = .plain
                }
            } else {
                childRules = .plain
            }
            if try writeValue(value, rules: childRules) { wrote = true } else { output.removeSubrange(mark...) }
        }
        guard wrote else {
            output.removeSubrange(start...)
            return false
        }
        output.append(UInt8(ascii: "}"))
        return true
    }

    /// A string value as `writeJSONString` writes its decoded text.
    private mutating func writeStringValue(_ index: Int) {
        let raw = document.rawBytes(index)
        output.append(UInt8(ascii: "\""))
        if document.hasEscapes(index) && !Self.escapesAreCanonical(raw) {
            var escaped: [UInt8] = []
            appendEscapedJSONText(unescape(raw), to: &escaped)
            escaped.withUnsafeBytes { output.append(contentsOf: $0) }
        } else {
            // Validated and unescaped: no quote, backslash or control byte can be in it.
            output.append(contentsOf: raw)
        }
        output.append(UInt8(ascii: "\""))
    }

    /// Whether every escape in a string's raw text is the one ``appendEscapedJSONText(_:to:)`` writes for
    /// its character (`\"`, `\\`, `\n`, `\r`, `\t`, `\u00xx` for other controls): then the raw text is
    /// already canonical, as most escaped strings of audit events (quotes in messages) are.
    static func escapesAreCanonical(_ raw: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let count = raw.count
        while index < count {
            guard let base = raw.baseAddress, let hit = memchr(base + index, Int32(UInt8(ascii: "\\")), count - index) else { return true }
            index = UnsafeRawPointer(hit) - base + 1
            switch raw[index] {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                index += 1
            case UInt8(ascii: "u"):
                // \u00xx, lowercase hex, for a control character without a short escape.
                guard raw[index + 1] == UInt8(ascii: "0"), raw[index + 2] == UInt8(ascii: "0"),
                    raw[index + 3] == UInt8(ascii: "0") || raw[index + 3] == UInt8(ascii: "1")
                else { return false }
                let low = raw[index + 4]
                guard isDigit(low) || (low >= UInt8(ascii: "a") && low <= UInt8(ascii: "f")) else { return false }
                let value = (raw[index + 3] - UInt8(ascii: "0")) << 4 | (hexValue(low) ?? 0)
                if value == 0x0A || value == 0x0D || value == 0x09 { return false }
                index += 5
            default:
                return false
            }
        }
        return true
    }

    // MARK: Sorting

    /// Sorts `stack[base...]` by key bytes, ties by document order (stable): insertion sort for the small
    /// objects of an event, the standard library's O(n log n) sort for large ones (hostile input).
    private func sortMembers(from base: Int, underscoringDots: Bool) {
        let count = stack.count - base
        guard count > 1 else { return }
        let document = document
        // The prefixes settle most comparisons; equal ones (keys sharing eight bytes) compare in full.
        func less(_ a: Member, _ b: Member) -> Bool {
            if a.prefix != b.prefix { return a.prefix < b.prefix }
            let order = Self.compareKeys(document, a.key, b.key, underscoringDots: underscoringDots)
            return order != 0 ? order < 0 : a.key < b.key
        }
        var members = stack.members(from: base)
        if count <= 16 {
            for i in 1..<members.count {
                let item = members[i]
                var j = i
                while j > 0, less(item, members[j - 1]) {
                    members[j] = members[j - 1]
                    j -= 1
                }
                members[j] = item
            }
        } else {
            members.sort(by: less)
        }
    }

    /// A key's first eight bytes as a big-endian number, zeros after a shorter key (dots read as underscores
    /// when renaming): prefixes order as ``compareKeys(_:_:_:underscoringDots:)`` orders their keys wherever
    /// they differ, since a key (unescaped, validated) holds no zero byte.
    @inline(__always)
    private static func orderingPrefix(_ key: UnsafeRawBufferPointer, underscoringDots: Bool) -> UInt64 {
        if !underscoringDots, key.count >= 4, let base = key.baseAddress {
            // One load: in the validated text a key is followed by at least four bytes (`":`, a value, the
            // object's close), so eight bytes from a key of four or more are all in the buffer.
            let word = UInt64(bigEndian: base.loadUnaligned(as: UInt64.self))
            return key.count >= 8 ? word : word & ~(UInt64.max >> UInt64(8 * key.count))
        }
        var prefix: UInt64 = 0
        let length = min(key.count, 8)
        for offset in 0..<length {
            var byte = key[offset]
            if underscoringDots, byte == UInt8(ascii: ".") { byte = UInt8(ascii: "_") }
            prefix |= UInt64(byte) << UInt64(56 - 8 * offset)
        }
        return prefix
    }

    private func compareKeys(_ a: Int32, _ b: Int32, underscoringDots: Bool) -> Int {
        Self.compareKeys(document, a, b, underscoringDots: underscoringDots)
    }

    private static func compareKeys(_ document: JSONDocument, _ a: Int32, _ b: Int32, underscoringDots: Bool) -> Int {
        let left = document.rawBytes(Int(a))
        let right = document.rawBytes(Int(b))
        let common = min(left.count, right.count)
        if underscoringDots {
            for offset in 0..<common {
                let x = left[offset] == UInt8(ascii: ".") ? UInt8(ascii: "_") : left[offset]
                let y = right[offset] == UInt8(ascii: ".") ? UInt8(ascii: "_") : right[offset]
                if x != y { return x < y ? -1 : 1 }
            }
        } else if common > 0, let leftBase = left.baseAddress, let rightBase = right.baseAddress {
            // Keys are short: a loop beats a call to memcmp. Eight bytes a step first (keys that get here
            // share their first eight: `authentication.kubernetes.io/…`), as big-endian words.
            var offset = 0
            while offset &+ 8 <= common {
                let x = UInt64(bigEndian: leftBase.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
                let y = UInt64(bigEndian: rightBase.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
                if x != y { return x < y ? -1 : 1 }
                offset &+= 8
            }
            while offset < common {
                let x = left[offset], y = right[offset]
                if x != y { return x < y ? -1 : 1 }
                offset += 1
            }
        }
        return left.count - right.count
    }

    private func rawKeysEqual(_ a: Int32, _ b: Int32) -> Bool {
        let left = document.rawBytes(Int(a))
        let right = document.rawBytes(Int(b))
        return left.count == right.count && bytesEqual(left.baseAddress!, right.baseAddress!, count: left.count)
    }
}

/// Writes one object's members (keys given in order by the caller): commas, and taking back a member whose
/// value turned out empty.
private struct ObjectWriter {
    private let start: Int
    private var wrote = false

    init(_ output: inout ByteBuffer) {
        start = output.count
        output.append(UInt8(ascii: "{"))
    }

    /// Starts a member whose value the caller writes next (never empty).
    mutating func key(_ name: StaticString, _ output: inout ByteBuffer) {
        if wrote { output.append(UInt8(ascii: ",")) }
        wrote = true
        output.appendKey(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
    }

    /// A member whose value may come out empty: `body` writes it and says whether it wrote anything.
    mutating func member(_ name: StaticString, _ writer: inout ECSDocumentWriter,
                         _ body: (inout ECSDocumentWriter) throws(ECSDocumentWriter.Decline) -> Bool) throws(ECSDocumentWriter.Decline) {
        let mark = writer.outputCount
        let wroteBefore = wrote
        writer.withOutput { key(name, &$0) }
        if try !body(&writer) {
            writer.truncateOutput(to: mark)
            wrote = wroteBefore
        }
    }

    /// Closes the object; an object left without members is taken back whole.
    /// - Returns: whether the object was written.
    @discardableResult
    mutating func close(_ output: inout ByteBuffer) -> Bool {
        guard wrote else {
            output.removeSubrange(start...)
            return false
        }
        output.append(UInt8(ascii: "}"))
        return true
    }
}

extension ECSDocumentWriter {
    fileprivate var outputCount: Int { output.count }
    fileprivate mutating func withOutput(_ body: (inout ByteBuffer) -> Void) { body(&output) }
    fileprivate mutating func truncateOutput(to count: Int) { output.removeSubrange(count...) }
}

extension AuditEvent {
    /// The event's ECS document (``normalized(preserveOriginal:)``, with `event.ingested` set to
    /// `ingestedIfMissing` when the event has none) as canonical JSON: compact, keys in order. Written from
    /// the record's bytes for raw events; built as a tree and serialized for the other shapes.
    public func canonicalDocument(ingestedIfMissing: Int64? = nil) -> [UInt8] {
        directCanonicalDocument(ingestedIfMissing: ingestedIfMissing) ?? treeCanonicalDocument(ingestedIfMissing: ingestedIfMissing)
    }

    /// The document written from the bytes, or nil where the writer declines.
    func directCanonicalDocument(ingestedIfMissing: Int64?) -> [UInt8]? {
        guard shape == .event || shape == .eventListItem, aksRecord == nil, wrapper == nil else { return nil }
        var writer = ECSDocumentWriter(document: document, capacity: 2 * (originalSpan?.count ?? 1024))
        defer { writer.deallocate() }
        do throws(ECSDocumentWriter.Decline) {
            try writer.writeEvent(root: root, index: index, ingested: ingestTime ?? ingestedIfMissing, clusterName: clusterName)
            return writer.output.array
        } catch {
            return nil
        }
    }

    /// The reference path: the tree, its `event.ingested` completed, serialized with sorted keys.
    public func treeCanonicalDocument(ingestedIfMissing: Int64? = nil) -> [UInt8] {
        var document = normalized()
        if let ingestedIfMissing, document[path: "event.ingested"] == nil {
            var event = document["event"]?.objectValue ?? JSONObject()
            event["ingested"] = .string(Timestamp.rfc3339(milliseconds: ingestedIfMissing))
            document["event"] = .object(event)
        }
        var bytes: [UInt8] = []
        JSONValue.object(document).write(to: &bytes, sortedKeys: true)
        return bytes
    }
}

/// Copies `length` (> 0) bytes. Most pieces a writer appends are short keys and values: two overlapping
/// loads and stores of one width cover any length up to twice it, without a loop or a call to memcpy.
@inlinable @inline(__always)
func copyBytes(from source: UnsafeRawPointer, to target: UnsafeMutableRawPointer, count length: Int) {
    @inline(__always) func copyTwice<Word>(_: Word.Type) {
        let head = source.loadUnaligned(as: Word.self)
        let tail = source.loadUnaligned(fromByteOffset: length - MemoryLayout<Word>.size, as: Word.self)
        target.storeBytes(of: head, as: Word.self)
        target.storeBytes(of: tail, toByteOffset: length - MemoryLayout<Word>.size, as: Word.self)
    }
    switch length {
    case 1: target.storeBytes(of: source.load(as: UInt8.self), as: UInt8.self)
    case 2...3: copyTwice(UInt16.self)
    case 4...7: copyTwice(UInt32.self)
    case 8...16: copyTwice(UInt64.self)
    default: target.copyMemory(from: source, byteCount: length)
    }
}

/// Growable raw memory of a trivial type, owned by one writer and freed by it: the writer's output and
/// member stack, appended to and moved in place without an array's uniqueness checks.
@usableFromInline
struct RawStorage<Element: BitwiseCopyable> {
    @usableFromInline var base: UnsafeMutablePointer<Element>
    /// Elements `0..<count` are initialized; the owner moves it past what it writes.
    @usableFromInline var count = 0
    @usableFromInline var capacity: Int

    @inlinable
    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
    }

    @inlinable
    func deallocate() { base.deallocate() }

    /// Room for `extra` more elements past `count`. The check inlined, the growth not: a writer's many
    /// appends stay small enough for their callers to inline them (with the growth inlined too, the alert
    /// writer's closures stopped being inlined and copied what they captured: +7 M instructions a replay).
    @inlinable @inline(__always)
    mutating func reserve(_ extra: Int) {
        guard count + extra > capacity else { return }
        grow(toHold: count + extra)
    }

    @usableFromInline @inline(never)
    mutating func grow(toHold needed: Int) {
        capacity = max(capacity * 2, needed)
        let larger = UnsafeMutablePointer<Element>.allocate(capacity: capacity)
        larger.update(from: base, count: count)
        base.deallocate()
        base = larger
    }
}

/// The writer's member stack.
private struct MemberStack {
    private var storage = RawStorage<ECSDocumentWriter.Member>(capacity: 64)

    var count: Int { storage.count }

    func deallocate() { storage.deallocate() }

    mutating func append(_ member: ECSDocumentWriter.Member) {
        storage.reserve(1)
        storage.base[storage.count] = member
        storage.count &+= 1
    }

    /// Drops the members from `newCount` on (a trivial type: nothing to deinitialize).
    mutating func truncate(to newCount: Int) { storage.count = min(storage.count, newCount) }

    subscript(index: Int) -> ECSDocumentWriter.Member {
        precondition(index >= 0 && index < storage.count)
        return storage.base[index]
    }

    /// The members from `start` to the top, to sort in place.
    func members(from start: Int) -> UnsafeMutableBufferPointer<ECSDocumentWriter.Member> {
        UnsafeMutableBufferPointer(start: storage.base + start, count: storage.count - start)
    }
}

/// An output buffer for a document writer: raw memory, so that the short appends of a document cost a
/// bounds check and a copy each, not an array's uniqueness check and generic copy. Owned by one writer,
/// freed by it (``deallocate()``): the ECS writer here, and the pipeline's writer of alerts and state
/// records (inlinable for it).
public struct ByteBuffer: ByteSink {
    @usableFromInline var storage: RawStorage<UInt8>
    @inlinable var base: UnsafeMutablePointer<UInt8> { storage.base }
    @inlinable public var count: Int { storage.count }

    @inlinable
    public init(capacity: Int) { storage = RawStorage(capacity: max(64, capacity)) }

    @inlinable
    public func deallocate() { storage.deallocate() }

    @inlinable @inline(__always)
    mutating func reserve(_ extra: Int) { storage.reserve(extra) }

    @inlinable @inline(__always)
    public mutating func append(_ byte: UInt8) {
        reserve(1)
        base[count] = byte
        storage.count &+= 1
    }

    /// `"name":`, the name's bytes as they are (a key that needs no escape).
    @inlinable @inline(__always)
    public mutating func appendKey(_ name: UnsafeRawBufferPointer) {
        reserve(name.count &+ 3)
        base[count] = UInt8(ascii: "\"")
        storage.count &+= 1
        copyReserved(name)
        base[count] = UInt8(ascii: "\"")
        base[count &+ 1] = UInt8(ascii: ":")
        storage.count &+= 2
    }

    // Inlined: a document makes about a hundred of these calls, most of a few bytes.
    @inlinable @inline(__always)
    public mutating func append(contentsOf bytes: UnsafeRawBufferPointer) {
        reserve(bytes.count)
        copyReserved(bytes)
    }

    /// Copies `bytes` past `count`, where ``reserve(_:)`` has made room for them.
    @inlinable @inline(__always)
    mutating func copyReserved(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        copyBytes(from: source, to: UnsafeMutableRawPointer(base + count), count: bytes.count)
        storage.count &+= bytes.count
    }

    @inlinable @inline(__always)
    public mutating func append(_ text: StaticString) {
        append(contentsOf: UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    mutating func removeSubrange(_ range: PartialRangeFrom<Int>) { storage.count = min(storage.count, range.lowerBound) }

    /// The bytes written, as an array.
    public var array: [UInt8] { Array(UnsafeBufferPointer(start: base, count: count)) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
