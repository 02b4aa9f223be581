// Repartition match records and window state: the direct reading of the written form against the whole record scanned, and the written bytes against the same objects serialized as trees.
import AuditEvents
import Foundation
@testable import Pipeline
import Testing

@Suite struct MatchRecordTests {
    /// A match record in the form this side writes is read straight from its bytes (the validation pass
    /// checks the document, the small members are read in their fixed order): on records as written and on
    /// mutations of them (bytes changed, inserted, removed, cut short), that reading gives what scanning the
    /// whole record gives — the same match, floor and summary values — or leaves the record to the scan.
    @Test func readingWithoutATapeAgreesWithScanningTheRecord() throws {
        let seed = UInt64.random(in: 1...1_000_000)
        print("match records: seed \(seed)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        let inserts: [[UInt8]] = [[0x22], [0x5C], [0x7B], [0x7D], [0x5B], [0x5D], [0x2C], [0x3A], [0x20], [0xC3], Array(#"\u00e9"#.utf8),
                                  Array(#","event":{}"#.utf8), Array(#","time":1"#.utf8)]
        var fast = 0, refused = 0
        for iteration in 0..<3_000 {
            var base = match(["system:serviceaccount:a:b", "alice", nil, "x\"y"].randomElement(using: &random)!,
                             at: t0 + Int64(iteration), verb: ["get", "list", "é"].randomElement(using: &random)!, offset: Int64(iteration))
            base.sequence = Int.random(in: 0...3, using: &random)
            if Bool.random(using: &random) { base.steps = UInt32.random(in: 1...7, using: &random) }
            if Bool.random(using: &random) {
                base.summaryValues = SuppressionSummary.Values(lists: (0..<6).map { _ in (0..<Int.random(in: 0...2, using: &random)).map { _ in ["a", "b\"", "ü"].randomElement(using: &random)! } })
            }
            var bytes = StateCodec.encode(base, ruleID: "rule-\(iteration % 3)", floor: Bool.random(using: &random) ? Int64(iteration) : nil)
            // Now and then a well-formed record in another form: a second document, or whitespace after a colon.
            if iteration % 20 == 1 { bytes.insert(contentsOf: Array(#","event":{"x":1}"#.utf8), at: bytes.count - 1) }
            if iteration % 20 == 2 { bytes.insert(0x20, at: 9) }
            for _ in 0..<(iteration % 3 == 0 || iteration % 20 < 3 ? 0 : Int.random(in: 1...2, using: &random)) where !bytes.isEmpty {
                let at = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<4, using: &random) {
                case 0: bytes[at] = inserts.randomElement(using: &random)![0]
                case 1: bytes.insert(contentsOf: inserts.randomElement(using: &random)!, at: at)
                case 2: bytes.remove(at: at)
                default: bytes.removeSubrange(at...)
                }
            }
            let (viaFast, scanned) = bytes.withUnsafeBytes { buffer in
                (StateCodec.decodeWrittenMatch(buffer), try? StateCodec.matchMembersScanned(buffer))
            }
            if let viaFast {
                fast += 1
                let viaScan = scanned.flatMap { try? StateCodec.decodeMatch(members: $0) }
                #expect(viaFast.ruleID == viaScan?.ruleID && viaFast.floor == viaScan?.floor && viaFast.match == viaScan?.match
                        && viaFast.match.summaryValues == viaScan?.match.summaryValues,
                        "seed \(seed), record \(iteration): \(String(decoding: bytes, as: UTF8.self))")
                #expect(scanned != nil, "seed \(seed), record \(iteration): accepted without a tape, refused scanned: \(String(decoding: bytes, as: UTF8.self))")
            }
            if scanned == nil { refused += 1 }
        }
        #expect(fast > 1_000 && refused > 500, "records read without a tape: \(fast), refused: \(refused)")
    }

    /// A member whose value is missing is not read as an absent member: `"floor":,` once passed the direct
    /// reading as a match without a floor (the seeded test above found it, seed 434332).
    @Test func aMemberWithoutItsValueIsLeftToTheScan() throws {
        let written = String(decoding: StateCodec.encode(match("system:serviceaccount:a:b", at: t0, verb: "get", offset: 8), ruleID: "rule-2", floor: 8), as: UTF8.self)
        #expect(written.contains(#""floor":8,"#))
        for broken in [written.replacingOccurrences(of: #""floor":8,"#, with: #""floor":,"#),
                       written.replacingOccurrences(of: #""floor":8,"#, with: #""floor":"x","#)] {
            let bytes = Array(broken.utf8)
            #expect(bytes.withUnsafeBytes { StateCodec.decodeWrittenMatch($0) } == nil, "\(broken)")
        }
        #expect(Array(written.utf8).withUnsafeBytes { StateCodec.decodeWrittenMatch($0)?.floor } == 8)
    }

    /// Match records, window state and store positions are written member by member, without a tree: on
    /// seeded matches, windows and positions (escapes, non-ASCII, nulls, empty and full maps), the bytes equal
    /// the same object built as a tree and serialized with sorted keys, and they read back to what was written.
    @Test func writtenFormsEqualTheTreeSerialization() throws {
        let seed = UInt64.random(in: 1...1_000_000)
        print("written forms: seed \(seed)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        let texts = ["system:serviceaccount:a:b", "alice", "x\"y", "tab\there", "é", "\u{1}", "", "in/0"]
        func text() -> String { texts.randomElement(using: &random)! }
        func sorted(_ members: [(String, JSONValue)]) -> JSONValue { .object(JSONObject(members.sorted { $0.0 < $1.0 })) }
        func tree(_ position: RecordPosition) -> JSONValue {
            ["topic": .string(position.topic), "partition": .number(JSONNumber(Int(position.partition))), "offset": .number(JSONNumber(position.offset))]
        }
        for iteration in 0..<500 {
            var base = match(Bool.random(using: &random) ? text() : nil, at: t0 + Int64.random(in: -1_000...1_000, using: &random),
                             verb: text(), offset: Int64.random(in: 0...Int64.max, using: &random))
            base.groupValues.append(Bool.random(using: &random) ? nil : text())
            base.source = RecordPosition(topic: text(), partition: Int32.random(in: 0...Int32.max, using: &random), offset: Int64.random(in: .min ... .max, using: &random))
            base.sequence = Int.random(in: 0...5, using: &random)
            if Bool.random(using: &random) { base.steps = UInt32.random(in: 1...UInt32.max, using: &random) }
            if Bool.random(using: &random) {
                base.summaryValues = SuppressionSummary.Values(lists: (0..<6).map { _ in (0..<Int.random(in: 0...2, using: &random)).map { _ in text() } })
            }
            let floor: Int64? = Bool.random(using: &random) ? Int64.random(in: .min ... .max, using: &random) : nil
            var members: [(String, JSONValue)] = [
                ("event", try JSONValue.parse(base.documentBytes)), ("group", .array(base.groupValues.map { $0.map(JSONValue.string) ?? .null })),
                ("rule_id", .string("rule-\(iteration)")), ("sequence", .number(JSONNumber(base.sequence))), ("source", tree(base.source)),
                ("time", .number(JSONNumber(base.eventTime))),
            ]
            if let floor { members.append(("floor", .number(JSONNumber(floor)))) }
            if base.steps != 0 { members.append(("steps", .number(JSONNumber(Int64(base.steps))))) }
            if let values = base.summaryValues { members.append(("summary", .array(values.lists.map { .array($0.map(JSONValue.string)) }))) }
            var expected: [UInt8] = []
            sorted(members).write(to: &expected, sortedKeys: true)
            let written = StateCodec.encode(base, ruleID: "rule-\(iteration)", floor: floor)
            #expect(written == expected, "seed \(seed), match \(iteration): \(String(decoding: written, as: UTF8.self))")
            let read = try written.withUnsafeBytes { try StateCodec.decodeMatch($0) }
            #expect(read.match == base && read.match.summaryValues == base.summaryValues && read.floor == floor && read.ruleID == "rule-\(iteration)",
                    "seed \(seed), match \(iteration) read back differently")

            // A window keeps its first match's document, source and time (not its place in its record or steps).
            var first = base.withoutSummaryValues
            (first.sequence, first.steps) = (0, 0)
            var window = SuppressionWindow(groupKey: text(), groupValues: base.groupValues, start: base.eventTime, end: base.eventTime + 300_000,
                                           first: first, suppressed: Int.random(in: 0...1_000, using: &random),
                                           summary: SuppressionSummary(), applied: [:])
            window.closed = Bool.random(using: &random)
            window.summary.count = Int.random(in: 0...100, using: &random)
            window.summary.verbs = (0..<Int.random(in: 0...3, using: &random)).map { _ in text() }
            window.summary.userAgents = [text()]
            window.summary.firstSeen = Bool.random(using: &random) ? .max : base.eventTime
            window.summary.lastSeen = Bool.random(using: &random) ? .min : base.eventTime
            for _ in 0..<Int.random(in: 0...3, using: &random) {
                let source = "\(text())/\(Int.random(in: 0...9, using: &random))"
                window.applied[source] = Int64.random(in: .min ... .max, using: &random)
                window.recent[source] = (0..<Int.random(in: 0...3, using: &random)).map { _ in Int64.random(in: 0...1_000, using: &random) }.sorted()
            }
            let summary = window.summary
            func list(_ values: [String]) -> JSONValue { .array(values.map(JSONValue.string)) }
            let windowTree = sorted([
                ("applied", sorted(window.applied.map { ($0.key, .number(JSONNumber($0.value))) })), ("closed", .bool(window.closed)),
                ("end", .number(JSONNumber(window.end))),
                ("first", sorted([("event", try JSONValue.parse(window.first.documentBytes)), ("source", tree(window.first.source)),
                                  ("time", .number(JSONNumber(window.first.eventTime)))])),
                ("group", .array(window.groupValues.map { $0.map(JSONValue.string) ?? .null })), ("key", .string(window.groupKey)),
                ("recent", sorted(window.recent.map { ($0.key, .array($0.value.map { .number(JSONNumber($0)) })) })),
                ("start", .number(JSONNumber(window.start))),
                ("summary", sorted([("count", .number(JSONNumber(summary.count))), ("verbs", list(summary.verbs)), ("resources", list(summary.resources)),
                                    ("namespaces", list(summary.namespaces)), ("source_ips", list(summary.sourceIPs)), ("user_agents", list(summary.userAgents)),
                                    ("response_codes", list(summary.responseCodes)), ("first_seen", .number(JSONNumber(summary.firstSeen))),
                                    ("last_seen", .number(JSONNumber(summary.lastSeen)))])),
                ("suppressed", .number(JSONNumber(window.suppressed))),
            ])
            let streamTime = Int64.random(in: .min ... .max, using: &random)
            var expectedState: [UInt8] = []
            sorted([("stream_time", .number(JSONNumber(streamTime))), ("windows", .array([windowTree, windowTree]))]).write(to: &expectedState, sortedKeys: true)
            let state = StateCodec.encode(windows: [window, window], streamTime: streamTime)
            #expect(state == expectedState, "seed \(seed), window \(iteration): \(String(decoding: state, as: UTF8.self))")
            let decoded = try state.withUnsafeBytes { try StateCodec.decodeWindows($0) }
            #expect(decoded.streamTime == streamTime && decoded.windows == [window, window], "seed \(seed), window \(iteration) read back differently")

            // A store's position record: its clocks, the next offset, a ledger per input partition.
            let clocks = AlertSuppressor.Clocks(streamTime: Int64.random(in: .min ... .max, using: &random),
                                                recordTime: Int64.random(in: .min ... .max, using: &random),
                                                lastActivity: Bool.random(using: &random) ? .min : Int64.random(in: 0 ... .max, using: &random))
            let next: Int64? = Bool.random(using: &random) ? Int64.random(in: 0 ... .max, using: &random) : nil
            var sources: [String: SourceLedger] = [:]
            for _ in 0..<Int.random(in: 0...4, using: &random) {
                sources["\(text())/\(Int.random(in: 0...30, using: &random))"] = SourceLedger(
                    floor: Int64.random(in: -1 ... 1_000_000, using: &random),
                    applied: Set((0..<Int.random(in: 0...70, using: &random)).map { _ in Int64.random(in: 0...2_000_000, using: &random) }))
            }
            var positionMembers: [(String, JSONValue)] = [
                ("stream_time", .number(JSONNumber(clocks.streamTime))), ("record_time", .number(JSONNumber(clocks.recordTime))),
                ("last_activity", .number(JSONNumber(clocks.lastActivity))),
            ]
            if !sources.isEmpty {
                positionMembers.append(("sources", sorted(sources.map { source, ledger in
                    (source, sorted([("floor", .number(JSONNumber(ledger.floor))), ("applied", .array(ledger.applied.sorted().map { .number(JSONNumber($0)) }))]))
                })))
            }
            if let next { positionMembers.append(("next_offset", .number(JSONNumber(next)))) }
            var expectedPosition: [UInt8] = []
            sorted(positionMembers).write(to: &expectedPosition, sortedKeys: true)
            let positionRecord = StateCodec.encode(position: next, clocks: clocks, sources: sources)
            #expect(positionRecord == expectedPosition, "seed \(seed), position \(iteration): \(String(decoding: positionRecord, as: UTF8.self))")
            let readPosition = try positionRecord.withUnsafeBytes { try StateCodec.decodePosition($0) }
            #expect(readPosition.position == next && readPosition.clocks == clocks && readPosition.sources == sources,
                    "seed \(seed), position \(iteration) read back differently")
        }
    }
}
