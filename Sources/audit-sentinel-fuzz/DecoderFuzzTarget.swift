import AuditEvents
import Detection
import Foundation

/// libFuzzer entry point over record decoding: decode, walk every field a rule could read, and materialize
/// the ECS document; two differentials on the same bytes — the validation-only pass against the decoder's
/// verdict, the direct document writer against the tree. Built only by `make fuzz` (`-sanitize=fuzzer`);
/// crashes, hangs, leaks and disagreements are findings.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let decoder = AuditRecordDecoder(limits: DecoderLimits(maxRecordBytes: 1 << 20, maxDepth: 64))
    let candidate = FuzzSeedRule.rule.flatMap { $0.prefilter?.mightMatch(bytes) } ?? true
    decoder.decode(bytes, ingestTime: 1_700_000_000_000) { result in
        guard case .success(let event) = result else { return }
        // The prefilter may only reject records that cannot match.
        if !candidate, FuzzSeedRule.rule?.matches(event) == true { fatalError("the prefilter rejected a record the seed rule matches") }
        for field in FuzzFields.all {
            event.forEachValue(of: field) { value in
                _ = value.stringValue
                return true
            }
        }
        _ = event.timestampMilliseconds
        _ = event.ingestedMilliseconds
        let direct = event.canonicalDocument(ingestedIfMissing: 1_700_000_000_001)
        let tree = event.treeCanonicalDocument(ingestedIfMissing: 1_700_000_000_001)
        if direct != tree {
            fatalError("the document writer disagrees with the tree:\n\(String(decoding: direct, as: UTF8.self))\n\(String(decoding: tree, as: UTF8.self))")
        }
        let document = event.normalized(preserveOriginal: true)
        // What we materialize must serialize to JSON that we parse back to the same value.
        let text = JSONValue.object(document).serialized()
        guard let reparsed = try? JSONValue.parse(text), reparsed == .object(document) else {
            fatalError("normalized document does not round-trip: \(text)")
        }
    }
    if let problem = ValidationDifferential.disagreement(bytes, maxDepth: 64) { fatalError("validation-only pass: \(problem)") }
    _ = Prefilter(requirements: [["forbid"], ["system:serviceaccount:"]]).mightMatch(bytes)
    return 0
}

/// KQL: parse anything; what parses compiles, and its flat program agrees with the tree on a fixed event.
public func fuzzKQL(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let query = try? CompiledQuery(parsing: text) else { return 0 }
    FuzzEvent.event { event in
        // Three evaluations that must agree: the flat program on the event, the tree on the event, the tree
        // on the materialized ECS document.
        let flat = query.matches(event)
        let tree = treeMatches(query, event)
        let document = treeMatches(query, event.normalized())
        if flat != tree || tree != document { fatalError("evaluations disagree (\(flat), \(tree), \(document)) on \(text)") }
    }
    return 0
}

func treeMatches<D: KQLDocument>(_ query: CompiledQuery, _ document: D) -> Bool { query.matches(document) }

/// EQL: parse anything (errors, never a crash or a stack overflow); what parses prints a form that
/// parses back to the same tree, within the same nesting limit.
public func fuzzEQL(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let query = try? EQLParser.parse(text) else { return 0 }
    let printed = query.description
    guard let again = try? EQLParser.parse(printed), again == query else { fatalError("printed form does not parse back: \(text) → \(printed)") }
    return 0
}

/// ES|QL: parse anything (errors, never a crash or a stack overflow); what parses prints a form that
/// parses back to the same tree. (The printed form parenthesizes every operation, so near the nesting
/// bound it may exceed it: refused for depth, that is the bound at work, not a wrong print.)
public func fuzzESQL(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let query = try? ESQLParser.parse(text) else { return 0 }
    let printed = query.description
    do throws(ESQLSyntaxError) {
        let again = try ESQLParser.parse(printed)
        guard again == query else { fatalError("printed form parses to another query: \(text) → \(printed)") }
    } catch {
        guard error.message.hasPrefix("nesting deeper") else { fatalError("printed form does not parse back (\(error)): \(text) → \(printed)") }
    }
    // What compiles runs: per event on two documents, and for STATS through one execution of their rows.
    guard let program = try? ESQLProgram(query) else { return 0 }
    var partials: [ESQLPartialAggregate]?
    var keys: [ESQLValue] = []
    for document in FuzzDocuments.documents {
        guard let slots = program.evaluate(document, now: 1_763_625_600_000) else { continue }
        _ = program.outputColumns(slots)
        guard program.isAggregating else { continue }
        let (groups, inputs) = program.contributions(slots, document: document, now: 1_763_625_600_000)
        let row = program.partials(inputs)
        guard row.count == program.aggregateFunctions.count else { fatalError("\(row.count) partials for \(program.aggregateFunctions.count) aggregates: \(text)") }
        if var merged = partials {
            for index in merged.indices { merged[index].merge(row[index], function: program.aggregateFunctions[index]) }
            partials = merged
        } else {
            partials = row
        }
        keys = groups.first ?? keys
        guard keys.count == program.groupNames.count else { fatalError("\(keys.count) keys for \(program.groupNames.count) groups: \(text)") }
    }
    if let partials { _ = program.finish([(keys, partials)], now: 1_763_625_900_000) }
    return 0
}

/// Two ECS-shaped events for the ES|QL target: multi-valued, nested and date fields, numbers and text.
enum FuzzDocuments {
    static let documents: [JSONObject] = [
        ["@timestamp": "2025-11-20T08:00:00.000Z", "user": ["name": "system:serviceaccount:ns:sa"], "source": ["ip": "10.0.0.1"],
         "kubernetes": ["audit": ["verb": "get", "requestURI": "/api/v1/pods/x/exec?command=cat%20%2Fetc&stdin=true", "sourceIPs": ["10.0.0.1"],
                                  "responseStatus": ["code": 403], "objectRef": ["resource": "secrets", "name": "a"],
                                  "requestObject": ["rules": [["verbs": ["*", "get"]]]]]]],
        ["@timestamp": "2025-11-20T08:01:00.000Z", "user": ["name": "alice"], "event": ["action": "list"],
         "kubernetes": ["audit": ["verb": "list", "sourceIPs": ["::1", "10.0.0.2"], "responseStatus": ["code": 200]]]],
    ]
}

/// Regular expressions: compile anything in Lucene's syntax (errors, never a crash); what compiles
/// matches texts drawn from the input within the linear bound, and `~` folds case as its lower-cased
/// pattern does on lower-cased text.
public func fuzzRegex(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let split = text.firstIndex(of: "\n") ?? text.endIndex
    let pattern = String(text[..<split])
    let subject = split < text.endIndex ? String(text[text.index(after: split)...]) : pattern
    for caseInsensitive in [false, true] {
        guard let regex = try? LinearRegex(lucene: pattern, caseInsensitive: caseInsensitive) else { continue }
        let (_, steps) = regex.matchCountingSteps(subject)
        let bound = (subject.unicodeScalars.count + 1) * 2 * regex.programSize
        guard steps <= bound else { fatalError("\(steps) steps over the linear bound \(bound) for \(regex) on \(subject.debugDescription)") }
    }
    // The same pattern as Java's syntax (REPLACE) and as Grok's (GROK): searched within their bound too.
    for regex in [try? CapturingRegex(pattern, dialect: .java), try? CapturingRegex(pattern, dialect: .oniguruma), try? Grok(pattern).regex] {
        guard let regex else { continue }
        let (_, steps) = regex.firstMatchCountingSteps(subject)
        let bound = (subject.unicodeScalars.count + 1) * 3 * regex.programSize
        guard steps <= bound else { fatalError("\(steps) steps over the linear bound \(bound) for \(regex) on \(subject.debugDescription)") }
        _ = regex.replacingAll(in: subject, with: "<$0>")
    }
    return 0
}

/// Rule TOML: load anything as an Elastic rule; what loads compiles or is refused with a RuleLoadError.
public func fuzzRule(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let rule = try? DetectionRule.parse(toml: text, file: "fuzz.toml") { _ = try? CompiledRule(rule) }
    return 0
}

/// The headline rule (the fuzzer runs from the project root), for the prefilter's soundness check.
enum FuzzSeedRule {
    static let rule = try? CompiledRule.load(file: "Config/rules/kubernetes_denied_service_account_request.toml")
}

/// A denied service-account request the KQL target evaluates against.
enum FuzzEvent {
    static let record = Array(#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/secrets","verb":"list","user":{"username":"system:serviceaccount:default:x","groups":["system:serviceaccounts"]},"sourceIPs":["10.0.0.1"],"userAgent":"curl/8","objectRef":{"resource":"secrets","namespace":"default","apiVersion":"v1"},"responseStatus":{"code":403},"requestReceivedTimestamp":"2026-01-01T00:00:00.000000Z","stageTimestamp":"2026-01-01T00:00:00.001000Z","annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":""}}"#.utf8)
    static func event(_ body: (AuditEvent) -> Void) {
        record.withUnsafeBytes { bytes in
            AuditRecordDecoder().decode(bytes, ingestTime: 1_767_225_600_000) { if case .success(let event) = $0 { body(event) } }
        }
    }
}

enum FuzzFields {
    static let all: [FieldPath] = [
        "event.dataset", "data_stream.dataset", "event.outcome", "event.action", "user.name", "user.id", "source.ip",
        "related.user", "related.ip", "orchestrator.resource.type", "orchestrator.resource.name", "@timestamp", "event.ingested",
        "kubernetes.audit.user.username", "kubernetes.audit.annotations.authorization_k8s_io/decision", "kubernetes.audit.auditID",
        "kubernetes.audit.responseStatus.code", "kubernetes.audit.objectRef.resource", "kubernetes.audit.requestObject.spec",
        "kubernetes.audit.aks_metadata.pod", "host.name", "kubernetes.audit.stageTimestamp",
    ].map(FieldPath.init)
}

#if AUDIT_SENTINEL_FUZZ
/// SwiftPM links an executable's entry point as `<module>_main`; hand control to libFuzzer's driver there.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt

@_cdecl("audit_sentinel_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    // One binary, six targets: AUDIT_SENTINEL_FUZZ_TARGET = decode (default), kql, eql, esql, regex or rule.
    switch ProcessInfo.processInfo.environment["AUDIT_SENTINEL_FUZZ_TARGET"] ?? "decode" {
    case "kql": return runFuzzerDriver(&count, &arguments) { data, size in fuzzKQL(data, size) }
    case "rule": return runFuzzerDriver(&count, &arguments) { data, size in fuzzRule(data, size) }
    case "eql": return runFuzzerDriver(&count, &arguments) { data, size in fuzzEQL(data, size) }
    case "regex": return runFuzzerDriver(&count, &arguments) { data, size in fuzzRegex(data, size) }
    case "esql": return runFuzzerDriver(&count, &arguments) { data, size in fuzzESQL(data, size) }
    default: return runFuzzerDriver(&count, &arguments) { data, size in fuzzDecoder(data, size) }
    }
}
#else
/// Built without libFuzzer (a plain `swift build`): say how to build the real thing.
@_cdecl("audit_sentinel_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    print("audit-sentinel-fuzz: built without libFuzzer; run `make fuzz` (scripts/fuzz.sh)")
    return 2
}
#endif
