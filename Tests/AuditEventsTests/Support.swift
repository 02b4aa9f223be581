import AuditEvents
import Foundation
import TestSupport
import Testing


func fixture(_ name: String) throws -> [UInt8] {
    Array(try Data(contentsOf: packageRoot.appendingPathComponent("Tests/AuditEventsTests/Fixtures/\(name)")))
}

/// What a test keeps of one decoded event (events are only valid inside the decode body).
struct DecodedEvent {
    var shape: InputShape
    var normalized: JSONObject
    var withOriginal: JSONObject
    /// Every leaf path of the normalized document, looked up through the lazy field view.
    var viewed: [String: [String]]
    var ingested: Int64?
    var timestamp: Int64?
}

func decodeAll(_ bytes: [UInt8], ingestTime: Int64? = nil, decoder: AuditRecordDecoder = AuditRecordDecoder()) -> (events: [DecodedEvent], errors: [AuditDecodeError]) {
    var events: [DecodedEvent] = []
    var errors: [AuditDecodeError] = []
    bytes.withUnsafeBytes { buffer in
        decoder.decode(buffer, ingestTime: ingestTime) { result in
            switch result {
            case .success(let event):
                let normalized = event.normalized()
                var viewed: [String: [String]] = [:]
                for path in leafPaths(normalized).keys {
                    viewed[path] = event.strings(FieldPath(path))
                }
                events.append(DecodedEvent(
                    shape: event.shape, normalized: normalized, withOriginal: event.normalized(preserveOriginal: true),
                    viewed: viewed, ingested: event.ingestedMilliseconds, timestamp: event.timestampMilliseconds))
            case .failure(let error):
                errors.append(error)
            }
        }
    }
    return (events, errors)
}

/// Leaf values by dotted path; arrays contribute each element (as the field view yields them).
func leafPaths(_ object: JSONObject, prefix: String = "") -> [String: [String]] {
    var result: [String: [String]] = [:]
    func walk(_ value: JSONValue, _ path: String) {
        switch value {
        case .object(let object):
            for member in object { walk(member.value, path.isEmpty ? member.key : "\(path).\(member.key)") }
        case .array(let elements):
            for element in elements { walk(element, path) }
        case .string(let text): result[path, default: []].append(text)
        case .number(let number): result[path, default: []].append(number.text)
        case .bool(let flag): result[path, default: []].append(flag ? "true" : "false")
        case .null: break
        }
    }
    walk(.object(object), prefix)
    return result
}
