// Repartition match records: the tape-free reading against the whole record scanned, on seeded records and mutations.
import AuditEvents
import Foundation
@testable import Pipeline
import Testing

@Suite struct MatchRecordTests {
    /// A match record is read without scanning its document into a tape (the validation pass checks it,
    /// the small members are parsed): on records as written and on mutations of them (bytes changed,
    /// inserted, removed, cut short), that reading gives what scanning the whole record gives — the same
    /// match, floor and summary values, or a refusal of both.
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
            let (withoutTape, scanned) = bytes.withUnsafeBytes { buffer in
                (StateCodec.matchMembersWithoutTape(buffer), try? StateCodec.matchMembersScanned(buffer))
            }
            if let withoutTape {
                fast += 1
                let viaFast = try? StateCodec.decodeMatch(members: withoutTape)
                let viaScan = scanned.flatMap { try? StateCodec.decodeMatch(members: $0) }
                #expect(viaFast?.ruleID == viaScan?.ruleID && viaFast?.floor == viaScan?.floor && viaFast?.match == viaScan?.match
                        && viaFast?.match.summaryValues == viaScan?.match.summaryValues,
                        "seed \(seed), record \(iteration): \(String(decoding: bytes, as: UTF8.self))")
                #expect(scanned != nil, "seed \(seed), record \(iteration): accepted without a tape, refused scanned: \(String(decoding: bytes, as: UTF8.self))")
            }
            if scanned == nil { refused += 1 }
        }
        #expect(fast > 1_000 && refused > 500, "records read without a tape: \(fast), refused: \(refused)")
    }
}
