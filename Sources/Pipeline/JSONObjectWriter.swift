// Canonical JSON written front to back: alert documents, match records and window state without a tree.
import AuditEvents
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Canonical JSON written front to back: objects whose members the caller gives in key order. The bytes go
/// into a ``ByteBuffer`` (the ECS writer's), so that the hundreds of short appends of an alert document
/// cost a bounds check and a copy each, not an array's uniqueness check and generic copy (~150
/// instructions a piece). Noncopyable: the buffer has one owner, freed when the writer goes; ``finish()``
/// hands the bytes over as an array.
struct JSONObjectWriter: ~Copyable {
    private var output: ByteBuffer
    /// Per open object, innermost at bit `depth - 1`: whether a member was written (the next one needs a
    /// comma). Sixty-four levels: the records written here nest a handful deep; spliced documents are
    /// copied whole, not opened.
    private var started: UInt64 = 0
    private var depth = 0

    init(capacity: Int) { output = ByteBuffer(capacity: capacity) }

    deinit { output.deallocate() }

    /// The bytes written, as an array; the writer's memory is freed.
    consuming func finish() -> [UInt8] { output.array }

    mutating func raw(_ text: StaticString) { output.append(text) }
    mutating func raw(_ value: [UInt8]) { value.withUnsafeBytes { output.append(contentsOf: $0) } }
    mutating func raw(_ value: ArraySlice<UInt8>) { value.withUnsafeBytes { output.append(contentsOf: $0) } }

    mutating func string(_ text: String) {
        output.append(UInt8(ascii: "\""))
        stringText(text)
        output.append(UInt8(ascii: "\""))
    }

    /// The text of a JSON string, without its quotes: copied whole when it needs no escape (most text), else
    /// byte by byte. Pieces written one after another make the string of their concatenation.
    mutating func stringText(_ text: String) {
        var text = text
        text.withUTF8 { utf8 in
            let raw = UnsafeRawBufferPointer(utf8)
            if needsJSONEscape(raw) {
                for byte in raw { appendJSONEscaped(byte, to: &output) }
            } else {
                output.append(contentsOf: raw)
            }
        }
    }

    /// A member written in the source (`#","floor":"#`) and its number: the form of every numeric member of
    /// the state records.
    mutating func raw(_ member: StaticString, number value: Int64) {
        output.append(member)
        number(value)
    }

    mutating func number(_ value: Int64) {
        // Digits written straight into the output: `String(value)` made a string per number, and every state
        // record holds several (offsets, times, counts). Formed backwards in a scratch of 24 bytes (room for
        // UInt64's 20 digits), then copied at once.
        if value < 0 { output.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &scratch) { digits in
            var start = digits.count
            repeat {
                start &-= 1
                digits[start] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            output.append(contentsOf: UnsafeRawBufferPointer(rebasing: digits[start...]))
        }
    }

    mutating func timestamp(_ milliseconds: Int64) {
        output.append(UInt8(ascii: "\""))
        Timestamp.appendRFC3339(milliseconds: milliseconds, to: &output)
        output.append(UInt8(ascii: "\""))
    }

    // Inlined, as `member` is: a body that is not inlined captures its constants by copy (an alert's writer
    // copied the document builder, a dozen references, 160 times an alert).
    @inline(__always)
    mutating func object(_ body: (inout JSONObjectWriter) -> Void) {
        openObject()
        body(&self)
        closeObject()
    }

    mutating func openObject() {
        precondition(depth < 64, "JSONObjectWriter nests at most 64 objects")
        output.append(UInt8(ascii: "{"))
        started &= ~(1 << UInt64(depth))
        depth &+= 1
    }

    mutating func closeObject() {
        depth &-= 1
        output.append(UInt8(ascii: "}"))
    }

    /// A member of the innermost open object whose name is written in the source: its bytes go out as they
    /// are (no such name needs an escape), without a `String`'s escape check.
    @inline(__always)
    mutating func member(_ key: StaticString, _ value: (inout JSONObjectWriter) -> Void) {
        memberKey(key)
        value(&self)
    }

    /// `"key":` in the innermost open object, its name written as it is (a name in the source).
    @inline(__always)
    mutating func memberKey(_ key: StaticString) {
        let name = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        assert(!needsJSONEscape(name), "member name \(key) needs escaping")
        startMember()
        output.appendKey(name)
    }

    /// The comma before every member of an object but its first.
    @inline(__always)
    private mutating func startMember() {
        let bit: UInt64 = 1 << UInt64(depth &- 1)
        if started & bit != 0 { output.append(UInt8(ascii: ",")) }
        started |= bit
    }

    /// Writes, inside an open object, a canonical document's members up to the next of the writer's own
    /// (both in key order; on a key in both, the own one), and that one's key: its index in
    /// ``MemberMerge/ownKeys`` is returned for the caller to write its value; nil once every member of both
    /// is written. The document's members are copied as they are written there (a key with an escape is
    /// decoded and written canonically). The caller drives the loop and writes the values in its own frame:
    /// a closure for them captured the caller's constants, and the alert writer's were copied on every call.
    mutating func nextOwnMember(_ merge: inout MemberMerge, of source: CanonicalDocument) -> Int? {
        source.bytes.withUnsafeBytes { bytes in
            while merge.index < merge.members.count {
                let member = merge.members[merge.index]
                let order = merge.next < merge.ownKeys.count ? Self.order(of: merge.ownKeys[merge.next], member, bytes, source) : .after
                if order != .after { break }
                merge.index += 1
                if let dropping = merge.dropping, Self.order(of: dropping, member, bytes, source) == .same { continue }
                startMember()
                if member.keyEscaped {
                    string(source.key(of: member))
                    output.append(UInt8(ascii: ":"))
                } else {
                    output.appendKey(UnsafeRawBufferPointer(rebasing: bytes[member.keyText]))
                }
                output.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[member.value]))
            }
            guard merge.next < merge.ownKeys.count else { return nil }
            // The own member; a document member of the same key (the loop stopped at it) gives way to it.
            if merge.index < merge.members.count, Self.order(of: merge.ownKeys[merge.next], merge.members[merge.index], bytes, source) == .same {
                merge.index += 1
            }
            memberKey(merge.ownKeys[merge.next])
            merge.next += 1
            return merge.next - 1
        }
    }

    private enum Order { case before, same, after }

    /// Where the key `own` sorts against a member's key, as strings sort (the order sorted keys give): by
    /// their bytes when the member's key is plain ASCII, else as decoded strings.
    private static func order(of own: StaticString, _ member: CanonicalDocument.Member, _ bytes: UnsafeRawBufferPointer,
                              _ source: CanonicalDocument) -> Order {
        guard member.keyASCII, !member.keyEscaped else {
            let key = source.key(of: member), ownKey = own.description
            return ownKey < key ? .before : ownKey == key ? .same : .after
        }
        let ownBytes = UnsafeRawBufferPointer(start: own.utf8Start, count: own.utf8CodeUnitCount)
        let keyBytes = UnsafeRawBufferPointer(rebasing: bytes[member.keyText])
        let common = min(ownBytes.count, keyBytes.count)
        if common > 0 {
            let compared = memcmp(ownBytes.baseAddress!, keyBytes.baseAddress!, common)
            if compared != 0 { return compared < 0 ? .before : .after }
        }
        return ownBytes.count < keyBytes.count ? .before : ownBytes.count == keyBytes.count ? .same : .after
    }

    /// A window's summary in key order: `kibana.alert.suppression.summary` (times as timestamps) or the
    /// changelog's (times as numbers).
    mutating func summary(_ summary: SuppressionSummary, timesAsNumbers: Bool = false) {
        object { out in
            out.member("count") { $0.number(Int64(summary.count)) }
            out.member("first_seen") { timesAsNumbers ? $0.number(summary.firstSeen) : $0.timestamp(summary.firstSeen) }
            out.member("last_seen") { timesAsNumbers ? $0.number(summary.lastSeen) : $0.timestamp(summary.lastSeen) }
            out.member("namespaces") { $0.strings(summary.namespaces) }
            out.member("resources") { $0.strings(summary.resources) }
            out.member("response_codes") { $0.strings(summary.responseCodes) }
            out.member("source_ips") { $0.strings(summary.sourceIPs) }
            out.member("user_agents") { $0.strings(summary.userAgents) }
            out.member("verbs") { $0.strings(summary.verbs) }
        }
    }

    /// `[…]`, each element written by `element`.
    mutating func array<Elements: Sequence>(_ elements: Elements, _ element: (inout JSONObjectWriter, Elements.Element) -> Void) {
        output.append(UInt8(ascii: "["))
        for (index, value) in elements.enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            element(&self, value)
        }
        output.append(UInt8(ascii: "]"))
    }

    /// `{…}` of a map's entries in key order (the order sorted serialization gives), each value written by `value`.
    mutating func sortedMap<Value>(_ map: [String: Value], _ value: (inout JSONObjectWriter, Value) -> Void) {
        output.append(UInt8(ascii: "{"))
        for (index, entry) in map.sorted(by: { $0.key < $1.key }).enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            string(entry.key)
            output.append(UInt8(ascii: ":"))
            value(&self, entry.value)
        }
        output.append(UInt8(ascii: "}"))
    }

    /// `[…]` of strings.
    mutating func strings(_ values: [String]) { array(values) { $0.string($1) } }

    /// `[…]` of strings, nil as null (group-by values).
    mutating func optionalStrings(_ values: [String?]) {
        array(values) { out, value in
            if let value { out.string(value) } else { out.raw("null") }
        }
    }

    /// A record's position, `{"offset":…,"partition":…,"topic":…}`.
    mutating func position(_ position: RecordPosition) {
        raw(#"{"offset":"#)
        number(position.offset)
        raw(#","partition":"#)
        number(Int64(position.partition))
        raw(#","topic":"#)
        string(position.topic)
        raw("}")
    }
}

/// Where ``JSONObjectWriter/nextOwnMember(_:of:)`` is in merging a canonical document's members (an
/// object's, in key order) with the writer's own keys (in key order); a member named `dropping` is left out.
struct MemberMerge {
    let members: [CanonicalDocument.Member]
    let ownKeys: [StaticString]
    let dropping: StaticString?
    fileprivate var index = 0
    fileprivate var next = 0

    init(_ members: [CanonicalDocument.Member], own ownKeys: [StaticString], dropping: StaticString? = nil) {
        self.members = members
        self.ownKeys = ownKeys
        self.dropping = dropping
    }
}
