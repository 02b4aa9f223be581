import AuditEvents
import Detection

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
        // bytes as the whole object serialized with sorted keys.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(match.documentBytes.count + 200)
        bytes.append(contentsOf: #"{"event":"#.utf8)
        bytes.append(contentsOf: match.documentBytes)
        if let floor { bytes.append(contentsOf: #","floor":\#(floor)"#.utf8) }
        bytes.append(contentsOf: #","group":"#.utf8)
        JSONValue.array(match.groupValues.map { $0.map(JSONValue.string) ?? .null }).write(to: &bytes)
        bytes.append(contentsOf: #","rule_id":"#.utf8)
        writeJSONString(ruleID, to: &bytes)
        bytes.append(contentsOf: #","sequence":\#(match.sequence),"source":"#.utf8)
        position(match.source).write(to: &bytes, sortedKeys: true)
        if match.steps != 0 { bytes.append(contentsOf: #","steps":\#(match.steps)"#.utf8) }
        if let values = match.summaryValues {
            bytes.append(contentsOf: #","summary":"#.utf8)
            JSONValue.array(values.lists.map { .array($0.map(JSONValue.string)) }).write(to: &bytes)
        }
        bytes.append(contentsOf: #","time":\#(match.eventTime)}"#.utf8)
        return bytes
    }

    private static let eventPrefix = Array(#"{"event":"#.utf8)

    public static func decodeMatch(_ bytes: UnsafeRawBufferPointer) throws -> (ruleID: String, match: RuleMatch, floor: Int64?) {
        // The document is kept as its bytes; only the small members are parsed into values.
        try decodeMatch(members: matchMembersWithoutTape(bytes) ?? matchMembersScanned(bytes))
    }

    /// A match record's members as this side writes it — the document first — with the document checked by
    /// the validation pass, not scanned into a tape, and only the rest parsed; nil for any other form.
    static func matchMembersWithoutTape(_ bytes: UnsafeRawBufferPointer) -> (event: [UInt8]?, object: JSONObject)? {
        // One level less than the whole record's limit: the document is nested in it.
        guard bytes.count > eventPrefix.count, bytes.starts(with: eventPrefix), bytes[eventPrefix.count] == UInt8(ascii: "{"),
            let end = JSONSpan.validValueEnd(bytes, from: eventPrefix.count, maxDepth: 127), end < bytes.count, bytes[end] == UInt8(ascii: ","),
            case .object(let rest)? = try? JSONValue.parse([UInt8(ascii: "{")] + bytes[(end + 1)...]), rest["event"] == nil,
            Set(rest.map(\.key)).count == rest.count
        else { return nil }
        return (Array(bytes[eventPrefix.count..<end]), rest)
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
        var bytes: [UInt8] = []
        bytes.reserveCapacity(windows.reduce(64) { $0 + $1.first.documentBytes.count + 400 })
        bytes.append(contentsOf: #"{"stream_time":\#(streamTime),"windows":["#.utf8)
        for (index, window) in windows.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(contentsOf: #"{"applied":"#.utf8)
            JSONValue.object(JSONObject(window.applied.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.number(JSONNumber($0.value))) }))
                .write(to: &bytes, sortedKeys: true)
            bytes.append(contentsOf: #","closed":\#(window.closed),"end":\#(window.end),"first":{"event":"#.utf8)
            bytes.append(contentsOf: window.first.documentBytes)
            bytes.append(contentsOf: #","source":"#.utf8)
            position(window.first.source).write(to: &bytes, sortedKeys: true)
            bytes.append(contentsOf: #","time":\#(window.first.eventTime)},"group":"#.utf8)
            JSONValue.array(window.groupValues.map { $0.map(JSONValue.string) ?? .null }).write(to: &bytes)
            bytes.append(contentsOf: #","key":"#.utf8)
            writeJSONString(window.groupKey, to: &bytes)
            bytes.append(contentsOf: #","recent":"#.utf8)
            JSONValue.object(JSONObject(window.recent.sorted { $0.key < $1.key }.map {
                ($0.key, JSONValue.array($0.value.map { JSONValue.number(JSONNumber($0)) }))
            })).write(to: &bytes, sortedKeys: true)
            bytes.append(contentsOf: #","start":\#(window.start),"summary":"#.utf8)
            summary(window.summary).write(to: &bytes, sortedKeys: true)
            bytes.append(contentsOf: #","suppressed":\#(window.suppressed)}"#.utf8)
        }
        bytes.append(contentsOf: "]}".utf8)
        return bytes
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
        var object: JSONObject = [
            "stream_time": .number(JSONNumber(clocks.streamTime)), "record_time": .number(JSONNumber(clocks.recordTime)),
            "last_activity": .number(JSONNumber(clocks.lastActivity)),
        ]
        if !sources.isEmpty {
            object["sources"] = .object(JSONObject(sources.sorted { $0.key < $1.key }.map { source, ledger in
                (source, ["floor": .number(JSONNumber(ledger.floor)), "applied": .array(ledger.applied.sorted().map { .number(JSONNumber($0)) })])
            }))
        }
        if let position { object["next_offset"] = .number(JSONNumber(position)) }
        var bytes: [UInt8] = []
        JSONValue.object(object).write(to: &bytes, sortedKeys: true)
        return bytes
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

    static func position(_ position: RecordPosition) -> JSONValue {
        ["topic": .string(position.topic), "partition": .number(JSONNumber(Int(position.partition))),
         "offset": .number(JSONNumber(position.offset))]
    }

    static func position(_ value: JSONValue) -> RecordPosition? {
        guard let object = value.objectValue, let topic = object["topic"]?.stringValue,
            let partition = int(object["partition"]), let offset = int(object["offset"])
        else { return nil }
        return RecordPosition(topic: topic, partition: Int32(partition), offset: offset)
    }

    static func summary(_ summary: SuppressionSummary) -> JSONValue {
        func list(_ values: [String]) -> JSONValue { .array(values.map(JSONValue.string)) }
        return [
            "count": .number(JSONNumber(summary.count)), "verbs": list(summary.verbs), "resources": list(summary.resources),
            "namespaces": list(summary.namespaces), "source_ips": list(summary.sourceIPs), "user_agents": list(summary.userAgents),
            "response_codes": list(summary.responseCodes), "first_seen": .number(JSONNumber(summary.firstSeen)),
            "last_seen": .number(JSONNumber(summary.lastSeen)),
        ]
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
