import AuditEvents
import Detection
import Foundation

/// The compiled seed rule evaluated on events that were decoded beforehand (the ECS view over their
/// tapes), then the whole per-record path: prefilter, decode, evaluate.
struct DetectionBenchmark {
    let rulePath: String

    func run(report: inout BenchReport) throws {
        let rule = try CompiledRule.load(file: rulePath)
        let texts = corpus(count: environmentInt("BENCH_EVENTS", 20_000), matchRate: 0.01, seed: 11)

        // One buffer that outlives the events, so their views stay valid after decoding.
        let total = texts.reduce(0) { $0 + $1.count }
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 8)
        defer { storage.deallocate() }
        var records: [UnsafeRawBufferPointer] = []
        var offset = 0
        for text in texts {
            let slice = UnsafeMutableRawBufferPointer(rebasing: storage[offset..<(offset + text.count)])
            slice.copyBytes(from: text)
            records.append(UnsafeRawBufferPointer(slice))
            offset += text.count
        }
        // Events are valid only inside the decoder's body, so evaluation is timed there: decoding with K
        // evaluations per event, minus decoding alone, over K.
        let decoder = AuditRecordDecoder()
        let repeats = 50
        func pass(evaluations: Int) -> (seconds: Double, result: Int) {
            best(rounds: 5) {
                var matches = 0
                for record in records {
                    decoder.decode(record, ingestTime: 1_763_625_600_000) { result in
                        guard case .success(let event) = result else { return }
                        for _ in 0..<evaluations where rule.matches(event) { matches += 1 }
                    }
                }
                return matches
            }
        }
        let decodeOnly = pass(evaluations: 0)
        let withRule = pass(evaluations: repeats)
        let evaluationSeconds = max(withRule.seconds - decodeOnly.seconds, 1e-9)
        let matches = withRule.result / repeats
        report.add("detect", "seed rule on decoded events (evaluations)", events: Double(records.count * repeats) / evaluationSeconds)
        report.note("detect: \(matches) of \(records.count) events match the seed rule; evaluation time = (decode + \(repeats) evaluations) − decode")

        // The per-record path at 1 % matches: prefilter, then decode and evaluate what passes.
        let prefilter = RuleSet([rule]).prefilter
        let full = best(rounds: 5) {
            var found = 0
            for record in records where prefilter.mightMatch(record) {
                decoder.decode(record, ingestTime: 1_763_625_600_000) { result in
                    if case .success(let event) = result, rule.matches(event) { found += 1 }
                }
            }
            return found
        }
        precondition(full.result == matches, "prefiltered path found \(full.result), full evaluation \(matches)")
        report.add("detect", "prefilter + decode + seed rule, 1 % matches", events: Double(records.count) / full.seconds, bytes: Double(total) / full.seconds)
    }
}
