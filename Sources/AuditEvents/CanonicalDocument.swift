// Reading canonical JSON documents without building trees: member spans to splice, field values to summarize.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A JSON object held as its bytes, scanned once into a tape: its top-level members as byte ranges (to
/// splice into larger documents without parsing them again) and ES-style field lookups. The pipeline keeps
/// every match's ECS document this way, from the detect side to the alert.
public final class CanonicalDocument {
    public let bytes: [UInt8]
    private let tape: JSONTape

    /// - Throws: when `bytes` is not one JSON object.
    public init(_ bytes: [UInt8]) throws(JSONSyntaxError) {
        self.bytes = bytes
        // An ECS document holds a value every 10–12 bytes: sized once, the tape does not grow while scanning.
        tape = JSONTape(capacity: bytes.count / 8)
        let outcome: Result<JSONTape.Kind, JSONSyntaxError> = bytes.withUnsafeBytes { buffer in
            do throws(JSONSyntaxError) {
                return .success(try JSONDocument.parse(buffer, into: tape).kind(0))
            } catch {
                return .failure(error)
            }
        }
        guard try outcome.get() == .object else { throw JSONSyntaxError(reason: "not a JSON object", offset: 0) }
    }

    /// A member of an object in the document, as byte ranges in ``bytes``: nothing decoded or allocated, so
    /// that a writer can copy it as it is.
    public struct Member: Sendable, Equatable {
        /// The key's text between its quotes, as written.
        public var keyText: Range<Int>
        /// The text holds an escape: its bytes are not the key's (``key(of:)`` decodes it).
        public var keyEscaped: Bool
        /// The text is ASCII: without an escape, its bytes order as the key does among strings.
        public var keyASCII: Bool
        public var value: Range<Int>
    }

    /// Every top-level member, in document order.
    public var memberSpans: [Member] {
        bytes.withUnsafeBytes { buffer in
            var closing = buffer.count - 1
            while closing > 0, isWhitespace(buffer[closing]) { closing -= 1 }
            return Self.spans(JSONDocument(bytes: buffer, tape: tape), ofObjectAt: 0, closingBrace: closing)
        }
    }

    /// Every top-level member: its decoded key and the byte range of its value, in document order.
    public var members: [(key: String, value: Range<Int>)] { memberSpans.map { (key(of: $0), $0.value) } }

    /// The decoded key of a member.
    public func key(of member: Member) -> String {
        guard member.keyEscaped else { return String(decoding: bytes[member.keyText], as: UTF8.self) }
        return bytes.withUnsafeBytes { buffer in
            String(decoding: unescape(UnsafeRawBufferPointer(rebasing: buffer[member.keyText])), as: UTF8.self)
        }
    }

    /// Whether a member's decoded key is `name`.
    public func key(of member: Member, is name: StaticString) -> Bool {
        guard !member.keyEscaped else { return key(of: member) == name.description }
        return member.keyText.count == name.utf8CodeUnitCount
            && bytes.withUnsafeBytes { memcmp($0.baseAddress! + member.keyText.lowerBound, name.utf8Start, member.keyText.count) == 0 }
    }

    /// The members of the object that is a top-level member's value, given by its range in ``memberSpans``,
    /// as ``memberSpans`` gives the document's own; nil when that value is not an object. Read from the same
    /// tape: the alert writer splices `event`'s members without scanning them again.
    public func objectMemberSpans(ofValueAt range: Range<Int>) -> [Member]? {
        bytes.withUnsafeBytes { buffer in
            let document = JSONDocument(bytes: buffer, tape: tape)
            var object: Int?
            document.forEachMember(of: 0) { _, value in
                if document.kind(value) == .object, Int(document.entries[value].start) == range.lowerBound { object = value }
                return object == nil
            }
            guard let object else { return nil }
            return Self.spans(document, ofObjectAt: object, closingBrace: range.upperBound - 1)
        }
    }

    /// The members of the object at tape index `object`, whose closing brace is at byte `closingBrace`.
    private static func spans(_ document: JSONDocument, ofObjectAt object: Int, closingBrace: Int) -> [Member] {
        let buffer = document.bytes
        var result: [Member] = []
        document.forEachMember(of: object) { key, value in
            let entry = document.entries[key]
            let start = Int(document.entries[value].start) - (document.kind(value) == .string ? 1 : 0)
            result.append(Member(keyText: Int(entry.start)..<Int(entry.end), keyEscaped: entry.flags & 1 != 0, keyASCII: entry.flags & 2 == 0,
                                 value: start..<start))
            return true
        }
        // A value ends where the separator before the next key (or the object's closing brace) begins.
        for position in result.indices {
            var end: Int
            if position + 1 < result.count {
                end = result[position + 1].keyText.lowerBound - 2  // before the next key's quote
                while isWhitespace(buffer[end]) { end -= 1 }
                end -= 1  // the comma
            } else {
                end = closingBrace - 1
            }
            while isWhitespace(buffer[end]) { end -= 1 }
            result[position].value = result[position].value.lowerBound..<(end + 1)
        }
        return result
    }

    /// Every value of a dotted field, ES-style (keys may hold dots, arrays walked element by element), as the
    /// tree's `forEachValue(of:)` gives them: empty strings, nulls and empty containers skipped.
    @discardableResult
    public func forEachValue(of field: FieldPath, _ body: (FieldValue) -> Bool) -> Bool {
        bytes.withUnsafeBytes { buffer in
            AuditEvent.visit(JSONDocument(bytes: buffer, tape: tape), 0, field.bytes, body)
        }
    }

    /// The first string value of a field, if any.
    public func firstString(_ field: FieldPath) -> String? {
        var result: String?
        forEachValue(of: field) { value in
            result = value.stringValue
            return false
        }
        return result
    }
}

@inline(__always) func isWhitespace(_ byte: UInt8) -> Bool {
    byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
}
