// Canonical JSON written front to back: alert documents, match records and window state without a tree.
import AuditEvents

/// Canonical JSON written front to back: objects whose members the caller gives in key order.
struct JSONObjectWriter {
    private(set) var bytes: [UInt8] = []
    /// Per open object: whether a member was written (the next one needs a comma).
    private var started: [Bool] = []

    init(capacity: Int) { bytes.reserveCapacity(capacity) }

    mutating func raw(_ text: StaticString) { bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)) }
    mutating func raw(_ value: some Collection<UInt8>) { bytes.append(contentsOf: value) }
    mutating func string(_ text: String) { writeJSONString(text, to: &bytes) }
    mutating func number(_ value: Int64) {
        // Digits written straight into the output: `String(value)` made a string per number, and every state
        // record holds several (offsets, times, counts).
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for UInt64's 20 digits
        withUnsafeMutableBytes(of: &scratch) { digits in
            var start = digits.count
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: digits[start...]))
        }
    }

    mutating func timestamp(_ milliseconds: Int64) {
        bytes.append(UInt8(ascii: "\""))
        Timestamp.appendRFC3339(milliseconds: milliseconds, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func object(_ body: (inout JSONObjectWriter) -> Void) {
        bytes.append(UInt8(ascii: "{"))
        started.append(false)
        body(&self)
        started.removeLast()
        bytes.append(UInt8(ascii: "}"))
    }

    /// A member of the innermost open object whose name is written in the source: its bytes go out as they
    /// are (no such name needs an escape), without a `String`'s escape check.
    mutating func member(_ key: StaticString, _ value: (inout JSONObjectWriter) -> Void) {
        let name = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        assert(name.allSatisfy { $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }, "member name \(key) needs escaping")
        startMember()
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: name)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        value(&self)
    }

    /// A member whose name is data (a spliced document's).
    mutating func member(named key: String, _ value: (inout JSONObjectWriter) -> Void) {
        startMember()
        writeJSONString(key, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        value(&self)
    }

    /// The comma before every member of an object but its first.
    @inline(__always)
    private mutating func startMember() {
        if started[started.count - 1] { bytes.append(UInt8(ascii: ",")) }
        started[started.count - 1] = true
    }

    /// An object of canonical members (values as bytes) and written ones, both in key order, merged; on a
    /// key in both, the written one.
    mutating func mergedObject(_ spliced: [(key: String, value: ArraySlice<UInt8>)], with written: [(key: String, write: (inout JSONObjectWriter) -> Void)]) {
        object { out in
            var next = 0
            for member in spliced {
                while next < written.count, written[next].key < member.key {
                    out.member(named: written[next].key, written[next].write)
                    next += 1
                }
                if next < written.count, written[next].key == member.key { continue }
                out.member(named: member.key) { $0.raw(member.value) }
            }
            for member in written[next...] { out.member(named: member.key, member.write) }
        }
    }

    /// A window's summary in key order: `kibana.alert.suppression.summary` (times as timestamps) or the
    /// changelog's (times as numbers).
    mutating func summary(_ summary: SuppressionSummary, timesAsNumbers: Bool = false) {
        object { out in
            out.member("count") { $0.number(Int64(summary.count)) }
            out.member("first_seen") { timesAsNumbers ? $0.number(summary.firstSeen) : $0.timestamp(summary.firstSeen) }
            out.member("last_seen") { timesAsNumbers ? $0.number(summary.lastSeen) : $0.timestamp(summary.lastSeen) }
            out.member("namespaces") { $0.strings(summary.namespaces) }
            out.member("resources") { $0.strings(summary.resources) }
            out.member("response_codes") { $0.strings(summary.responseCodes) }
            out.member("source_ips") { $0.strings(summary.sourceIPs) }
            out.member("user_agents") { $0.strings(summary.userAgents) }
            out.member("verbs") { $0.strings(summary.verbs) }
        }
    }

    /// `[…]`, each element written by `element`.
    mutating func array<Elements: Sequence>(_ elements: Elements, _ element: (inout JSONObjectWriter, Elements.Element) -> Void) {
        bytes.append(UInt8(ascii: "["))
        for (index, value) in elements.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            element(&self, value)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    /// `{…}` of a map's entries in key order (the order sorted serialization gives), each value written by `value`.
    mutating func sortedMap<Value>(_ map: [String: Value], _ value: (inout JSONObjectWriter, Value) -> Void) {
        bytes.append(UInt8(ascii: "{"))
        for (index, entry) in map.sorted(by: { $0.key < $1.key }).enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            string(entry.key)
            bytes.append(UInt8(ascii: ":"))
            value(&self, entry.value)
        }
        bytes.append(UInt8(ascii: "}"))
    }

    /// `[…]` of strings.
    mutating func strings(_ values: [String]) { array(values) { $0.string($1) } }

    /// `[…]` of strings, nil as null (group-by values).
    mutating func optionalStrings(_ values: [String?]) {
        array(values) { out, value in
            if let value { out.string(value) } else { out.raw("null") }
        }
    }

    /// A record's position, `{"offset":…,"partition":…,"topic":…}`.
    mutating func position(_ position: RecordPosition) {
        raw(#"{"offset":"#)
        number(position.offset)
        raw(#","partition":"#)
        number(Int64(position.partition))
        raw(#","topic":"#)
        string(position.topic)
        raw("}")
    }
}
