import AuditEvents
import Foundation
import TestSupport
import Testing

/// Our normalization against the documents Elastic's own ingest pipeline produced for its fixtures.
@Suite("Elastic pipeline conformance", .enabled(if: SharedTestData.isAvailable, SharedTestData.skipReason))
struct ElasticConformanceTests {
    /// Fields the Elastic Agent or the index set, which a pipeline test does not judge, plus our documented
    /// additions (see ECSNormalizer).
    static let agentFields = ["agent", "host", "input", "log", "ecs", "data_stream.namespace", "data_stream.type", "@timestamp", "event.ingested", "tags"]
    static let ourAdditions = ["event.dataset", "data_stream.dataset", "@timestamp"]

    static func expectedDocuments(_ name: String) throws -> [JSONObject] {
        let data = try Data(contentsOf: SharedTestData.auditLogs.appendingPathComponent(name))
        let parsed = try JSONValue.parse(Array(data))
        return try #require(parsed.objectValue?["expected"]?.arrayValue).compactMap(\.objectValue)
    }

    static func lines(_ name: String) throws -> [[UInt8]] {
        let data = try Data(contentsOf: SharedTestData.auditLogs.appendingPathComponent(name))
        return data.split(separator: UInt8(ascii: "\n")).map(Array.init)
    }

    /// Field-by-field differences, as "path: ours ≠ theirs" lines.
    static func differences(ours: JSONObject, expected: JSONObject, ignoring ignored: [String]) -> [String] {
        func keep(_ path: String) -> Bool { !ignored.contains { path == $0 || path.hasPrefix($0 + ".") } }
        let mine = leafPaths(ours).filter { keep($0.key) }
        let theirs = leafPaths(expected).filter { keep($0.key) }
        var lines: [String] = []
        for path in Set(mine.keys).union(theirs.keys).sorted() where mine[path] != theirs[path] {
            lines.append("\(path): ours \(mine[path] ?? []) ≠ Elastic's \(theirs[path] ?? [])")
        }
        return lines
    }

    @Test func rawAndGKEEventsMatchElasticsDocuments() throws {
        let expected = try Self.expectedDocuments("test-audit.log-expected.json")
        let lines = try Self.lines("test-audit.log")
        #expect(lines.count == 4 && expected.count == 4)
        for (index, line) in lines.enumerated() {
            let (events, errors) = decodeAll(line)
            #expect(errors.isEmpty, "line \(index + 1): \(errors)")
            let event = try #require(events.first)
            #expect(events.count == 1)
            let differences = Self.differences(ours: event.withOriginal, expected: expected[index], ignoring: Self.agentFields + Self.ourAdditions)
            #expect(differences.isEmpty, "line \(index + 1) (\(event.shape)):\n\(differences.joined(separator: "\n"))")
        }
    }

    @Test func shapesAreRecognized() throws {
        let shapes = try Self.lines("test-audit.log").map { decodeAll($0).events.first?.shape }
        #expect(shapes == [.event, .event, .event, .gke])
    }

    /// The AKS expectation comes from Elastic's newer, AKS-aware pipeline; we derive all of it, including
    /// `kubernetes.audit.aks_metadata.*` and `@timestamp` from the record's `time` (milliseconds).
    @Test func aksRecordMatchesElasticsAKSAwarePipeline() throws {
        let expected = try #require(try Self.expectedDocuments("test-kube-audit.log-expected.json").first)
        let line = try #require(try Self.lines("test-kube-audit.log").first)
        let (events, errors) = decodeAll(line)
        #expect(errors.isEmpty)
        let event = try #require(events.first)
        #expect(event.shape == .aks)
        let ignored = Self.agentFields.filter { $0 != "@timestamp" } + ["event.dataset", "data_stream.dataset", "event.original"]
        let differences = Self.differences(ours: event.normalized, expected: expected, ignoring: ignored)
        #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")
        #expect(event.normalized["@timestamp"] == expected["@timestamp"])
    }

    /// The newer fixture's fifth line: an AKS record whose `properties.log` is an object (no expected file).
    @Test func aksRecordWithLogObject() throws {
        let data = try Data(contentsOf: SharedTestData.auditLogs.appendingPathComponent("unpaired-0b97ab02/test-audit.log"))
        let lines = data.split(separator: UInt8(ascii: "\n")).map(Array.init)
        #expect(lines.count == 5)
        let (events, errors) = decodeAll(try #require(lines.last))
        #expect(errors.isEmpty)
        let event = try #require(events.first)
        #expect(event.shape == .aks)
        #expect(event.normalized[path: "kubernetes.audit.aks_metadata.container_id"] == "aaaa1111")
        #expect(event.normalized[path: "kubernetes.audit.aks_metadata.category"] == "kube-audit-admin")
        #expect(event.normalized[path: "user.name"] == "aksService")
        #expect(event.normalized[path: "event.outcome"] == "success")
        #expect(event.normalized["@timestamp"] == "2025-09-30T06:23:35.101Z")
        // Empty values are gone, as in the pipeline.
        #expect(event.normalized[path: "kubernetes.audit.user.extra"] == nil)
        #expect(event.normalized[path: "kubernetes.audit.annotations.authorization_k8s_io/reason"] == nil)
    }

    /// The whole fixture file as one NDJSON record gives the same events as line by line.
    @Test func ndjsonRecordHoldsEveryLine() throws {
        let data = try Data(contentsOf: SharedTestData.auditLogs.appendingPathComponent("unpaired-0b97ab02/test-audit.log"))
        let (events, errors) = decodeAll(Array(data))
        #expect(errors.isEmpty)
        #expect(events.map(\.shape) == [.event, .event, .event, .gke, .aks])
    }

    /// The fast field view agrees with the materialized document on every field of every fixture.
    @Test func fieldViewAgreesWithNormalizedDocuments() throws {
        var records = try Self.lines("test-audit.log") + Self.lines("test-kube-audit.log")
        let newer = try Data(contentsOf: SharedTestData.auditLogs.appendingPathComponent("unpaired-0b97ab02/test-audit.log"))
        records.append(Array(newer))
        for record in records {
            for event in decodeAll(record, ingestTime: 1_764_000_000_000).events {
                for (path, values) in leafPaths(event.normalized) {
                    #expect(event.viewed[path] == values, "\(event.shape) \(path)")
                }
            }
        }
    }
}
