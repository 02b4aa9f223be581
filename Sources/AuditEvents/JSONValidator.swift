// The validation-only pass: JSON checked at memory speed without a tape, and a reader over checked bytes.

/// Checks one JSON text against RFC 8259 as ``JSONScanner`` does — grammar, string escapes, UTF-8 in
/// strings, the nesting limit — without recording anything but where the root object's known members
/// start. Iterative (a bit stack of open containers), with strings crossed sixteen bytes a step up to the
/// first byte that needs a look.
///
/// Its verdict is only ever used to skip work: a text it accepts is one the scanner accepts (a
/// differential fuzz target and test hold this), and anything it does not accept, or is unsure of, goes to
/// the full decoder, which says exactly what is wrong.
struct JSONValidator {
    enum Verdict: Equatable {
        /// One valid value; for an object, its known top-level members (byte offsets of their values).
        /// `typesValid`: the root object, read as an audit event, has every known field of the right type
        /// (``AuditEvent/validateTypes(_:_:prefix:)`` would find nothing). `byteSearchable`: no string holds
        /// an escape that can spell any character (`\u`, `\/`), so a byte search for a literal is exact
        /// (what ``Prefilter/hasUnsureEscape(_:)`` finds by a scan of its own).
        case valid(root: JSONTape.Kind, members: RootIndex, typesValid: Bool, byteSearchable: Bool)
        case invalid
        /// Valid or not, the validator does not judge it (several values, escaped root keys, a deep limit):
        /// the full decoder will.
        case unsure
    }

    private let bytes: UnsafePointer<UInt8>
    private let count: Int
    private let maxDepth: Int
    private var position = 0
    /// A string held `\u` or `\/`: found by the out-of-line rest of a string, set only when it says so, and
    /// read once the value is scanned.
    private var unsureEscape = false

    private init(_ buffer: UnsafeRawBufferPointer, maxDepth: Int) {
        bytes = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(bitPattern: 1)!
        count = buffer.count
        self.maxDepth = maxDepth
    }

    static func validate(_ buffer: UnsafeRawBufferPointer, maxDepth: Int) -> Verdict {
        // The open containers, one bit each (1 = object): 256 levels; deeper limits are the decoder's to judge.
        guard maxDepth <= 256 else { return .unsure }
        var validator = JSONValidator(buffer, maxDepth: maxDepth)
        return validator.run()
    }

    /// Where the one value starting at `offset` ends, when the validator accepts it (nil: invalid, or the
    /// validator is unsure).
    static func valueEnd(_ buffer: UnsafeRawBufferPointer, from offset: Int, maxDepth: Int) -> Int? {
        guard maxDepth <= 256, offset < buffer.count else { return nil }
        var validator = JSONValidator(buffer, maxDepth: maxDepth)
        validator.position = offset
        var watch = TypeWatch()
        do throws(Failure) {
            try validator.scanValue(&watch)
        } catch {
            return nil
        }
        return validator.position
    }

    private enum Failure: Error { case invalid, unsure }

    private mutating func run() -> Verdict {
        var watch = TypeWatch()
        do throws(Failure) {
            skipWhitespace()
            guard position < count else { return .invalid }
            let rootKind = Self.kind(of: bytes[position])
            try scanValue(&watch)
            skipWhitespace()
            // Further values (newline-delimited events) are the decoder's to split.
            if position != count { return .unsure }
            return .valid(root: rootKind, members: watch.members, typesValid: watch.typesValid(bytes),
                          byteSearchable: !unsureEscape)
        } catch {
            return error == .invalid ? .invalid : .unsure
        }
    }

    @inline(__always)
    static func kind(of byte: UInt8) -> JSONTape.Kind {
        switch byte {
        case UInt8(ascii: "{"): .object
        case UInt8(ascii: "["): .array
        case UInt8(ascii: "\""): .string
        case UInt8(ascii: "t"): .true
        case UInt8(ascii: "f"): .false
        case UInt8(ascii: "n"): .null
        default: .number
        }
    }

    @inline(__always)
    private mutating func skipWhitespace() { Self.skipWhitespace(bytes, count, &position) }

    @inline(__always)
    private static func skipWhitespace(_ bytes: UnsafePointer<UInt8>, _ count: Int, _ position: inout Int) {
        // Compact JSON has none: one comparison settles the common case (every token byte is above 0x20).
        while position < count {
            let byte = bytes[position]
            guard byte <= 0x20, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
            position &+= 1
        }
    }

    /// The grammar as one loop over tokens with the open containers on a bit stack. Its state — the offset,
    /// the depth, whether the innermost container is an object — lives in locals, so that nothing goes
    /// through memory from token to token (the offset is written back once, at the end of the value; after a
    /// failure nobody reads it, and writing it back then too kept it in memory throughout).
    private mutating func scanValue(_ watch: inout TypeWatch) throws(Failure) {
        let bytes = self.bytes, count = self.count, maxDepth = self.maxDepth
        var p = position
        var stack = InlineArray<4, UInt64>(repeating: 0)
        var depth = 0
        var inObject = false

        // Set when a member name comes before the next value.
        var expectKey = false

        value: while true {
            if expectKey {
                // A member name and its colon; at the root, where the value of a known member starts; one
                // level down, the names the type checks look for.
                expectKey = false
                Self.skipWhitespace(bytes, count, &p)
                guard p < count, bytes[p] == UInt8(ascii: "\"") else { throw .invalid }
                let start = p &+ 1
                p = start
                let flags = try Self.stringBody(bytes, count, &p)
                if flags & 4 != 0 { unsureEscape = true }
                let end = p &- 1
                if p < count, bytes[p] == UInt8(ascii: ":") {
                    p &+= 1
                } else {
                    Self.skipWhitespace(bytes, count, &p)
                    guard p < count, bytes[p] == UInt8(ascii: ":") else { throw .invalid }
                    p &+= 1
                }
                if depth <= 2 {
                    // An escaped name would need decoding to be classified: the decoder's case.
                    if flags & 1 != 0 && (depth == 1 || watch.readsNames) { throw .unsure }
                    let name = UnsafeRawBufferPointer(start: bytes + start, count: end &- start)
                    if depth == 1 {
                        Self.skipWhitespace(bytes, count, &p)
                        watch.rootMember(named: name, at: p)
                    } else if watch.readsNames {
                        // Only `user`'s and `responseStatus`'s member names matter to the type checks.
                        watch.member(name)
                    }
                }
            }
            // A value is expected at `p` (after optional whitespace).
            Self.skipWhitespace(bytes, count, &p)
            guard p < count else { throw .invalid }
            let first = bytes[p]
            if depth >= 2 { watch.value(first, depth: depth, at: p) }
            switch first {
            case UInt8(ascii: "\""):
                p &+= 1
                if try Self.stringBody(bytes, count, &p) & 4 != 0 { unsureEscape = true }
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                let object = first == UInt8(ascii: "{")
                depth &+= 1
                guard depth <= maxDepth else { throw .invalid }
                let word = (depth &- 1) >> 6
                let bit: UInt64 = 1 << UInt64((depth &- 1) & 63)
                if object { stack[word] |= bit } else { stack[word] &= ~bit }
                inObject = object
                p &+= 1
                Self.skipWhitespace(bytes, count, &p)
                guard p < count else { throw .invalid }
                if bytes[p] == (object ? UInt8(ascii: "}") : UInt8(ascii: "]")) {
                    p &+= 1
                    if depth <= 3 { watch.close(depth: depth) }
                    depth &-= 1
                    inObject = Self.isObject(stack, depth)
                } else if object {
                    expectKey = true
                    continue value
                } else {
                    continue value
                }
            case UInt8(ascii: "t"): try Self.literal("true", bytes, count, &p)
            case UInt8(ascii: "f"): try Self.literal("false", bytes, count, &p)
            case UInt8(ascii: "n"): try Self.literal("null", bytes, count, &p)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                guard case .valid(let end) = checkNumber(bytes, count, p) else { throw .invalid }
                p = end
            default: throw .invalid
            }
            // After a value: close containers, or move to the next member or element.
            while depth > 0 {
                guard p < count else { throw .invalid }
                var byte = bytes[p]
                if byte <= 0x20 {
                    Self.skipWhitespace(bytes, count, &p)
                    guard p < count else { throw .invalid }
                    byte = bytes[p]
                }
                p &+= 1
                if byte == UInt8(ascii: ",") {
                    expectKey = inObject
                    continue value
                }
                guard byte == (inObject ? UInt8(ascii: "}") : UInt8(ascii: "]")) else { throw .invalid }
                if depth <= 3 { watch.close(depth: depth) }
                depth &-= 1
                inObject = Self.isObject(stack, depth)
            }
            position = p
            return
        }
    }

    /// Whether the container open at `depth` (1 the outermost) is an object; false at depth 0.
    @inline(__always)
    private static func isObject(_ stack: InlineArray<4, UInt64>, _ depth: Int) -> Bool {
        let level = depth &- 1
        return depth > 0 && stack[level >> 6] & (1 << UInt64(level & 63)) != 0
    }

    /// The rest of a string after its opening quote; leaves `position` past the closing quote.
    /// - Returns: bit 0 set when it holds escapes, bit 1 when it holds non-ASCII bytes, bit 2 when one of
    ///   its escapes is `\u` or `\/`.
    @discardableResult
    @inline(__always)
    private static func stringBody(_ bytes: UnsafePointer<UInt8>, _ count: Int, _ position: inout Int) throws(Failure) -> UInt8 {
        // Most strings are plain ASCII: one skip and the closing quote, inlined where the grammar needs it.
        position = skipPlainStringBytes(bytes, count, from: position)
        if position < count, bytes[position] == UInt8(ascii: "\"") {
            position &+= 1
            return 0
        }
        let (end, flags) = try stringBodyRest(bytes, count, from: position)
        position = end
        return flags
    }

    /// The rest of a string from its first byte that needs a look: escapes, non-ASCII, controls, the end.
    /// Takes and returns the offset by value: an `inout` offset would put the grammar loop's offset in memory.
    @inline(never)
    private static func stringBodyRest(_ bytes: UnsafePointer<UInt8>, _ count: Int, from start: Int) throws(Failure) -> (end: Int, flags: UInt8) {
        var flags: UInt8 = 0
        var position = start
        while true {
            guard position < count else { throw .invalid }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                return (position &+ 1, flags)
            }
            if byte == UInt8(ascii: "\\") {
                flags |= 1
                guard case .valid(let length) = checkEscape(bytes, count, position) else { throw .invalid }
                let escaped = bytes[position &+ 1]
                if escaped == UInt8(ascii: "u") || escaped == UInt8(ascii: "/") { flags |= 4 }
                position &+= length
            } else if byte < 0x20 {
                throw .invalid
            } else if byte >= 0x80 {
                flags |= 2
                guard case .valid(let length) = checkUTF8Sequence(bytes, count, position) else { throw .invalid }
                position &+= length
            } else {
                position &+= 1
            }
            position = skipPlainStringBytes(bytes, count, from: position)
        }
    }

    @inline(__always)
    private static func literal(_ text: StaticString, _ bytes: UnsafePointer<UInt8>, _ count: Int, _ position: inout Int) throws(Failure) {
        let length = text.utf8CodeUnitCount
        guard position &+ length <= count, memcmp(bytes + position, text.utf8Start, length) == 0 else { throw .invalid }
        position &+= length
    }
}

/// The type checks of ``AuditEvent/validateTypes(_:_:prefix:)``, made while the validator passes over the
/// values instead of in a second walk: root members' kinds come from their recorded offsets; the members of
/// `user`, `annotations`, `objectRef`, `responseStatus` and the elements of `sourceIPs` and `user.groups`
/// are judged as they are scanned. A problem found in one occurrence of a repeated root member counts only
/// if that occurrence is the last (the one the decoder reads).
struct TypeWatch {
    private(set) var members = RootIndex()
    /// The root member whose value is being scanned, when the checks look inside it.
    private var current: RootKey?
    private var currentStart: Int32 = -1
    /// The member of `user` or `responseStatus` whose value comes next.
    private var name: Name = .other
    private var inGroups = false
    /// The kind of the last `code` of the current `responseStatus` was not a number or null.
    private var codeIsWrong = false
    /// Per watched root member: the offset of the last occurrence found with a wrong-typed member.
    private var wrongAt = InlineArray<5, Int32>(repeating: -1)

    private enum Name { case stringField, groups, code, other }

    private static func slot(_ key: RootKey) -> Int? {
        switch key {
        case .user: 0
        case .annotations: 1
        case .objectRef: 2
        case .responseStatus: 3
        case .sourceIPs: 4
        default: nil
        }
    }

    /// Whether member names one level down matter (an escaped one cannot be judged without decoding).
    var readsNames: Bool { current == .user || current == .responseStatus }

    /// A root member by its (unescaped) name: classified and recorded in one call out of the grammar loop,
    /// which saves and restores its registers once rather than twice. (The two written as one body compiled
    /// to 1.8 M more instructions over a 20 000-event replay.)
    @inline(never)
    mutating func rootMember(named name: UnsafeRawBufferPointer, at offset: Int) {
        rootMember(RootKey.classify(name), at: offset)
    }

    @inline(__always)
    private mutating func rootMember(_ key: RootKey?, at offset: Int) {
        if let key { members.set(key, Int32(offset)) }
        current = key.flatMap { Self.slot($0) != nil ? $0 : nil }
        currentStart = Int32(offset)
        codeIsWrong = false
    }

    mutating func member(_ raw: UnsafeRawBufferPointer) {
        // By length first, then one comparison (as ``RootKey/classify(_:)``): this runs for every member of
        // `user` and `responseStatus`.
        guard let base = raw.baseAddress else {
            name = .other
            return
        }
        @inline(__always) func equals(_ literal: StaticString) -> Bool { bytesEqual(base, literal.utf8Start, count: raw.count) }
        switch (current, raw.count) {
        case (.user?, 8): name = equals("username") ? .stringField : .other
        case (.user?, 3): name = equals("uid") ? .stringField : .other
        case (.user?, 6): name = equals("groups") ? .groups : .other
        case (.responseStatus?, 4): name = equals("code") ? .code : .other
        default: name = .other
        }
    }

    private static func isStringOrNull(_ byte: UInt8) -> Bool { byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "n") }

    /// A value starting with `byte` at `depth` open containers (2: inside a root member's value).
    @inline(__always)
    mutating func value(_ byte: UInt8, depth: Int, at offset: Int) {
        guard let current else { return }
        if depth == 3 {
            if inGroups, !Self.isStringOrNull(byte) { wrong(current) }
            return
        }
        guard depth == 2 else { return }
        switch current {
        case .annotations, .objectRef, .sourceIPs:
            if !Self.isStringOrNull(byte) { wrong(current) }
        case .user:
            switch name {
            case .stringField: if !Self.isStringOrNull(byte) { wrong(current) }
            case .groups:
                if byte == UInt8(ascii: "[") { inGroups = true } else if byte != UInt8(ascii: "n") { wrong(current) }
            default: break
            }
        case .responseStatus:
            if name == .code { codeIsWrong = !(byte == UInt8(ascii: "n") || byte == UInt8(ascii: "-") || isDigit(byte)) }
        default: break
        }
    }

    /// A container closing at `depth` (before it is left).
    @inline(__always)
    mutating func close(depth: Int) {
        guard let current else { return }
        if depth == 3 { inGroups = false }
        if depth == 2 {
            if current == .responseStatus, codeIsWrong { wrong(current) }
            self.current = nil
        }
    }

    private mutating func wrong(_ key: RootKey) { wrongAt[Self.slot(key)!] = currentStart }

    /// Over the validated text whose root members ``members`` indexes.
    func typesValid(_ bytes: UnsafePointer<UInt8>) -> Bool {
        // No arrays, variadics or closures here: this runs for every record.
        @inline(__always) func allowed(_ key: RootKey, _ expected: JSONTape.Kind) -> Bool {
            guard let offset = members[key] else { return true }
            let found = JSONValidator.kind(of: bytes[offset])
            return found == .null || found == expected
        }
        guard allowed(.verb, .string), allowed(.auditID, .string), allowed(.userAgent, .string), allowed(.requestURI, .string),
            allowed(.stage, .string), allowed(.level, .string), allowed(.requestReceivedTimestamp, .string),
            allowed(.stageTimestamp, .string), allowed(.user, .object), allowed(.sourceIPs, .array), allowed(.annotations, .object),
            allowed(.objectRef, .object), allowed(.responseStatus, .object)
        else { return false }
        @inline(__always) func clean(_ key: RootKey, _ slot: Int) -> Bool {
            guard let offset = members[key] else { return true }
            return wrongAt[slot] != Int32(offset)
        }
        return clean(.user, 0) && clean(.annotations, 1) && clean(.objectRef, 2) && clean(.responseStatus, 3) && clean(.sourceIPs, 4)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension AuditRecordDecoder {
    /// The verdict ``decode(_:ingestTime:_:)`` would give — every failure handed to `onFailure` in order, the
    /// number of events returned — without building a tape when it can be avoided: a record holding one raw
    /// event or GKE entry is judged by the validation-only pass and the tape-free type checks; every other
    /// record, and any the pass does not accept, goes through the full decoder, which reports exactly.
    public func validate(_ record: UnsafeRawBufferPointer, _ onFailure: (AuditDecodeError) -> Void) -> Int {
        if case .oneEvent = quickVerdict(record) { return 1 }
        return validateInFull(record, onFailure)
    }

    /// ``validate(_:_:)`` by the full decoder alone.
    private func validateInFull(_ record: UnsafeRawBufferPointer, _ onFailure: (AuditDecodeError) -> Void) -> Int {
        var events = 0
        decode(record, ingestTime: 0) { result in
            switch result {
            case .success: events += 1
            case .failure(let error): onFailure(error)
            }
        }
        return events
    }

    /// What the validation-only pass proved about a record.
    enum QuickVerdict: Equatable {
        /// One well-typed event: the decoder would emit exactly one event and no error. `byteSearchable`: no
        /// `\u` or `\/` escape in it (see ``JSONValidator/Verdict/valid(root:members:typesValid:byteSearchable:)``).
        case oneEvent(byteSearchable: Bool)
        /// The pass cannot tell; the full decoder judges.
        case undecided
    }

    func quickVerdict(_ record: UnsafeRawBufferPointer) -> QuickVerdict {
        guard record.count <= limits.maxRecordBytes,
            case .valid(.object, let members, let typesValid, let byteSearchable) = JSONValidator.validate(record, maxDepth: limits.maxDepth),
            typesValid,
            // The shapes that nest their events (ECS, EventList, AKS, wrappers) are the decoder's.
            members[.kubernetes] == nil, members[.items] == nil, members[.properties] == nil, members[.message] == nil
        else { return .undecided }
        return isOneAuditEvent(record, members) ? .oneEvent(byteSearchable: byteSearchable) : .undecided
    }

    private func isOneAuditEvent(_ record: UnsafeRawBufferPointer, _ members: RootIndex) -> Bool {
        if members[.protoPayload] != nil { return true }
        // AuditEvent.looksLikeAuditEvent on the raw text: `kind` is "Event", or `apiVersion` an audit
        // group's, or both auditID and verb are present. Escaped text is left to the decoder.
        func rawString(_ offset: Int?) -> UnsafeRawBufferPointer? {
            guard let offset, record[offset] == UInt8(ascii: "\"") else { return nil }
            var end = offset + 1
            while record[end] != UInt8(ascii: "\"") {
                if record[end] == UInt8(ascii: "\\") { return nil }
                end += 1
            }
            return UnsafeRawBufferPointer(rebasing: record[(offset + 1)..<end])
        }
        func equals(_ raw: UnsafeRawBufferPointer, _ literal: StaticString, prefix: Bool = false) -> Bool {
            (prefix ? raw.count >= literal.utf8CodeUnitCount : raw.count == literal.utf8CodeUnitCount)
                && memcmp(raw.baseAddress!, literal.utf8Start, literal.utf8CodeUnitCount) == 0
        }
        if let kind = rawString(members[.kind]), equals(kind, "Event") { return true }
        if let apiVersion = rawString(members[.apiVersion]), equals(apiVersion, "audit.k8s.io/", prefix: true) { return true }
        return members[.auditID] != nil && members[.verb] != nil
    }

    /// What a record needs before any rule is evaluated: the verdicts of `prefilter.mightMatch(record)` and,
    /// for a record it rejects and when `validate` is set, of ``validate(_:_:)`` — with the work in the order
    /// that costs least. The literal search comes first: a record holding the literals is a candidate
    /// whatever its escapes, and is decoded in full anyway. A record it rejects is judged by the
    /// validation-only pass, which also sees every escape that could spell a literal (`\u`, `\/`), so the
    /// prefilter's own scan for them runs only when the pass cannot judge the record.
    public func screen(_ record: UnsafeRawBufferPointer, prefilter: PrefilterSet, order: inout PrefilterSet.SearchOrder, validate: Bool,
                       _ onFailure: (AuditDecodeError) -> Void) -> Screening {
        if prefilter.literalsPresent(record, reordering: &order) { return .candidate }
        guard validate else { return Prefilter.hasUnsureEscape(record) ? .candidate : .rejected(events: 0) }
        switch quickVerdict(record) {
        case .oneEvent(let byteSearchable): return byteSearchable ? .rejected(events: 1) : .candidate
        case .undecided: return Prefilter.hasUnsureEscape(record) ? .candidate : .rejected(events: validateInFull(record, onFailure))
        }
    }
}

/// How a record fares before any rule is evaluated (``AuditRecordDecoder/screen(_:prefilter:order:validate:_:)``).
public enum Screening: Equatable, Sendable {
    /// Some rule might match it: decode it in full.
    case candidate
    /// No rule can match it. Judged, when asked, as `events` events (its failures reported); 0 when not judged.
    case rejected(events: Int)
}

/// Spans of JSON values found without building a tape.
public enum JSONSpan {
    /// The end of the JSON value that starts at `offset` (no whitespace before it), checked as the scanner
    /// checks (grammar, escapes, UTF-8, nesting): nil when it is not valid, or the check is unsure (the
    /// caller then parses it).
    public static func validValueEnd(_ buffer: UnsafeRawBufferPointer, from offset: Int, maxDepth: Int = 128) -> Int? {
        JSONValidator.valueEnd(buffer, from: offset, maxDepth: maxDepth)
    }

    /// The first offset at or after `offset` whose byte a string's reader must look at — a quote, a
    /// backslash, a control character or a non-ASCII byte — or the buffer's end; sixteen bytes a step.
    public static func plainStringTextEnd(_ buffer: UnsafeRawBufferPointer, from offset: Int) -> Int {
        guard let base = buffer.baseAddress, offset < buffer.count else { return buffer.count }
        return skipPlainStringBytes(base.assumingMemoryBound(to: UInt8.self), buffer.count, from: offset)
    }
}

/// The validation-only pass against the full decoder on the same bytes, for the fuzz target and the tests.
public enum ValidationDifferential {
    /// What the two paths disagree on, or nil: the validator's verdict against the scanner's, its root
    /// members against the tape's, and ``AuditRecordDecoder/validate(_:_:)`` against `decode`.
    public static func disagreement(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = 100) -> String? {
        let verdict = JSONValidator.validate(bytes, maxDepth: maxDepth)
        let tape = JSONTape()
        var scanned: JSONDocument?
        do throws(JSONSyntaxError) {
            scanned = try JSONDocument.parse(bytes, into: tape, maxDepth: maxDepth)
        } catch {}
        switch verdict {
        case .valid(let root, let members, let typesValid, let byteSearchable):
            guard let scanned else { return "the validator accepts what the scanner rejects" }
            if byteSearchable == Prefilter.hasUnsureEscape(bytes) { return "byte-searchable: \(byteSearchable), the escape scan's: \(!byteSearchable)" }
            if scanned.kind(0) != root { return "root kind \(root), the scanner's \(scanned.kind(0))" }
            if root == .object {
                let tapeMembers = RootIndex(scanned, 0)
                for key in RootKey.allCases {
                    let expected = tapeMembers[key].map { Int(scanned.entries[$0].start) - (scanned.kind($0) == .string ? 1 : 0) }
                    if members[key] != expected { return "member \(key) at \(members[key].map(String.init) ?? "-"), the tape's at \(expected.map(String.init) ?? "-")" }
                }
                let tapeTypesValid = AuditEvent.validateTypes(scanned, tapeMembers, prefix: "") == nil
                if typesValid != tapeTypesValid { return "types valid: \(typesValid), the decoder's check: \(tapeTypesValid)" }
            }
        case .invalid:
            // The scanner reads one value; a text it accepts whole must not be rejected.
            if scanned != nil { return "the validator rejects what the scanner accepts" }
        case .unsure:
            break
        }
        let decoder = AuditRecordDecoder(limits: DecoderLimits(maxDepth: maxDepth))
        var decoded: [String] = []
        decoder.decode(bytes, ingestTime: 0) { result in
            switch result {
            case .success: decoded.append("event")
            case .failure(let error): decoded.append(error.reason.rawValue)
            }
        }
        var validated: [String] = []
        let events = decoder.validate(bytes) { validated.append($0.reason.rawValue) }
        if validated != decoded.filter({ $0 != "event" }) || events != decoded.count(where: { $0 == "event" }) {
            return "validate gives \(events) events and failures \(validated), decode \(decoded)"
        }
        // Screening gives the prefilter's and the decoder's verdicts, whichever work it skips.
        for prefilter in screeningPrefilters {
            let candidate = prefilter.mightMatch(bytes)
            for validate in [true, false] {
                var order = PrefilterSet.SearchOrder()
                var failures: [String] = []
                let screening = decoder.screen(bytes, prefilter: prefilter, order: &order, validate: validate) { failures.append($0.reason.rawValue) }
                let expected: Screening = candidate ? .candidate : .rejected(events: validate ? events : 0)
                if screening != expected || (screening != .candidate && failures != (validate ? validated : [])) {
                    return "screening (validate: \(validate)) gives \(screening) and failures \(failures), expected \(expected) and \(validate ? validated : [])"
                }
            }
        }
        return nil
    }

    /// The seed rule's prefilter, which rejects most records, and one that passes most (audit events name
    /// a `verb`).
    private static let screeningPrefilters = [
        PrefilterSet([Prefilter(requirements: [["forbid"], ["system:serviceaccount:"]])]),
        PrefilterSet([Prefilter(requirements: [["verb"]])]),
    ]

    /// Whether the record took the validation-only pass (for tests that must see it used).
    public static func tookQuickPath(_ bytes: UnsafeRawBufferPointer) -> Bool { AuditRecordDecoder().quickVerdict(bytes) != .undecided }
}
