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
            let document = JSONDocument(bytes: buffer, tape: tape)
            var keys: [(key: String, keyStart: Int, value: Int)] = []
            document.forEachMember(of: 0) { key, value in
                keys.append((document.string(key), Int(document.entries[key].start) - 1, value))
                return true
            }
            var result: [(key: String, value: Range<Int>)] = []
            result.reserveCapacity(keys.count)
            // A value ends where the separator before the next key (or the object's closing brace) begins.
            var closing = buffer.count - 1
            while closing > 0, isWhitespace(buffer[closing]) { closing -= 1 }
            for (position, member) in keys.enumerated() {
                let start = Int(document.entries[member.value].start) - (document.kind(member.value) == .string ? 1 : 0)
                var end: Int
                if position + 1 < keys.count {
                    end = keys[position + 1].keyStart - 1
                    while isWhitespace(buffer[end]) { end -= 1 }
                    end -= 1  // the comma
                } else {
                    end = closing - 1
                }
                while isWhitespace(buffer[end]) { end -= 1 }
                result.append((member.key, start..<(end + 1)))
            }
            return result
        }
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
