import AuditEvents
import Foundation

/// Decoding, normalization and field lookups on one core, beside Foundation's `JSONDecoder` on the same
/// events in the same run.
struct DecodeBenchmark {
    /// The fields Foundation's decoder needs for the seed rule, declared as a straightforward Codable model.
    struct CodableEvent: Decodable {
        struct User: Decodable { var username: String?; var uid: String?; var groups: [String]? }
        struct ObjectRef: Decodable { var resource: String?; var namespace: String?; var name: String?; var apiGroup: String?; var apiVersion: String? }
        struct Status: Decodable { var code: Int? }
        var kind: String?
        var apiVersion: String?
        var level: String?
        var auditID: String?
        var stage: String?
        var requestURI: String?
        var verb: String?
        var user: User?
        var sourceIPs: [String]?
        var userAgent: String?
        var objectRef: ObjectRef?
        var responseStatus: Status?
        var requestReceivedTimestamp: String?
        var stageTimestamp: String?
        var annotations: [String: String]?
    }

    let records: [[UInt8]]
    let bytes: Int

    init(count: Int, deniedFraction: Double, seed: UInt64) {
        records = corpus(count: count, matchRate: deniedFraction, seed: seed)
        bytes = records.reduce(0) { $0 + $1.count }
    }

    func run(report: inout BenchReport) {
        let username = FieldPath("kubernetes.audit.user.username")
        let decision = FieldPath("kubernetes.audit.annotations.authorization_k8s_io/decision")
        let dataset = FieldPath("event.dataset")
        let decoder = AuditRecordDecoder()

        let foundation = best(rounds: 5) {
            let jsonDecoder = JSONDecoder()
            var matches = 0
            for record in records {
                guard let event = try? jsonDecoder.decode(CodableEvent.self, from: Data(record)) else { continue }
                if event.user?.username?.hasPrefix("system:serviceaccount:") == true, event.annotations?["authorization.k8s.io/decision"] == "forbid" {
                    matches += 1
                }
            }
            return matches
        }

        let lazy = best(rounds: 5) {
            var matches = 0
            for record in records {
                record.withUnsafeBytes { buffer in
                    decoder.decode(buffer, ingestTime: 0) { result in
                        guard case .success(let event) = result else { return }
                        var isDataset = false
                        event.forEachValue(of: dataset) { isDataset = $0.equals("kubernetes.audit_logs"); return !isDataset }
                        var isAccount = false
                        event.forEachValue(of: username) { value in
                            isAccount = value.withBytes { $0.starts(with: "system:serviceaccount:".utf8) }
                            return !isAccount
                        }
                        var forbidden = false
                        event.forEachValue(of: decision) { forbidden = $0.equals("forbid"); return !forbidden }
                        if isDataset && isAccount && forbidden { matches += 1 }
                    }
                }
            }
            return matches
        }

        let full = best(rounds: 3) {
            var fields = 0
            for record in records {
                record.withUnsafeBytes { buffer in
                    decoder.decode(buffer, ingestTime: 0) { result in
                        if case .success(let event) = result { fields += event.normalized().count }
                    }
                }
            }
            return fields
        }

        // Every record judged as the pipeline judges a record no rule can match: the validation-only pass.
        let validation = best(rounds: 7) {
            var events = 0
            for record in records { record.withUnsafeBytes { events += decoder.validate($0) { _ in } } }
            return events
        }
        // The full decoder (tape, shape dispatch, type checks), no field read.
        let tape = best(rounds: 7) {
            var events = 0
            for record in records {
                record.withUnsafeBytes { buffer in decoder.decode(buffer, ingestTime: 0) { if case .success = $0 { events += 1 } } }
            }
            return events
        }
        // A match's document: written from the tape as canonical bytes, or built as a tree and serialized
        // (what the pipeline did before); both after the same decode, which is subtracted.
        func documents(direct: Bool) -> (seconds: Double, result: Int) {
            best(rounds: 3) {
                var written = 0
                for record in records {
                    record.withUnsafeBytes { buffer in
                        decoder.decode(buffer, ingestTime: 0) { result in
                            guard case .success(let event) = result else { return }
                            written += direct ? event.canonicalDocument().count : event.treeCanonicalDocument().count
                        }
                    }
                }
                return written
            }
        }
        let direct = documents(direct: true)
        let tree = documents(direct: false)
        precondition(direct.result == tree.result, "the document writer and the tree wrote \(direct.result) and \(tree.result) bytes")

        let prefilter = Prefilter(requirements: [["forbid"], ["system:serviceaccount:"]])
        let allowOnly = records.filter { record in record.withUnsafeBytes { !prefilter.mightMatch($0) } }
        let allowBytes = allowOnly.reduce(0) { $0 + $1.count }
        let rejected = best(rounds: 5) {
            var passed = 0
            for _ in 0..<10 {
                for record in allowOnly where record.withUnsafeBytes({ prefilter.mightMatch($0) }) { passed += 1 }
            }
            return passed
        }

        precondition(foundation.result == lazy.result, "JSONDecoder found \(foundation.result) matches, ours \(lazy.result)")
        precondition(rejected.result == 0, "the prefilter passed a record it had rejected")
        let events = Double(records.count)
        report.add("decode", "JSONDecoder (Codable model) + seed-rule fields", events: events / foundation.seconds, bytes: Double(bytes) / foundation.seconds)
        report.add("decode", "AuditRecordDecoder + lazy ECS fields (seed rule)", events: events / lazy.seconds, bytes: Double(bytes) / lazy.seconds,
                   ratio: foundation.seconds / lazy.seconds, ratioName: "× JSONDecoder")
        report.add("decode", "validation-only pass (what a record no rule can match costs)", events: events / validation.seconds,
                   bytes: Double(bytes) / validation.seconds, ratio: tape.seconds / validation.seconds, ratioName: "× full decode")
        report.add("decode", "full decode: tape, shape, types (no field read)", events: events / tape.seconds, bytes: Double(bytes) / tape.seconds)
        let writer = max(direct.seconds - tape.seconds, 1e-9)
        let treeWriter = max(tree.seconds - tape.seconds, 1e-9)
        report.add("decode", "match document written from the tape (µs each: \(String(format: "%.2f", writer / events * 1e6)))",
                   events: events / writer, bytes: Double(direct.result) / writer, ratio: treeWriter / writer, ratioName: "× tree")
        report.add("decode", "match document as a tree, serialized (µs each: \(String(format: "%.2f", treeWriter / events * 1e6)))",
                   events: events / treeWriter, bytes: Double(tree.result) / treeWriter)
        report.add("decode", "AuditRecordDecoder + full ECS document", events: events / full.seconds, bytes: Double(bytes) / full.seconds,
                   ratio: foundation.seconds / full.seconds, ratioName: "× JSONDecoder")
        report.add("decode", "Prefilter, rejected records", events: Double(allowOnly.count * 10) / rejected.seconds,
                   bytes: Double(allowBytes * 10) / rejected.seconds)
        report.note("decode corpus: \(records.count) events, \(bytes / records.count) bytes on average, \(lazy.result) seed-rule matches; prefilter rejected \(allowOnly.count)")
        report.note("decode: document rows are (decode + document) − decode, over every event of the corpus; MB/s of document bytes written")
    }
}
