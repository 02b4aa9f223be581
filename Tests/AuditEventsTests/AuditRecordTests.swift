@testable import AuditEvents
import Foundation
import Testing

/// Our own fixtures: what Elastic's lack (denials, batches, escapes, sparse events).
@Suite("Audit records")
struct AuditRecordTests {
    @Test func deniedServiceAccountRequest() throws {
        let (events, errors) = decodeAll(try fixture("denied-serviceaccount.json"), ingestTime: 1_763_629_000_000)
        #expect(errors.isEmpty)
        let event = try #require(events.first)
        let document = event.normalized
        #expect(event.shape == .event)
        #expect(document[path: "kubernetes.audit.user.username"] == "system:serviceaccount:payments:checkout-api")
        #expect(document[path: "kubernetes.audit.annotations"] == ["authorization_k8s_io/decision": "forbid"])
        #expect(document[path: "kubernetes.audit.responseStatus.code"] == 403)
        #expect(document[path: "kubernetes.audit.responseStatus.metadata"] == nil)
        #expect(document[path: "event.outcome"] == "failure")
        #expect(document[path: "event.action"] == "list")
        #expect(document[path: "event.kind"] == "event")
        #expect(document[path: "event.dataset"] == "kubernetes.audit_logs")
        #expect(document[path: "data_stream.dataset"] == "kubernetes.audit_logs")
        #expect(document[path: "user.name"] == "system:serviceaccount:payments:checkout-api")
        #expect(document[path: "source.ip"] == ["10.244.3.17"])
        #expect(document[path: "client.ip"] == ["10.244.3.17"])
        #expect(document[path: "related.ip"] == ["10.244.3.17"])
        #expect(document[path: "related.user"] == ["b5e1c0d2-3f4a-4b6c-8d9e-0a1b2c3d4e5f", "system:serviceaccount:payments:checkout-api"])
        #expect(document[path: "orchestrator.resource.type"] == "secrets")
        #expect(document[path: "orchestrator.namespace"] == "kube-system")
        #expect(document[path: "orchestrator.resource.name"] == nil)
        #expect(document["@timestamp"] == "2026-11-20T09:14:03.512Z")
        #expect(document[path: "event.ingested"] == "2025-11-20T08:56:40.000Z")
        #expect(event.ingested == 1_763_629_000_000)
        #expect(event.timestamp == Timestamp.milliseconds(fromRFC3339: "2026-11-20T09:14:03.512Z"))
        // Dotted keys of the user's extra map are kept as they are.
        #expect(document[path: "kubernetes.audit.user.extra"]?.objectValue?["authentication.kubernetes.io/pod-name"] == ["checkout-api-6d9f7c8b5-x2k4p"])
        #expect(event.viewed["kubernetes.audit.annotations.authorization_k8s_io/decision"] == ["forbid"])
    }

    @Test func eventListBatchGivesEveryItem() throws {
        let (events, errors) = decodeAll(try fixture("eventlist-batch.json"))
        #expect(errors.isEmpty)
        #expect(events.map(\.shape) == [.eventListItem, .eventListItem, .eventListItem])
        #expect(events.map { $0.normalized[path: "kubernetes.audit.auditID"] } == ["a1", "a2", "a3"])
        #expect(events.map { $0.normalized[path: "event.outcome"] } == ["success", "failure", "failure"])
        // The plural group-like name is not a service account username, and stays as written.
        #expect(events[2].normalized[path: "user.name"] == "system:serviceaccounts:default:default")
        #expect(events[1].normalized[path: "source.ip"] == ["10.244.2.9", "192.0.2.10"])
        #expect(events[1].normalized[path: "orchestrator.resource.name"] == "web")
        // An item's original text is its own serialization.
        let original = try #require(events[0].withOriginal[path: "event.original"]?.stringValue)
        #expect(try JSONValue.parse(original).objectValue?["auditID"] == "a1")
    }

    @Test func unicodeEscapesAreDecoded() throws {
        let (events, errors) = decodeAll(try fixture("unicode-escapes.ndjson"))
        #expect(errors.isEmpty)
        #expect(events.count == 2)
        let first = events[0].normalized
        #expect(first[path: "kubernetes.audit.user.username"] == "system:serviceaccount:dév:worker")
        #expect(first[path: "user_agent.original"] == "python-requests/2.32 🚀")
        #expect(first[path: "kubernetes.audit.annotations"] == ["authorization_k8s_io/decision": "forbid"])
        #expect(first[path: "event.outcome"] == "failure")
        #expect(first[path: "source.ip"] == ["2001:db8::7"])
        #expect(events[0].viewed["kubernetes.audit.annotations.authorization_k8s_io/decision"] == ["forbid"])
        let second = events[1].normalized
        #expect(second[path: "kubernetes.audit.annotations.note"] == "tab\there \"quoted\" back\\slash")
        // Offsets are honoured: 10:00:01.5+01:00 is 09:00:01.500Z.
        #expect(second["@timestamp"] == "2026-11-20T09:00:01.500Z")
    }

    @Test func missingOptionalFieldsAreSimplyAbsent() throws {
        let (events, errors) = decodeAll(try fixture("minimal.json"))
        #expect(errors.isEmpty)
        let document = try #require(events.first).normalized
        #expect(document[path: "user.name"] == "system:serviceaccount:kube-system:coredns")
        #expect(document[path: "event.outcome"] == nil)
        #expect(document[path: "source"] == nil)
        #expect(document[path: "user_agent"] == nil)
        #expect(document[path: "orchestrator"] == ["type": "kubernetes", "api_version": "audit.k8s.io/v1"])
        #expect(document[path: "related.user"] == ["system:serviceaccount:kube-system:coredns"])
    }

    @Test func gkeDenialFollowsThePipelineRenames() throws {
        let (events, errors) = decodeAll(try fixture("gke-denied.json"))
        #expect(errors.isEmpty)
        let event = try #require(events.first)
        let document = event.normalized
        #expect(event.shape == .gke)
        #expect(document[path: "kubernetes.audit.auditID"] == "gke-7")
        #expect(document[path: "kubernetes.audit.insertId"] == nil)
        #expect(document[path: "kubernetes.audit.requestReceivedTimestamp"] == "2026-11-20T12:00:01.900Z")
        #expect(document[path: "kubernetes.audit.stageTimestamp"] == "2026-11-20T12:00:00.100Z")
        #expect(document[path: "kubernetes.audit.responseStatus.code"] == 7)
        #expect(document[path: "kubernetes.audit.protoPayload.status"] == ["message": "PERMISSION_DENIED"])
        #expect(document[path: "kubernetes.audit.annotations"] == ["authorization_k8s_io/decision": "forbid"])
        #expect(document[path: "kubernetes.audit.labels"] == nil)
        #expect(document[path: "event.outcome"] == "failure")
        #expect(document[path: "orchestrator.cluster"] == ["name": "prod-eu", "id": "acme-prod"])
        #expect(document[path: "orchestrator.resource"] == ["name": "core/v1/namespaces/kube-system/secrets", "type": "k8s_cluster"])
        // Elastic's pipeline derives no user.name for GKE entries; neither do we.
        #expect(document[path: "user.name"] == nil)
    }

    @Test func wrappersAndECSDocuments() throws {
        let inner = String(decoding: try fixture("denied-serviceaccount.json"), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        var wrapper = JSONObject()
        wrapper["message"] = .string(inner)
        wrapper["host"] = ["name": "node-1"]
        wrapper["@timestamp"] = "2026-11-20T09:14:04.000Z"
        let (wrapped, wrapErrors) = decodeAll(Array(JSONValue.object(wrapper).serialized().utf8))
        #expect(wrapErrors.isEmpty)
        let event = try #require(wrapped.first)
        #expect(event.shape == .filebeat)
        #expect(event.normalized[path: "user.name"] == "system:serviceaccount:payments:checkout-api")
        #expect(event.normalized[path: "host.name"] == "node-1")
        #expect(event.viewed["host.name"] == ["node-1"])
        #expect(event.withOriginal[path: "event.original"]?.stringValue == inner)

        // An Elastic Agent document keeps its own fields and times, and gets the dataset fields it lacks.
        var ecs = event.normalized
        ecs["@timestamp"] = "2026-11-20T09:14:05.000Z"
        ecs["event"] = ["kind": "event", "outcome": "failure", "ingested": "2026-11-20T09:14:06.250Z"]
        ecs.removeValue(forKey: "data_stream")
        let (documents, ecsErrors) = decodeAll(Array(JSONValue.object(ecs).serialized().utf8), ingestTime: 1)
        #expect(ecsErrors.isEmpty)
        let document = try #require(documents.first)
        #expect(document.shape == .ecs)
        #expect(document.ingested == Timestamp.milliseconds(fromRFC3339: "2026-11-20T09:14:06.250Z"))
        #expect(document.timestamp == Timestamp.milliseconds(fromRFC3339: "2026-11-20T09:14:05.000Z"))
        #expect(document.normalized[path: "event.dataset"] == "kubernetes.audit_logs")
        #expect(document.normalized[path: "data_stream.dataset"] == "kubernetes.audit_logs")
        #expect(document.viewed["kubernetes.audit.annotations.authorization_k8s_io/decision"] == ["forbid"])
    }

    @Test func flattenedDottedKeysResolveLikeNestedOnes() throws {
        let text = #"{"kubernetes.audit":{"verb":"get","user":{"username":"system:serviceaccount:a:b"}},"event.dataset":"kubernetes.audit_logs","kubernetes":{"audit":{"auditID":"x"}}}"#
        let events = decodeAll(Array(text.utf8)).events
        let event = try #require(events.first)
        #expect(event.viewed["kubernetes.audit.auditID"] == ["x"])
        var usernames: [String] = []
        Array(text.utf8).withUnsafeBytes { buffer in
            AuditRecordDecoder().decode(buffer) { result in
                if case .success(let event) = result { usernames = event.strings(FieldPath("kubernetes.audit.user.username")) }
            }
        }
        #expect(usernames == ["system:serviceaccount:a:b"])
    }
}

/// Bad input: each failure is typed, located, and never hides the other events of the record.
@Suite("Bad input")
struct BadInputTests {
    func errors(_ text: String, limits: DecoderLimits = DecoderLimits()) -> [AuditDecodeError] {
        decodeAll(Array(text.utf8), decoder: AuditRecordDecoder(limits: limits)).errors
    }

    @Test func emptyAndWhitespaceRecords() {
        #expect(errors("").map(\.reason) == [.empty])
        #expect(errors(" \n\t ").map(\.reason) == [.empty])
    }

    @Test func truncatedJSONGivesOffset() throws {
        let error = try #require(errors(#"{"kind":"Event","verb":"get""#).first)
        #expect(error.reason == .invalidJSON)
        #expect(error.offset == 28)
        #expect(error.message.contains("end of input"))
    }

    @Test func nonObjectsAndUnknownShapes() {
        #expect(errors("[1,2,3]").map(\.reason) == [.notAnObject])
        #expect(errors("42").map(\.reason) == [.notAnObject])
        #expect(errors(#"{"hello":"world"}"#).map(\.reason) == [.unrecognizedShape])
    }

    @Test func wrongTypesForKnownFields() throws {
        let cases: [(String, String)] = [
            (#"{"kind":"Event","verb":7}"#, "verb must be string"),
            (#"{"kind":"Event","user":"alice"}"#, "user must be object"),
            (#"{"kind":"Event","user":{"username":["a"]}}"#, "user.username must be string"),
            (#"{"kind":"Event","sourceIPs":"10.0.0.1"}"#, "sourceIPs must be array"),
            (#"{"kind":"Event","sourceIPs":[1]}"#, "sourceIPs[] must be string"),
            (#"{"kind":"Event","annotations":{"authorization.k8s.io/decision":true}}"#, "annotations.authorization.k8s.io/decision must be string"),
            (#"{"kind":"Event","responseStatus":{"code":"403"}}"#, "responseStatus.code must be number"),
        ]
        for (text, message) in cases {
            let error = try #require(errors(text).first, "\(text)")
            #expect(error.reason == .wrongType)
            #expect(error.message.contains(message), "\(error.message)")
            #expect(error.offset > 0)
        }
    }

    @Test func invalidUTF8IsRejectedWithItsOffset() throws {
        var bytes = Array(#"{"kind":"Event","verb":"get","userAgent":"x"}"#.utf8)
        bytes.insert(0xC3, at: 42)  // a lead byte followed by an ASCII quote
        let (_, errors) = decodeAll(bytes)
        let error = try #require(errors.first)
        #expect(error.reason == .invalidUTF8)
        #expect(error.offset == 42)
        for bad: [UInt8] in [[0xED, 0xA0, 0x80], [0xC0, 0xAF], [0xF4, 0x90, 0x80, 0x80], [0xFF]] {
            let record = Array(#"{"kind":"Event","verb":""#.utf8) + bad + Array(#""}"#.utf8)
            #expect(decodeAll(record).errors.map(\.reason) == [.invalidUTF8], "\(bad)")
        }
    }

    @Test func binaryGarbage() {
        let bytes: [UInt8] = (0..<512).map { UInt8(truncatingIfNeeded: $0 &* 7919 &+ 13) }
        let result = decodeAll(bytes)
        #expect(result.events.isEmpty)
        #expect(!result.errors.isEmpty)
        #expect(result.errors.allSatisfy { [.invalidJSON, .invalidUTF8, .tooManyErrors].contains($0.reason) })
    }

    @Test func recordsOverTheSizeLimit() {
        let big = #"{"kind":"Event","verb":""# + String(repeating: "a", count: 2000) + #""}"#
        let result = errors(big, limits: DecoderLimits(maxRecordBytes: 1024))
        #expect(result.map(\.reason) == [.tooLarge])
        #expect(result.first?.offset == 1024)
    }

    @Test func nestingOverTheDepthLimit() {
        let deep = #"{"kind":"Event","requestObject":"# + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000) + "}"
        let result = errors(deep)
        #expect(result.map(\.reason) == [.tooDeep])
        #expect(result.first?.offset == 32 + 99)  // the 100th "[" (the object is level 1)
    }

    @Test func aBadLineDoesNotHideTheOthers() throws {
        let good = String(decoding: try fixture("minimal.json"), as: UTF8.self).trimmingCharacters(in: .newlines)
        let record = [good, #"{"kind":"Event","verb":"#, "not json at all", good, #"{"kind":"Event","verb":5}"#, good].joined(separator: "\n")
        let (events, errors) = decodeAll(Array(record.utf8))
        #expect(events.count == 3)
        #expect(errors.map(\.reason) == [.invalidJSON, .invalidJSON, .wrongType])
        #expect(errors.map(\.eventIndex) == [1, 2, 4])
    }

    @Test func embeddedJSONErrorsPointAtTheField() throws {
        let record = #"{"category":"kube-audit","properties":{"log":"{\"kind\":\"Event\",","pod":"p"}}"#
        let error = try #require(errors(record).first)
        #expect(error.reason == .invalidJSON)
        #expect(error.message.hasPrefix("embedded JSON"))
        #expect(error.offset == 46)
    }

    @Test func tooManyErrorsInOneRecordStopsEarly() {
        let record = Array(repeating: "{broken", count: 100).joined(separator: "\n")
        let result = errors(record)
        #expect(result.count == 17)
        #expect(result.last?.reason == .tooManyErrors)
    }
}

@Suite("Prefilter")
struct PrefilterTests {
    let forbid = Prefilter(requirements: [["forbid"], ["system:serviceaccount:"]])

    func passes(_ filter: Prefilter, _ text: String) -> Bool {
        Array(text.utf8).withUnsafeBytes { filter.mightMatch($0) }
    }

    @Test func rejectsRecordsWithoutTheLiterals() throws {
        #expect(!passes(forbid, #"{"annotations":{"authorization.k8s.io/decision":"allow"},"user":{"username":"system:serviceaccount:a:b"}}"#))
        #expect(!passes(forbid, #"{"annotations":{"authorization.k8s.io/decision":"forbid"},"user":{"username":"alice"}}"#))
        #expect(passes(forbid, #"{"annotations":{"authorization.k8s.io/decision":"forbid"},"user":{"username":"system:serviceaccount:a:b"}}"#))
    }

    @Test func fallsBackWhenJSONCouldSpellTheLiteralDifferently() throws {
        #expect(passes(forbid, #"{"decision":"\u0066orbid","user":"system:serviceaccount:a"}"#))
        #expect(passes(forbid, #"{"decision":"forbid","user":"system:serviceaccount\/a"}"#))
    }

    @Test func neverRejectsARecordThatMatches() throws {
        // Every fixture event whose decision is forbid and user a service account must pass.
        for name in ["denied-serviceaccount.json", "eventlist-batch.json", "unicode-escapes.ndjson", "gke-denied.json"] {
            let bytes = try fixture(name)
            var matches = false
            bytes.withUnsafeBytes { buffer in
                AuditRecordDecoder().decode(buffer) { result in
                    guard case .success(let event) = result else { return }
                    let forbidden = event.strings(FieldPath("kubernetes.audit.annotations.authorization_k8s_io/decision")) == ["forbid"]
                    let account = event.strings(FieldPath("kubernetes.audit.user.username")).contains { $0.hasPrefix("system:serviceaccount:") }
                    if forbidden && account { matches = true }
                }
            }
            if matches { #expect(bytes.withUnsafeBytes { forbid.mightMatch($0) }, "\(name)") }
        }
    }

    @Test func literalsJSONWouldEscapeAreNotRequired() {
        let filter = Prefilter(requirements: [["say \"hi\""], ["forbid"]])
        #expect(filter.requirements.count == 1)
        #expect(passes(filter, #"{"x":"forbid"}"#))
    }

    @Test func aSetPassesWhenAnyRulePasses() {
        let set = PrefilterSet([forbid, Prefilter(requirements: [["escalate"]])])
        #expect(Array(#"{"verb":"escalate"}"#.utf8).withUnsafeBytes { set.mightMatch($0) })
        #expect(!Array(#"{"verb":"get"}"#.utf8).withUnsafeBytes { set.mightMatch($0) })
        #expect(PrefilterSet([forbid, nil]).acceptsEverything)
    }

    /// The literal search (sixty-four, then sixteen starts a step on two anchor bytes, the last starts as one
    /// overlapping step, or one by one in a short text) against a naive search, on seeded texts of a small
    /// alphabet where literals and near misses are frequent, with the literal planted at every kind of place
    /// (start, end, across a step, a byte short of the end).
    @Test func literalSearchAgreesWithANaiveSearch() {
        let seed = UInt64.random(in: 1...1_000_000)
        print("literal search: seed \(seed)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        let literals = ["forbid", "system:serviceaccount:", "ab", "a", "bba", "abcabcabcabcabcabcab", "cab:"]
        let alphabet = Array("abc:forbidsystem".utf8)
        var found = 0
        for _ in 0..<4_000 {
            let literal = Array(literals.randomElement(using: &random)!.utf8)
            var text = (0..<Int.random(in: 0...300, using: &random)).map { _ in alphabet.randomElement(using: &random)! }
            if Bool.random(using: &random), text.count >= literal.count {
                let at = Int.random(in: 0...(text.count - literal.count), using: &random)
                // Sometimes a near miss: the literal with one byte changed.
                var planted = literal
                if Int.random(in: 0..<3, using: &random) == 0 { planted[Int.random(in: 0..<planted.count, using: &random)] = UInt8(ascii: "x") }
                text.replaceSubrange(at..<(at + literal.count), with: planted)
            }
            let expected = text.count >= literal.count && (0...(text.count - literal.count)).contains { Array(text[$0..<($0 + literal.count)]) == literal }
            let filter = Prefilter(requirements: [[String(decoding: literal, as: UTF8.self)]])
            #expect(text.withUnsafeBytes { filter.mightMatch($0) } == expected, "seed \(seed): \(String(decoding: literal, as: UTF8.self)) in \(String(decoding: text, as: UTF8.self))")
            if expected { found += 1 }
        }
        #expect(found > 800 && found < 3_200, "both verdicts must be frequent: \(found) of 4000 found")
    }

    /// A prefilter set that learns its search order (a group that rejects moves forward) gives every record
    /// the verdict of asking each of its prefilters in turn (their own search, in written order): the order
    /// changes the cost only. Seeded texts (without escapes, so the literal search alone is the verdict)
    /// through one learned order, against rules of several groups.
    @Test func learnedSearchOrderNeverChangesAVerdict() {
        let seed = UInt64.random(in: 1...1_000_000)
        print("prefilter search order: seed \(seed)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        let set = PrefilterSet([
            Prefilter(requirements: [["forbid"], ["system:"], ["cab", "bca"]]),
            Prefilter(requirements: [["escalate"], ["bb"]]),
            Prefilter(requirements: [["ac:", "ca:"], ["sys"], ["forbid"], ["ab"]]),
        ])
        let pieces = ["forbid", "system:", "cab", "bca", "escalate", "bb", "ac:", "ca:", "sys", "ab", "x", "yy", "zzz"]
        var order = PrefilterSet.SearchOrder()
        var passed = 0
        for _ in 0..<3_000 {
            let text = Array((0..<Int.random(in: 0...12, using: &random)).map { _ in pieces.randomElement(using: &random)! }.joined().utf8)
            let fresh = text.withUnsafeBytes { bytes in set.filters.contains { $0.mightMatch(bytes) } }
            #expect(text.withUnsafeBytes { set.literalsPresent($0, reordering: &order) } == fresh, "seed \(seed): \(String(decoding: text, as: UTF8.self))")
            if fresh { passed += 1 }
        }
        #expect(passed > 300 && passed < 2_700, "both verdicts must be frequent: \(passed) of 3000 passed")

        // And the order is learned: the seed rule's shape, on records with the service-account prefix and
        // no `forbid`, comes to search `forbid` first; a record the prefix is missing from moves it back.
        let seedRule = PrefilterSet([Prefilter(requirements: [["system:serviceaccount:"], ["forbid"]])])
        var learned = PrefilterSet.SearchOrder()
        func search(_ text: String) -> Bool { Array(text.utf8).withUnsafeBytes { seedRule.literalsPresent($0, reordering: &learned) } }
        #expect(!search(#"{"user":"system:serviceaccount:a:b","decision":"allow"}"#) && learned.groups == [[1, 0]])
        #expect(!search(#"{"user":"system:serviceaccount:a:c","decision":"allow"}"#) && learned.groups == [[1, 0]])
        #expect(!search(#"{"user":"alice","decision":"forbid"}"#) && learned.groups == [[0, 1]])
        #expect(search(#"{"user":"system:serviceaccount:a:b","decision":"forbid"}"#) && learned.groups == [[0, 1]])
    }

    /// The set searches each shared literal once: its verdict must be asking every filter in turn, on
    /// seeded random filters (shared literals, alternatives, escapes) and records.
    @Test func aSetDecidesAsItsFiltersDo() {
        let seed = UInt64.random(in: 1...1_000_000)
        print("prefilter set: seed \(seed)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        let words = ["forbid", "allow", "create", "secrets", "pods", "ResponseComplete", "system:serviceaccount:", "exec", "a\"b"]
        for _ in 0..<300 {
            let filters: [Prefilter?] = (0..<Int.random(in: 1...6, using: &random)).map { _ in
                Prefilter(requirements: (0..<Int.random(in: 1...3, using: &random)).map { _ in
                    (0..<Int.random(in: 1...3, using: &random)).map { _ in words.randomElement(using: &random)! }
                })
            }
            let set = PrefilterSet(filters)
            for _ in 0..<10 {
                var text = "{" + (0..<Int.random(in: 0...4, using: &random)).map { _ in "\"k\":\"\(words.randomElement(using: &random)!)\"" }.joined(separator: ",")
                if Int.random(in: 0..<10, using: &random) == 0 { text += #","e":"\u0066""# }
                text += "}"
                let expected = filters.contains { $0.map { filter in Array(text.utf8).withUnsafeBytes { filter.mightMatch($0) } } ?? true }
                #expect(Array(text.utf8).withUnsafeBytes { set.mightMatch($0) } == expected, "seed \(seed): \(text)")
            }
        }
    }
}

@Suite("JSON scanner")
struct JSONScannerTests {
    @Test(arguments: [
        #"{}"#, #"[]"#, #"{"a":[1,-2.5e+3,0,true,false,null,"x"]}"#, #" {"a" : { "b" : [ ] } } "#, #""\u00e9\ud83d\ude80\n\t\"\\\/""#,
        "0", "-0.0", "1E9", #"{"a":"é🚀"}"#,
    ])
    func acceptsValidJSON(_ text: String) throws {
        let value = try JSONValue.parse(text)
        // Round trip through our serializer gives the same value.
        #expect(try JSONValue.parse(value.serialized()) == value)
    }

    @Test(arguments: [
        "", "{", "}", #"{"a"}"#, #"{"a":}"#, #"{"a":1,}"#, "[1,]", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul",
        #""abc"#, #""\x""#, #""\u12G4""#, "\"a\u{01}b\"", "{'a':1}", "[1 2]", "{} {}", "NaN",
    ])
    func rejectsInvalidJSON(_ text: String) {
        #expect(throws: JSONSyntaxError.self) { try JSONValue.parse(text) }
    }

    /// Strings are crossed sixteen bytes a step, then eight, then one: a byte that needs a look (an escape,
    /// non-ASCII, a control character, the closing quote) at every offset of strings of every length up to
    /// 40, after every prefix offset (the vector loads' alignments), is found by the scanner and the
    /// validation-only pass alike.
    @Test func stringsAreScannedAlikeAtEveryOffset() throws {
        let specials: [(raw: String, decoded: String?)] = [("\\n", "\n"), ("é", "é"), ("\u{01}", nil), ("\\u00e9", "é"), ("\\q", nil)]
        for prefix in 0..<16 {
            for length in 0...40 {
                for at in 0...length {
                    for special in specials {
                        let before = String(repeating: "a", count: at), after = String(repeating: "b", count: length - at)
                        let text = String(repeating: " ", count: prefix) + "[\"" + before + special.raw + after + "\"]"
                        let bytes = Array(text.utf8)
                        if let decoded = special.decoded {
                            #expect(try JSONValue.parse(bytes) == .array([.string(before + decoded + after)]), "\(text)")
                        } else {
                            #expect(throws: JSONSyntaxError.self, "\(text)") { try JSONValue.parse(bytes) }
                        }
                        #expect(bytes.withUnsafeBytes { ValidationDifferential.disagreement($0) } == nil, "\(text)")
                    }
                }
            }
        }
    }

    @Test func decodesEscapesAndSurrogates() throws {
        #expect(try JSONValue.parse(#""\u00e9\ud83d\ude80\n\"""#) == .string("é🚀\n\""))
        #expect(try JSONValue.parse(#""\ud800x""#) == .string("\u{FFFD}x"))
    }

    @Test func serializesDeterministically() throws {
        let value: JSONValue = ["b": 1, "a": ["x", true], "c": ["k": "v\"\n"]]
        #expect(value.serialized(sortedKeys: true) == #"{"a":["x",true],"b":1,"c":{"k":"v\"\n"}}"#)
    }

    @Test func timestampsRoundTrip() {
        #expect(Timestamp.milliseconds(fromRFC3339: "1970-01-01T00:00:00Z") == 0)
        #expect(Timestamp.milliseconds(fromRFC3339: "2025-03-04T06:22:18.819232Z") == 1_741_069_338_819)
        #expect(Timestamp.milliseconds(fromRFC3339: "2024-02-29T23:59:59.9+00:00") == 1_709_251_199_900)
        #expect(Timestamp.rfc3339(milliseconds: 1_741_069_338_819) == "2025-03-04T06:22:18.819Z")
        #expect(Timestamp.rfc3339(milliseconds: 1_709_251_199_900) == "2024-02-29T23:59:59.900Z")
        #expect(Timestamp.milliseconds(fromRFC3339: "2025-13-01T00:00:00Z") == nil)
        #expect(Timestamp.milliseconds(fromRFC3339: "yesterday") == nil)
    }

    /// The written form against Foundation's ISO 8601 formatter, and back through our parser, on seeded
    /// instants from 1900 to 9999 (and the edges of the four-digit years the fast form covers).
    @Test func timestampsAgreeWithFoundation() {
        let seed = UInt64.random(in: 1...1_000_000)
        print("timestamps: seed \(seed)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        let earliest: Int64 = -2_208_988_800_000, latest: Int64 = 253_402_300_799_999  // 1900-01-01, 9999-12-31
        var instants: [Int64] = [earliest, latest, 0, -1, 951_782_400_000 - 1]
        for _ in 0..<2000 { instants.append(Int64.random(in: earliest...latest, using: &random)) }
        for instant in instants {
            let text = Timestamp.rfc3339(milliseconds: instant)
            let date = Date(timeIntervalSince1970: Double(instant) / 1000)
            // Foundation rounds the fraction through a Double: compare it to the second, and the milliseconds exactly.
            #expect(text.prefix(19) == formatter.string(from: date).prefix(19), "seed \(seed): \(instant)")
            let millis: Int64 = ((instant % 1000) + 1000) % 1000
            let fraction = "." + String(String(1000 + millis).dropFirst()) + "Z"
            #expect(String(text.dropFirst(19)) == fraction, "seed \(seed): \(instant)")
            #expect(Timestamp.milliseconds(fromRFC3339: text) == instant, "seed \(seed): \(text)")
        }
        #expect(Timestamp.rfc3339(milliseconds: latest + 1) == "10000-01-01T00:00:00.000Z")
        // The extremes are written, not trapped on (an empty summary's first and last seen).
        #expect(Timestamp.rfc3339(milliseconds: .min).hasSuffix(".192Z") && Timestamp.rfc3339(milliseconds: .max).hasSuffix(".807Z"))
    }
}
