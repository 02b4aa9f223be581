import AuditEvents

/// libFuzzer entry point over record decoding: decode, walk every field a rule could read, and materialize
/// the ECS document. Built only by `make fuzz` (`-sanitize=fuzzer`); crashes, hangs and leaks are findings.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let decoder = AuditRecordDecoder(limits: DecoderLimits(maxRecordBytes: 1 << 20, maxDepth: 64))
    decoder.decode(bytes, ingestTime: 1_700_000_000_000) { result in
        guard case .success(let event) = result else { return }
        for field in FuzzFields.all {
            event.forEachValue(of: field) { value in
                _ = value.stringValue
                return true
            }
        }
        _ = event.timestampMilliseconds
        _ = event.ingestedMilliseconds
        let document = event.normalized(preserveOriginal: true)
        // What we materialize must serialize to JSON that we parse back to the same value.
        let text = JSONValue.object(document).serialized()
        guard let reparsed = try? JSONValue.parse(text), reparsed == .object(document) else {
            fatalError("normalized document does not round-trip: \(text)")
        }
    }
    _ = Prefilter(requirements: [["forbid"], ["system:serviceaccount:"]]).mightMatch(bytes)
    return 0
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
    return runFuzzerDriver(&count, &arguments) { data, size in fuzzDecoder(data, size) }
}
#else
/// Built without libFuzzer (a plain `swift build`): say how to build the real thing.
@_cdecl("audit_sentinel_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    print("audit-sentinel-fuzz: built without libFuzzer; run `make fuzz` (scripts/fuzz.sh)")
    return 2
}
#endif
