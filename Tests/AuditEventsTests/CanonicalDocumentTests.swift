// The direct ECS writer against the tree path: same bytes for every event, seeded random ones included.
@testable import AuditEvents
import Foundation
import Testing

@Suite struct CanonicalDocumentTests {
    /// Random audit events, written with random member order, repeated keys, escapes and whitespace: the
    /// writer's bytes equal the tree's, and the writer takes most of them (a test that only ever fell back
    /// would prove nothing).
    @Test func directWriterAgreesWithTheTree() {
        let seed = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_CANONICAL_SEED"].flatMap(UInt64.init) ?? 20_261_202
        print("canonical document differential: seed \(seed) (AUDIT_SENTINEL_CANONICAL_SEED reruns it)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        var decoded = 0
        var direct = 0
        for iteration in 0..<3_000 {
            let text = RandomEvent.text(&random, messy: iteration % 3 != 0)
            let ingest: Int64? = iteration % 5 == 0 ? nil : 1_767_225_600_000 + Int64(iteration)
            // An input's configured cluster name, on most events (some needing escapes).
            let cluster = [nil, "prod-eu-1", "dev \"blue\"\\green", "clé\u{1}ü"][iteration % 4]
            text.withUnsafeBytes { bytes in
                AuditRecordDecoder().decode(bytes, ingestTime: ingest, clusterName: cluster) { result in
                    guard case .success(let event) = result else { return }
                    decoded += 1
                    let tree = event.treeCanonicalDocument(ingestedIfMissing: 1_767_225_700_000)
                    let written = event.directCanonicalDocument(ingestedIfMissing: 1_767_225_700_000)
                    if let written {
                        direct += 1
                        #expect(written == tree, "seed \(seed), event \(iteration): \(String(decoding: text, as: UTF8.self))\n direct: \(String(decoding: written, as: UTF8.self))\n tree:   \(String(decoding: tree, as: UTF8.self))")
                    }
                    #expect(event.canonicalDocument(ingestedIfMissing: 1_767_225_700_000) == tree)
                }
            }
        }
        print("canonical document differential: \(direct) of \(decoded) decoded events written directly")
        #expect(decoded > 2_000)
        #expect(direct * 10 > decoded * 6, "the writer took \(direct) of \(decoded) events")
    }

    /// A suppressed match adds to its window's summary the values its event's field view gives, not its
    /// document's parsed again: for the six summarized fields (the group-by default and `related.ip` too), random events in
    /// every shape our fixtures have give the same values both ways.
    @Test func fieldViewGivesTheDocumentsSummarizedValues() throws {
        let fields = ["kubernetes.audit.verb", "kubernetes.audit.objectRef.resource", "kubernetes.audit.objectRef.namespace", "source.ip",
                      "user_agent.original", "kubernetes.audit.responseStatus.code", "kubernetes.audit.user.username", "related.ip"].map(FieldPath.init)
        let seed = UInt64.random(in: 1...1_000_000)
        print("summarized fields: seed \(seed)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        var records = try ["denied-serviceaccount.json", "eventlist-batch.json", "gke-denied.json", "minimal.json", "unicode-escapes.ndjson"].map(fixture)
        for iteration in 0..<1_500 { records.append(RandomEvent.text(&random, messy: iteration % 2 == 0)) }
        var compared = 0, nonEmpty = 0
        for record in records {
            record.withUnsafeBytes { bytes in
                AuditRecordDecoder().decode(bytes, ingestTime: 1_767_225_600_000) { result in
                    guard case .success(let event) = result else { return }
                    let document = try! CanonicalDocument(event.canonicalDocument(ingestedIfMissing: 1_767_225_700_000))
                    for field in fields {
                        var viewed: [String] = [], parsed: [String] = []
                        event.forEachValue(of: field) { viewed.append($0.stringValue); return true }
                        document.forEachValue(of: field) { parsed.append($0.stringValue); return true }
                        #expect(viewed == parsed, "seed \(seed), \(field): \(String(decoding: record, as: UTF8.self))")
                        compared += 1
                        if !parsed.isEmpty { nonEmpty += 1 }
                    }
                }
            }
        }
        #expect(compared > 7_000 && nonEmpty * 2 > compared, "\(nonEmpty) of \(compared) lookups found values")
    }

    /// `field:*` on an object (`event:*`, `orchestrator.resource:*`, `kubernetes.audit.user:*`): the field view
    /// says it exists exactly when the document has it, on every object and field path of the documents of
    /// our fixtures and seeded random events (the KQL fuzz target found `event:*` true on the document and
    /// false on the view).
    @Test func fieldViewFindsTheDocumentsObjects() throws {
        let seed = UInt64.random(in: 1...1_000_000)
        print("document objects: seed \(seed)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        var records = try ["denied-serviceaccount.json", "eventlist-batch.json", "gke-denied.json", "minimal.json", "unicode-escapes.ndjson"].map(fixture)
        for iteration in 0..<600 { records.append(RandomEvent.text(&random, messy: iteration % 2 == 0)) }
        var objectsSeen = 0
        for record in records {
            record.withUnsafeBytes { bytes in
                AuditRecordDecoder().decode(bytes, ingestTime: 1_767_225_600_000) { result in
                    guard case .success(let event) = result else { return }
                    let document = event.normalized()
                    let canonical = try! CanonicalDocument(event.canonicalDocument(ingestedIfMissing: 1_767_225_600_000))
                    // Every path of the document, objects and leaves, and names it does not have.
                    var paths: Set<String> = ["event", "orchestrator", "orchestrator.resource", "orchestrator.cluster", "related", "source",
                                              "client", "user", "user_agent", "data_stream", "kubernetes", "kubernetes.audit",
                                              "kubernetes.audit.aks_metadata", "cloud", "host", "agent"]
                    func collect(_ object: JSONObject, _ prefix: String) {
                        for member in object.members {
                            let path = prefix.isEmpty ? member.key : prefix + "." + member.key
                            paths.insert(path)
                            if case .object(let inner) = member.value {
                                objectsSeen += 1
                                collect(inner, path)
                            }
                        }
                    }
                    collect(document, "")
                    for path in paths {
                        let field = FieldPath(path)
                        var inDocument = false
                        canonical.forEachValue(of: field) { _ in inDocument = true; return false }
                        #expect(event.exists(field) == inDocument, "seed \(seed), \(path): \(String(decoding: record, as: UTF8.self))")
                    }
                }
            }
        }
        #expect(objectsSeen > 1_000)
    }

    /// `orchestrator.cluster.name` from the input's configuration fills in only where the event has none:
    /// a raw event takes it, GKE's own label and an ECS document's own name win; rules see what documents hold.
    @Test func aConfiguredClusterNameFillsInOnlyWhereTheEventHasNone() throws {
        let field = FieldPath("orchestrator.cluster.name")
        func check(_ text: String, configured: String?, expected: String?) {
            var seen = 0
            Array(text.utf8).withUnsafeBytes { bytes in
                AuditRecordDecoder().decode(bytes, ingestTime: 1, clusterName: configured) { result in
                    guard case .success(let event) = result else { Issue.record("did not decode: \(text)"); return }
                    seen += 1
                    #expect(event.firstString(field) == expected, "\(text)")
                    #expect(event.normalized()[path: "orchestrator.cluster.name"]?.stringValue == expected)
                    #expect(event.canonicalDocument() == event.treeCanonicalDocument())
                }
            }
            #expect(seen == 1)
        }
        let raw = #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","verb":"get","user":{"username":"u"}}"#
        check(raw, configured: "prod-eu-1", expected: "prod-eu-1")
        check(raw, configured: nil, expected: nil)
        check(raw, configured: "", expected: nil)
        let gke = String(decoding: try fixture("gke-denied.json"), as: UTF8.self)
        let own = try #require(try JSONValue.parse(Array(gke.utf8))[path: "resource.labels.cluster_name"]?.stringValue)
        check(gke, configured: "configured", expected: own)
        let ecs = #"{"@timestamp":"2026-01-01T00:00:00Z","event":{"dataset":"kubernetes.audit_logs"},"kubernetes":{"audit":{"verb":"get"}},"orchestrator":{"cluster":{"name":"agent-said"}}}"#
        check(ecs, configured: "configured", expected: "agent-said")
        let bareECS = #"{"@timestamp":"2026-01-01T00:00:00Z","event":{"dataset":"kubernetes.audit_logs"},"kubernetes":{"audit":{"verb":"get"}}}"#
        check(bareECS, configured: "configured", expected: "configured")
        // A configured name is not in the record's bytes: the prefilter must not require it there.
        #expect(!field.valuesAreVerbatim)
    }

    /// The synthetic traffic the benchmarks and the demo use: every event written directly, as the tree has it.
    @Test func syntheticTrafficIsWrittenDirectly() {
        var traffic = SyntheticAuditTraffic(seed: 7)
        for _ in 0..<500 {
            let record = Array(traffic.next(traffic.nextKind(deniedFraction: 0.3)).json.utf8)
            record.withUnsafeBytes { bytes in
                AuditRecordDecoder().decode(bytes, ingestTime: 1_767_225_600_000) { result in
                    guard case .success(let event) = result else { Issue.record("synthetic event did not decode"); return }
                    let written = event.directCanonicalDocument(ingestedIfMissing: nil)
                    #expect(written != nil)
                    #expect(written == event.treeCanonicalDocument())
                }
            }
        }
    }

    /// What the writer leaves to the tree: GKE renames, wrappers, colliding annotation keys, escaped keys.
    @Test(arguments: [
        #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","verb":"get","annotations":{"a.b":"1","a_b":"2"}}"#,
        #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","verb":"get","objectRef":{"n\u0061me":"x"}}"#,
        #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","verb":"get","clé":"x"}"#,
        #"{"message":"{\"kind\":\"Event\",\"auditID\":\"a\",\"verb\":\"get\"}","host":{"name":"n"}}"#,
    ])
    func declinedShapesStillGiveTheTreesBytes(_ text: String) {
        let record = Array(text.utf8)
        var seen = 0
        record.withUnsafeBytes { bytes in
            AuditRecordDecoder().decode(bytes, ingestTime: 1) { result in
                guard case .success(let event) = result else { return }
                seen += 1
                #expect(event.directCanonicalDocument(ingestedIfMissing: nil) == nil)
                #expect(event.canonicalDocument() == event.treeCanonicalDocument())
            }
        }
        #expect(seen == 1)
    }
}

/// Random audit events as JSON text, over the schema's fields and the values that make normalization
/// branch: empty strings, nulls, empty containers, addresses and non-addresses, decisions, annotation keys
/// with dots, metadata to drop, unknown nested members.
enum RandomEvent {
    typealias Random = SyntheticAuditTraffic.Generator

    static let strings = ["", "get", "list", "allow", "forbid", "10.0.0.1", "::1", "fe80::1", "not-an-ip", "é", "a\"b", "tab\there",
                          "system:serviceaccount:payments:api", "system:node:n1", "日本", "x/y", "back\\slash", "line\nfeed"]
    static let timestamps = ["2026-01-01T00:00:00.123456Z", "2026-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "yesterday", ""]

    static func pick<T>(_ values: [T], _ random: inout Random) -> T { values[Int(random.next() % UInt64(values.count))] }
    static func chance(_ percent: UInt64, _ random: inout Random) -> Bool { random.next() % 100 < percent }

    static func scalar(_ random: inout Random) -> JSONValue {
        switch random.next() % 8 {
        case 0: .null
        case 1: .number(JSONNumber(Int(random.next() % 600)))
        case 2: .bool(chance(50, &random))
        default: .string(pick(strings, &random))
        }
    }

    static func stringOrNull(_ random: inout Random) -> JSONValue { chance(10, &random) ? .null : .string(pick(strings, &random)) }

    /// Nested unknown content: objects, arrays, empties.
    static func anything(_ random: inout Random, depth: Int) -> JSONValue {
        if depth > 3 || chance(40, &random) { return scalar(&random) }
        if chance(50, &random) {
            var object: [(String, JSONValue)] = []
            // Keys of every length around the writer's eight-byte ordering prefix, sharing it or a part of it.
            let keys = ["a", "b", "metadata", "spec", "Z", "metadat", "metadata0", "metadatum", "spe", "specification",
                        "aaaaaaa", "aaaaaaaa", "aaaaaaaab", "aaaaaaab"]
            for index in 0..<Int(random.next() % 5) {
                object.append((pick(keys + ["k\(index)"], &random), anything(&random, depth: depth + 1)))
            }
            return .object(JSONObject(object))
        }
        return .array((0..<Int(random.next() % 4)).map { _ in anything(&random, depth: depth + 1) })
    }

    static func event(_ random: inout Random) -> [(String, JSONValue)] {
        var members: [(String, JSONValue)] = [("kind", "Event"), ("apiVersion", chance(90, &random) ? "audit.k8s.io/v1" : anything(&random, depth: 2))]
        func maybe(_ key: String, _ percent: UInt64, _ value: @autoclosure () -> JSONValue) {
            if chance(percent, &random) { members.append((key, value())) }
        }
        maybe("level", 80, .string(pick(["Metadata", "Request", "RequestResponse"], &random)))
        maybe("auditID", 90, .string(pick(["a", "b", "c"], &random)))
        maybe("stage", 70, "ResponseComplete")
        maybe("requestURI", 80, .string(pick(["/api/v1/secrets", "/api/v1/namespaces/default/pods?watch=true", ""], &random)))
        maybe("verb", 90, stringOrNull(&random))
        if chance(85, &random) {
            if chance(10, &random) {
                members.append(("user", .null))
            } else {
                var user: [(String, JSONValue)] = []
                if chance(85, &random) { user.append(("username", stringOrNull(&random))) }
                if chance(60, &random) { user.append(("uid", stringOrNull(&random))) }
                if chance(50, &random) { user.append(("groups", .array((0..<Int(random.next() % 3)).map { _ in .string(pick(strings, &random)) }))) }
                if chance(20, &random) { user.append(("extra", anything(&random, depth: 1))) }
                members.append(("user", .object(JSONObject(user))))
            }
        }
        if chance(80, &random) {
            let addresses = (0..<Int(random.next() % 4)).map { _ in
                chance(85, &random) ? JSONValue.string(pick(["10.0.0.1", "10.0.0.2", "::1", "192.168.1.1", "10.0.0.1"], &random)) : stringOrNull(&random)
            }
            members.append(("sourceIPs", .array(addresses)))
        }
        maybe("userAgent", 70, stringOrNull(&random))
        if chance(80, &random) {
            var reference: [(String, JSONValue)] = []
            for key in ["resource", "namespace", "name", "apiGroup", "apiVersion", "subresource"] where chance(60, &random) {
                reference.append((key, stringOrNull(&random)))
            }
            members.append(("objectRef", .object(JSONObject(reference))))
        }
        if chance(70, &random) {
            var status: [(String, JSONValue)] = [("code", .number(JSONNumber(pick([200, 201, 403, 404], &random))))]
            if chance(30, &random) { status.append(("metadata", .object([:]))) }
            if chance(30, &random) { status.append(("reason", stringOrNull(&random))) }
            members.append(("responseStatus", .object(JSONObject(status))))
        }
        for key in ["requestObject", "responseObject"] where chance(30, &random) {
            var object: [(String, JSONValue)] = []
            if chance(60, &random) { object.append(("metadata", anything(&random, depth: 1))) }
            object.append(("spec", anything(&random, depth: 1)))
            members.append((key, chance(15, &random) ? anything(&random, depth: 1) : .object(JSONObject(object))))
        }
        maybe("requestReceivedTimestamp", 85, .string(pick(timestamps, &random)))
        maybe("stageTimestamp", 70, .string(pick(timestamps, &random)))
        if chance(80, &random) {
            var annotations: [(String, JSONValue)] = []
            if chance(80, &random) { annotations.append(("authorization.k8s.io/decision", stringOrNull(&random))) }
            if chance(50, &random) { annotations.append(("authorization.k8s.io/reason", stringOrNull(&random))) }
            if chance(20, &random) { annotations.append(("custom_key", stringOrNull(&random))) }
            if chance(20, &random) { annotations.append(("mutation.webhook.admission.k8s.io/round_0_index_0", stringOrNull(&random))) }
            // Dotted keys that share the ordering prefix, once dots are underscores, with the ones above.
            if chance(20, &random) { annotations.append((pick(["authorization.k8s.io", "authorization.k8s.io/decisio", "authoriz", "auth.z"], &random), stringOrNull(&random))) }
            // Rare keys the writer leaves to the tree: two that meet once dots are underscores, a non-ASCII one.
            if chance(4, &random) { annotations += [("team.name", "a"), ("team_name", "b")] }
            if chance(4, &random) { annotations.append(("équipe", "c")) }
            members.append(("annotations", .object(JSONObject(annotations))))
        }
        maybe("extra", 20, anything(&random, depth: 1))
        return members
    }

    /// The event as text: members shuffled when messy, sometimes a key repeated (the last value counts),
    /// value strings partly escaped, whitespace between tokens.
    static func text(_ random: inout Random, messy: Bool) -> [UInt8] {
        var members = event(&random)
        if messy {
            for index in members.indices.reversed() {
                let other = Int(random.next() % UInt64(index + 1))
                members.swapAt(index, other)
            }
            if chance(20, &random), let repeated = members.first { members.append((repeated.0, scalar(&random))) }
        }
        var output: [UInt8] = []
        write(.object(JSONObject(uniquingNot: members)), to: &output, messy: messy, &random)
        return output
    }

    static func write(_ value: JSONValue, to output: inout [UInt8], messy: Bool, _ random: inout Random) {
        func space() { if messy, chance(10, &random) { output.append(contentsOf: " \n".utf8) } }
        switch value {
        case .string(let text): writeString(text, to: &output, escaping: messy && chance(20, &random), &random)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                space()
                write(element, to: &output, messy: messy, &random)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let object):
            output.append(UInt8(ascii: "{"))
            for (index, member) in object.members.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                space()
                writeJSONString(member.key, to: &output)
                output.append(UInt8(ascii: ":"))
                space()
                write(member.value, to: &output, messy: messy, &random)
            }
            output.append(UInt8(ascii: "}"))
        default: value.write(to: &output)
        }
    }

    /// A string with some characters as `\u` escapes or `\/`.
    static func writeString(_ text: String, to output: inout [UInt8], escaping: Bool, _ random: inout Random) {
        guard escaping else { return writeJSONString(text, to: &output) }
        output.append(UInt8(ascii: "\""))
        for scalar in text.unicodeScalars {
            if scalar == "/" {
                output.append(contentsOf: #"\/"#.utf8)
            } else if scalar.value <= 0xFFFF, scalar.value < 0x20 || scalar == "\"" || scalar == "\\" || chance(30, &random) {
                output.append(contentsOf: String(format: "\\u%04x", scalar.value).utf8)
            } else {
                output.append(contentsOf: String(scalar).utf8)
            }
        }
        output.append(UInt8(ascii: "\""))
    }
}

extension JSONObject {
    /// Members exactly as given, repeats included (to write a text with a repeated key).
    init(uniquingNot members: [(String, JSONValue)]) {
        self.init()
        for (key, value) in members { appendNew(key, value) }
    }
}

@Suite struct ValidationPassTests {
    /// Records and mutations of them (bytes flipped, inserted, deleted, truncated; structural characters,
    /// escapes and invalid UTF-8 put in): the validation-only pass never accepts what the scanner rejects,
    /// never rejects what it accepts, and gives the decoder's verdict. Both outcomes must occur often.
    @Test func validationPassAgreesWithTheDecoder() throws {
        let seed = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_VALIDATION_SEED"].flatMap(UInt64.init) ?? 20_261_203
        print("validation differential: seed \(seed) (AUDIT_SENTINEL_VALIDATION_SEED reruns it)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        var traffic = SyntheticAuditTraffic(seed: seed)
        var bases = try ["denied-serviceaccount.json", "eventlist-batch.json", "gke-denied.json", "minimal.json", "unicode-escapes.ndjson"].map(fixture)
        for _ in 0..<40 { bases.append(Array(traffic.next(traffic.nextKind(deniedFraction: 0.3)).json.utf8)) }
        for iteration in 0..<200 { bases.append(RandomEvent.text(&random, messy: iteration % 2 == 0)) }
        let inserts: [[UInt8]] = [[0x22], [0x5C], [0x7B], [0x7D], [0x5B], [0x5D], [0x2C], [0x3A], [0xC3], [0xE2, 0x82], [0xF0, 0x9F, 0x98, 0x80],
                                  [0xED, 0xA0, 0x80], [0x01], Array(#"\u00e9"#.utf8), Array(#"\uZZ"#.utf8), Array("-0.5e+".utf8), Array("tru".utf8),
                                  Array(" \n".utf8), Array("{\"kind\":\"Event\"}\n".utf8)]
        var quick = 0
        var rejected = 0
        for iteration in 0..<6_000 {
            var bytes = bases[Int(random.next() % UInt64(bases.count))]
            let mutations = iteration % 4 == 0 ? 0 : Int(random.next() % 3) + 1
            for _ in 0..<mutations where !bytes.isEmpty {
                let at = Int(random.next() % UInt64(bytes.count))
                switch random.next() % 6 {
                case 5:
                    // A string or number value (member or element) replaced by a value of another type: the
                    // type checks.
                    let starts = bytes.indices.dropLast().filter { index in
                        (bytes[index] == UInt8(ascii: ":") || bytes[index] == UInt8(ascii: "[") || bytes[index] == UInt8(ascii: ","))
                            && (bytes[index + 1] == UInt8(ascii: "\"") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index + 1]))
                    }
                    guard let start = starts.isEmpty ? nil : starts[Int(random.next() % UInt64(starts.count))] else { continue }
                    var end = start + 1
                    if bytes[end] == UInt8(ascii: "\"") {
                        end += 1
                        while end < bytes.count, bytes[end] != UInt8(ascii: "\"") || bytes[end - 1] == UInt8(ascii: "\\") { end += 1 }
                    } else {
                        while end + 1 < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[end + 1]) { end += 1 }
                    }
                    guard end < bytes.count else { continue }
                    let replacements = ["1", "{}", "[1]", "true", "null", "[]", #"{"a":1}"#, #"[{"b":2}]"#, "-3.5", #""x""#]
                    bytes.replaceSubrange((start + 1)...end, with: Array(replacements[Int(random.next() % UInt64(replacements.count))].utf8))
                case 0: bytes[at] = UInt8(truncatingIfNeeded: random.next())
                case 1: bytes.insert(contentsOf: inserts[Int(random.next() % UInt64(inserts.count))], at: at)
                case 2: bytes.remove(at: at)
                case 3: bytes.removeSubrange(at...)
                default: bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + 16)], at: at)
                }
            }
            bytes.withUnsafeBytes { buffer in
                if let problem = ValidationDifferential.disagreement(buffer) {
                    Issue.record("seed \(seed), case \(iteration): \(problem)\n\(String(decoding: bytes, as: UTF8.self))")
                }
                if ValidationDifferential.tookQuickPath(buffer) { quick += 1 }
                var failed = false
                _ = AuditRecordDecoder().validate(buffer) { _ in failed = true }
                if failed { rejected += 1 }
            }
        }
        print("validation differential: \(quick) records judged by the validation-only pass, \(rejected) rejected")
        #expect(quick > 1_500)
        #expect(rejected > 1_500)
    }

    /// Deep nesting, at and over the limit, in objects and arrays mixed.
    @Test func nestingLimitIsTheScannersLimit() {
        for depth in [1, 63, 64, 65, 99, 100, 101, 300] {
            for opener in ["[", "{\"a\":"] {
                let closer = opener == "[" ? "]" : "}"
                let text = Array((String(repeating: opener, count: depth) + "1" + String(repeating: closer, count: depth)).utf8)
                text.withUnsafeBytes { buffer in
                    #expect(ValidationDifferential.disagreement(buffer, maxDepth: 64) == nil, "depth \(depth), \(opener)")
                    #expect(ValidationDifferential.disagreement(buffer, maxDepth: 100) == nil, "depth \(depth), \(opener)")
                }
            }
        }
    }
}
