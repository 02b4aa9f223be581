/// A JSON text and its tape, both borrowed: a plain view (no reference counting) that is valid while the
/// bytes live and the tape is neither reused nor grown.
public struct JSONDocument: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    let entries: UnsafeMutablePointer<JSONTape.Entry>

    /// Scans a complete text holding exactly one value into `tape` (which the caller keeps alive).
    static func parse(_ bytes: UnsafeRawBufferPointer, into tape: JSONTape, maxDepth: Int = 128) throws(JSONSyntaxError) -> JSONDocument {
        tape.removeAll()
        var scanner = JSONScanner(bytes, from: 0, maxDepth: maxDepth)
        try scanner.scanValue(into: tape, depth: 0)
        scanner.skipWhitespace()
        guard scanner.position == bytes.count else {
            throw JSONSyntaxError(kind: .syntax, reason: "unexpected data after the JSON value", offset: scanner.position)
        }
        return JSONDocument(bytes: bytes, tape: tape)
    }

    public init(bytes: UnsafeRawBufferPointer, tape: JSONTape) {
        self.bytes = bytes
        self.entries = tape.storage
    }

    func kind(_ index: Int) -> JSONTape.Kind { entries[index].kind }

    /// The index just past the value at `index` (its next sibling, if any).
    func next(_ index: Int) -> Int {
        let entry = entries[index]
        return entry.kind == .object || entry.kind == .array ? Int(entry.end) : index + 1
    }

    /// Calls `body` with the key and value index of every member of the object at `index`, until it returns false.
    func forEachMember(of index: Int, _ body: (_ key: Int, _ value: Int) -> Bool) {
        let end = Int(entries[index].end)
        var key = index + 1
        while key < end {
            let value = key + 1
            if !body(key, value) { return }
            key = next(value)
        }
    }

    /// Calls `body` with the index of every element of the array at `index`.
    func forEachElement(of index: Int, _ body: (Int) -> Bool) {
        let end = Int(entries[index].end)
        var element = index + 1
        while element < end {
            if !body(element) { return }
            element = next(element)
        }
    }

    /// The elements of the array at `index` when every one is a string holding an IP address (the ingest
    /// pipeline's `convert` to `ip`: one that is not — a null or an empty string too — and there is no field).
    func ipAddresses(_ index: Int) -> [Int]? {
        var addresses: [Int] = []
        var valid = true
        forEachElement(of: index) { element in
            valid = kind(element) == .string && (hasEscapes(element) ? isIPAddress(string(element)) : isIPAddress(rawBytes(element)))
            if valid { addresses.append(element) }
            return valid
        }
        return valid ? addresses : nil
    }

    /// The value of member `name` of the object at `index` (the last one, if repeated), or nil.
    func member(_ name: StaticString, of index: Int) -> Int? {
        guard kind(index) == .object else { return nil }
        var found: Int?
        forEachMember(of: index) { key, value in
            if stringEquals(key, name) { found = value }
            return true
        }
        return found
    }

    /// The raw text of a string between its quotes (escapes not decoded), or of a number or literal.
    func rawBytes(_ index: Int) -> UnsafeRawBufferPointer {
        let entry = entries[index]
        return UnsafeRawBufferPointer(rebasing: bytes[Int(entry.start)..<Int(entry.end)])
    }

    func hasEscapes(_ index: Int) -> Bool { entries[index].flags & 1 != 0 }

    /// Whether the string at `index` equals `literal` (escapes decoded when present).
    func stringEquals(_ index: Int, _ literal: StaticString) -> Bool {
        stringEquals(index, UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    func stringEquals(_ index: Int, _ literal: UnsafeRawBufferPointer) -> Bool {
        guard kind(index) == .string else { return false }
        if !hasEscapes(index) {
            let raw = rawBytes(index)
            return raw.count == literal.count && (raw.count == 0 || bytesEqual(raw.baseAddress!, literal.baseAddress!, count: raw.count))
        }
        return string(index).utf8.elementsEqual(literal)
    }

    /// The decoded string at `index`.
    public func string(_ index: Int) -> String {
        let raw = rawBytes(index)
        guard hasEscapes(index) else { return String(decoding: raw, as: UTF8.self) }
        return String(decoding: unescape(raw), as: UTF8.self)
    }

    /// Materializes the value at `index` as a ``JSONValue``.
    public func value(at index: Int = 0) -> JSONValue {
        switch kind(index) {
        case .null: return .null
        case .true: return .bool(true)
        case .false: return .bool(false)
        case .number: return .number(JSONNumber(String(decoding: rawBytes(index), as: UTF8.self)))
        case .string: return .string(string(index))
        case .array:
            var elements: [JSONValue] = []
            forEachElement(of: index) { element in
                elements.append(value(at: element))
                return true
            }
            return .array(elements)
        case .object:
            var members: [JSONObject.Member] = []
            forEachMember(of: index) { key, member in
                members.append(JSONObject.Member(key: string(key), value: value(at: member)))
                return true
            }
            return .object(JSONObject(uniquing: members))
        }
    }
}

/// Decodes JSON string escapes (the input is known to be valid). Unpaired surrogates become U+FFFD.
func unescape(_ raw: UnsafeRawBufferPointer) -> [UInt8] {
    var output: [UInt8] = []
    output.reserveCapacity(raw.count)
    var index = 0
    let count = raw.count
    func hex4(_ at: Int) -> UInt32 {
        var value: UInt32 = 0
        for offset in 0..<4 { value = value << 4 | UInt32(hexValue(raw[at + offset]) ?? 0) }
        return value
    }
    func appendScalar(_ scalar: UInt32) {
        let unicode = Unicode.Scalar(scalar) ?? "\u{FFFD}"
        UTF8.encode(unicode) { output.append($0) }
    }
    while index < count {
        let byte = raw[index]
        guard byte == UInt8(ascii: "\\"), index + 1 < count else {
            output.append(byte)
            index += 1
            continue
        }
        let escaped = raw[index + 1]
        index += 2
        switch escaped {
        case UInt8(ascii: "b"): output.append(0x08)
        case UInt8(ascii: "f"): output.append(0x0C)
        case UInt8(ascii: "n"): output.append(0x0A)
        case UInt8(ascii: "r"): output.append(0x0D)
        case UInt8(ascii: "t"): output.append(0x09)
        case UInt8(ascii: "u") where index + 4 <= count:
            let unit = hex4(index)
            index += 4
            if (0xD800...0xDBFF).contains(unit), index + 6 <= count, raw[index] == UInt8(ascii: "\\"), raw[index + 1] == UInt8(ascii: "u") {
                let low = hex4(index + 2)
                if (0xDC00...0xDFFF).contains(low) {
                    index += 6
                    appendScalar(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                    continue
                }
            }
            appendScalar(unit)
        default: output.append(escaped)  // \" \\ \/
        }
    }
    return output
}


// MARK: - Materialized values

/// A JSON number kept as its text, so documents re-serialize exactly; compared by value.
public struct JSONNumber: Hashable, Sendable, CustomStringConvertible {
    public let text: String
    public init(_ text: String) { self.text = text }
    public init(_ value: Int) { self.text = String(value) }
    public init(_ value: Int64) { self.text = String(value) }
    public var doubleValue: Double { Double(text) ?? .nan }
    public var intValue: Int64? { Int64(text) ?? (doubleValue.rounded() == doubleValue ? Int64(exactly: doubleValue) : nil) }
    public var description: String { text }
    public static func == (lhs: JSONNumber, rhs: JSONNumber) -> Bool { lhs.text == rhs.text || lhs.doubleValue == rhs.doubleValue }
    public func hash(into hasher: inout Hasher) { hasher.combine(doubleValue) }
}

/// A JSON object that keeps its members' order (documents serialize deterministically).
public struct JSONObject: Hashable, Sendable, Sequence {
    public struct Member: Hashable, Sendable {
        public var key: String
        public var value: JSONValue
    }
    public private(set) var members: [Member] = []

    public init() {}

    /// Members as given, except that a repeated key keeps its last value (at its first position).
    init(uniquing members: [Member]) {
        if members.count < 2 {
            self.members = members
            return
        }
        var positions: [String: Int] = [:]
        positions.reserveCapacity(members.count)
        var unique: [Member] = []
        unique.reserveCapacity(members.count)
        for member in members {
            if let position = positions[member.key] {
                unique[position].value = member.value
            } else {
                positions[member.key] = unique.count
                unique.append(member)
            }
        }
        self.members = unique
    }

    /// Members in order (a repeated key keeps its last value).
    public init(_ pairs: [(String, JSONValue)]) {
        self.init(uniquing: pairs.map { Member(key: $0.0, value: $0.1) })
    }

    /// Appends a member whose key the caller knows is new.
    mutating func appendNew(_ key: String, _ value: JSONValue) { members.append(Member(key: key, value: value)) }

    public init(_ pairs: KeyValuePairs<String, JSONValue>) {
        for (key, value) in pairs { self[key] = value }
    }

    public var isEmpty: Bool { members.isEmpty }
    public var count: Int { members.count }
    public var keys: [String] { members.map(\.key) }

    public subscript(key: String) -> JSONValue? {
        get { members.first { $0.key == key }?.value }
        set {
            if let index = members.firstIndex(where: { $0.key == key }) {
                if let newValue { members[index].value = newValue } else { members.remove(at: index) }
            } else if let newValue {
                members.append(Member(key: key, value: newValue))
            }
        }
    }

    @discardableResult
    public mutating func removeValue(forKey key: String) -> JSONValue? {
        guard let index = members.firstIndex(where: { $0.key == key }) else { return nil }
        return members.remove(at: index).value
    }

    /// The value at a dotted path through nested objects (`a.b.c`); nil where absent.
    public subscript(path path: String) -> JSONValue? {
        var object = self
        var components = path.split(separator: ".", omittingEmptySubsequences: false)[...]
        while let first = components.popFirst() {
            guard let value = object[String(first)] else { return nil }
            if components.isEmpty { return value }
            guard case .object(let child) = value else { return nil }
            object = child
        }
        return nil
    }

    public mutating func sortKeys() { members.sort { $0.key < $1.key } }

    public func makeIterator() -> IndexingIterator<[Member]> { members.makeIterator() }

    /// Member order does not matter for equality, as in JSON.
    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        lhs.count == rhs.count && lhs.members.allSatisfy { rhs[$0.key] == $0.value }
    }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(count)
        for member in members.sorted(by: { $0.key < $1.key }) {
            hasher.combine(member.key)
            hasher.combine(member.value)
        }
    }
}

public indirect enum JSONValue: Hashable, Sendable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public var stringValue: String? { if case .string(let value) = self { value } else { nil } }
    public var objectValue: JSONObject? { if case .object(let value) = self { value } else { nil } }
    public var arrayValue: [JSONValue]? { if case .array(let value) = self { value } else { nil } }

    /// Parses a complete JSON text.
    public static func parse(_ text: some Collection<UInt8>, maxDepth: Int = 128) throws(JSONSyntaxError) -> JSONValue {
        let bytes = Array(text)
        let tape = JSONTape()
        let result: Result<JSONValue, JSONSyntaxError> = bytes.withUnsafeBytes { buffer in
            Result { () throws(JSONSyntaxError) in try JSONDocument.parse(buffer, into: tape, maxDepth: maxDepth).value() }
        }
        withExtendedLifetime(tape) {}
        return try result.get()
    }

    public static func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue { try parse(Array(text.utf8)) }

    /// The value at a dotted path through nested objects (`a.b.c`); nil where absent.
    public subscript(path path: String) -> JSONValue? {
        var current: JSONValue? = self
        for component in path.split(separator: ".", omittingEmptySubsequences: false) {
            current = current?.objectValue?[String(component)]
        }
        return current
    }

    // MARK: Serialization

    /// Compact JSON text. With `sortedKeys`, object members are written in key order (canonical form).
    public func serialized(sortedKeys: Bool = false) -> String {
        var output: [UInt8] = []
        write(to: &output, sortedKeys: sortedKeys)
        return String(decoding: output, as: UTF8.self)
    }

    public func write(to output: inout [UInt8], sortedKeys: Bool = false) {
        switch self {
        case .null: output.append(contentsOf: "null".utf8)
        case .bool(let value): output.append(contentsOf: (value ? "true" : "false").utf8)
        case .number(let number): output.append(contentsOf: number.text.utf8)
        case .string(let string): writeJSONString(string, to: &output)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                element.write(to: &output, sortedKeys: sortedKeys)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let object):
            output.append(UInt8(ascii: "{"))
            let members = sortedKeys ? object.members.sorted { $0.key < $1.key } : object.members
            for (index, member) in members.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                writeJSONString(member.key, to: &output)
                output.append(UInt8(ascii: ":"))
                member.value.write(to: &output, sortedKeys: sortedKeys)
            }
            output.append(UInt8(ascii: "}"))
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(JSONNumber(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        var object = JSONObject()
        for (key, value) in elements { object[key] = value }
        self = .object(object)
    }
}

/// Writes a JSON string literal: `"`, `\` and control characters escaped, everything else as UTF-8.
public func writeJSONString(_ string: String, to output: inout [UInt8]) {
    output.append(UInt8(ascii: "\""))
    appendEscapedJSONText(string.utf8, to: &output)
    output.append(UInt8(ascii: "\""))
}

/// The inside of a JSON string literal for `text` (the canonical escapes of ``writeJSONString(_:to:)``).
func appendEscapedJSONText(_ text: some Sequence<UInt8>, to output: inout [UInt8]) {
    if let done = text.withContiguousStorageIfAvailable({ buffer -> Bool in
        // Most text needs no escape: copy it whole.
        guard needsJSONEscape(UnsafeRawBufferPointer(buffer)) else {
            output.append(contentsOf: buffer)
            return true
        }
        return false
    }), done { return }
    for byte in text { appendJSONEscaped(byte, to: &output) }
}

/// One byte of a JSON string's text as the canonical escapes write it (``writeJSONString(_:to:)``): a
/// quote, a backslash or a control character escaped, any other byte as it is. For writers that have
/// found, by ``needsJSONEscape(_:)``, that their text needs escapes.
public func appendJSONEscaped(_ byte: UInt8, to output: inout some ByteSink) {
    @inline(__always) func escaped(_ letter: UInt8) {
        output.append(UInt8(ascii: "\\"))
        output.append(letter)
    }
    switch byte {
    case UInt8(ascii: "\""), UInt8(ascii: "\\"): escaped(byte)
    case 0x0A: escaped(UInt8(ascii: "n"))
    case 0x0D: escaped(UInt8(ascii: "r"))
    case 0x09: escaped(UInt8(ascii: "t"))
    case 0..<0x20:
        let hex: StaticString = "0123456789abcdef"
        escaped(UInt8(ascii: "u"))
        output.append(UInt8(ascii: "0"))
        output.append(UInt8(ascii: "0"))
        output.append(hex.utf8Start[Int(byte >> 4)])
        output.append(hex.utf8Start[Int(byte & 0xF)])
    default: output.append(byte)
    }
}

/// Whether any byte of `text` must be escaped in a JSON string: a quote, a backslash or a control character.
/// Eight bytes a step (``escapeAttention(_:)``), the rest one by one. Inlinable: the pipeline's writers
/// ask it of every string they write.
@inlinable @inline(__always)
public func needsJSONEscape(_ text: UnsafeRawBufferPointer) -> Bool {
    guard let base = text.baseAddress else { return false }
    let count = text.count
    var offset = 0
    while offset &+ 8 <= count {
        if escapeAttention(base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) != 0 { return true }
        offset &+= 8
    }
    while offset < count {
        let byte = base.load(fromByteOffset: offset, as: UInt8.self)
        if byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { return true }
        offset &+= 1
    }
    return false
}

/// Whether `count` bytes at `a` and at `b` are equal. Field names and literals are short: up to 16 bytes it
/// is two overlapping loads a side, without a call, and a literal's loads fold to constants once inlined.
@inline(__always)
func bytesEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Bool {
    switch count {
    case 0: return true
    case 1: return a.load(as: UInt8.self) == b.load(as: UInt8.self)
    case 2, 3:
        return a.loadUnaligned(as: UInt16.self) == b.loadUnaligned(as: UInt16.self)
            && a.load(fromByteOffset: count - 1, as: UInt8.self) == b.load(fromByteOffset: count - 1, as: UInt8.self)
    case 4...8:
        return a.loadUnaligned(as: UInt32.self) == b.loadUnaligned(as: UInt32.self)
            && a.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self) == b.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self)
    case 9...16:
        return a.loadUnaligned(as: UInt64.self) == b.loadUnaligned(as: UInt64.self)
            && a.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self) == b.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
    default: return memcmp(a, b, count) == 0
    }
}

/// Two bytes of a literal that a search compares first: the two least common in audit JSON, at different
/// offsets, so that a place where both are right is rare unless the literal is there.
struct SearchAnchors: Sendable, Equatable {
    let first: Int
    let second: Int

    init(_ literal: [UInt8], commonness: (UInt8) -> Int) {
        let ranked = literal.indices.sorted { (commonness(literal[$0]), $0) < (commonness(literal[$1]), $1) }
        first = ranked[0]
        second = ranked.count > 1 ? ranked[1] : ranked[0]
    }
}

/// Whether `needle` occurs in `haystack`. Many candidate starts a step: the haystack's bytes at the two
/// anchor offsets compared as vectors, and only starts where both agree compared whole. On x86-64 the
/// compares are gathered into a bit mask by `pmovmskb`, sixty-four starts a step, then sixteen, the last
/// ones as one step overlapping the one before (a haystack too short for a step start by start); elsewhere
/// sixteen a step and the last starts one by one. (A byte search with memchr stopped at every occurrence of one byte: ~25
/// calls per record.)
@inline(never)
func contains(_ haystack: UnsafeRawBufferPointer, _ needle: UnsafeRawBufferPointer, anchors: SearchAnchors) -> Bool {
    guard needle.count > 0 else { return true }
    guard haystack.count >= needle.count, let base = haystack.baseAddress, let literal = needle.baseAddress else { return false }
    let firstByte = needle[anchors.first], secondByte = needle[anchors.second]
    let starts = haystack.count - needle.count + 1
    var start = 0
    // The loads end at start + 15 + max(anchor) ≤ starts - 1 + needle.count - 1 = haystack.count - 1.
    #if arch(x86_64)
    let firstVector = _mm_set1_epi8(CChar(bitPattern: firstByte)), secondVector = _mm_set1_epi8(CChar(bitPattern: secondByte))
    let firstAnchor = base + anchors.first, secondAnchor = base + anchors.second
    @inline(__always) func candidates16(_ at: Int) -> UInt64 {
        UInt64(truncatingIfNeeded: _mm_movemask_epi8(_mm_and_si128(
            _mm_cmpeq_epi8((firstAnchor + at).loadUnaligned(as: __m128i.self), firstVector),
            _mm_cmpeq_epi8((secondAnchor + at).loadUnaligned(as: __m128i.self), secondVector))))
    }
    // Sixty-four starts a step while they last (one branch for four vectors), then sixteen. Candidates are
    // rare and checked out of line, so that the loop keeps its vectors and pointers in registers.
    while start &+ 64 <= starts {
        let candidates = candidates16(start) | candidates16(start &+ 16) << 16 | candidates16(start &+ 32) << 32 | candidates16(start &+ 48) << 48
        if candidates != 0, literalStarts(at: candidates, from: start, base, literal, needle.count) { return true }
        start &+= 64
    }
    while start &+ 16 <= starts {
        let candidates = candidates16(start)
        if candidates != 0, literalStarts(at: candidates, from: start, base, literal, needle.count) { return true }
        start &+= 16
    }
    if start < starts, starts >= 16 {
        // The last starts as one step that overlaps the previous one, its starts already looked at masked off.
        let last = starts &- 16
        let candidates = candidates16(last) & (~0 << UInt64(start &- last))
        return candidates != 0 && literalStarts(at: candidates, from: last, base, literal, needle.count)
    }
    #else
    let first = SIMD16<UInt8>(repeating: firstByte), second = SIMD16<UInt8>(repeating: secondByte)
    while start &+ 16 <= starts {
        let both = ((base + start + anchors.first).loadUnaligned(as: SIMD16<UInt8>.self) .== first)
            .& ((base + start + anchors.second).loadUnaligned(as: SIMD16<UInt8>.self) .== second)
        let lanes = unsafeBitCast(both, to: SIMD2<UInt64>.self)
        if lanes[0] | lanes[1] != 0 {
            for half in 0..<2 {
                var lane = lanes[half]
                while lane != 0 {
                    let byte = lane.trailingZeroBitCount >> 3
                    if bytesEqual(base + start + half * 8 + byte, literal, count: needle.count) { return true }
                    lane &= ~(0xFF << UInt64(byte * 8))
                }
            }
        }
        start &+= 16
    }
    #endif
    while start < starts {
        if base.load(fromByteOffset: start + anchors.first, as: UInt8.self) == firstByte,
            base.load(fromByteOffset: start + anchors.second, as: UInt8.self) == secondByte,
            bytesEqual(base + start, literal, count: needle.count)
        {
            return true
        }
        start += 1
    }
    return false
}

/// Whether `literal` starts at one of the places flagged in `candidates` (bit i: `start + i`).
@inline(never)
private func literalStarts(at candidates: UInt64, from start: Int, _ base: UnsafeRawPointer, _ literal: UnsafeRawPointer, _ count: Int) -> Bool {
    var candidates = candidates
    while candidates != 0 {
        if bytesEqual(base + (start &+ candidates.trailingZeroBitCount), literal, count: count) { return true }
        candidates &= candidates &- 1
    }
    return false
}

#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension JSONObject: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self.init()
        for (key, value) in elements { self[key] = value }
    }
}
