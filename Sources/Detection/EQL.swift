// EQL (Elasticsearch's Event Query Language): the syntax tree and its parser, event queries and sequences.

/// A parsed EQL query: one event query, or a sequence of them.
public enum EQLQuery: Sendable, Equatable, CustomStringConvertible {
    case event(EQLEventQuery)
    case sequence(EQLSequence)

    public var description: String {
        switch self {
        case .event(let query): query.description
        case .sequence(let sequence): sequence.description
        }
    }
}

/// `category where condition`; the category `any` (nil here) matches every event.
public struct EQLEventQuery: Sendable, Equatable, CustomStringConvertible {
    public var category: String?
    public var condition: EQLExpression

    public init(category: String?, condition: EQLExpression) {
        self.category = category
        self.condition = condition
    }

    public var description: String { "\(category.map(EQLExpression.quoteIdentifierIfNeeded) ?? "any") where \(condition)" }
}

/// `sequence [by keys] [with maxspan=…] [step] [step] … [until [step]]`.
public struct EQLSequence: Sendable, Equatable, CustomStringConvertible {
    public struct Step: Sendable, Equatable, CustomStringConvertible {
        public var query: EQLEventQuery
        /// Join keys of this step, after the sequence's own (`[…] by source.ip`).
        public var joinKeys: [EQLExpression]
        /// `with runs=N`: the step repeated N times.
        public var runs: Int

        public init(query: EQLEventQuery, joinKeys: [EQLExpression] = [], runs: Int = 1) {
            self.query = query
            self.joinKeys = joinKeys
            self.runs = runs
        }

        public var description: String {
            "[\(query)]" + (joinKeys.isEmpty ? "" : " by " + joinKeys.map(\.operandDescription).joined(separator: ", "))
                + (runs == 1 ? "" : " with runs=\(runs)")
        }
    }

    /// Keys every step shares (`sequence by user.name`).
    public var joinKeys: [EQLExpression]
    /// The longest time from the first step to the last, in milliseconds (nil: unbounded).
    public var maxspanMilliseconds: Int64?
    public var steps: [Step]
    /// A step that, once seen for a key, discards that key's pending sequences.
    public var until: Step?

    public init(joinKeys: [EQLExpression], maxspanMilliseconds: Int64?, steps: [Step], until: Step?) {
        self.joinKeys = joinKeys
        self.maxspanMilliseconds = maxspanMilliseconds
        self.steps = steps
        self.until = until
    }

    public var description: String {
        var text = "sequence"
        if !joinKeys.isEmpty { text += " by " + joinKeys.map(\.operandDescription).joined(separator: ", ") }
        if let maxspanMilliseconds { text += " with maxspan=\(Self.format(milliseconds: maxspanMilliseconds))" }
        for step in steps { text += " " + step.description }
        if let until { text += " until " + until.description }
        return text
    }

    static func format(milliseconds: Int64) -> String {
        for (unit, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] where milliseconds % size == 0 && milliseconds > 0 {
            return "\(milliseconds / size)\(unit)"
        }
        return "\(milliseconds)ms"
    }
}

public enum EQLComparison: String, Sendable {
    case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
}

/// The string predicates, each with a list of patterns: `:` (case-insensitive equality or wildcard), `like`
/// (wildcards `*` and `?`), `regex`; `like~` and `regex~` ignore case.
public enum EQLStringPredicate: String, Sendable {
    case seq = ":", like, regex
}

public enum EQLArithmetic: String, Sendable {
    case add = "+", subtract = "-", multiply = "*", divide = "/", modulo = "%"
}

/// A literal: EQL's strings, numbers, booleans and null.
public enum EQLLiteral: Sendable, Equatable, CustomStringConvertible {
    case string(String)
    case integer(Int64)
    case double(Double)
    case boolean(Bool)
    case null

    public var description: String {
        switch self {
        case .string(let text): EQLExpression.quote(text)
        case .integer(let value): "\(value)"
        case .double(let value): "\(value)"
        case .boolean(let value): value ? "true" : "false"
        case .null: "null"
        }
    }
}

/// An EQL expression: conditions and the values they compare.
public indirect enum EQLExpression: Sendable, Equatable, CustomStringConvertible {
    case literal(EQLLiteral)
    /// A field by its dotted ECS path (backquoted names give it verbatim: `` `a.b/c` ``).
    case field(String)
    case not(EQLExpression)
    case and([EQLExpression])
    case or([EQLExpression])
    case compare(EQLExpression, EQLComparison, EQLExpression)
    /// `value in (…)`, `in~`, `not in`.
    case membership(EQLExpression, [EQLExpression], caseInsensitive: Bool, negated: Bool)
    /// `value : pattern`, `like`, `regex` (and `~`), with one pattern or a parenthesized list.
    case stringPredicate(EQLExpression, EQLStringPredicate, [EQLExpression], caseInsensitive: Bool)
    case function(String, [EQLExpression], caseInsensitive: Bool)
    case arithmetic(EQLExpression, EQLArithmetic, EQLExpression)
    case negate(EQLExpression)

    /// The expression as EQL text, in parentheses only where the parser needs them: each pair of parentheses
    /// is a level of the parser's nesting limit, so the text is never nested deeper than any text that parses
    /// to the same tree (fuzz findings: a parenthesized operand per link of a subtraction chain, per negation
    /// of a negation, took the printed form of a query at the limit past it).
    public var description: String { printed(in: .or) }

    /// As a join key (`by …`): the parser reads an operand there.
    var operandDescription: String { printed(in: .operand) }

    /// How tightly an expression binds, loosest first: the parser function that reads it (`parseOr` …
    /// `parseOperand`). A context reading at some binding takes anything that binds at least as tightly.
    private enum Binding: Int, Comparable {
        case or, and, not, predicate, additive, multiplicative, unary, operand
        static func < (a: Binding, b: Binding) -> Bool { a.rawValue < b.rawValue }
    }

    private var binding: Binding {
        switch self {
        case .or: .or
        case .and: .and
        case .not: .not
        case .compare, .membership, .stringPredicate: .predicate
        case .arithmetic(_, let op, _): op == .add || op == .subtract ? .additive : .multiplicative
        // A negative number is read by `parseUnary` (a minus sign, then the number).
        case .negate, .literal(.integer(..<0)): .unary
        case .literal(.double(let value)) where value.sign == .minus: .unary
        case .literal, .field, .function: .operand
        }
    }

    /// The text where the parser reads at `context`: in parentheses when this binds more loosely.
    private func printed(in context: Binding) -> String {
        binding < context ? "(\(bare))" : bare
    }

    private var bare: String {
        switch self {
        case .literal(let literal): literal.description
        case .field(let path): Self.quoteIdentifierIfNeeded(path)
        case .not(let inner): "not " + inner.printed(in: .not)
        case .and(let parts): parts.map { $0.printed(in: .not) }.joined(separator: " and ")
        case .or(let parts): parts.map { $0.printed(in: .and) }.joined(separator: " or ")
        case .compare(let left, let op, let right): "\(left.printed(in: .additive)) \(op.rawValue) \(right.printed(in: .additive))"
        case .membership(let value, let list, let insensitive, let negated):
            "\(value.printed(in: .additive)) \(negated ? "not in" : "in")\(insensitive ? "~" : "") ("
                + list.map { $0.printed(in: .additive) }.joined(separator: ", ") + ")"
        case .stringPredicate(let value, let predicate, let patterns, let insensitive):
            "\(value.printed(in: .additive)) \(predicate.rawValue)\(insensitive && predicate != .seq ? "~" : "") ("
                + patterns.map { $0.printed(in: .additive) }.joined(separator: ", ") + ")"
        case .function(let name, let arguments, let insensitive):
            "\(name)\(insensitive ? "~" : "")(" + arguments.map(\.description).joined(separator: ", ") + ")"
        case .arithmetic(let left, let op, let right):
            // Left-associative: the left operand at this operator's binding, the right one tighter.
            binding == .additive
                ? "\(left.printed(in: .additive)) \(op.rawValue) \(right.printed(in: .multiplicative))"
                : "\(left.printed(in: .multiplicative)) \(op.rawValue) \(right.printed(in: .unary))"
        case .negate(let inner):
            switch inner {
            // A number right after a minus sign reads as one negative literal: a non-negative one goes in
            // parentheses (`-(0)`), as the only text that parses to this did.
            case .literal(.integer(0...)): "-(\(inner))"
            case .literal(.double(let value)) where value.sign == .plus: "-(\(inner))"
            default:
                // `- -x`, not `--x`: the signs stay two tokens.
                { $0.hasPrefix("-") ? "- " + $0 : "-" + $0 }(inner.printed(in: .unary))
            }
        }
    }

    static let keywords: Set<String> = ["and", "or", "not", "in", "like", "regex", "where", "by", "with", "until", "sequence",
                                        "true", "false", "null", "any", "of", "join", "sample", "maxspan", "runs"]

    static func quoteIdentifierIfNeeded(_ path: String) -> String {
        let plain = path.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { part in
            guard let first = part.unicodeScalars.first, EQLParser.isIdentifierStart(first) else { return false }
            return part.unicodeScalars.allSatisfy(EQLParser.isIdentifierPart) && !keywords.contains(String(part))
        }
        return plain ? path : "`" + path.replacingOccurrences(of: "`", with: "``") + "`"
    }

    static func quote(_ text: String) -> String {
        quote(text) { "\\u{\(String($0.value, radix: 16))}" }
    }

    /// A double-quoted literal with `\" \\ \n \r \t` escapes, as EQL and ES|QL write them; other control
    /// characters as `escapeControl` spells them (nil: as they are).
    static func quote(_ text: String, escapeControl: ((Unicode.Scalar) -> String)?) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20 && escapeControl != nil: result += escapeControl!(scalar)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

/// Where and why an EQL query could not be parsed (as ``KQLSyntaxError`` for KQL).
public struct EQLSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    /// Character offset in the query.
    public var position: Int
    public var expected: String
    public var description: String { "EQL syntax error at character \(position): \(message), expected \(expected)" }
}

/// Recursive-descent parser for Elasticsearch's EQL syntax (event queries and sequences; pipes and
/// samples are refused by name). Linear in the query's length; nesting is bounded so that a hostile query
/// cannot exhaust the stack.
public struct EQLParser {
    enum Token: Equatable {
        case identifier(String)
        /// A backquoted name, verbatim.
        case quotedIdentifier(String)
        case string(String)
        case integer(Int64)
        case double(Double)
        /// A number with a time unit (`5m`), in milliseconds.
        case duration(Int64)
        case symbol(String)
        case end
    }

    static let maxDepth = 200
    private var tokens: [(token: Token, position: Int)] = []
    private var index = 0
    private var depth = 0

    public static func parse(_ query: String) throws(EQLSyntaxError) -> EQLQuery {
        var parser = EQLParser()
        parser.tokens = try tokenize(query)
        let result: EQLQuery
        if parser.isKeyword("sequence") {
            result = .sequence(try parser.parseSequence())
        } else if parser.isKeyword("sample") || parser.isKeyword("join") {
            throw parser.error("\(parser.describe(parser.current)) queries are not supported", expected: "an event query or a sequence")
        } else {
            result = .event(try parser.parseEventQuery())
        }
        if parser.current == .symbol("|") {
            throw parser.error("pipes are not supported", expected: "the end of the query")
        }
        guard parser.current == .end else {
            throw parser.error("unexpected \(parser.describe(parser.current))", expected: "'and', 'or' or the end of the query")
        }
        return result
    }

    // MARK: Tokens

    private var current: Token { tokens[index].token }
    private var position: Int { tokens[index].position }
    private mutating func advance() { if index < tokens.count - 1 { index += 1 } }
    private func isKeyword(_ word: String) -> Bool { current == .identifier(word) }
    private func isSymbol(_ symbol: String) -> Bool { current == .symbol(symbol) }

    private func error(_ message: String, expected: String) -> EQLSyntaxError {
        EQLSyntaxError(message: message, position: position, expected: expected)
    }

    private func describe(_ token: Token) -> String {
        switch token {
        case .identifier(let name): "'\(name)'"
        case .quotedIdentifier(let name): "`\(name)`"
        case .string(let text): EQLExpression.quote(text)
        case .integer(let value): "\(value)"
        case .double(let value): "\(value)"
        case .duration(let milliseconds): EQLSequence.format(milliseconds: milliseconds)
        case .symbol(let symbol): "'\(symbol)'"
        case .end: "end of the query"
        }
    }

    private mutating func expectSymbol(_ symbol: String, _ expected: String? = nil) throws(EQLSyntaxError) {
        guard isSymbol(symbol) else { throw error("unexpected \(describe(current))", expected: expected ?? "'\(symbol)'") }
        advance()
    }

    private mutating func expectKeyword(_ word: String) throws(EQLSyntaxError) {
        guard isKeyword(word) else { throw error("unexpected \(describe(current))", expected: "'\(word)'") }
        advance()
    }

    // MARK: Queries

    private mutating func parseEventQuery() throws(EQLSyntaxError) -> EQLEventQuery {
        let category: String?
        switch current {
        case .identifier("any"): category = nil
        case .identifier(let name) where !EQLExpression.keywords.contains(name): category = name
        case .quotedIdentifier(let name), .string(let name): category = name
        default: throw error("unexpected \(describe(current))", expected: "an event category or 'any'")
        }
        advance()
        try expectKeyword("where")
        return EQLEventQuery(category: category, condition: try parseOr())
    }

    private mutating func parseSequence() throws(EQLSyntaxError) -> EQLSequence {
        advance()  // sequence
        var joinKeys: [EQLExpression] = []
        var maxspan: Int64?
        // `by keys` and `with maxspan=…` in either order.
        for _ in 0..<2 {
            if isKeyword("by"), joinKeys.isEmpty {
                advance()
                joinKeys = try parseJoinKeys()
            } else if isKeyword("with"), maxspan == nil {
                advance()
                try expectKeyword("maxspan")
                try expectSymbol("=")
                guard case .duration(let milliseconds) = current, milliseconds > 0 else {
                    throw error("unexpected \(describe(current))", expected: "a time span such as 5m, 30s or 2h")
                }
                maxspan = milliseconds
                advance()
            }
        }
        var steps: [EQLSequence.Step] = []
        var until: EQLSequence.Step?
        while isSymbol("[") { steps.append(try parseStep()) }
        if isKeyword("until") {
            advance()
            guard isSymbol("[") else { throw error("unexpected \(describe(current))", expected: "'[' and the until query") }
            until = try parseStep()
        }
        guard steps.count >= 2 || (steps.count == 1 && steps[0].runs >= 2) else {
            throw error(steps.isEmpty ? "a sequence without steps" : "a sequence of one step", expected: "'[' and another step")
        }
        return EQLSequence(joinKeys: joinKeys, maxspanMilliseconds: maxspan, steps: steps, until: until)
    }

    private mutating func parseStep() throws(EQLSyntaxError) -> EQLSequence.Step {
        try expectSymbol("[")
        let query = try parseEventQuery()
        try expectSymbol("]", "']' after the step's query")
        var step = EQLSequence.Step(query: query)
        if isKeyword("by") {
            advance()
            step.joinKeys = try parseJoinKeys()
        }
        if isKeyword("with") {
            advance()
            try expectKeyword("runs")
            try expectSymbol("=")
            guard case .integer(let runs) = current, (1...100).contains(runs) else {
                throw error("unexpected \(describe(current))", expected: "a number of runs from 1 to 100")
            }
            step.runs = Int(runs)
            advance()
        }
        return step
    }

    private mutating func parseJoinKeys() throws(EQLSyntaxError) -> [EQLExpression] {
        var keys = [try parseOperand()]
        while isSymbol(",") {
            advance()
            keys.append(try parseOperand())
        }
        return keys
    }

    // MARK: Conditions (or < and < not < predicates < arithmetic)

    private mutating func enter() throws(EQLSyntaxError) {
        depth += 1
        if depth > Self.maxDepth { throw error("the query nests deeper than \(Self.maxDepth) levels", expected: "a flatter query") }
    }

    private mutating func parseOr() throws(EQLSyntaxError) -> EQLExpression {
        try enter()
        defer { depth -= 1 }
        var parts = [try parseAnd()]
        while isKeyword("or") {
            advance()
            parts.append(try parseAnd())
        }
        return parts.count == 1 ? parts[0] : .or(parts)
    }

    private mutating func parseAnd() throws(EQLSyntaxError) -> EQLExpression {
        var parts = [try parseNot()]
        while isKeyword("and") {
            advance()
            parts.append(try parseNot())
        }
        return parts.count == 1 ? parts[0] : .and(parts)
    }

    private mutating func parseNot() throws(EQLSyntaxError) -> EQLExpression {
        if isKeyword("not") {
            try enter()
            defer { depth -= 1 }
            advance()
            return .not(try parseNot())
        }
        return try parsePredicate()
    }

    private mutating func parsePredicate() throws(EQLSyntaxError) -> EQLExpression {
        let value = try parseAdditive()
        // A comparison.
        if case .symbol(let symbol) = current, let comparison = EQLComparison(rawValue: symbol) {
            advance()
            return .compare(value, comparison, try parseAdditive())
        }
        if isSymbol("=") { throw error("'=' is not a comparison", expected: "'==' (or ':' to ignore case)") }
        // Membership: in, in~, not in, not in~.
        var negated = false
        if isKeyword("not"), index + 1 < tokens.count, tokens[index + 1].token == .identifier("in") {
            negated = true
            advance()
        }
        if isKeyword("in") {
            advance()
            let insensitive = takeTilde()
            try expectSymbol("(", "'(' and a list of values")
            let list = try parseList()
            return .membership(value, list, caseInsensitive: insensitive, negated: negated)
        }
        if negated { throw error("unexpected \(describe(current))", expected: "'in' after 'not'") }
        // String predicates with one pattern or a parenthesized list.
        let predicate: EQLStringPredicate?
        if isSymbol(":") { predicate = .seq } else if isKeyword("like") { predicate = .like } else if isKeyword("regex") { predicate = .regex } else { predicate = nil }
        if let predicate {
            advance()
            let insensitive = predicate != .seq && takeTilde()
            let patterns: [EQLExpression]
            if isSymbol("(") {
                advance()
                patterns = try parseList()
            } else {
                patterns = [try parseAdditive()]
            }
            return .stringPredicate(value, predicate, patterns, caseInsensitive: insensitive || predicate == .seq)
        }
        return value
    }

    /// `~` written right after an operator or function name.
    private mutating func takeTilde() -> Bool {
        guard isSymbol("~") else { return false }
        advance()
        return true
    }

    /// After `(`: values separated by commas, then `)`.
    private mutating func parseList() throws(EQLSyntaxError) -> [EQLExpression] {
        var list = [try parseAdditive()]
        while isSymbol(",") {
            advance()
            list.append(try parseAdditive())
        }
        try expectSymbol(")", "',' or ')'")
        return list
    }

    private mutating func parseAdditive() throws(EQLSyntaxError) -> EQLExpression {
        var left = try parseMultiplicative()
        while case .symbol(let symbol) = current, symbol == "+" || symbol == "-" {
            advance()
            left = .arithmetic(left, symbol == "+" ? .add : .subtract, try parseMultiplicative())
        }
        return left
    }

    private mutating func parseMultiplicative() throws(EQLSyntaxError) -> EQLExpression {
        var left = try parseUnary()
        while case .symbol(let symbol) = current, let op = EQLArithmetic(rawValue: symbol), op == .multiply || op == .divide || op == .modulo {
            advance()
            left = .arithmetic(left, op, try parseUnary())
        }
        return left
    }

    private mutating func parseUnary() throws(EQLSyntaxError) -> EQLExpression {
        if isSymbol("-") {
            try enter()
            defer { depth -= 1 }
            advance()
            switch current {
            case .integer(let value):
                advance()
                return .literal(.integer(-value))
            case .double(let value):
                advance()
                return .literal(.double(-value))
            default:
                return .negate(try parseUnary())
            }
        }
        return try parseOperand()
    }

    private mutating func parseOperand() throws(EQLSyntaxError) -> EQLExpression {
        switch current {
        case .string(let text):
            advance()
            return .literal(.string(text))
        case .integer(let value):
            advance()
            return .literal(.integer(value))
        case .double(let value):
            advance()
            return .literal(.double(value))
        case .quotedIdentifier(let name):
            advance()
            return .field(name)
        case .symbol("("):
            advance()
            let inner = try parseOr()
            try expectSymbol(")", "')'")
            return inner
        case .identifier("true"):
            advance()
            return .literal(.boolean(true))
        case .identifier("false"):
            advance()
            return .literal(.boolean(false))
        case .identifier("null"):
            advance()
            return .literal(.null)
        case .identifier(let name) where !EQLExpression.keywords.contains(name):
            advance()
            // A function: the name, an optional `~`, then `(` with no space needed.
            if isSymbol("(") || (isSymbol("~") && index + 1 < tokens.count && tokens[index + 1].token == .symbol("(")) {
                let insensitive = takeTilde()
                advance()  // (
                try enter()
                defer { depth -= 1 }
                var arguments: [EQLExpression] = []
                if !isSymbol(")") {
                    arguments.append(try parseOr())
                    while isSymbol(",") {
                        advance()
                        arguments.append(try parseOr())
                    }
                }
                try expectSymbol(")", "',' or ')' in the arguments of \(name)")
                return .function(name, arguments, caseInsensitive: insensitive)
            }
            return .field(name)
        default:
            throw error("unexpected \(describe(current))", expected: "a field, a value or '('")
        }
    }

    // MARK: Tokenizer

    static func isIdentifierStart(_ scalar: Unicode.Scalar) -> Bool {
        (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z") || scalar == "_" || scalar == "@"
    }

    static func isIdentifierPart(_ scalar: Unicode.Scalar) -> Bool {
        isIdentifierStart(scalar) || (scalar >= "0" && scalar <= "9")
    }

    static func tokenize(_ text: String) throws(EQLSyntaxError) -> [(token: Token, position: Int)] {
        let scalars = Array(text.unicodeScalars)
        var tokens: [(Token, Int)] = []
        var index = 0
        func fail(_ message: String, _ expected: String, at position: Int) -> EQLSyntaxError {
            EQLSyntaxError(message: message, position: position, expected: expected)
        }
        while index < scalars.count {
            let scalar = scalars[index]
            let start = index
            switch scalar {
            case " ", "\t", "\n", "\r":
                index += 1
            case "/" where index + 1 < scalars.count && scalars[index + 1] == "*":
                index += 2
                while index + 1 < scalars.count, !(scalars[index] == "*" && scalars[index + 1] == "/") { index += 1 }
                guard index + 1 < scalars.count else { throw fail("an unterminated comment", "'*/'", at: start) }
                index += 2
            case "/" where index + 1 < scalars.count && scalars[index + 1] == "/":
                while index < scalars.count, scalars[index] != "\n" { index += 1 }
            case "\"":
                if index + 2 < scalars.count, scalars[index + 1] == "\"", scalars[index + 2] == "\"" {
                    // """raw""": no escapes, ends at the first three quotes.
                    index += 3
                    var body = String.UnicodeScalarView()
                    while index + 2 < scalars.count, !(scalars[index] == "\"" && scalars[index + 1] == "\"" && scalars[index + 2] == "\"") {
                        body.append(scalars[index])
                        index += 1
                    }
                    guard index + 2 < scalars.count else { throw fail("an unterminated raw string", "'\"\"\"'", at: start) }
                    index += 3
                    tokens.append((.string(String(body)), start))
                } else {
                    index += 1
                    var body = String.UnicodeScalarView()
                    var closed = false
                    while index < scalars.count {
                        let next = scalars[index]
                        if next == "\"" { closed = true; index += 1; break }
                        if next == "\n" || next == "\r" { break }
                        if next == "\\" {
                            guard index + 1 < scalars.count else { break }
                            index += 1
                            switch scalars[index] {
                            case "\"": body.append("\"")
                            case "\\": body.append("\\")
                            case "n": body.append("\n")
                            case "r": body.append("\r")
                            case "t": body.append("\t")
                            case "'": body.append("'")
                            case "u":
                                // \u{hex}
                                guard index + 1 < scalars.count, scalars[index + 1] == "{",
                                      let close = scalars[(index + 2)...].prefix(9).firstIndex(of: "}"),
                                      let value = UInt32(String(String.UnicodeScalarView(scalars[(index + 2)..<close])), radix: 16),
                                      let decoded = Unicode.Scalar(value)
                                else { throw fail("an invalid \\u escape", "\\u{hex digits}", at: index - 1) }
                                body.append(decoded)
                                index = close
                            default:
                                throw fail("an unknown escape \\\(scalars[index])", "one of \\\" \\\\ \\n \\r \\t \\u{…}", at: index - 1)
                            }
                            index += 1
                            continue
                        }
                        body.append(next)
                        index += 1
                    }
                    guard closed else { throw fail("an unterminated string", "a closing '\"' on the same line", at: start) }
                    tokens.append((.string(String(body)), start))
                }
            case "'":
                throw fail("single-quoted strings are not EQL", "a double-quoted string", at: start)
            case "`":
                index += 1
                var body = String.UnicodeScalarView()
                var closed = false
                while index < scalars.count {
                    if scalars[index] == "`" {
                        if index + 1 < scalars.count, scalars[index + 1] == "`" {
                            body.append("`")
                            index += 2
                            continue
                        }
                        closed = true
                        index += 1
                        break
                    }
                    body.append(scalars[index])
                    index += 1
                }
                guard closed, !body.isEmpty else { throw fail(closed ? "an empty field name" : "an unterminated field name", "a name and a closing '`'", at: start) }
                tokens.append((.quotedIdentifier(String(body)), start))
            case "0"..."9":
                while index < scalars.count, ("0"..."9").contains(scalars[index]) { index += 1 }
                var isDouble = false
                if index + 1 < scalars.count, scalars[index] == ".", ("0"..."9").contains(scalars[index + 1]) {
                    isDouble = true
                    index += 1
                    while index < scalars.count, ("0"..."9").contains(scalars[index]) { index += 1 }
                }
                if index < scalars.count, scalars[index] == "e" || scalars[index] == "E",
                   index + 1 < scalars.count, ("0"..."9").contains(scalars[index + 1]) || scalars[index + 1] == "-" || scalars[index + 1] == "+" {
                    isDouble = true
                    index += 2
                    while index < scalars.count, ("0"..."9").contains(scalars[index]) { index += 1 }
                }
                let number = String(String.UnicodeScalarView(scalars[start..<index]))
                // A time unit right after an integer: 5m, 30s, 250ms, 2h, 1d.
                var unitEnd = index
                while unitEnd < scalars.count, isIdentifierPart(scalars[unitEnd]) { unitEnd += 1 }
                if unitEnd > index {
                    let unit = String(String.UnicodeScalarView(scalars[index..<unitEnd]))
                    let sizes: [String: Int64] = ["ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000]
                    guard !isDouble, let size = sizes[unit], let value = Int64(number), value <= Int64.max / size else {
                        throw fail("an invalid number or time span '\(number)\(unit)'", "a number, or an integer with ms, s, m, h or d", at: start)
                    }
                    tokens.append((.duration(value * size), start))
                    index = unitEnd
                } else if isDouble {
                    guard let value = Double(number), value.isFinite else { throw fail("an invalid number '\(number)'", "a number", at: start) }
                    tokens.append((.double(value), start))
                } else {
                    guard let value = Int64(number) else { throw fail("the number \(number) is too large", "a 64-bit integer", at: start) }
                    tokens.append((.integer(value), start))
                }
            case _ where isIdentifierStart(scalar):
                // Dotted names are one token: kubernetes.audit.verb.
                while index < scalars.count {
                    if isIdentifierPart(scalars[index]) {
                        index += 1
                    } else if scalars[index] == ".", index + 1 < scalars.count, isIdentifierStart(scalars[index + 1]) || ("0"..."9").contains(scalars[index + 1]) {
                        index += 1
                    } else {
                        break
                    }
                }
                tokens.append((.identifier(String(String.UnicodeScalarView(scalars[start..<index]))), start))
            default:
                let two = index + 1 < scalars.count ? String(String.UnicodeScalarView([scalar, scalars[index + 1]])) : ""
                if ["==", "!=", "<=", ">="].contains(two) {
                    tokens.append((.symbol(two), start))
                    index += 2
                } else if "()[],:~=<>+-*/%|".unicodeScalars.contains(scalar) {
                    tokens.append((.symbol(String(scalar)), start))
                    index += 1
                } else {
                    throw fail("unexpected character '\(scalar)'", "a field, a value or an operator", at: start)
                }
            }
        }
        tokens.append((.end, scalars.count))
        return tokens
    }
}
