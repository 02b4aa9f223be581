import AuditEvents
import Detection
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The wire forms of the pipeline's internal records: matches on the repartition topic, window state on the
/// compacted changelog. JSON, with sorted keys, so they are readable with any Kafka tool and reproducible.
public enum StateCodec {
    public struct DecodingError: Error, CustomStringConvertible {
        public var description: String
    }

    // MARK: Matches (repartition topic)

    /// - Parameter floor: the detect side's replay floor for the match's input partition: no record below
    ///   it will be read (and repartitioned) again, so the aggregate side may forget positions below it.
    public static func encode(_ match: RuleMatch, ruleID: String, floor: Int64? = nil) -> [UInt8] {
        // The members in key order, the document spliced in as it is (it is canonical already): the same
        // bytes as the whole object serialized with sorted keys, written without building it.
        var out = JSONObjectWriter(capacity: match.documentBytes.count + 200)
        out.raw(#"{"event":"#)
        out.raw(match.documentBytes)
        if let floor {
            out.raw(#","floor":"#, number: floor)
        }
        out.raw(#","group":"#)
        out.optionalStrings(match.groupValues)
        out.raw(#","rule_id":"#)
        out.string(ruleID)
        out.raw(#","sequence":"#, number: Int64(match.sequence))
        out.raw(#","source":"#)
        out.position(match.source)
        if match.steps != 0 {
            out.raw(#","steps":"#, number: Int64(match.steps))
        }
        if let values = match.summaryValues {
            out.raw(#","summary":"#)
            out.array(values.lists) { $0.strings($1) }
        }
        out.raw(#","time":"#, number: match.eventTime)
        out.raw("}")
        return out.finish()
    }

    private static let eventPrefix = Array(#"{"event":"#.utf8)

    public static func decodeMatch(_ bytes: UnsafeRawBufferPointer) throws -> (ruleID: String, match: RuleMatch, floor: Int64?) {
        // The form this side writes is read straight from the bytes: the document checked by the validation
        // pass and kept as its bytes, the small members read in their fixed order. Anything else (another
        // writer's member order, whitespace, escapes) is parsed in full.
        if let decoded = decodeWrittenMatch(bytes) { return decoded }
        return try decodeMatch(members: matchMembersScanned(bytes))
    }

    /// A match record exactly as ``encode(_:ruleID:floor:)`` writes it, or nil (the caller then parses it).
    static func decodeWrittenMatch(_ bytes: UnsafeRawBufferPointer) -> (ruleID: String, match: RuleMatch, floor: Int64?)? {
        // One level less than the whole record's limit: the document is nested in it.
        guard bytes.count > eventPrefix.count, bytes.starts(with: eventPrefix), bytes[eventPrefix.count] == UInt8(ascii: "{"),
            let end = JSONSpan.validValueEnd(bytes, from: eventPrefix.count, maxDepth: 127)
        else { return nil }
        var reader = WrittenFormReader(bytes, at: end)
        var floor: Int64?
        if reader.skip(#","floor":"#) {
            // A floor member must hold a number: `"floor":,` is not JSON (seeded test, seed 434332).
            guard let value = reader.integer() else { return nil }
            floor = value
        }
        guard reader.skip(#","group":"#), let group = reader.optionalStrings(), reader.skip(#","rule_id":"#), let ruleID = reader.string(),
            reader.skip(#","sequence":"#), let sequence = reader.integer(), let sequenceNumber = Int(exactly: sequence),
            reader.skip(#","source":"#), let source = reader.position()
        else { return nil }
        var steps: UInt32 = 0
        if reader.skip(#","steps":"#) {
            guard let value = reader.integer(), let mask = UInt32(exactly: value), mask != 0 else { return nil }
            steps = mask
        }
        var summary: SuppressionSummary.Values?
        if reader.skip(#","summary":"#) {
            guard let lists = reader.array({ $0.strings() }), lists.count == SuppressionSummary.Values.fields.count else { return nil }
            summary = SuppressionSummary.Values(lists: lists)
        }
        guard reader.skip(#","time":"#), let time = reader.integer(), reader.skip("}"), reader.atEnd else { return nil }
        var match = RuleMatch(groupValues: group, eventTime: time, documentBytes: Array(bytes[eventPrefix.count..<end]), source: source, sequence: sequenceNumber)
        match.steps = steps
        match.summaryValues = summary
        return (ruleID, match, floor)
    }

    /// A match record's members, the whole record scanned (any member order, whitespace, repeated keys:
    /// the last wins).
    static func matchMembersScanned(_ bytes: UnsafeRawBufferPointer) throws -> (event: [UInt8]?, object: JSONObject) {
        let record = try CanonicalDocument(Array(bytes))
        var object = JSONObject()
        var event: [UInt8]?
        for member in record.members {
            if member.key == "event" {
                event = Array(record.bytes[member.value])
            } else {
                object[member.key] = try JSONValue.parse(record.bytes[member.value])
            }
        }
        return (event, object)
    }

    static func decodeMatch(members: (event: [UInt8]?, object: JSONObject)) throws -> (ruleID: String, match: RuleMatch, floor: Int64?) {
        let (event, object) = members
        guard let ruleID = object["rule_id"]?.stringValue, let group = object["group"]?.arrayValue,
            case .number(let time)? = object["time"], let time = time.intValue,
            let source = object["source"].flatMap(position), let event, event.first == UInt8(ascii: "{")
        else { throw DecodingError(description: "not a match record") }
        let sequence = Int(int(object["sequence"]) ?? 0)
        var match = RuleMatch(groupValues: group.map(\.stringValue), eventTime: time, documentBytes: event, source: source, sequence: sequence)
        if let steps = int(object["steps"]) {
            guard let mask = UInt32(exactly: steps) else { throw DecodingError(description: "not a match record: steps \(steps)") }
            match.steps = mask
        }
        // A list of strings per summarized field; anything else is left to be read from the document.
        if let summary = object["summary"]?.arrayValue, summary.count == SuppressionSummary.Values.fields.count {
            let lists = summary.compactMap { list in
                list.arrayValue.flatMap { elements in
                    let strings = elements.compactMap(\.stringValue)
                    return strings.count == elements.count ? strings : nil
                }
            }
            if lists.count == summary.count { match.summaryValues = SuppressionSummary.Values(lists: lists) }
        }
        return (ruleID, match, int(object["floor"]))
    }

    // MARK: Watermarks (repartition topic)

    /// The key of a watermark record: no group key starts with a control character.
    public static let watermarkKey: [UInt8] = Array("\u{1}watermark".utf8)

    public static func encode(watermark: Int64, ruleID: String) -> [UInt8] {
        var bytes: [UInt8] = []
        JSONValue.object(["rule_id": .string(ruleID), "watermark": .number(JSONNumber(watermark))]).write(to: &bytes, sortedKeys: true)
        return bytes
    }

    public static func decodeWatermark(_ bytes: UnsafeRawBufferPointer) throws -> Int64 {
        guard let time = int(try parseObject(bytes)["watermark"]) else { throw DecodingError(description: "not a watermark record") }
        return time
    }

    // MARK: Window state (changelog topic)

    public static func encode(windows: [SuppressionWindow], streamTime: Int64) -> [UInt8] {
        // Written member by member in key order (what sorted serialization gives), each window's first
        // document spliced in as it is.
        var out = JSONObjectWriter(capacity: windows.reduce(64) { $0 + $1.first.documentBytes.count + 400 })
        out.raw(#"{"stream_time":"#, number: streamTime)
        out.raw(#","windows":["#)
        for (index, window) in windows.enumerated() {
            if index > 0 { out.raw(",") }
            out.raw(#"{"applied":"#)
            out.sortedMap(window.applied) { $0.number($1) }
            out.raw(#","closed":"#)
            out.raw(window.closed ? "true" : "false")
            out.raw(#","end":"#, number: window.end)
            out.raw(#","first":{"event":"#)
            out.raw(window.first.documentBytes)
            out.raw(#","source":"#)
            out.position(window.first.source)
            out.raw(#","time":"#, number: window.first.eventTime)
            out.raw(#"},"group":"#)
            out.optionalStrings(window.groupValues)
            out.raw(#","key":"#)
            out.string(window.groupKey)
            out.raw(#","recent":"#)
            out.sortedMap(window.recent) { $0.array($1) { $0.number($1) } }
            out.raw(#","start":"#, number: window.start)
            out.raw(#","summary":"#)
            out.summary(window.summary, timesAsNumbers: true)
            out.raw(#","suppressed":"#, number: Int64(window.suppressed))
            out.raw("}")
        }
        out.raw("]}")
        return out.finish()
    }

    public static func decodeWindows(_ bytes: UnsafeRawBufferPointer) throws -> (windows: [SuppressionWindow], streamTime: Int64) {
        let object = try parseObject(bytes)
        guard case .number(let stream)? = object["stream_time"], let streamTime = stream.intValue,
            let list = object["windows"]?.arrayValue
        else { throw DecodingError(description: "not a window state record") }
        var windows: [SuppressionWindow] = []
        for case .object(let entry) in list {
            guard let key = entry["key"]?.stringValue, let group = entry["group"]?.arrayValue,
                let start = int(entry["start"]), let end = int(entry["end"]), let suppressed = int(entry["suppressed"]),
                let appliedObject = entry["applied"]?.objectValue, let first = entry["first"]?.objectValue,
                let firstTime = int(first["time"]), let source = first["source"].flatMap(position),
                let event = first["event"]?.objectValue, let summary = entry["summary"]?.objectValue.flatMap(summary)
            else { throw DecodingError(description: "malformed window in state record") }
            let values = group.map(\.stringValue)
            var window = SuppressionWindow(
                groupKey: key, groupValues: values, start: start, end: end,
                first: RuleMatch(groupValues: values, eventTime: firstTime, document: event, source: source),
                suppressed: Int(suppressed), summary: summary,
                applied: appliedObject.reduce(into: [:]) { result, member in result[member.key] = int(member.value) })
            if case .bool(true)? = entry["closed"] { window.closed = true }
            for member in entry["recent"]?.objectValue ?? [:] {
                window.recent[member.key] = member.value.arrayValue?.compactMap { int($0) }
            }
            windows.append(window)
        }
        return (windows, streamTime)
    }

    // MARK: Pending sequences (changelog topic)

    /// A join key's pending sequences: per step waited for, each sequence's events as match records.
    public static func encode(waiting: [[PendingSequence]], ruleID: String) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.append(contentsOf: #"{"waiting":["#.utf8)
        for (step, sequences) in waiting.enumerated() {
            if step > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(UInt8(ascii: "["))
            for (index, sequence) in sequences.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                bytes.append(UInt8(ascii: "["))
                for (position, match) in sequence.events.enumerated() {
                    if position > 0 { bytes.append(UInt8(ascii: ",")) }
                    bytes.append(contentsOf: encode(match, ruleID: ruleID))
                }
                bytes.append(UInt8(ascii: "]"))
            }
            bytes.append(UInt8(ascii: "]"))
        }
        bytes.append(contentsOf: "]}".utf8)
        return bytes
    }

    public static func decodeWaiting(_ bytes: UnsafeRawBufferPointer) throws -> [[PendingSequence]] {
        guard let steps = try parseObject(bytes)["waiting"]?.arrayValue else { throw DecodingError(description: "not a pending sequences record") }
        return try steps.map { step in
            guard let sequences = step.arrayValue else { throw DecodingError(description: "malformed step in pending sequences record") }
            return try sequences.map { sequence in
                guard let events = sequence.arrayValue, !events.isEmpty else { throw DecodingError(description: "malformed pending sequence") }
                return PendingSequence(events: try events.map { event in
                    var record: [UInt8] = []
                    event.write(to: &record, sortedKeys: true)
                    return try record.withUnsafeBytes { try decodeMatch($0).match }
                })
            }
        }
    }

    // MARK: A store's position and clocks (changelog key `p|`)

    public static func encode(position: Int64?, clocks: AlertSuppressor.Clocks, sources: [String: SourceLedger] = [:]) -> [UInt8] {
        // Member by member in key order (what sorted serialization gives): a store writes this after every
        // batch that changed it, with a ledger per input partition, and built as a tree it cost ~70 k
        // instructions.
        var out = JSONObjectWriter(capacity: sources.reduce(128) { $0 + $1.key.utf8.count + 40 + 21 * $1.value.applied.count })
        out.raw(#"{"last_activity":"#, number: clocks.lastActivity)
        if let position {
            out.raw(#","next_offset":"#, number: position)
        }
        out.raw(#","record_time":"#, number: clocks.recordTime)
        if !sources.isEmpty {
            out.raw(#","sources":"#)
            out.sortedMap(sources) { out, ledger in
                out.raw(#"{"applied":"#)
                out.array(ledger.applied.sorted()) { $0.number($1) }
                out.raw(#","floor":"#, number: ledger.floor)
                out.raw("}")
            }
        }
        out.raw(#","stream_time":"#, number: clocks.streamTime)
        out.raw("}")
        return out.finish()
    }

    public static func decodePosition(_ bytes: UnsafeRawBufferPointer) throws -> (position: Int64?, clocks: AlertSuppressor.Clocks, sources: [String: SourceLedger]) {
        let object = try parseObject(bytes)
        guard let stream = int(object["stream_time"]), let record = int(object["record_time"]), let activity = int(object["last_activity"]) else {
            throw DecodingError(description: "not a position record")
        }
        var sources: [String: SourceLedger] = [:]
        for member in object["sources"]?.objectValue ?? [:] {
            guard let entry = member.value.objectValue, let floor = int(entry["floor"]) else { continue }
            sources[member.key] = SourceLedger(floor: floor, applied: Set((entry["applied"]?.arrayValue ?? []).compactMap { int($0) }))
        }
        return (int(object["next_offset"]), AlertSuppressor.Clocks(streamTime: stream, recordTime: record, lastActivity: activity), sources)
    }

    // MARK: ES|QL aggregation groups (changelog topic)

    /// One group of an aggregating ES|QL rule: its key values, panes (index → partial aggregates), the last
    /// execution its row passed in, the latest execution it has been through, and the input positions it
    /// has applied.
    public static func encode(group: ScheduledAggregation.Group, ruleID: String) -> [UInt8] {
        var object: JSONObject = [
            "rule_id": .string(ruleID),
            "keys": .array(group.keys.map(\.encoded)),
            "panes": .array(group.panes.keys.sorted().map { index in
                .array([.number(JSONNumber(index)), .array(group.panes[index]!.map(\.encoded))])
            }),
            "applied": .object(JSONObject(group.applied.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.number(JSONNumber($0.value))) })),
            "recent": .object(JSONObject(group.recent.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.array($0.value.map { .number(JSONNumber($0)) })) })),
        ]
        if let passed = group.lastPassed { object["last_passed"] = .number(JSONNumber(passed)) }
        if let executed = group.executed { object["executed"] = .number(JSONNumber(executed)) }
        var bytes: [UInt8] = []
        JSONValue.object(object).write(to: &bytes, sortedKeys: true)
        return bytes
    }

    public static func decodeGroup(_ bytes: UnsafeRawBufferPointer) throws -> ScheduledAggregation.Group {
        let object = try parseObject(bytes)
        guard let keyItems = object["keys"]?.arrayValue, let paneItems = object["panes"]?.arrayValue else {
            throw DecodingError(description: "not an aggregation group")
        }
        var keys: [ESQLValue] = []
        for item in keyItems {
            guard let value = ESQLValue(encoded: item) else { throw DecodingError(description: "aggregation group: bad key \(item)") }
            keys.append(value)
        }
        var panes: [Int64: [ESQLPartialAggregate]] = [:]
        for item in paneItems {
            guard let pair = item.arrayValue, pair.count == 2, let index = int(pair[0]), let partialItems = pair[1].arrayValue else {
                throw DecodingError(description: "aggregation group: bad pane")
            }
            var partials: [ESQLPartialAggregate] = []
            for partial in partialItems {
                guard let decoded = ESQLPartialAggregate(encoded: partial) else { throw DecodingError(description: "aggregation group: bad aggregate") }
                partials.append(decoded)
            }
            panes[index] = partials
        }
        var group = ScheduledAggregation.Group(keys: keys, panes: panes, lastPassed: int(object["last_passed"]), executed: int(object["executed"]))
        for member in object["applied"]?.objectValue ?? [:] { group.applied[member.key] = int(member.value) }
        for member in object["recent"]?.objectValue ?? [:] { group.recent[member.key] = member.value.arrayValue?.compactMap { int($0) } }
        return group
    }

    // MARK: Pieces

    static func position(_ value: JSONValue) -> RecordPosition? {
        guard let object = value.objectValue, let topic = object["topic"]?.stringValue,
            let partition = int(object["partition"]), let offset = int(object["offset"])
        else { return nil }
        return RecordPosition(topic: topic, partition: Int32(partition), offset: offset)
    }

    static func summary(_ object: JSONObject) -> SuppressionSummary? {
        func list(_ key: String) -> [String] { object[key]?.arrayValue?.compactMap(\.stringValue) ?? [] }
        guard let count = int(object["count"]), let first = int(object["first_seen"]), let last = int(object["last_seen"]) else { return nil }
        var summary = SuppressionSummary()
        summary.count = Int(count)
        summary.verbs = list("verbs")
        summary.resources = list("resources")
        summary.namespaces = list("namespaces")
        summary.sourceIPs = list("source_ips")
        summary.userAgents = list("user_agents")
        summary.responseCodes = list("response_codes")
        summary.firstSeen = first
        summary.lastSeen = last
        return summary
    }

    static func int(_ value: JSONValue?) -> Int64? {
        if case .number(let number)? = value { return number.intValue }
        return nil
    }

    static func parseObject(_ bytes: UnsafeRawBufferPointer) throws -> JSONObject {
        guard let object = try JSONValue.parse(Array(bytes)).objectValue else { throw DecodingError(description: "not a JSON object") }
        return object
    }
}

/// A cursor over a record in the exact form this side writes (compact, members in key order, strings
/// without escapes): each read gives nil as soon as the bytes differ from that form, and the caller then
/// parses the record in full. It accepts nothing the parser would read differently.
struct WrittenFormReader {
    private let bytes: UnsafeRawBufferPointer
    private var cursor: Int

    init(_ bytes: UnsafeRawBufferPointer, at position: Int) {
        self.bytes = bytes
        self.cursor = position
    }

    var atEnd: Bool { cursor == bytes.count }

    /// Steps over `literal` when the bytes at the cursor are it.
    mutating func skip(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - cursor >= count, memcmp(bytes.baseAddress! + cursor, literal.utf8Start, count) == 0 else { return false }
        cursor += count
        return true
    }

    /// An integer as Int64's description writes it (no leading zeros, no fraction or exponent).
    mutating func integer() -> Int64? {
        var index = cursor
        let negative = index < bytes.count && bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        let digitsStart = index
        var magnitude: UInt64 = 0
        while index < bytes.count, bytes[index] &- UInt8(ascii: "0") < 10 {
            let (times10, overflow1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(bytes[index] &- UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            magnitude = sum
            index += 1
        }
        let digits = index - digitsStart
        guard digits > 0, digits == 1 || bytes[digitsStart] != UInt8(ascii: "0"),
            index == bytes.count || (bytes[index] != UInt8(ascii: ".") && bytes[index] != UInt8(ascii: "e") && bytes[index] != UInt8(ascii: "E"))
        else { return nil }
        let value: Int64
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1, magnitude != 0 else { return nil }
            value = magnitude == UInt64(Int64.max) + 1 ? .min : -Int64(magnitude)
        } else {
            guard let exact = Int64(exactly: magnitude) else { return nil }
            value = exact
        }
        cursor = index
        return value
    }

    /// A string: read directly when it has no escapes (its bytes valid UTF-8), by the parser when it has.
    mutating func string() -> String? {
        guard cursor < bytes.count, bytes[cursor] == UInt8(ascii: "\"") else { return nil }
        // Most are plain ASCII: their end found a vector at a time, their bytes taken as they are.
        let plainEnd = JSONSpan.plainStringTextEnd(bytes, from: cursor + 1)
        if plainEnd < bytes.count, bytes[plainEnd] == UInt8(ascii: "\"") {
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(cursor + 1)..<plainEnd]), as: UTF8.self)
            cursor = plainEnd + 1
            return text
        }
        var index = cursor + 1
        var escaped = false
        var nonASCII: UInt8 = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") { break }
            guard byte >= 0x20 else { return nil }
            nonASCII |= byte & 0x80
            if byte == UInt8(ascii: "\\") {
                escaped = true
                index += 1
            }
            index += 1
        }
        guard index < bytes.count else { return nil }
        let text: String?
        let inside = UnsafeRawBufferPointer(rebasing: bytes[(cursor + 1)..<index])
        if escaped {
            text = (try? JSONValue.parse(Array(bytes[cursor...index])))?.stringValue
        } else if nonASCII == 0 {
            text = String(decoding: inside, as: UTF8.self)  // ASCII is valid UTF-8: no check needed
        } else {
            text = String(validating: inside, as: UTF8.self)
        }
        guard let text else { return nil }
        cursor = index + 1
        return text
    }

    /// `[…]`, each element read by `element` (nil: not the written form).
    mutating func array<Element>(_ element: (inout WrittenFormReader) -> Element?) -> [Element]? {
        guard skip("[") else { return nil }
        var values: [Element] = []
        if skip("]") { return values }
        repeat {
            guard let value = element(&self) else { return nil }
            values.append(value)
        } while skip(",")
        return skip("]") ? values : nil
    }

    /// `[…]` of strings.
    mutating func strings() -> [String]? { array { $0.string() } }

    /// `[…]` of strings and nulls.
    mutating func optionalStrings() -> [String?]? {
        array { reader -> String?? in reader.skip("null") ? .some(nil) : reader.string().map { .some($0) } }
    }

    /// `{"offset":…,"partition":…,"topic":…}`.
    mutating func position() -> RecordPosition? {
        guard skip(#"{"offset":"#), let offset = integer(), skip(#","partition":"#), let partition = integer(),
            let partitionNumber = Int32(exactly: partition), skip(#","topic":"#), let topic = string(), skip("}")
        else { return nil }
        return RecordPosition(topic: topic, partition: partitionNumber, offset: offset)
    }
}
