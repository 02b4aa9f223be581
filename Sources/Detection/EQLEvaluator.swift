// EQL evaluation of event queries over a document's field view: Elasticsearch's semantics, three-valued logic.
import AuditEvents
import Foundation

/// An event query ready to run against any ``KQLDocument`` (an ``AuditEvent``'s lazy field view, or a
/// normalized ECS document), as Elasticsearch evaluates EQL:
/// - a missing field is `null`; comparisons with `null` are `null`, and `and`/`or`/`not` follow three-valued
///   (Kleene) logic, so `not a == "x"` is not true for an event without `a`; `a == null` tests for absence;
/// - a multi-valued field is compared value by value: `user.groups == "system:masters"` is true when any
///   value is (`!=` is true when none is);
/// - `==`, `!=`, `in`, `like`, the string functions are case-sensitive; `:`, `in~`, `like~` and the `~`
///   functions ignore case;
/// - patterns (`like`, `:` and `wildcard`) know `*` and `?`, matched in time linear in the text for a given
///   pattern (text an attacker controls cannot slow a rule down); `regex` takes Lucene's syntax, matched
///   by ``LinearRegex`` in linear time too.
public struct EQLEventMatcher: Sendable {
    public let query: EQLEventQuery
    private let condition: Node
    private let category: String?

    public init(_ query: EQLEventQuery) throws(EQLSyntaxError) {
        self.query = query
        category = query.category
        condition = try Node(query.condition)
    }

    public init(parsing text: String) throws(EQLSyntaxError) {
        guard case .event(let query) = try EQLParser.parse(text) else {
            throw EQLSyntaxError(message: "a sequence", position: 0, expected: "an event query (a sequence runs as a rule, or with match --eql)")
        }
        try self.init(query)
    }

    /// Whether the event matches: the condition is true (null and false do not match).
    public func matches(_ document: some KQLDocument) -> Bool {
        if let category, !Self.hasCategory(document, category) { return false }
        return condition.truth(document) == true
    }

    static let categoryField = FieldPath("event.category")

    /// Literals every matching record must contain, for ``Prefilter`` (as ``CompiledQuery/requiredLiterals``
    /// for KQL): a conjunction of alternatives, or nil. Only case-sensitive tests of fields whose values come
    /// verbatim from the record count; a `not`, a `~` or a derived field requires nothing.
    public var requiredLiterals: [[String]]? {
        let groups = Self.literals(condition)
        return groups.isEmpty ? nil : groups
    }

    static func literals(_ node: Node) -> [[String]] {
        func verbatim(_ node: Node) -> Bool {
            if case .field(let path) = node { return path.valuesAreVerbatim }
            return false
        }
        func selective(_ strings: [String]) -> [[String]] {
            strings.isEmpty || strings.contains { $0.utf8.count < 3 } ? [] : [Array(Set(strings)).sorted()]
        }
        switch node {
        case .and(let parts): return parts.flatMap(literals)
        case .or(let parts): return PrefilterLiterals.disjunction(parts.map(literals))
        case .compare(let left, .equal, let right):
            for (field, value) in [(left, right), (right, left)] where verbatim(field) {
                if case .literal(let box) = value, case .string(let text) = box.value { return selective([text]) }
            }
            return []
        case .fieldEquals(let path, let literals, negated: false) where path.valuesAreVerbatim:
            return selective(literals.texts)
        case .membership(let field, let list, false, false) where verbatim(field):
            var strings: [String] = []
            for item in list {
                guard case .literal(let box) = item, case .string(let text) = box.value else { return [] }
                strings.append(text)
            }
            return selective(strings)
        case .patterns(let field, let patterns) where verbatim(field):
            var pieces: [String] = []
            for pattern in patterns {
                guard !pattern.caseInsensitive else { return [] }
                let longest = String(String.UnicodeScalarView(pattern.scalars)).split(whereSeparator: { $0 == "*" || $0 == "?" })
                    .max { $0.utf8.count < $1.utf8.count }
                guard let longest else { return [] }
                pieces.append(String(longest))
            }
            return selective(pieces)
        default: return []
        }
    }

    private static func hasCategory(_ document: some KQLDocument, _ category: String) -> Bool {
        var found = false
        document.forEachValue(of: categoryField) { value in
            found = value.stringValue == category
            return !found
        }
        return found
    }

    // MARK: The compiled tree

    /// EQL's run-time values: a field with several values is a list, compared value by value.
    enum Value: Equatable {
        case null
        case string(String)
        case number(Double)
        case boolean(Bool)
        case list([Value])

        /// The values to compare one by one (a scalar is a list of one; null, none).
        var elements: [Value] {
            switch self {
            case .null: []
            case .list(let values): values
            default: [self]
            }
        }
    }

    indirect enum Node: Sendable {
        case literal(ValueBox)
        case field(FieldPath)
        case not(Node)
        case and([Node])
        case or([Node])
        case compare(Node, EQLComparison, Node)
        case membership(Node, [Node], caseInsensitive: Bool, negated: Bool)
        case patterns(Node, [Pattern])
        /// `regex` / `regex~`: Lucene's syntax, whole values, linear time.
        case regexes(Node, [LinearRegex])
        case function(Function, [Node], caseInsensitive: Bool)
        case arithmetic(Node, EQLArithmetic, Node)
        case negate(Node)
        /// `field == "s"`, `field != "s"`, `field in ("a", "b")`, `field not in (…)`, case-sensitive: compared on
        /// the value's bytes, no string built (the common test of a rule). Same truth as the general forms.
        case fieldEquals(FieldPath, LiteralBytes, negated: Bool)

        init(_ expression: EQLExpression) throws(EQLSyntaxError) {
            switch expression {
            case .literal(let literal): self = .literal(ValueBox(Self.value(literal)))
            case .field(let path): self = .field(FieldPath(path))
            case .not(let inner): self = .not(try Node(inner))
            case .and(let parts): self = .and(try parts.map { (part) throws(EQLSyntaxError) in try Node(part) })
            case .or(let parts): self = .or(try parts.map { (part) throws(EQLSyntaxError) in try Node(part) })
            case .compare(.field(let path), let op, .literal(.string(let text))) where op == .equal || op == .notEqual:
                self = .fieldEquals(FieldPath(path), LiteralBytes([text]), negated: op == .notEqual)
            case .compare(let left, let op, let right): self = .compare(try Node(left), op, try Node(right))
            case .membership(.field(let path), let list, false, let negated)
                where !list.isEmpty && list.allSatisfy({ if case .literal(.string) = $0 { true } else { false } }):
                let texts = list.map { item -> String in if case .literal(.string(let text)) = item { text } else { "" } }
                self = .fieldEquals(FieldPath(path), LiteralBytes(texts), negated: negated)
            case .membership(let value, let list, let insensitive, let negated):
                self = .membership(try Node(value), try list.map { (item) throws(EQLSyntaxError) in try Node(item) },
                                   caseInsensitive: insensitive, negated: negated)
            case .stringPredicate(let value, let predicate, let patterns, let insensitive):
                if predicate == .regex {
                    var compiled: [LinearRegex] = []
                    for pattern in patterns {
                        guard case .literal(.string(let text)) = pattern else {
                            throw EQLSyntaxError(message: "a regular expression must be a string", position: 0, expected: "a quoted pattern")
                        }
                        do {
                            compiled.append(try LinearRegex(lucene: text, caseInsensitive: insensitive))
                        } catch {
                            throw EQLSyntaxError(message: "in regex \(EQLExpression.quote(text)): \(error.message) at character \(error.position)",
                                                 position: 0, expected: error.expected)
                        }
                    }
                    self = .regexes(try Node(value), compiled)
                    return
                }
                var compiled: [Pattern] = []
                for pattern in patterns {
                    guard case .literal(.string(let text)) = pattern else {
                        throw EQLSyntaxError(message: "a pattern must be a string", position: 0, expected: "a quoted pattern")
                    }
                    compiled.append(Pattern(text, caseInsensitive: insensitive))
                }
                self = .patterns(try Node(value), compiled)
            case .function(let name, let arguments, let insensitive):
                guard let function = Function(rawValue: name) else {
                    throw EQLSyntaxError(message: "unknown function \(name)", position: 0,
                                         expected: "one of " + Function.allCases.map(\.rawValue).joined(separator: ", "))
                }
                guard function.arity.contains(arguments.count) else {
                    throw EQLSyntaxError(message: "\(name) takes \(function.arity.lowerBound)…\(function.arity.upperBound == .max ? "n" : "\(function.arity.upperBound)") arguments, not \(arguments.count)",
                                         position: 0, expected: "the function's arguments")
                }
                if function == .wildcard {
                    // wildcard(value, patterns…): compiled like `like`.
                    var compiled: [Pattern] = []
                    for pattern in arguments.dropFirst() {
                        guard case .literal(.string(let text)) = pattern else {
                            throw EQLSyntaxError(message: "a wildcard pattern must be a string", position: 0, expected: "a quoted pattern")
                        }
                        compiled.append(Pattern(text, caseInsensitive: insensitive))
                    }
                    self = .patterns(try Node(arguments[0]), compiled)
                    return
                }
                self = .function(function, try arguments.map { (argument) throws(EQLSyntaxError) in try Node(argument) }, caseInsensitive: insensitive)
            case .arithmetic(let left, let op, let right): self = .arithmetic(try Node(left), op, try Node(right))
            case .negate(let inner): self = .negate(try Node(inner))
            }
        }

        var isNullLiteral: Bool {
            if case .literal(let box) = self { return box.value == .null }
            return false
        }

        static func value(_ literal: EQLLiteral) -> Value {
            switch literal {
            case .string(let text): .string(text)
            case .integer(let value): .number(Double(value))
            case .double(let value): .number(value)
            case .boolean(let value): .boolean(value)
            case .null: .null
            }
        }

        /// The condition's truth: true, false, or nil (null).
        func truth(_ document: some KQLDocument) -> Bool? {
            switch self {
            case .fieldEquals(let path, let literals, let negated):
                // Null without a scalar value; else whether any string value is one of the literals.
                var sawValue = false
                var found = false
                document.forEachValue(of: path) { value in
                    guard value.kind != .object else { return true }
                    sawValue = true
                    if value.kind == .string, value.withBytes({ literals.contains($0) }) { found = true }
                    return !found
                }
                return sawValue ? found != negated : nil
            case .not(let inner): return inner.truth(document).map { !$0 }
            case .and(let parts): return Self.kleene(parts.lazy.map { $0.truth(document) }, absorbing: false)
            case .or(let parts): return Self.kleene(parts.lazy.map { $0.truth(document) }, absorbing: true)
            case .compare(let left, let op, let right):
                let a = left.evaluate(document), b = right.evaluate(document)
                // `== null` and `!= null` (the literal) test for presence; any other comparison with a null
                // value (a missing field) is null.
                if op == .equal || op == .notEqual {
                    if right.isNullLiteral { return (a == .null) == (op == .equal) }
                    if left.isNullLiteral { return (b == .null) == (op == .equal) }
                }
                if a == .null || b == .null { return nil }
                let pairs = a.elements.flatMap { x in b.elements.map { (x, $0) } }
                if op == .notEqual { return !pairs.contains { Self.compare($0, .equal, $1) == true } }
                // Any pair that compares true (value by value), else null if one had no answer.
                return Self.kleene(pairs.lazy.map { Self.compare($0, op, $1) }, absorbing: true)
            case .membership(let value, let list, let insensitive, let negated):
                let candidates = value.evaluate(document)
                if candidates == .null { return nil }
                let options = list.flatMap { $0.evaluate(document).elements }
                let found = candidates.elements.contains { candidate in options.contains { Self.equal(candidate, $0, caseInsensitive: insensitive) } }
                return negated ? !found : found
            case .patterns(let value, let patterns):
                return Self.anyString(of: value, in: document) { text in patterns.contains { $0.matches(text) } }
            case .regexes(let value, let expressions):
                return Self.anyString(of: value, in: document) { text in expressions.contains { $0.matches(text) } }
            default:
                switch evaluate(document) {
                case .boolean(let value): return value
                case .list(let values): return values.contains(.boolean(true)) ? true : (values.isEmpty ? nil : false)
                case .null: return nil
                default: return false
                }
            }
        }

        func evaluate(_ document: some KQLDocument) -> Value {
            switch self {
            case .literal(let box): return box.value
            case .field(let path):
                var values: [Value] = []
                document.forEachValue(of: path) { value in
                    switch value.kind {
                    case .string: values.append(.string(value.stringValue))
                    case .number: values.append(value.doubleValue.map(Value.number) ?? .null)
                    case .bool: values.append(.boolean(value.boolValue ?? false))
                    case .object: break
                    }
                    return true
                }
                return values.isEmpty ? .null : values.count == 1 ? values[0] : .list(values)
            case .not, .and, .or, .compare, .membership, .patterns, .regexes, .fieldEquals:
                return truth(document).map(Value.boolean) ?? .null
            case .function(let function, let arguments, let insensitive):
                return function.apply(arguments.map { $0.evaluate(document) }, caseInsensitive: insensitive)
            case .arithmetic(let left, let op, let right):
                return Function.arithmetic(left.evaluate(document), op, right.evaluate(document))
            case .negate(let inner):
                if case .number(let value) = inner.evaluate(document) { return .number(-value) }
                return .null
            }
        }

        /// Whether any string value of `value` passes `test` (value by value); null when it has none.
        static func anyString(of value: Node, in document: some KQLDocument, _ test: (String) -> Bool) -> Bool? {
            let candidates = value.evaluate(document)
            if candidates == .null { return nil }
            return candidates.elements.contains { candidate in
                guard case .string(let text) = candidate else { return false }
                return test(text)
            }
        }

        /// Kleene's `or` (absorbing true) or `and` (absorbing false) over truths computed one at a time: stops
        /// at the absorbing value; null if any was null, else the other value.
        static func kleene(_ truths: some Sequence<Bool?>, absorbing: Bool) -> Bool? {
            var sawNull = false
            for truth in truths {
                if truth == absorbing { return absorbing }
                if truth == nil { sawNull = true }
            }
            return sawNull ? nil : !absorbing
        }

        static func equal(_ a: Value, _ b: Value, caseInsensitive: Bool) -> Bool {
            switch (a, b) {
            case (.string(let x), .string(let y)): caseInsensitive ? x.lowercased() == y.lowercased() : x == y
            case (.number(let x), .number(let y)): x == y
            case (.boolean(let x), .boolean(let y)): x == y
            default: false
            }
        }

        static func compare(_ a: Value, _ op: EQLComparison, _ b: Value) -> Bool? {
            switch (a, b) {
            case (.string(let x), .string(let y)):
                switch op {
                case .equal: return x == y
                case .notEqual: return x != y
                // Elasticsearch orders strings by their bytes (UTF-8), as keyword fields sort.
                case .less: return Array(x.utf8).lexicographicallyPrecedes(Array(y.utf8))
                case .lessOrEqual: return !Array(y.utf8).lexicographicallyPrecedes(Array(x.utf8))
                case .greater: return Array(y.utf8).lexicographicallyPrecedes(Array(x.utf8))
                case .greaterOrEqual: return !Array(x.utf8).lexicographicallyPrecedes(Array(y.utf8))
                }
            case (.number(let x), .number(let y)):
                switch op {
                case .equal: return x == y
                case .notEqual: return x != y
                case .less: return x < y
                case .lessOrEqual: return x <= y
                case .greater: return x > y
                case .greaterOrEqual: return x >= y
                }
            case (.boolean(let x), .boolean(let y)):
                switch op {
                case .equal: return x == y
                case .notEqual: return x != y
                default: return nil
                }
            default:
                // Different types never compare equal; ordering them has no answer.
                return op == .equal ? false : (op == .notEqual ? true : nil)
            }
        }
    }

    /// String literals as UTF-8 bytes, for byte comparison with a field's values.
    final class LiteralBytes: Sendable {
        let texts: [String]
        let values: [[UInt8]]
        init(_ texts: [String]) {
            self.texts = texts
            values = texts.map { Array($0.utf8) }
        }
        func contains(_ bytes: UnsafeRawBufferPointer) -> Bool {
            values.contains { $0.count == bytes.count && $0.withUnsafeBytes { $0.elementsEqual(bytes) } }
        }
    }

    /// A literal value, boxed so the tree stays `Sendable` and small.
    final class ValueBox: Sendable {
        let value: Value
        init(_ value: Value) { self.value = value }
    }

    /// A `*`/`?` pattern over Unicode scalars (optionally case-folded). Matching is the greedy algorithm with
    /// one backtrack point (the last star): O(text × pattern) at worst, linear in the text for a rule's pattern.
    struct Pattern: Sendable {
        let scalars: [Unicode.Scalar]
        let caseInsensitive: Bool

        init(_ text: String, caseInsensitive: Bool) {
            self.caseInsensitive = caseInsensitive
            scalars = Array((caseInsensitive ? text.lowercased() : text).unicodeScalars)
        }

        func matches(_ text: String) -> Bool {
            let subject = Array((caseInsensitive ? text.lowercased() : text).unicodeScalars)
            var s = 0, p = 0
            var star = -1, mark = 0
            while s < subject.count {
                if p < scalars.count, scalars[p] == "?" || (scalars[p] != "*" && scalars[p] == subject[s]) {
                    s += 1
                    p += 1
                } else if p < scalars.count, scalars[p] == "*" {
                    star = p
                    mark = s
                    p += 1
                } else if star >= 0 {
                    p = star + 1
                    mark += 1
                    s = mark
                } else {
                    return false
                }
            }
            while p < scalars.count, scalars[p] == "*" { p += 1 }
            return p == scalars.count
        }
    }

    /// The functions of Elasticsearch's EQL that event queries here may call.
    enum Function: String, CaseIterable, Sendable {
        case startsWith, endsWith, stringContains, length, wildcard, cidrMatch, add, subtract, multiply, divide, modulo, concat, number, string

        var arity: ClosedRange<Int> {
            switch self {
            case .startsWith, .endsWith, .stringContains: 2...2
            case .length, .number, .string: 1...1
            case .wildcard, .cidrMatch: 2...Int.max
            case .add, .subtract, .multiply, .divide, .modulo: 2...2
            case .concat: 1...Int.max
            }
        }

        func apply(_ arguments: [Value], caseInsensitive: Bool) -> Value {
            func text(_ value: Value) -> String? {
                switch value {
                case .string(let text): caseInsensitive ? text.lowercased() : text
                case .list(let values): values.first.flatMap(text)
                default: nil
                }
            }
            switch self {
            case .startsWith, .endsWith, .stringContains:
                // Multi-valued sources: true when any value does.
                guard arguments[0] != .null, let needle = text(arguments[1]) else { return .null }
                let found = arguments[0].elements.contains { element in
                    guard case .string(let raw) = element else { return false }
                    let haystack = caseInsensitive ? raw.lowercased() : raw
                    switch self {
                    case .startsWith: return haystack.unicodeScalars.starts(with: needle.unicodeScalars)
                    case .endsWith: return haystack.unicodeScalars.reversed().starts(with: needle.unicodeScalars.reversed())
                    default: return needle.isEmpty || haystack.contains(needle)
                    }
                }
                return .boolean(found)
            case .length:
                guard case .string(let value) = arguments[0] else { return .null }
                return .number(Double(value.count))
            case .cidrMatch:
                guard arguments[0] != .null else { return .null }
                let networks = arguments.dropFirst().compactMap { argument -> IPNetwork? in
                    if case .string(let text) = argument { return IPNetwork(text) } else { return nil }
                }
                let found = arguments[0].elements.contains { element in
                    guard case .string(let text) = element, let address = IPNetwork.address(text) else { return false }
                    return networks.contains { $0.contains(address) }
                }
                return .boolean(found)
            case .add, .subtract, .multiply, .divide, .modulo:
                let op: EQLArithmetic = switch self {
                case .add: .add
                case .subtract: .subtract
                case .multiply: .multiply
                case .divide: .divide
                default: .modulo
                }
                return Self.arithmetic(arguments[0], op, arguments[1])
            case .concat:
                var result = ""
                for argument in arguments {
                    switch argument {
                    case .null: return .null
                    case .string(let text): result += text
                    case .number(let value): result += value.rounded() == value && abs(value) < 1e15 ? String(Int64(value)) : String(value)
                    case .boolean(let value): result += value ? "true" : "false"
                    case .list: return .null
                    }
                }
                return .string(result)
            case .number:
                switch arguments[0] {
                case .number: return arguments[0]
                case .string(let text): return Double(text).map(Value.number) ?? .null
                default: return .null
                }
            case .string:
                switch arguments[0] {
                case .string: return arguments[0]
                case .number(let value): return .string(value.rounded() == value && abs(value) < 1e15 ? String(Int64(value)) : String(value))
                case .boolean(let value): return .string(value ? "true" : "false")
                default: return .null
                }
            case .wildcard:
                return .null  // compiled into a pattern node
            }
        }

        static func arithmetic(_ a: Value, _ op: EQLArithmetic, _ b: Value) -> Value {
            guard case .number(let x) = a, case .number(let y) = b else { return .null }
            switch op {
            case .add: return .number(x + y)
            case .subtract: return .number(x - y)
            case .multiply: return .number(x * y)
            case .divide: return y == 0 ? .null : .number(x / y)
            case .modulo: return y == 0 ? .null : .number(x.truncatingRemainder(dividingBy: y))
            }
        }
    }
}
