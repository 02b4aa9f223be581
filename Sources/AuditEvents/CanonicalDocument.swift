// Reading canonical JSON documents without building trees: member spans to splice, field values to summarize.

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

    /// Every top-level member: its decoded key and the byte range of its value, in document order.
    public var members: [(key: String, value: Range<Int>)] {
        bytes.withUnsafeBytes { buffer in
            var closing = buffer.count - 1
            while closing > 0, isWhitespace(buffer[closing]) { closing -= 1 }
            return Self.spans(JSONDocument(bytes: buffer, tape: tape), ofObjectAt: 0, closingBrace: closing).map { ($0.key, $0.value) }
        }
    }

    /// The members of the object that is a top-level member's value, given by its range in ``members``, as
    /// ``members`` gives the document's own (ranges in ``bytes``); nil when that value is not an object. Read
    /// from the same tape: the alert writer splices `event`'s members without scanning them again.
    public func objectMembers(ofValueAt range: Range<Int>) -> [(key: String, value: Range<Int>)]? {
        bytes.withUnsafeBytes { buffer in
            let document = JSONDocument(bytes: buffer, tape: tape)
            var object: Int?
            document.forEachMember(of: 0) { _, value in
                if document.kind(value) == .object, Int(document.entries[value].start) == range.lowerBound { object = value }
                return object == nil
            }
            guard let object else { return nil }
            return Self.spans(document, ofObjectAt: object, closingBrace: range.upperBound - 1).map { ($0.key, $0.value) }
        }
    }

    /// The members of the object at tape index `object`, whose closing brace is at byte `closingBrace`: each
    /// one's decoded key, the byte range of its value and its value's tape index.
    private static func spans(_ document: JSONDocument, ofObjectAt object: Int, closingBrace: Int) -> [(key: String, value: Range<Int>, index: Int)] {
        let buffer = document.bytes
        var keys: [(key: String, keyStart: Int, value: Int)] = []
        document.forEachMember(of: object) { key, value in
            keys.append((document.string(key), Int(document.entries[key].start) - 1, value))
            return true
        }
        var result: [(key: String, value: Range<Int>, index: Int)] = []
        result.reserveCapacity(keys.count)
        // A value ends where the separator before the next key (or the object's closing brace) begins.
        for (position, member) in keys.enumerated() {
            let start = Int(document.entries[member.value].start) - (document.kind(member.value) == .string ? 1 : 0)
            var end: Int
            if position + 1 < keys.count {
                end = keys[position + 1].keyStart - 1
                while isWhitespace(buffer[end]) { end -= 1 }
                end -= 1  // the comma
            } else {
                end = closingBrace - 1
            }
            while isWhitespace(buffer[end]) { end -= 1 }
            result.append((member.key, start..<(end + 1), member.value))
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
