/// Kibana Query Language as Elastic's detection rules use it (the `kql.g` grammar of elastic/detection-rules):
/// `or`/`and`/`not` (case-insensitive, whitespace around them), parentheses, `field:value`, value lists
/// `field:(a or b and not c)`, quoted phrases, unquoted values with `*` wildcards and `\` escapes,
/// `field:*` (exists), ranges `< <= > >=`, nested `field:{ … }`, and free text (a value with no field).
public indirect enum KQLQuery: Sendable, Equatable, CustomStringConvertible {
    case or([KQLQuery])
    case and([KQLQuery])
    case not(KQLQuery)
    /// `field:values`.
    case field(String, KQLValues)
    /// `field < value` and friends.
    case range(String, KQLRangeOperator, KQLValue)
    /// `field:{ query }`: every condition on the same object of the (array) field.
    case nested(String, KQLQuery)
    /// A value with no field: matches if any field has it.
    case freeText(KQLValues)

    public var description: String {
        switch self {
        case .or(let parts): "(" + parts.map(\.description).joined(separator: " or ") + ")"
        case .and(let parts): "(" + parts.map(\.description).joined(separator: " and ") + ")"
        case .not(let query): "not \(query)"
        case .field(let field, let values): "\(field):\(values)"
        case .range(let field, let op, let value): "\(field) \(op.rawValue) \(value)"
        case .nested(let field, let query): "\(field):{\(query)}"
        case .freeText(let values): "\(values)"
        }
    }
}

/// The right-hand side of `field:`: one value or a boolean list of them.
public indirect enum KQLValues: Sendable, Equatable, CustomStringConvertible {
    case or([KQLValues])
    case and([KQLValues])
    case not(KQLValues)
    case value(KQLValue)

    public var description: String {
        switch self {
        case .or(let parts): "(" + parts.map(\.description).joined(separator: " or ") + ")"
        case .and(let parts): "(" + parts.map(\.description).joined(separator: " and ") + ")"
        case .not(let values): "not \(values)"
        case .value(let value): value.description
        }
    }
}

public enum KQLRangeOperator: String, Sendable {
    case less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
}

/// One literal. Quoted phrases are matched literally (a quoted `"*"` is a star); unquoted values may hold
/// `*` wildcards, and unquoted `true`/`false`/numbers compare as their types.
public enum KQLValue: Sendable, Equatable, CustomStringConvertible {
    /// A quoted phrase, escapes decoded.
    case phrase(String)
    /// An unquoted value without wildcards, escapes decoded.
    case keyword(String)
    /// An unquoted value with wildcards: the literal pieces between the stars (`a*b` → ["a", "b"]).
    case wildcard([String])

    public var description: String {
        switch self {
        case .phrase(let text): "\"\(text)\""
        case .keyword(let text): text
        case .wildcard(let pieces): pieces.joined(separator: "*")
        }
    }

    /// A lone unquoted `*`: the field exists.
    public var isExists: Bool { self == .wildcard(["", ""]) }
}

/// Where and why a query could not be parsed.
public struct KQLSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    /// Character offset in the query.
    public var position: Int
    public var expected: String
    public var description: String { "KQL syntax error at character \(position): \(message), expected \(expected)" }
}

/// Recursive-descent parser for ``KQLQuery``.
public struct KQLParser {
    enum Token: Equatable {
        case leftParen, rightParen, leftBrace, rightBrace, colon
        case range(KQLRangeOperator)
        case and, or, not
        /// A quoted phrase (decoded).
        case quoted(String)
        /// An unquoted literal: decoded pieces between unescaped stars, and whether any star occurred.
        case unquoted(pieces: [String], text: String)
        case end
    }

    private var tokens: [(token: Token, position: Int)] = []
    private var index = 0

    public static func parse(_ query: String) throws(KQLSyntaxError) -> KQLQuery {
        var parser = KQLParser()
        parser.tokens = try tokenize(query)
        let result = try parser.parseOr()
        guard parser.current == .end else {
            throw parser.error("unexpected \(parser.describe(parser.current))", expected: "'and', 'or' or the end of the query")
        }
        return result
    }

    private var current: Token { tokens[index].token }
    private var position: Int { tokens[index].position }
    private mutating func advance() { if index < tokens.count - 1 { index += 1 } }

    private func error(_ message: String, expected: String) -> KQLSyntaxError {
        KQLSyntaxError(message: message, position: position, expected: expected)
    }

    private func describe(_ token: Token) -> String {
        switch token {
        case .leftParen: "'('"
        case .rightParen: "')'"
        case .leftBrace: "'{'"
        case .rightBrace: "'}'"
        case .colon: "':'"
        case .range(let op): "'\(op.rawValue)'"
        case .and: "'and'"
        case .or: "'or'"
        case .not: "'not'"
        case .quoted(let text): "\"\(text)\""
        case .unquoted(_, let text): "'\(text)'"
        case .end: "end of the query"
        }
    }

    private mutating func parseOr() throws(KQLSyntaxError) -> KQLQuery {
        var parts = [try parseAnd()]
        while current == .or {
            advance()
            parts.append(try parseAnd())
        }
        return parts.count == 1 ? parts[0] : .or(parts)
    }

    private mutating func parseAnd() throws(KQLSyntaxError) -> KQLQuery {
        var parts = [try parseNot()]
        while current == .and {
            advance()
            parts.append(try parseNot())
        }
        return parts.count == 1 ? parts[0] : .and(parts)
    }

    private mutating func parseNot() throws(KQLSyntaxError) -> KQLQuery {
        if current == .not {
            advance()
            return .not(try parseNot())
        }
        return try parseTerm()
    }

    private mutating func parseTerm() throws(KQLSyntaxError) -> KQLQuery {
        switch current {
        case .leftParen:
            advance()
            let inner = try parseOr()
            guard current == .rightParen else { throw error("unclosed '('", expected: "')'") }
            advance()
            return inner
        case .quoted, .unquoted:
            let start = position
            let literal = current
            advance()
            switch current {
            case .colon:
                let field = try fieldName(literal, at: start)
                advance()
                if current == .leftBrace {
                    advance()
                    let inner = try parseOr()
                    guard current == .rightBrace else { throw error("unclosed '{'", expected: "'}'") }
                    advance()
                    return .nested(field, inner)
                }
                return .field(field, try parseFieldValues())
            case .range(let op):
                let field = try fieldName(literal, at: start)
                advance()
                guard let value = value(current) else { throw error("a range needs a value", expected: "a number, date or string") }
                advance()
                return .range(field, op, value)
            default:
                return .freeText(.value(value(literal)!))
            }
        default:
            throw error("unexpected \(describe(current))", expected: "a field, a value, 'not' or '('")
        }
    }

    private func fieldName(_ token: Token, at start: Int) throws(KQLSyntaxError) -> String {
        switch token {
        case .quoted(let text): return text
        case .unquoted(let pieces, _):
            guard pieces.count == 1 else {
                throw KQLSyntaxError(message: "wildcards in field names are not supported", position: start, expected: "a field name")
            }
            return pieces[0]
        default: throw KQLSyntaxError(message: "not a field name", position: start, expected: "a field name")
        }
    }

    private func value(_ token: Token) -> KQLValue? {
        switch token {
        case .quoted(let text): .phrase(text)
        case .unquoted(let pieces, _): pieces.count == 1 ? .keyword(pieces[0]) : .wildcard(pieces)
        default: nil
        }
    }

    /// After `field:`, and inside value lists: one literal, or a parenthesized list where `and`/`or`/`not`
    /// combine values.
    private mutating func parseFieldValues(expected: String = "a value or '('") throws(KQLSyntaxError) -> KQLValues {
        switch current {
        case .leftParen:
            advance()
            let inner = try parseValueOr()
            guard current == .rightParen else { throw error("unclosed '('", expected: "')'") }
            advance()
            return inner
        case .quoted, .unquoted:
            let result = value(current)!
            advance()
            return .value(result)
        default:
            throw error("unexpected \(describe(current))", expected: expected)
        }
    }

    private mutating func parseValueOr() throws(KQLSyntaxError) -> KQLValues {
        var parts = [try parseValueAnd()]
        while current == .or {
            advance()
            parts.append(try parseValueAnd())
        }
        return parts.count == 1 ? parts[0] : .or(parts)
    }

    private mutating func parseValueAnd() throws(KQLSyntaxError) -> KQLValues {
        var parts = [try parseValueNot()]
        while current == .and {
            advance()
            parts.append(try parseValueNot())
        }
        return parts.count == 1 ? parts[0] : .and(parts)
    }

    private mutating func parseValueNot() throws(KQLSyntaxError) -> KQLValues {
        if current == .not {
            advance()
            return .not(try parseValueNot())
        }
        return try parseFieldValues(expected: "a value, 'not' or '('")
    }

    // MARK: Tokens

    static func tokenize(_ query: String) throws(KQLSyntaxError) -> [(token: Token, position: Int)] {
        let characters = Array(query.unicodeScalars)
        var tokens: [(Token, Int)] = []
        var index = 0
        func isSpace(_ c: Unicode.Scalar) -> Bool { c == " " || c == "\t" || c == "\n" || c == "\r" }
        // Characters that end an unquoted literal unless escaped.
        func isSpecial(_ c: Unicode.Scalar) -> Bool { "\\():<>\"{}".unicodeScalars.contains(c) || isSpace(c) }
        while index < characters.count {
            let c = characters[index]
            if isSpace(c) {
                index += 1
                continue
            }
            let start = index
            switch c {
            case "(": tokens.append((.leftParen, start)); index += 1
            case ")": tokens.append((.rightParen, start)); index += 1
            case "{": tokens.append((.leftBrace, start)); index += 1
            case "}": tokens.append((.rightBrace, start)); index += 1
            case ":": tokens.append((.colon, start)); index += 1
            case "<", ">":
                let orEqual = index + 1 < characters.count && characters[index + 1] == "="
                let op: KQLRangeOperator = c == "<" ? (orEqual ? .lessOrEqual : .less) : (orEqual ? .greaterOrEqual : .greater)
                tokens.append((.range(op), start))
                index += orEqual ? 2 : 1
            case "\"":
                index += 1
                var text = String.UnicodeScalarView()
                var closed = false
                while index < characters.count {
                    let d = characters[index]
                    if d == "\"" { closed = true; index += 1; break }
                    if d == "\r" || d == "\n" { break }
                    if d == "\\" {
                        guard index + 1 < characters.count else { break }
                        let e = characters[index + 1]
                        switch e {
                        case "t": text.append("\t")
                        case "n": text.append("\n")
                        case "r": text.append("\r")
                        case "\"", "\\": text.append(e)
                        default:
                            throw KQLSyntaxError(message: "invalid escape '\\\(e)' in a quoted value", position: index, expected: "\\\" \\\\ \\t \\n or \\r")
                        }
                        index += 2
                        continue
                    }
                    text.append(d)
                    index += 1
                }
                guard closed else {
                    throw KQLSyntaxError(message: "unterminated quoted value", position: start, expected: "a closing '\"'")
                }
                tokens.append((.quoted(String(text)), start))
            default:
                var pieces: [String] = []
                var piece = String.UnicodeScalarView()
                var raw = String.UnicodeScalarView()
                var escapedAny = false
                while index < characters.count, !isSpecial(characters[index]) || characters[index] == "\\" {
                    let d = characters[index]
                    if d == "\\" {
                        guard index + 1 < characters.count else {
                            throw KQLSyntaxError(message: "a trailing '\\' escapes nothing", position: index, expected: "an escaped character")
                        }
                        let e = characters[index + 1]
                        piece.append(e)
                        raw.append(d)
                        raw.append(e)
                        escapedAny = true
                        index += 2
                        continue
                    }
                    raw.append(d)
                    if d == "*" {
                        pieces.append(String(piece))
                        piece = String.UnicodeScalarView()
                    } else {
                        piece.append(d)
                    }
                    index += 1
                }
                pieces.append(String(piece))
                let text = String(raw)
                if !escapedAny, pieces.count == 1 {
                    switch text.lowercased() {
                    case "and": tokens.append((.and, start)); continue
                    case "or": tokens.append((.or, start)); continue
                    case "not": tokens.append((.not, start)); continue
                    default: break
                    }
                }
                tokens.append((.unquoted(pieces: pieces, text: text), start))
            }
        }
        tokens.append((.end, characters.count))
        return tokens
    }
}
