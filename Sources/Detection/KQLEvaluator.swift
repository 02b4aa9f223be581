import AuditEvents

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a compiled query reads: an event's ECS fields. ``AuditEvent`` (lazy, from record bytes) and
/// ``JSONObject`` (a materialized document, e.g. one object of a nested field) both provide it.
public protocol KQLDocument {
    /// Every value of the field (array elements one by one); `body` returns false to stop.
    @discardableResult
    func forEachValue(of field: FieldPath, _ body: (FieldValue) -> Bool) -> Bool
    /// The objects of a field, for nested queries.
    func nestedObjects(of field: FieldPath) -> [JSONObject]
    /// Every leaf value of the document, for free-text queries.
    func forEachLeaf(_ body: (FieldValue) -> Bool)
}

extension AuditEvent: KQLDocument {
    public func nestedObjects(of field: FieldPath) -> [JSONObject] { normalized().nestedObjects(of: field) }
    public func forEachLeaf(_ body: (FieldValue) -> Bool) { normalized().forEachLeaf(body) }
}

extension JSONObject: KQLDocument {
    @discardableResult
    public func forEachValue(of field: FieldPath, _ body: (FieldValue) -> Bool) -> Bool {
        Self.visit(.object(self), Substring(field.name), body)
    }

    public func nestedObjects(of field: FieldPath) -> [JSONObject] {
        var objects: [JSONObject] = []
        Self.collect(.object(self), Substring(field.name)) { value in
            switch value {
            case .object(let object): objects.append(object)
            case .array(let elements): objects += elements.compactMap(\.objectValue)
            default: break
            }
        }
        return objects
    }

    public func forEachLeaf(_ body: (FieldValue) -> Bool) {
        func walk(_ value: JSONValue) -> Bool {
            switch value {
            case .object(let object): return object.allSatisfy { walk($0.value) }
            case .array(let elements): return elements.allSatisfy(walk)
            default: return Self.emit(value, body)
            }
        }
        _ = walk(.object(self))
    }

    /// ES-style path resolution: keys may contain dots, arrays are walked element by element.
    static func collect(_ value: JSONValue, _ path: Substring, _ body: (JSONValue) -> Void) {
        if path.isEmpty { return body(value) }
        switch value {
        case .object(let object):
            for member in object {
                if member.key == path {
                    body(member.value)
                } else if path.hasPrefix(member.key), path.dropFirst(member.key.count).first == "." {
                    collect(member.value, path.dropFirst(member.key.count + 1), body)
                }
            }
        case .array(let elements):
            for element in elements { collect(element, path, body) }
        default: break
        }
    }

    static func visit(_ root: JSONValue, _ path: Substring, _ body: (FieldValue) -> Bool) -> Bool {
        var keepGoing = true
        collect(root, path) { value in
            if keepGoing { keepGoing = emit(value, body) }
        }
        return keepGoing
    }

    static func emit(_ value: JSONValue, _ body: (FieldValue) -> Bool) -> Bool {
        switch value {
        case .null: return true
        case .string(let text): return text.isEmpty ? true : body(FieldValue(string: text))
        case .number(let number): return body(FieldValue(number: number.text))
        case .bool(let flag): return body(FieldValue(bool: flag))
        case .array(let elements): return elements.allSatisfy { emit($0, body) }
        case .object(let object): return object.isEmpty ? true : body(FieldValue(objectMarker: ()))
        }
    }
}

/// A query compiled once: field paths resolved against the ECS view, wildcards split into prefix/suffix/
/// contains checks, numbers and IP ranges parsed.
public struct CompiledQuery: Sendable, CustomStringConvertible {
    indirect enum Node: Sendable {
        case or([Node])
        case and([Node])
        case not(Node)
        case field(FieldPath, ValueNode)
        case range(FieldPath, KQLRangeOperator, RangeBound)
        case nested(FieldPath, Node)
        case freeText(ValueNode)
        case constant(Bool)
    }

    indirect enum ValueNode: Sendable {
        case or([ValueNode])
        case and([ValueNode])
        case not(ValueNode)
        case match(Matcher)
    }

    enum RangeBound: Sendable {
        case number(Double)
        case date(Int64)
        case string([UInt8])
    }

    let root: Node
    let program: Program
    public let source: KQLQuery

    public init(_ query: KQLQuery) {
        source = query
        root = Self.compile(query)
        program = Program(root)
    }

    public init(parsing text: String) throws(KQLSyntaxError) {
        self.init(try KQLParser.parse(text))
    }

    public var description: String { source.description }

    /// Whether the document matches.
    public func matches(_ document: some KQLDocument) -> Bool { Self.evaluate(root, document) }

    /// The hot path: a concrete entry point, so the evaluator is specialized for ``AuditEvent`` here.
    public func matches(_ event: AuditEvent) -> Bool { program.matches(event) }

    // MARK: Compilation

    static func compile(_ query: KQLQuery) -> Node {
        switch query {
        case .or(let parts): return .or(parts.map(compile))
        case .and(let parts): return .and(parts.map(compile))
        case .not(let inner): return .not(compile(inner))
        case .field(let name, let values): return .field(FieldPath(name), compile(values))
        case .range(let name, let op, let value): return .range(FieldPath(name), op, RangeBound(value))
        case .nested(let name, let inner): return .nested(FieldPath(name), compile(inner))
        case .freeText(let values): return .freeText(compile(values))
        }
    }

    static func compile(_ values: KQLValues) -> ValueNode {
        switch values {
        case .or(let parts): return .or(parts.map(compile))
        case .and(let parts): return .and(parts.map(compile))
        case .not(let inner): return .not(compile(inner))
        case .value(let value): return .match(Matcher(value))
        }
    }

    // MARK: Evaluation

    static func evaluate(_ node: Node, _ document: some KQLDocument) -> Bool {
        switch node {
        case .and(let parts):
            for part in parts where !evaluate(part, document) { return false }
            return true
        case .or(let parts):
            for part in parts where evaluate(part, document) { return true }
            return false
        case .not(let inner):
            return !evaluate(inner, document)
        case .field(let field, let values):
            return evaluate(values, field, document)
        case .range(let field, let op, let bound):
            var matched = false
            document.forEachValue(of: field) { value in
                matched = bound.satisfied(by: value, op)
                return !matched
            }
            return matched
        case .nested(let field, let inner):
            return document.nestedObjects(of: field).contains { evaluate(inner, $0) }
        case .freeText(let values):
            var matched = false
            document.forEachLeaf { value in
                matched = evaluate(values, single: value)
                return !matched
            }
            return matched
        case .constant(let value):
            return value
        }
    }

    /// `field:(values)`: a list's `and`/`or`/`not` combine per field, as KQL defines it (`f:(a and b)` is
    /// `f:a and f:b`, `f:(not a)` is `not f:a`).
    static func evaluate(_ values: ValueNode, _ field: FieldPath, _ document: some KQLDocument) -> Bool {
        switch values {
        case .or(let parts):
            for part in parts where evaluate(part, field, document) { return true }
            return false
        case .and(let parts):
            for part in parts where !evaluate(part, field, document) { return false }
            return true
        case .not(let inner):
            return !evaluate(inner, field, document)
        case .match(let matcher):
            var matched = false
            document.forEachValue(of: field) { value in
                matched = matcher.matches(value)
                return !matched
            }
            return matched
        }
    }

    /// Free text: the value list applied to one leaf.
    static func evaluate(_ values: ValueNode, single value: FieldValue) -> Bool {
        switch values {
        case .or(let parts): parts.contains { evaluate($0, single: value) }
        case .and(let parts): parts.allSatisfy { evaluate($0, single: value) }
        case .not(let inner): !evaluate(inner, single: value)
        case .match(let matcher): matcher.matches(value)
        }
    }

    // MARK: Prefilter literals

    /// Literals every matching record must contain, for ``Prefilter``: a conjunction of alternatives, or
    /// nil when nothing can be required. Only fields whose values come verbatim from the record count; a
    /// derived field (`event.outcome`, `source.ip`, constants) requires nothing.
    public var requiredLiterals: [[String]]? {
        let groups = Self.literals(root)
        return groups.isEmpty ? nil : groups
    }

    static func literals(_ node: Node) -> [[String]] {
        switch node {
        case .and(let parts): return parts.flatMap(literals)
        case .or(let parts): return PrefilterLiterals.disjunction(parts.map(literals))
        case .field(let field, let values):
            guard field.valuesAreVerbatim else { return [] }
            return literals(values)
        case .not, .range, .nested, .freeText, .constant: return []
        }
    }

    static func literals(_ values: ValueNode) -> [[String]] {
        switch values {
        case .and(let parts): return parts.flatMap(literals)
        case .or(let parts):
            var group: [String] = []
            for part in parts {
                guard let best = literals(part).first else { return [] }
                group += best
            }
            return group.isEmpty ? [] : [Array(Set(group)).sorted()]
        case .not: return []
        case .match(let matcher): return matcher.requiredLiteral.map { [[$0]] } ?? []
        }
    }
}

extension CompiledQuery.RangeBound {
    init(_ value: KQLValue) {
        let text: String
        switch value {
        case .phrase(let phrase): text = phrase
        case .keyword(let keyword): text = keyword
        case .wildcard(let pieces): text = pieces.joined(separator: "*")
        }
        if let number = Double(text) {
            self = .number(number)
        } else if let date = Timestamp.milliseconds(fromRFC3339: text) ?? Timestamp.milliseconds(fromRFC3339: text + "T00:00:00Z") {
            self = .date(date)
        } else {
            self = .string(Array(text.utf8))
        }
    }

    func satisfied(by value: FieldValue, _ op: KQLRangeOperator) -> Bool {
        func compare<T: Comparable>(_ lhs: T, _ rhs: T) -> Bool {
            switch op {
            case .less: lhs < rhs
            case .lessOrEqual: lhs <= rhs
            case .greater: lhs > rhs
            case .greaterOrEqual: lhs >= rhs
            }
        }
        switch self {
        case .number(let bound):
            guard value.kind == .number || value.kind == .string, let number = value.doubleValue else { return false }
            return compare(number, bound)
        case .date(let bound):
            guard value.kind == .string, let date = Timestamp.milliseconds(fromRFC3339: value.stringValue) else { return false }
            return compare(date, bound)
        case .string(let bound):
            guard value.kind == .string else { return false }
            let ordering = value.withBytes { bytes -> Int in
                let text = Array(bytes)
                return text == bound ? 0 : (text.lexicographicallyPrecedes(bound) ? -1 : 1)
            }
            return compare(ordering, 0)
        }
    }
}

/// One compiled KQL value, matched against one field value (a class: evaluation passes it by reference).
final class Matcher: Sendable {
    enum Kind: Sendable {
        /// `*`: any value.
        case exists
        /// Full, case-sensitive equality with the bytes (quoted phrase or plain keyword).
        case equals([UInt8])
        case prefix([UInt8])
        case suffix([UInt8])
        case contains([UInt8])
        case prefixSuffix([UInt8], [UInt8])
        /// General pattern: first piece is a prefix, last a suffix, the middle ones in order.
        case pattern([[UInt8]])
    }

    let kind: Kind
    /// Unquoted `true`/`false`: also equal to JSON booleans.
    let boolean: Bool?
    /// Unquoted (or quoted) numbers: also equal to JSON numbers of that value.
    let number: Double?
    /// An IP address or CIDR block: matches IP values inside it.
    let network: IPNetwork?

    init(_ value: KQLValue) {
        switch value {
        case .phrase(let text):
            kind = .equals(Array(text.utf8))
            boolean = nil
            number = Double(text)
            network = nil
        case .keyword(let text):
            kind = .equals(Array(text.utf8))
            boolean = text == "true" ? true : (text == "false" ? false : nil)
            number = Double(text)
            network = IPNetwork(text)
        case .wildcard(let pieces):
            let bytes = pieces.map { Array($0.utf8) }
            boolean = nil
            number = nil
            network = nil
            if bytes.allSatisfy(\.isEmpty) {
                kind = .exists
            } else if bytes.count == 2, bytes[1].isEmpty {
                kind = .prefix(bytes[0])
            } else if bytes.count == 2, bytes[0].isEmpty {
                kind = .suffix(bytes[1])
            } else if bytes.count == 2 {
                kind = .prefixSuffix(bytes[0], bytes[1])
            } else if bytes.count == 3, bytes[0].isEmpty, bytes[2].isEmpty {
                kind = .contains(bytes[1])
            } else {
                kind = .pattern(bytes)
            }
        }
    }

    func matches(_ value: FieldValue) -> Bool {
        if case .exists = kind { return true }
        switch value.kind {
        case .object: return false
        case .bool:
            if let boolean { return value.boolValue == boolean }
        case .number:
            if let number { return value.doubleValue == number }
        case .string: break
        }
        if let network, value.kind == .string, let address = IPNetwork.address(value.stringValue) {
            return network.contains(address)
        }
        return value.withBytes { bytes in
            switch kind {
            case .exists: return true
            case .equals(let literal): return Self.equal(bytes, literal)
            case .prefix(let prefix): return Self.hasPrefix(bytes, prefix)
            case .suffix(let suffix): return Self.hasSuffix(bytes, suffix)
            case .prefixSuffix(let prefix, let suffix):
                return bytes.count >= prefix.count + suffix.count && Self.hasPrefix(bytes, prefix) && Self.hasSuffix(bytes, suffix)
            case .contains(let needle): return Self.find(needle, in: bytes, from: 0) != nil
            case .pattern(let pieces): return Self.matchPattern(pieces, bytes)
            }
        }
    }

    /// The literal a record must contain for this value to match, if any (long enough to be selective).
    var requiredLiteral: String? {
        let candidate: [UInt8]
        switch kind {
        case .exists: return nil
        case .equals(let literal): candidate = literal
        case .prefix(let piece), .suffix(let piece), .contains(let piece): candidate = piece
        case .prefixSuffix(let prefix, let suffix): candidate = prefix.count >= suffix.count ? prefix : suffix
        case .pattern(let pieces): candidate = pieces.max { $0.count < $1.count } ?? []
        }
        // Booleans, numbers and IP forms can be written in other ways in JSON.
        guard candidate.count >= 3, boolean == nil, number == nil, network == nil else { return nil }
        return String(decoding: candidate, as: UTF8.self)
    }

    @inline(__always)
    static func equal(_ bytes: UnsafeRawBufferPointer, _ literal: [UInt8]) -> Bool {
        guard bytes.count == literal.count else { return false }
        if literal.isEmpty { return true }
        return literal.withUnsafeBytes { memcmp(bytes.baseAddress!, $0.baseAddress!, literal.count) == 0 }
    }

    @inline(__always)
    static func hasPrefix(_ bytes: UnsafeRawBufferPointer, _ prefix: [UInt8]) -> Bool {
        guard bytes.count >= prefix.count else { return false }
        if prefix.isEmpty { return true }
        return prefix.withUnsafeBytes { memcmp(bytes.baseAddress!, $0.baseAddress!, prefix.count) == 0 }
    }

    @inline(__always)
    static func hasSuffix(_ bytes: UnsafeRawBufferPointer, _ suffix: [UInt8]) -> Bool {
        guard bytes.count >= suffix.count else { return false }
        if suffix.isEmpty { return true }
        return suffix.withUnsafeBytes { memcmp(bytes.baseAddress! + (bytes.count - suffix.count), $0.baseAddress!, suffix.count) == 0 }
    }

    static func find(_ needle: [UInt8], in bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard needle.count <= bytes.count - start else { return nil }
        if needle.isEmpty { return start }
        var index = start
        while index + needle.count <= bytes.count {
            if bytes[index] == needle[0], needle.withUnsafeBytes({ memcmp(bytes.baseAddress! + index, $0.baseAddress!, needle.count) == 0 }) {
                return index
            }
            index += 1
        }
        return nil
    }

    static func matchPattern(_ pieces: [[UInt8]], _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let first = pieces.first, let last = pieces.last,
            bytes.count >= pieces.reduce(0, { $0 + $1.count }), hasPrefix(bytes, first), hasSuffix(bytes, last)
        else { return false }
        var cursor = first.count
        let end = bytes.count - last.count
        for piece in pieces.dropFirst().dropLast() where !piece.isEmpty {
            guard let found = find(piece, in: UnsafeRawBufferPointer(rebasing: bytes[..<end]), from: cursor) else { return false }
            cursor = found + piece.count
        }
        return cursor <= end
    }
}

/// An IPv4 or IPv6 address or CIDR block, for `source.ip: 10.0.0.0/8`.
struct IPNetwork: Sendable, Equatable {
    let address: [UInt8]
    let prefixLength: Int

    init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let address = Self.address(String(first)) else { return nil }
        let length = parts.count == 2 ? Int(parts[1]) : address.count * 8
        guard let length, (0...(address.count * 8)).contains(length) else { return nil }
        self.address = address
        self.prefixLength = length
    }

    static func address(_ text: String) -> [UInt8]? {
        guard text.contains(".") || text.contains(":") else { return nil }
        var v4 = [UInt8](repeating: 0, count: 4)
        var v6 = [UInt8](repeating: 0, count: 16)
        if text.withCString({ inet_pton(AF_INET, $0, &v4) }) == 1 { return v4 }
        if text.withCString({ inet_pton(AF_INET6, $0, &v6) }) == 1 {
            // IPv4-mapped IPv6 addresses compare as IPv4, as Elasticsearch's ip type does.
            if v6[0..<10].allSatisfy({ $0 == 0 }) && v6[10] == 0xFF && v6[11] == 0xFF { return Array(v6[12...]) }
            return v6
        }
        return nil
    }

    func contains(_ other: [UInt8]) -> Bool {
        guard other.count == address.count else { return false }
        var bits = prefixLength
        for index in 0..<address.count where bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if address[index] & mask != other[index] & mask { return false }
            bits -= 8
        }
        return true
    }
}

/// The compiled query flattened for ``AuditEvent``s: instructions in one buffer, children by index, fields
/// and matchers referenced without reference counting (``owners`` keeps them alive). Evaluating a rule then
/// costs no retain or release; ranges, nested and free-text queries fall back to the tree evaluator.
final class Program: @unchecked Sendable {
    enum Op: UInt8 { case and, or, not, field, constant, fallback, valueAnd, valueOr, valueNot, match }

    struct Instruction {
        var op: Op
        var first: Int32 = 0
        var count: Int32 = 0
        var flag = false
        unowned(unsafe) var field: FieldPath?
        unowned(unsafe) var matcher: Matcher?
        var fallback: Int32 = -1
    }

    private var instructions: [Instruction] = []
    private var links: [Int32] = []
    private var owners: [AnyObject] = []
    private var fallbacks: [CompiledQuery.Node] = []
    /// Stable copies of `instructions` and `links` that evaluation reads through raw pointers.
    private var instructionBufferStorage: UnsafeMutableBufferPointer<Instruction> = .init(start: nil, count: 0)
    private var linkBufferStorage: UnsafeMutableBufferPointer<Int32> = .init(start: nil, count: 0)

    init(_ root: CompiledQuery.Node) {
        _ = emit(root)
        instructionBufferStorage = .allocate(capacity: max(1, instructions.count))
        _ = instructionBufferStorage.initialize(from: instructions)
        linkBufferStorage = .allocate(capacity: max(1, links.count))
        _ = linkBufferStorage.initialize(from: links)
    }

    deinit {
        instructionBufferStorage.deallocate()
        linkBufferStorage.deallocate()
    }

    /// Appends the node (children first, then itself) and returns its index.
    private func emit(_ node: CompiledQuery.Node) -> Int32 {
        var instruction: Instruction
        switch node {
        case .and(let parts), .or(let parts):
            let children = parts.map(emit)
            instruction = Instruction(op: { if case .and = node { return .and } else { return .or } }())
            instruction.first = Int32(links.count)
            instruction.count = Int32(children.count)
            links += children
        case .not(let inner):
            let child = emit(inner)
            instruction = Instruction(op: .not, first: Int32(links.count), count: 1)
            links.append(child)
        case .field(let field, let values):
            let child = emit(values)
            owners.append(field)
            instruction = Instruction(op: .field, first: Int32(links.count), count: 1, field: field)
            links.append(child)
        case .constant(let value):
            instruction = Instruction(op: .constant, flag: value)
        case .range, .nested, .freeText:
            instruction = Instruction(op: .fallback, fallback: Int32(fallbacks.count))
            fallbacks.append(node)
        }
        instructions.append(instruction)
        return Int32(instructions.count - 1)
    }

    private func emit(_ values: CompiledQuery.ValueNode) -> Int32 {
        var instruction: Instruction
        switch values {
        case .and(let parts), .or(let parts):
            let children = parts.map(emit)
            instruction = Instruction(op: { if case .and = values { return .valueAnd } else { return .valueOr } }())
            instruction.first = Int32(links.count)
            instruction.count = Int32(children.count)
            links += children
        case .not(let inner):
            let child = emit(inner)
            instruction = Instruction(op: .valueNot, first: Int32(links.count), count: 1)
            links.append(child)
        case .match(let matcher):
            owners.append(matcher)
            instruction = Instruction(op: .match, matcher: matcher)
        }
        instructions.append(instruction)
        return Int32(instructions.count - 1)
    }

    /// Whether the event matches; the root is the last instruction emitted.
    func matches(_ event: AuditEvent) -> Bool {
        evaluate(at: instructions.count - 1, event)
    }

    private func evaluate(at index: Int, _ event: AuditEvent) -> Bool {
        let instruction = instructionBufferStorage[index]
        switch instruction.op {
        case .and:
            for link in Int(instruction.first)..<Int(instruction.first + instruction.count)
            where !evaluate(at: Int(linkBufferStorage[link]), event) {
                return false
            }
            return true
        case .or:
            for link in Int(instruction.first)..<Int(instruction.first + instruction.count)
            where evaluate(at: Int(linkBufferStorage[link]), event) {
                return true
            }
            return false
        case .not:
            return !evaluate(at: Int(linkBufferStorage[Int(instruction.first)]), event)
        case .field:
            return evaluateValues(at: Int(linkBufferStorage[Int(instruction.first)]), instruction.field.unsafelyUnwrapped, event)
        case .constant:
            return instruction.flag
        case .fallback:
            return CompiledQuery.evaluate(fallbacks[Int(instruction.fallback)], event)
        case .valueAnd, .valueOr, .valueNot, .match:
            return false  // value instructions are reached through a field
        }
    }

    private func evaluateValues(at index: Int, _ field: FieldPath, _ event: AuditEvent) -> Bool {
        let instruction = instructionBufferStorage[index]
        switch instruction.op {
        case .valueAnd:
            for link in Int(instruction.first)..<Int(instruction.first + instruction.count)
            where !evaluateValues(at: Int(linkBufferStorage[link]), field, event) {
                return false
            }
            return true
        case .valueOr:
            for link in Int(instruction.first)..<Int(instruction.first + instruction.count)
            where evaluateValues(at: Int(linkBufferStorage[link]), field, event) {
                return true
            }
            return false
        case .valueNot:
            return !evaluateValues(at: Int(linkBufferStorage[Int(instruction.first)]), field, event)
        case .match:
            let matcher = instruction.matcher.unsafelyUnwrapped
            var matched = false
            event.forEachValue(of: field) { value in
                matched = matcher.matches(value)
                return !matched
            }
            return matched
        default:
            return false
        }
    }
}
