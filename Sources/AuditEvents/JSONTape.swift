/// A one-pass structural index over JSON bytes: every value of the text becomes one entry, in document
/// order, holding byte offsets into the text instead of copies. Field lookups walk the entries and compare
/// bytes; nothing is decoded into Swift values unless asked for (``JSONDocument/value(at:)``).
///
/// The scan validates the whole text as RFC 8259 JSON, including UTF-8 inside strings, and enforces a
/// nesting limit. Storage is reused across scans (``JSONTape/removeAll()``): the hot path allocates nothing
/// per record once the tape has grown to its working size.
public final class JSONTape {
    public enum Kind: UInt8, Sendable {
        case object, array, string, number, `true`, `false`, null
    }

    /// One value. Containers: `start` is the offset of `{`/`[`, `end` the index of the first entry after the
    /// container's subtree. Strings: `start`..<`end` is the text between the quotes. Numbers and literals:
    /// their text.
    public struct Entry: Sendable {
        public var start: UInt32
        public var end: UInt32
        public var kind: Kind
        /// For strings: bit 0 = contains escapes, bit 1 = contains non-ASCII bytes.
        public var flags: UInt8
    }

    /// Manually managed so that documents can point into it without reference counting; a document made
    /// from this tape is valid until the tape grows or is reused.
    ///
    /// No exclusivity checks on these three: the scanner touches them for every value, a dynamic check
    /// costs more than the scan step itself (measured: +28 % instructions per decode), and a tape is used
    /// by one decoder on one thread, never through overlapping accesses (its methods do not call out).
    @exclusivity(unchecked) private(set) var storage: UnsafeMutablePointer<Entry>
    @exclusivity(unchecked) public private(set) var count = 0
    @exclusivity(unchecked) private var capacity: Int

    public init(capacity: Int = 256) {
        self.capacity = max(16, capacity)
        storage = .allocate(capacity: self.capacity)
    }

    deinit { storage.deallocate() }

    @inline(__always)
    func append(_ entry: Entry) {
        if count == capacity { grow() }
        storage[count] = entry
        count += 1
    }

    private func grow() {
        let larger = UnsafeMutablePointer<Entry>.allocate(capacity: capacity * 2)
        larger.moveInitialize(from: storage, count: count)
        storage.deallocate()
        storage = larger
        capacity *= 2
    }

    public func removeAll() { count = 0 }

    func truncate(to newCount: Int) { count = min(count, newCount) }

    @inline(__always)
    func setEnd(of index: Int) { storage[index].end = UInt32(count) }
}

/// Why a JSON text was rejected, and where.
public struct JSONSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable { case syntax, invalidUTF8, tooDeep }
    public var kind: Kind = .syntax
    public var reason: String
    /// Byte offset in the text that was scanned.
    public var offset: Int
    public var description: String { "\(reason) at byte \(offset)" }
}

/// Scans one JSON value starting at `offset` and appends its entries to `tape`.
/// - Returns: the offset just past the value.
struct JSONScanner {
    let bytes: UnsafePointer<UInt8>
    let count: Int
    let maxDepth: Int
    var position: Int

    init(_ buffer: UnsafeRawBufferPointer, from offset: Int, maxDepth: Int) {
        // An empty buffer may have no base address; any valid pointer works for a zero count.
        bytes = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(bitPattern: 1)!
        count = buffer.count
        self.maxDepth = maxDepth
        position = offset
    }

    private func fail(_ reason: String, at offset: Int? = nil, kind: JSONSyntaxError.Kind = .syntax) -> JSONSyntaxError {
        JSONSyntaxError(kind: kind, reason: reason, offset: offset ?? position)
    }

    @inline(__always)
    mutating func skipWhitespace() {
        while position < count {
            let byte = bytes[position]
            guard byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
            position += 1
        }
    }

    mutating func scanValue(into tape: JSONTape, depth: Int) throws(JSONSyntaxError) {
        skipWhitespace()
        guard position < count else { throw fail("unexpected end of input, expected a value") }
        switch bytes[position] {
        case UInt8(ascii: "{"): try scanObject(into: tape, depth: depth + 1)
        case UInt8(ascii: "["): try scanArray(into: tape, depth: depth + 1)
        case UInt8(ascii: "\""): try scanString(into: tape)
        case UInt8(ascii: "t"): try scanLiteral("true", .true, into: tape)
        case UInt8(ascii: "f"): try scanLiteral("false", .false, into: tape)
        case UInt8(ascii: "n"): try scanLiteral("null", .null, into: tape)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try scanNumber(into: tape)
        default: throw fail(describeUnexpected(expected: "a value"))
        }
    }

    private func describeUnexpected(expected: String) -> String {
        let byte = bytes[position]
        if byte >= 0x20 && byte < 0x7F { return "unexpected '\(Character(UnicodeScalar(byte)))', expected \(expected)" }
        return "unexpected byte 0x\(String(byte, radix: 16)), expected \(expected)"
    }

    /// Opens an object or array at `position`: its tape index, or nil when it was empty (and is closed).
    @inline(__always)
    private mutating func open(_ kind: JSONTape.Kind, closedBy close: UInt8, into tape: JSONTape, depth: Int) throws(JSONSyntaxError) -> Int? {
        guard depth <= maxDepth else { throw fail("nesting deeper than \(maxDepth) levels", kind: .tooDeep) }
        let index = tape.count
        tape.append(JSONTape.Entry(start: UInt32(position), end: 0, kind: kind, flags: 0))
        position += 1
        skipWhitespace()
        guard position < count, bytes[position] == close else { return index }
        position += 1
        tape.setEnd(of: index)
        return nil
    }

    private mutating func scanObject(into tape: JSONTape, depth: Int) throws(JSONSyntaxError) {
        guard let index = try open(.object, closedBy: UInt8(ascii: "}"), into: tape, depth: depth) else { return }
        while true {
            skipWhitespace()
            guard position < count else { throw fail("unexpected end of input in an object") }
            guard bytes[position] == UInt8(ascii: "\"") else { throw fail(describeUnexpected(expected: "a member name")) }
            try scanString(into: tape)
            skipWhitespace()
            guard position < count else { throw fail("unexpected end of input in an object") }
            guard bytes[position] == UInt8(ascii: ":") else { throw fail(describeUnexpected(expected: "':'")) }
            position += 1
            try scanValue(into: tape, depth: depth)
            skipWhitespace()
            guard position < count else { throw fail("unexpected end of input in an object") }
            let byte = bytes[position]
            position += 1
            if byte == UInt8(ascii: ",") { continue }
            if byte == UInt8(ascii: "}") { break }
            position -= 1
            throw fail(describeUnexpected(expected: "',' or '}'"))
        }
        tape.setEnd(of: index)
    }

    private mutating func scanArray(into tape: JSONTape, depth: Int) throws(JSONSyntaxError) {
        guard let index = try open(.array, closedBy: UInt8(ascii: "]"), into: tape, depth: depth) else { return }
        while true {
            try scanValue(into: tape, depth: depth)
            skipWhitespace()
            guard position < count else { throw fail("unexpected end of input in an array") }
            let byte = bytes[position]
            position += 1
            if byte == UInt8(ascii: ",") { continue }
            if byte == UInt8(ascii: "]") { break }
            position -= 1
            throw fail(describeUnexpected(expected: "',' or ']'"))
        }
        tape.setEnd(of: index)
    }

    private mutating func scanString(into tape: JSONTape) throws(JSONSyntaxError) {
        let open = position
        position += 1
        let start = position
        var flags: UInt8 = 0
        while true {
            // Plain ASCII runs are the common case: skipped sixteen bytes a step.
            position = skipPlainStringBytes(bytes, count, from: position)
            guard position < count else { throw fail("unterminated string", at: open) }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") { break }
            if byte == UInt8(ascii: "\\") {
                flags |= 1
                try scanEscape()
                continue
            }
            if byte < 0x20 { throw fail("unescaped control character 0x\(String(byte, radix: 16)) in a string") }
            if byte >= 0x80 {
                flags |= 2
                try scanUTF8Sequence()
                continue
            }
            position += 1
        }
        tape.append(JSONTape.Entry(start: UInt32(start), end: UInt32(position), kind: .string, flags: flags))
        position += 1
    }

    private mutating func scanEscape() throws(JSONSyntaxError) {
        switch checkEscape(bytes, count, position) {
        case .valid(let length): position += length
        case .truncated: throw fail(bytes[position + 1 < count ? position + 1 : position] == UInt8(ascii: "u") ? "truncated \\u escape" : "unterminated escape", at: position)
        case .invalidHex(let at): throw fail("invalid hex digit in \\u escape", at: at)
        case .invalid: throw fail("invalid escape", at: position)
        }
    }

    /// Validates one multi-byte UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF).
    private mutating func scanUTF8Sequence() throws(JSONSyntaxError) {
        switch checkUTF8Sequence(bytes, count, position) {
        case .valid(let length): position += length
        case .invalidLead: throw fail("invalid UTF-8 byte 0x\(String(bytes[position], radix: 16))", kind: .invalidUTF8)
        case .truncated: throw fail("truncated UTF-8 sequence", kind: .invalidUTF8)
        case .invalidSequence: throw fail("invalid UTF-8 sequence", kind: .invalidUTF8)
        }
    }

    private mutating func scanNumber(into tape: JSONTape) throws(JSONSyntaxError) {
        let start = position
        switch checkNumber(bytes, count, position) {
        case .valid(let end): position = end
        case .invalid: throw fail("invalid number", at: start)
        case .noFractionDigits: throw fail("invalid number: digits must follow '.'", at: start)
        case .noExponentDigits: throw fail("invalid number: exponent has no digits", at: start)
        }
        tape.append(JSONTape.Entry(start: UInt32(start), end: UInt32(position), kind: .number, flags: 0))
    }

    private mutating func scanLiteral(_ text: StaticString, _ kind: JSONTape.Kind, into tape: JSONTape) throws(JSONSyntaxError) {
        let length = text.utf8CodeUnitCount
        guard position + length <= count, memcmp(bytes + position, text.utf8Start, length) == 0 else {
            throw fail(describeUnexpected(expected: "a value"))
        }
        tape.append(JSONTape.Entry(start: UInt32(position), end: UInt32(position + length), kind: kind, flags: 0))
        position += length
    }
}

// MARK: Token checks shared by the scanner and the validator

/// The first offset at or after `position` whose byte a string scan must look at — a quote, a backslash, a
/// control character or a non-ASCII byte — or `count`. Sixteen bytes a step as one vector compare: on
/// x86-64 its byte mask (`pmovmskb`) gives the offset by its trailing zeros; elsewhere its 0xFF/0x00 lanes,
/// read as two words, do. The last bytes eight at a time, then one by one.
@inline(__always)
func skipPlainStringBytes(_ bytes: UnsafePointer<UInt8>, _ count: Int, from start: Int) -> Int {
    var position = start
    #if arch(x86_64)
    let quote = _mm_set1_epi8(0x22), backslash = _mm_set1_epi8(0x5C), space = _mm_set1_epi8(0x20)
    @inline(__always) func hits(_ at: Int) -> __m128i {
        let vector = UnsafeRawPointer(bytes + at).loadUnaligned(as: __m128i.self)
        // Signed, every byte below 0x20 or from 0x80 up is less than 0x20: controls and non-ASCII in one compare.
        return _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(vector, quote), _mm_cmpeq_epi8(vector, backslash)), _mm_cmplt_epi8(vector, space))
    }
    // Sixteen bytes first (most strings end there), then thirty-two a step.
    if position &+ 16 <= count {
        let mask = _mm_movemask_epi8(hits(position))
        if mask != 0 { return position &+ Int(mask.trailingZeroBitCount) }
        position &+= 16
        while position &+ 32 <= count {
            let low = hits(position), high = hits(position &+ 16)
            if _mm_movemask_epi8(_mm_or_si128(low, high)) != 0 {
                let mask = Int(_mm_movemask_epi8(low)) | Int(_mm_movemask_epi8(high)) << 16
                return position &+ mask.trailingZeroBitCount
            }
            position &+= 32
        }
    }
    while position &+ 16 <= count {
        let mask = _mm_movemask_epi8(hits(position))
        if mask != 0 { return position &+ Int(mask.trailingZeroBitCount) }
        position &+= 16
    }
    #else
    while position &+ 16 <= count {
        let vector = UnsafeRawPointer(bytes + position).loadUnaligned(as: SIMD16<UInt8>.self)
        let hits = (vector .== SIMD16<UInt8>(repeating: 0x22)) .| (vector .== SIMD16<UInt8>(repeating: 0x5C))
            .| (unsafeBitCast(vector, to: SIMD16<Int8>.self) .< SIMD16<Int8>(repeating: 0x20))
        let lanes = unsafeBitCast(hits, to: SIMD2<UInt64>.self)
        if lanes[0] | lanes[1] != 0 {
            // A select, not a branch on which half: strings end anywhere, so that branch mispredicts.
            let low = lanes[0].trailingZeroBitCount >> 3, high = lanes[1].trailingZeroBitCount >> 3
            return position &+ (low < 8 ? low : 8 &+ high)
        }
        position &+= 16
    }
    #endif
    while position &+ 8 <= count {
        let attention = stringAttention(UnsafeRawPointer(bytes + position).loadUnaligned(as: UInt64.self))
        if attention != 0 { return position &+ attention.trailingZeroBitCount >> 3 }
        position &+= 8
    }
    return position
}

/// High bit set in each of the eight bytes that is a quote, a backslash, a control character or non-ASCII
/// (and possibly in bytes above such a byte: borrows only ever flag bytes above a true hit, so the lowest
/// flagged byte is always one).
@inline(__always)
func stringAttention(_ word: UInt64) -> UInt64 { escapeAttention(word) | (word & 0x8080_8080_8080_8080) }

/// High bit set in each of the eight bytes a JSON string must escape — a quote, a backslash or a control
/// character — with the same borrow caveat: exact for "some byte is", and for the lowest flagged byte.
@inlinable @inline(__always)
func escapeAttention(_ word: UInt64) -> UInt64 {
    let ones: UInt64 = 0x0101_0101_0101_0101
    let quote = word ^ (ones &* 0x22)
    let backslash = word ^ (ones &* 0x5C)
    let hasQuote = (quote &- ones) & ~quote
    let hasBackslash = (backslash &- ones) & ~backslash
    let hasControl = (word &- ones &* 0x20) & ~word
    return (hasQuote | hasBackslash | hasControl) & 0x8080_8080_8080_8080
}

enum EscapeCheck { case valid(length: Int), truncated, invalidHex(at: Int), invalid }

/// The escape whose backslash is at `position`: its length, or what is wrong with it.
@inline(__always)
func checkEscape(_ bytes: UnsafePointer<UInt8>, _ count: Int, _ position: Int) -> EscapeCheck {
    guard position + 1 < count else { return .truncated }
    switch bytes[position + 1] {
    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
        UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
        return .valid(length: 2)
    case UInt8(ascii: "u"):
        guard position + 5 < count else { return .truncated }
        for offset in 2...5 where hexValue(bytes[position + offset]) == nil { return .invalidHex(at: position + offset) }
        return .valid(length: 6)
    default:
        return .invalid
    }
}

enum UTF8Check { case valid(length: Int), invalidLead, truncated, invalidSequence }

/// The multi-byte UTF-8 sequence whose lead byte is at `position` (no overlongs, no surrogates, at most
/// U+10FFFF).
@inline(__always)
func checkUTF8Sequence(_ bytes: UnsafePointer<UInt8>, _ count: Int, _ position: Int) -> UTF8Check {
    let length: Int
    var lowest: UInt8 = 0x80
    var highest: UInt8 = 0xBF
    switch bytes[position] {
    case 0xC2...0xDF: length = 2
    case 0xE0: length = 3; lowest = 0xA0
    case 0xE1...0xEC, 0xEE...0xEF: length = 3
    case 0xED: length = 3; highest = 0x9F
    case 0xF0: length = 4; lowest = 0x90
    case 0xF1...0xF3: length = 4
    case 0xF4: length = 4; highest = 0x8F
    default: return .invalidLead
    }
    guard position + length <= count else { return .truncated }
    let second = bytes[position + 1]
    guard second >= lowest && second <= highest else { return .invalidSequence }
    for offset in 2..<length where bytes[position + offset] & 0xC0 != 0x80 { return .invalidSequence }
    return .valid(length: length)
}

enum NumberCheck { case valid(end: Int), invalid, noFractionDigits, noExponentDigits }

/// The number starting at `position` (RFC 8259 grammar): where it ends, or what is wrong with it.
@inline(__always)
func checkNumber(_ bytes: UnsafePointer<UInt8>, _ count: Int, _ start: Int) -> NumberCheck {
    var position = start
    if bytes[position] == UInt8(ascii: "-") { position += 1 }
    guard position < count, isDigit(bytes[position]) else { return .invalid }
    if bytes[position] == UInt8(ascii: "0") {
        position += 1
    } else {
        while position < count, isDigit(bytes[position]) { position += 1 }
    }
    if position < count, bytes[position] == UInt8(ascii: ".") {
        position += 1
        guard position < count, isDigit(bytes[position]) else { return .noFractionDigits }
        while position < count, isDigit(bytes[position]) { position += 1 }
    }
    if position < count, bytes[position] | 0x20 == UInt8(ascii: "e") {
        position += 1
        if position < count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
        guard position < count, isDigit(bytes[position]) else { return .noExponentDigits }
        while position < count, isDigit(bytes[position]) { position += 1 }
    }
    return .valid(end: position)
}

@inline(__always) func isDigit(_ byte: UInt8) -> Bool { byte &- UInt8(ascii: "0") < 10 }

@inline(__always) func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
}

#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
