// ES|QL (Elasticsearch's piped query language): the syntax tree and its parser, for Elastic's ES|QL rules.

/// A parsed ES|QL query: its source (`FROM`) and the processing commands after it, in order.
public struct ESQLQuery: Sendable, Equatable, CustomStringConvertible {
    /// `FROM` index patterns and `METADATA` fields: accepted as written (the stream is the input).
    public var indices: [String]
    public var metadata: [String]
    public var commands: [ESQLCommand]

    public init(indices: [String], metadata: [String], commands: [ESQLCommand]) {
        self.indices = indices
        self.metadata = metadata
        self.commands = commands
    }

    public var description: String {
        var text = "FROM " + indices.joined(separator: ", ")
        if !metadata.isEmpty { text += " METADATA " + metadata.map(ESQLExpression.quoteIdentifierIfNeeded).joined(separator: ", ") }
        for command in commands { text += "\n| " + command.description }
        return text
    }
}

/// `name = expression`, or an expression alone (named after its text, as ES|QL names it).
public struct ESQLAssignment: Sendable, Equatable, CustomStringConvertible {
    public var name: String?
    public var expression: ESQLExpression
    public init(name: String?, expression: ESQLExpression) {
        self.name = name
        self.expression = expression
    }
    public var description: String { (name.map { ESQLExpression.quoteIdentifierIfNeeded($0) + " = " } ?? "") + expression.description }
}

public struct ESQLOrder: Sendable, Equatable, CustomStringConvertible {
    public var expression: ESQLExpression
    public var descending: Bool
    /// nil: the default (nulls last ascending, first descending).
    public var nullsFirst: Bool?
    public init(expression: ESQLExpression, descending: Bool, nullsFirst: Bool?) {
        self.expression = expression
        self.descending = descending
        self.nullsFirst = nullsFirst
    }
    public var description: String {
        expression.description + (descending ? " DESC" : " ASC") + (nullsFirst.map { $0 ? " NULLS FIRST" : " NULLS LAST" } ?? "")
    }
}

public enum ESQLCommand: Sendable, Equatable, CustomStringConvertible {
    case `where`(ESQLExpression)
    case eval([ESQLAssignment])
    case stats([ESQLAssignment], by: [ESQLExpression])
    /// Column names or patterns with `*`.
    case keep([String])
    case drop([String])
    case rename([(from: String, to: String)])
    case sort([ESQLOrder])
    case limit(Int64)
    /// `GROK field "pattern"`.
    case grok(ESQLExpression, String)
    /// `DISSECT field "pattern" [APPEND_SEPARATOR = "s"]`.
    case dissect(ESQLExpression, String, appendSeparator: String?)

    public static func == (lhs: ESQLCommand, rhs: ESQLCommand) -> Bool { lhs.description == rhs.description }

    /// Every expression the command evaluates (the `BY` expressions and sort keys included).
    public var expressions: [ESQLExpression] {
        switch self {
        case .where(let condition): [condition]
        case .eval(let assignments): assignments.map(\.expression)
        case .stats(let aggregates, let by): aggregates.map(\.expression) + by
        case .sort(let orders): orders.map(\.expression)
        case .grok(let field, _), .dissect(let field, _, _): [field]
        case .keep, .drop, .rename, .limit: []
        }
    }

    public var name: String {
        switch self {
        case .where: "WHERE"
        case .eval: "EVAL"
        case .stats: "STATS"
        case .keep: "KEEP"
        case .drop: "DROP"
        case .rename: "RENAME"
        case .sort: "SORT"
        case .limit: "LIMIT"
        case .grok: "GROK"
        case .dissect: "DISSECT"
        }
    }

    public var description: String {
        func names(_ list: [String]) -> String { list.map(ESQLExpression.quotePatternIfNeeded).joined(separator: ", ") }
        switch self {
        case .where(let condition): return "WHERE \(condition)"
        case .eval(let assignments): return "EVAL " + assignments.map(\.description).joined(separator: ", ")
        case .stats(let aggregates, let by):
            return "STATS " + aggregates.map(\.description).joined(separator: ", ")
                + (by.isEmpty ? "" : " BY " + by.map(\.description).joined(separator: ", "))
        case .keep(let columns): return "KEEP " + names(columns)
        case .drop(let columns): return "DROP " + names(columns)
        case .rename(let pairs):
            return "RENAME " + pairs.map { ESQLExpression.quoteIdentifierIfNeeded($0.from) + " AS " + ESQLExpression.quoteIdentifierIfNeeded($0.to) }
                .joined(separator: ", ")
        case .sort(let orders): return "SORT " + orders.map(\.description).joined(separator: ", ")
        case .limit(let count): return "LIMIT \(count)"
        case .grok(let field, let pattern): return "GROK \(field) \(ESQLExpression.quote(pattern))"
        case .dissect(let field, let pattern, let separator):
            return "DISSECT \(field) \(ESQLExpression.quote(pattern))" + (separator.map { " APPEND_SEPARATOR = " + ESQLExpression.quote($0) } ?? "")
        }
    }
}

public enum ESQLLiteral: Sendable, Equatable, CustomStringConvertible {
    case string(String)
    case integer(Int64)
    case double(Double)
    case boolean(Bool)
    case null
    /// `9 minutes`, `1 hour`: a time span, in milliseconds (months and years as ES|QL's calendar units).
    case timeSpan(quantity: Int64, unit: String)

    public var description: String {
        switch self {
        case .string(let text): ESQLExpression.quote(text)
        case .integer(let value): "\(value)"
        case .double(let value): "\(value)"
        case .boolean(let value): value ? "true" : "false"
        case .null: "null"
        case .timeSpan(let quantity, let unit): "\(quantity) \(unit)"
        }
    }
}

public enum ESQLComparison: String, Sendable {
    case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
}

public enum ESQLArithmetic: String, Sendable {
    case add = "+", subtract = "-", multiply = "*", divide = "/", modulo = "%"

    /// `+` and `-` bind alike, looser than `*`, `/` and `%`.
    var isAdditive: Bool { self == .add || self == .subtract }
}

public indirect enum ESQLExpression: Sendable, Equatable, CustomStringConvertible {
    /// Whether this expression or one inside it satisfies `test` (checked before its operands).
    public func contains(where test: (ESQLExpression) -> Bool) -> Bool {
        if test(self) { return true }
        switch self {
        case .literal, .field, .star: return false
        case .function(_, let arguments): return arguments.contains { $0.contains(where: test) }
        case .not(let inner), .negate(let inner), .like(let inner, _, _, _), .isNull(let inner, _): return inner.contains(where: test)
        case .and(let left, let right), .or(let left, let right), .compare(let left, _, let right), .arithmetic(let left, _, let right):
            return left.contains(where: test) || right.contains(where: test)
        case .membership(let value, let list, _): return value.contains(where: test) || list.contains { $0.contains(where: test) }
        }
    }

    case literal(ESQLLiteral)
    /// A column by its dotted name (backquoted names give it verbatim).
    case field(String)
    /// `*` as a function argument (`COUNT(*)`).
    case star
    case function(String, [ESQLExpression])
    case not(ESQLExpression)
    case and(ESQLExpression, ESQLExpression)
    case or(ESQLExpression, ESQLExpression)
    case compare(ESQLExpression, ESQLComparison, ESQLExpression)
    case arithmetic(ESQLExpression, ESQLArithmetic, ESQLExpression)
    case negate(ESQLExpression)
    case membership(ESQLExpression, [ESQLExpression], negated: Bool)
    /// `LIKE` (wildcards `*` and `?`) or `RLIKE` (a regular expression), possibly negated.
    case like(ESQLExpression, String, regex: Bool, negated: Bool)
    case isNull(ESQLExpression, negated: Bool)

    public var description: String {
        switch self {
        case .literal(let literal): literal.description
        case .field(let name): Self.quoteIdentifierIfNeeded(name)
        case .star: "*"
        case .function(let name, let arguments): "\(name)(" + arguments.map(\.description).joined(separator: ", ") + ")"
        case .not(let inner): "(NOT \(inner))"
        // Left-nested chains print flat (`(a AND b AND c)`), which parse back left-nested: the printed form
        // nests no deeper than the tree's operands do.
        case .and, .or, .arithmetic: "(" + chain + ")"
        case .compare(let left, let op, let right): "(\(left) \(op.rawValue) \(right))"
        case .negate(let inner):
            switch inner {
            case .literal, .field, .function, .negate: "-\(inner)"
            default: "-(\(inner))"
            }
        case .membership(let value, let list, let negated):
            "(\(value)\(negated ? " NOT" : "") IN (" + list.map(\.description).joined(separator: ", ") + "))"
        case .like(let value, let pattern, let regex, let negated):
            "(\(value)\(negated ? " NOT" : "") \(regex ? "RLIKE" : "LIKE") \(Self.quote(pattern)))"
        case .isNull(let value, let negated): "(\(value) IS \(negated ? "NOT " : "")NULL)"
        }
    }

    /// The operands of a left-nested chain of one operator (of one precedence, for arithmetic), joined.
    private var chain: String {
        switch self {
        case .and(let left, let right):
            if case .and = left { return left.chain + " AND " + right.description }
            return left.description + " AND " + right.description
        case .or(let left, let right):
            if case .or = left { return left.chain + " OR " + right.description }
            return left.description + " OR " + right.description
        case .arithmetic(let left, let op, let right):
            if case .arithmetic(_, let inner, _) = left, inner.isAdditive == op.isAdditive { return left.chain + " \(op.rawValue) " + right.description }
            return left.description + " \(op.rawValue) " + right.description
        default: return description
        }
    }

    static let keywords: Set<String> = ["and", "or", "not", "in", "like", "rlike", "is", "null", "true", "false", "by", "as", "asc",
                                        "desc", "nulls", "first", "last", "metadata"]

    static func quoteIdentifierIfNeeded(_ name: String) -> String {
        let plain = name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { part in
            guard let first = part.unicodeScalars.first, first == "_" || first == "@" || (first.isASCII && first.properties.isAlphabetic) else { return false }
            return part.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "@" }
        } && !keywords.contains(name.lowercased())
        return plain ? name : "`" + name.replacingOccurrences(of: "`", with: "``") + "`"
    }

    /// A column pattern as written: bare when it is a plain name with single `*`s, else backquoted whole
    /// (a `*` inside the quotes reads back as the same pattern).
    static func quotePatternIfNeeded(_ name: String) -> String {
        func isStart(_ scalar: Unicode.Scalar) -> Bool { scalar == "_" || scalar == "@" || (scalar.isASCII && scalar.properties.isAlphabetic) }
        let allowed = name.unicodeScalars.allSatisfy { isStart($0) || $0 == "*" || $0 == "." || ("0"..."9").contains($0) }
        let pieces = name.split(whereSeparator: { $0 == "*" || $0 == "." })
        let plain = allowed && !name.isEmpty && !name.contains("**") && !name.contains("..") && !name.hasPrefix(".") && !name.hasSuffix(".")
            && pieces.allSatisfy { $0.unicodeScalars.first.map(isStart) ?? false }
        return plain ? name : "`" + name.replacingOccurrences(of: "`", with: "``") + "`"
    }

    /// ES|QL has no escape for other control characters: they stay as they are inside the quotes.
    static func quote(_ text: String) -> String { EQLExpression.quote(text, escapeControl: nil) }
}

public struct ESQLSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var line: Int
    public var column: Int
    public var expected: String
    public var description: String { "ES|QL syntax error at line \(line), column \(column): \(message), expected \(expected)" }
}

/// Recursive-descent parser for the ES|QL that detection rules use: `FROM … [METADATA …]`, then `WHERE`,
/// `EVAL`, `STATS … BY`, `KEEP`, `DROP`, `RENAME`, `SORT`, `LIMIT`, `GROK`, `DISSECT`. Other commands are
/// refused by name. Keywords and command names in any case; errors give the line and column. Linear in
/// the query; nesting is bounded so that a hostile query cannot exhaust the stack.
public struct ESQLParser {
    enum Token: Equatable {
        case word(String)           // identifiers and keywords, dotted
        case quoted(String)         // `backquoted` identifier
        case string(String)
        case integer(Int64)
        case double(Double)
        case symbol(String)
        case end
    }

    static let supportedCommands = ["where", "eval", "stats", "keep", "drop", "rename", "sort", "limit", "grok", "dissect"]
    static let knownCommands = ["enrich", "lookup", "mv_expand", "inlinestats", "fork", "change_point", "completion", "sample", "rerank",
                                "row", "show", "metrics", "ts", "join", "lookup_join", "insist"]
    static let timeUnits: [String: String] = [
        "ms": "milliseconds", "millisecond": "milliseconds", "milliseconds": "milliseconds",
        "s": "seconds", "sec": "seconds", "second": "seconds", "seconds": "seconds",
        "min": "minutes", "minute": "minutes", "minutes": "minutes",
        "h": "hours", "hour": "hours", "hours": "hours",
        "d": "days", "day": "days", "days": "days",
        "w": "weeks", "week": "weeks", "weeks": "weeks",
        "mo": "months", "month": "months", "months": "months",
        "y": "years", "yr": "years", "year": "years", "years": "years",
    ]
    static let maximumDepth = 200

    private let scalars: [Unicode.Scalar]
    private var tokens: [(token: Token, offset: Int, end: Int)] = []
    private var index = 0
    private var depth = 0

    private init(_ text: String) {
        scalars = Array(text.unicodeScalars)
    }

    public static func parse(_ text: String) throws(ESQLSyntaxError) -> ESQLQuery {
        var parser = ESQLParser(text)
        try parser.tokenize()
        return try parser.parseQuery()
    }

    // MARK: Tokens

    private func location(_ offset: Int) -> (line: Int, column: Int) {
        var line = 1
        var column = 1
        for scalar in scalars[..<min(offset, scalars.count)] {
            if scalar == "\n" {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
        return (line, column)
    }

    private func error(_ message: String, expected: String, at offset: Int? = nil) -> ESQLSyntaxError {
        let (line, column) = location(offset ?? (index < tokens.count ? tokens[index].offset : scalars.count))
        return ESQLSyntaxError(message: message, line: line, column: column, expected: expected)
    }

    private mutating func tokenize() throws(ESQLSyntaxError) {
        var position = 0
        func peek(_ ahead: Int = 0) -> Unicode.Scalar? { position + ahead < scalars.count ? scalars[position + ahead] : nil }
        while position < scalars.count {
            let scalar = scalars[position]
            if scalar.properties.isWhitespace { position += 1; continue }
            if scalar == "/", peek(1) == "/" {
                while let next = peek(), next != "\n" { _ = next; position += 1 }
                continue
            }
            if scalar == "/", peek(1) == "*" {
                let start = position
                position += 2
                while position < scalars.count, !(scalars[position] == "*" && peek(1) == "/") { position += 1 }
                guard position < scalars.count else { throw error("unclosed comment", expected: "'*/'", at: start) }
                position += 2
                continue
            }
            let start = position
            if scalar == "\"" {
                if peek(1) == "\"", peek(2) == "\"" {
                    position += 3
                    var text = ""
                    while position < scalars.count, !(scalars[position] == "\"" && peek(1) == "\"" && peek(2) == "\"") {
                        text.unicodeScalars.append(scalars[position])
                        position += 1
                    }
                    guard position < scalars.count else { throw error("unclosed triple-quoted string", expected: "'\"\"\"'", at: start) }
                    position += 3
                    tokens.append((.string(text), start, position))
                    continue
                }
                position += 1
                var text = ""
                while true {
                    guard let next = peek() else { throw error("unclosed string", expected: "'\"'", at: start) }
                    position += 1
                    if next == "\"" { break }
                    if next == "\\" {
                        guard let escaped = peek() else { throw error("unclosed string", expected: "'\"'", at: start) }
                        position += 1
                        switch escaped {
                        case "n": text += "\n"
                        case "r": text += "\r"
                        case "t": text += "\t"
                        case "\"", "\\": text.unicodeScalars.append(escaped)
                        default: throw error("unknown escape \\\(escaped)", expected: "one of \\\" \\\\ \\n \\r \\t", at: position - 2)
                        }
                        continue
                    }
                    text.unicodeScalars.append(next)
                }
                tokens.append((.string(text), start, position))
                continue
            }
            if scalar == "`" {
                position += 1
                var text = ""
                while true {
                    guard let next = peek() else { throw error("unclosed quoted identifier", expected: "'`'", at: start) }
                    position += 1
                    if next == "`" {
                        if peek() == "`" { text += "`"; position += 1; continue }
                        break
                    }
                    text.unicodeScalars.append(next)
                }
                // A quoted part may continue a dotted name: `a`.b
                tokens.append((.quoted(text), start, position))
                continue
            }
            if ("0"..."9").contains(scalar) {
                var text = ""
                var isDouble = false
                while let next = peek(), ("0"..."9").contains(next) || (next == "." && !isDouble && peek(1).map { ("0"..."9").contains($0) } == true)
                    || ((next == "e" || next == "E") && !text.contains("e")) {
                    if next == "." { isDouble = true }
                    if next == "e" || next == "E" {
                        isDouble = true
                        text += "e"
                        position += 1
                        if let sign = peek(), sign == "+" || sign == "-" { text.unicodeScalars.append(sign); position += 1 }
                        continue
                    }
                    text.unicodeScalars.append(next)
                    position += 1
                }
                if isDouble {
                    guard let value = Double(text) else { throw error("malformed number \(text)", expected: "a number", at: start) }
                    tokens.append((.double(value), start, position))
                } else {
                    guard let value = Int64(text) else { throw error("number \(text) out of range", expected: "a 64-bit integer", at: start) }
                    tokens.append((.integer(value), start, position))
                }
                continue
            }
            if scalar == "_" || scalar == "@" || scalar.properties.isAlphabetic {
                var text = ""
                while let next = peek(), next == "_" || next == "@" || next == "." || next.properties.isAlphabetic || ("0"..."9").contains(next) {
                    // A dot continues a name only before another name character.
                    if next == ".", !(peek(1).map { $0 == "_" || $0 == "@" || $0.properties.isAlphabetic || ("0"..."9").contains($0) } ?? false) { break }
                    text.unicodeScalars.append(next)
                    position += 1
                }
                tokens.append((.word(text), start, position))
                continue
            }
            for symbol in ["==", "!=", "<=", ">=", "::"] where peek() == symbol.unicodeScalars.first && peek(1) == symbol.unicodeScalars.last {
                position += 2
                tokens.append((.symbol(symbol), start, position))
                break
            }
            if position > start { continue }
            guard "|,()=<>+-*/%.[]".unicodeScalars.contains(scalar) else {
                throw error("unexpected character '\(scalar)'", expected: "a command, a name, a value or an operator", at: start)
            }
            position += 1
            tokens.append((.symbol(String(scalar)), start, position))
        }
        tokens.append((.end, scalars.count, scalars.count))
    }

    // MARK: Grammar

    private var current: Token { tokens[index].token }
    private mutating func advance() { if index < tokens.count - 1 { index += 1 } }

    private func isKeyword(_ word: String) -> Bool {
        if case .word(let text) = current { return text.lowercased() == word }
        return false
    }

    private func isSymbol(_ symbol: String) -> Bool { current == .symbol(symbol) }

    private func describe(_ token: Token) -> String {
        switch token {
        case .word(let text): "'\(text)'"
        case .quoted(let text): "`\(text)`"
        case .string: "a string"
        case .integer(let value): "\(value)"
        case .double(let value): "\(value)"
        case .symbol(let symbol): "'\(symbol)'"
        case .end: "the end of the query"
        }
    }

    private mutating func expectKeyword(_ word: String) throws(ESQLSyntaxError) {
        guard isKeyword(word) else { throw error("unexpected \(describe(current))", expected: word.uppercased()) }
        advance()
    }

    private mutating func expectSymbol(_ symbol: String, _ what: String? = nil) throws(ESQLSyntaxError) {
        guard isSymbol(symbol) else { throw error("unexpected \(describe(current))", expected: what ?? "'\(symbol)'") }
        advance()
    }

    private mutating func parseQuery() throws(ESQLSyntaxError) -> ESQLQuery {
        try expectKeyword("from")
        let indices = try commaSeparated { (parser: inout ESQLParser) throws(ESQLSyntaxError) in try parser.parseIndexPattern() }
        var metadata: [String] = []
        if isKeyword("metadata") {
            advance()
            metadata = try commaSeparated { (parser: inout ESQLParser) throws(ESQLSyntaxError) in try parser.parseName(allowPattern: false) }
        }
        var commands: [ESQLCommand] = []
        while isSymbol("|") {
            advance()
            commands.append(try parseCommand())
        }
        guard current == .end else { throw error("unexpected \(describe(current))", expected: "'|' and a command, or the end of the query") }
        return ESQLQuery(indices: indices, metadata: metadata, commands: commands)
    }

    /// `logs-kubernetes.audit_logs-*`: index names are read up to a comma, a pipe or `METADATA`.
    private mutating func parseIndexPattern() throws(ESQLSyntaxError) -> String {
        var text = ""
        var last = -1
        while index < tokens.count - 1 {
            if isSymbol(",") || isSymbol("|") || isKeyword("metadata") { break }
            // Only tokens that touch make one index name.
            if last >= 0, tokens[index].offset != last { break }
            switch current {
            case .word(let word): text += word
            case .integer(let value): text += "\(value)"
            case .symbol(let symbol) where ["-", "*", ".", ":"].contains(symbol): text += symbol
            default: throw error("unexpected \(describe(current))", expected: "an index pattern")
            }
            last = tokens[index].end
            advance()
        }
        guard !text.isEmpty else { throw error("unexpected \(describe(current))", expected: "an index pattern") }
        return text
    }

    private mutating func parseCommand() throws(ESQLSyntaxError) -> ESQLCommand {
        guard case .word(let word) = current else { throw error("unexpected \(describe(current))", expected: "a command") }
        let name = word.lowercased()
        guard Self.supportedCommands.contains(name) else {
            if Self.knownCommands.contains(name) || name == "from" {
                throw error("the \(word.uppercased()) command is not supported", expected: "one of " + Self.supportedCommands.map { $0.uppercased() }.joined(separator: ", "))
            }
            throw error("unknown command '\(word)'", expected: "one of " + Self.supportedCommands.map { $0.uppercased() }.joined(separator: ", "))
        }
        advance()
        switch name {
        case "where": return .where(try parseExpression())
        case "eval": return .eval(try parseAssignments())
        case "stats":
            var aggregates: [ESQLAssignment] = []
            if !isKeyword("by") { aggregates = try parseAssignments() }
            var by: [ESQLExpression] = []
            if isKeyword("by") {
                advance()
                by = try commaSeparated { (parser: inout ESQLParser) throws(ESQLSyntaxError) in try parser.parseExpression() }
            }
            guard !aggregates.isEmpty || !by.isEmpty else { throw error("STATS without aggregates", expected: "an aggregate or BY") }
            return .stats(aggregates, by: by)
        case "keep", "drop":
            let columns = try commaSeparated { (parser: inout ESQLParser) throws(ESQLSyntaxError) in try parser.parseName(allowPattern: true) }
            return name == "keep" ? .keep(columns) : .drop(columns)
        case "rename":
            let pairs = try commaSeparated { (parser: inout ESQLParser) throws(ESQLSyntaxError) -> (from: String, to: String) in
                let from = try parser.parseName(allowPattern: false)
                try parser.expectKeyword("as")
                return (from, try parser.parseName(allowPattern: false))
            }
            return .rename(pairs)
        case "sort":
            return .sort(try commaSeparated { (parser: inout ESQLParser) throws(ESQLSyntaxError) in
                var order = ESQLOrder(expression: try parser.parseExpression(), descending: false, nullsFirst: nil)
                if parser.isKeyword("asc") {
                    parser.advance()
                } else if parser.isKeyword("desc") {
                    order.descending = true
                    parser.advance()
                }
                if parser.isKeyword("nulls") {
                    parser.advance()
                    guard parser.isKeyword("first") || parser.isKeyword("last") else {
                        throw parser.error("unexpected \(parser.describe(parser.current))", expected: "FIRST or LAST")
                    }
                    order.nullsFirst = parser.isKeyword("first")
                    parser.advance()
                }
                return order
            })
        case "limit":
            guard case .integer(let count) = current, count >= 0 else { throw error("unexpected \(describe(current))", expected: "a row count") }
            advance()
            return .limit(count)
        default:  // grok, dissect
            let field = try parsePrimary()
            guard case .string(let pattern) = current else { throw error("unexpected \(describe(current))", expected: "the pattern as a string") }
            advance()
            if name == "grok" { return .grok(field, pattern) }
            var separator: String?
            if isKeyword("append_separator") {
                advance()
                try expectSymbol("=")
                guard case .string(let text) = current else { throw error("unexpected \(describe(current))", expected: "the separator as a string") }
                separator = text
                advance()
            }
            return .dissect(field, pattern, appendSeparator: separator)
        }
    }

    /// One or more of what `parse` reads, separated by commas.
    private mutating func commaSeparated<T>(_ parse: (inout ESQLParser) throws(ESQLSyntaxError) -> T) throws(ESQLSyntaxError) -> [T] {
        var items = [try parse(&self)]
        while isSymbol(",") {
            advance()
            items.append(try parse(&self))
        }
        return items
    }

    private mutating func parseAssignments() throws(ESQLSyntaxError) -> [ESQLAssignment] {
        try commaSeparated { (parser: inout ESQLParser) throws(ESQLSyntaxError) in
            // `name = expression` (a name, then a single '='), else an expression alone.
            let start = parser.index
            if let name = try? parser.parseName(allowPattern: false), parser.isSymbol("=") {
                parser.advance()
                return ESQLAssignment(name: name, expression: try parser.parseExpression())
            }
            parser.index = start
            return ESQLAssignment(name: nil, expression: try parser.parseExpression())
        }
    }

    /// A column name: words and backquoted parts joined by dots (`a.b`, `` `a/b`.c ``); in a pattern also
    /// `*` (`Esql.*`, `*_values`). The parts of one name touch: a space ends it.
    private mutating func parseName(allowPattern: Bool) throws(ESQLSyntaxError) -> String {
        var name = ""
        var end = -1
        while index < tokens.count - 1, end < 0 || tokens[index].offset == end {
            switch current {
            case .word(let word) where end < 0 || name.hasSuffix(".") || name.hasSuffix("*"): name += word
            case .quoted(let word) where end < 0 || name.hasSuffix(".") || name.hasSuffix("*"): name += word
            case .symbol("*") where allowPattern && !name.hasSuffix("*"): name += "*"
            case .symbol(".") where !name.isEmpty && !name.hasSuffix("."): name += "."
            default:
                end = -2
            }
            if end == -2 { break }
            end = tokens[index].end
            advance()
        }
        guard !name.isEmpty, !name.hasSuffix(".") else {
            throw error("unexpected \(describe(current))", expected: allowPattern ? "a column name or pattern" : "a column name")
        }
        return name
    }

    // MARK: Expressions (loosest first): OR, AND, NOT, predicates, + -, * / %, unary, primary

    private mutating func nest<T>(_ body: (inout ESQLParser) throws(ESQLSyntaxError) -> T) throws(ESQLSyntaxError) -> T {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maximumDepth else { throw error("nesting deeper than \(Self.maximumDepth)", expected: "a flatter expression") }
        return try body(&self)
    }

    private mutating func parseExpression() throws(ESQLSyntaxError) -> ESQLExpression {
        try nest { (parser: inout ESQLParser) throws(ESQLSyntaxError) in try parser.parseOr() }
    }

    private mutating func parseOr() throws(ESQLSyntaxError) -> ESQLExpression {
        var left = try parseAnd()
        while isKeyword("or") {
            advance()
            left = .or(left, try parseAnd())
        }
        return left
    }

    private mutating func parseAnd() throws(ESQLSyntaxError) -> ESQLExpression {
        var left = try parseNot()
        while isKeyword("and") {
            advance()
            left = .and(left, try parseNot())
        }
        return left
    }

    private mutating func parseNot() throws(ESQLSyntaxError) -> ESQLExpression {
        if isKeyword("not") {
            advance()
            return .not(try nest { (parser: inout ESQLParser) throws(ESQLSyntaxError) in try parser.parseNot() })
        }
        return try parsePredicate()
    }

    private mutating func parsePredicate() throws(ESQLSyntaxError) -> ESQLExpression {
        let left = try parseAdditive()
        var negated = false
        if isKeyword("not"), index + 1 < tokens.count, case .word(let next) = tokens[index + 1].token,
           ["in", "like", "rlike"].contains(next.lowercased()) {
            negated = true
            advance()
        }
        if isKeyword("in") {
            advance()
            try expectSymbol("(", "'(' and a list of values")
            let list = try commaSeparated { (parser: inout ESQLParser) throws(ESQLSyntaxError) in try parser.parseExpression() }
            try expectSymbol(")", "')' after the list")
            return .membership(left, list, negated: negated)
        }
        if isKeyword("like") || isKeyword("rlike") {
            let regex = isKeyword("rlike")
            advance()
            guard case .string(let pattern) = current else { throw error("unexpected \(describe(current))", expected: "a pattern as a string") }
            advance()
            return .like(left, pattern, regex: regex, negated: negated)
        }
        if isKeyword("is") {
            advance()
            var not = false
            if isKeyword("not") { not = true; advance() }
            try expectKeyword("null")
            return .isNull(left, negated: not)
        }
        for op in [ESQLComparison.equal, .notEqual, .lessOrEqual, .greaterOrEqual, .less, .greater] where isSymbol(op.rawValue) {
            advance()
            return .compare(left, op, try parseAdditive())
        }
        if isSymbol("=") { throw error("'=' in a condition", expected: "'==' to compare") }
        return left
    }

    private mutating func parseAdditive() throws(ESQLSyntaxError) -> ESQLExpression {
        var left = try parseMultiplicative()
        while isSymbol("+") || isSymbol("-") {
            let op: ESQLArithmetic = isSymbol("+") ? .add : .subtract
            advance()
            left = .arithmetic(left, op, try parseMultiplicative())
        }
        return left
    }

    private mutating func parseMultiplicative() throws(ESQLSyntaxError) -> ESQLExpression {
        var left = try parseUnary()
        while isSymbol("*") || isSymbol("/") || isSymbol("%") {
            let op: ESQLArithmetic = isSymbol("*") ? .multiply : isSymbol("/") ? .divide : .modulo
            advance()
            left = .arithmetic(left, op, try parseUnary())
        }
        return left
    }

    private mutating func parseUnary() throws(ESQLSyntaxError) -> ESQLExpression {
        if isSymbol("-") {
            advance()
            return .negate(try nest { (parser: inout ESQLParser) throws(ESQLSyntaxError) in try parser.parseUnary() })
        }
        return try parsePrimary()
    }

    private mutating func parsePrimary() throws(ESQLSyntaxError) -> ESQLExpression {
        switch current {
        case .symbol("("):
            advance()
            let inner = try parseExpression()
            try expectSymbol(")", "')'")
            return inner
        case .string(let text):
            advance()
            return .literal(.string(text))
        case .integer(let value):
            advance()
            if case .word(let unit) = current, let canonical = Self.timeUnits[unit.lowercased()] {
                advance()
                return .literal(.timeSpan(quantity: value, unit: canonical))
            }
            return .literal(.integer(value))
        case .double(let value):
            advance()
            return .literal(.double(value))
        case .quoted:
            return .field(try parseName(allowPattern: false))
        case .word(let word):
            switch word.lowercased() {
            case "true", "false":
                advance()
                return .literal(.boolean(word.lowercased() == "true"))
            case "null":
                advance()
                return .literal(.null)
            default: break
            }
            if ESQLExpression.keywords.contains(word.lowercased()) {
                throw error("unexpected \(describe(current))", expected: "a value, a column or a function")
            }
            if index + 1 < tokens.count, tokens[index + 1].token == .symbol("(") {
                guard !word.contains(".") else { throw error("unexpected '('", expected: "a function name before '('") }
                advance()
                advance()  // (
                var arguments: [ESQLExpression] = []
                if isSymbol("*") {
                    advance()
                    arguments.append(.star)
                } else if !isSymbol(")") {
                    arguments = try commaSeparated { (parser: inout ESQLParser) throws(ESQLSyntaxError) in try parser.parseExpression() }
                }
                try expectSymbol(")", "')' after the arguments")
                return .function(word.uppercased(), arguments)
            }
            return .field(try parseName(allowPattern: false))
        default:
            throw error("unexpected \(describe(current))", expected: "a value, a column or a function")
        }
    }
}
