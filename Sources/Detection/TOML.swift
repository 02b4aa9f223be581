import Foundation

/// A TOML 1.0 reader for rule files and the settings file.
///
/// Our own rather than TOMLKit's bundled toml++: the rule fuzz target found toml++ asserting — aborting
/// the process — on malformed input in several places (a table header starting with `é`, an array closed
/// by `}`), and in a build without assertions those checks are `__builtin_assume`, undefined behaviour.
/// Rules and settings are user input; they get errors that name the line, never a crash. Dropping the C++
/// dependency also takes a minute off every cold build.
public enum TOMLValue: Sendable, Equatable {
    case string(String)
    case integer(Int)
    case float(Double)
    case boolean(Bool)
    /// Offset/local date-times, dates and times, kept as written (nothing here computes with them).
    case dateTime(String)
    case array([TOMLValue])
    case table(TOMLTable)

    public var string: String? { if case .string(let value) = self { value } else { nil } }
    public var int: Int? { if case .integer(let value) = self { value } else { nil } }
    public var bool: Bool? { if case .boolean(let value) = self { value } else { nil } }
    public var array: [TOMLValue]? { if case .array(let value) = self { value } else { nil } }
    public var table: TOMLTable? { if case .table(let value) = self { value } else { nil } }
}

public struct TOMLTable: Sendable, Equatable {
    public fileprivate(set) var entries: [String: TOMLValue] = [:]
    public var keys: Dictionary<String, TOMLValue>.Keys { entries.keys }
    public subscript(key: String) -> TOMLValue? { entries[key] }

    public init() {}

    /// Parses a whole document.
    public init(parsing text: String) throws(TOMLParseError) {
        var parser = TOMLParser(text)
        self = try parser.document()
    }
}

public struct TOMLParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}

/// Recursive descent over the UTF-8 bytes. Tables are built as reference-typed nodes while parsing (headers
/// reopen tables defined earlier) and frozen into `TOMLTable` values at the end.
private struct TOMLParser {
    private final class Node {
        enum Origin { case implicit, header, dotted, inline }
        var origin: Origin
        var entries: [String: Entry] = [:]
        init(_ origin: Origin) { self.origin = origin }

        func frozen() -> TOMLTable {
            var table = TOMLTable()
            for (key, entry) in entries {
                switch entry {
                case .value(let value): table.entries[key] = value
                case .table(let node): table.entries[key] = .table(node.frozen())
                case .tables(let nodes): table.entries[key] = .array(nodes.map { .table($0.frozen()) })
                }
            }
            return table
        }
    }
    private enum Entry {
        case value(TOMLValue)
        case table(Node)
        case tables([Node])   // [[array of tables]]
    }

    private let bytes: [UInt8]
    private var index = 0
    private var line = 1
    private var depth = 0
    private static let maxDepth = 64

    init(_ text: String) { bytes = Array(text.utf8) }

    private var peek: UInt8? { index < bytes.count ? bytes[index] : nil }
    private func peek(_ offset: Int) -> UInt8? { index + offset < bytes.count ? bytes[index + offset] : nil }

    private func failure(_ message: String) -> TOMLParseError { TOMLParseError(line: line, message: message) }

    private func describeNext() -> String {
        guard let byte = peek else { return "the end of the text" }
        if byte == UInt8(ascii: "\n") { return "the end of the line" }
        let end = min(bytes.count, index + 4)
        let scalar = String(decoding: bytes[index..<end], as: UTF8.self).unicodeScalars.first.map { String($0) } ?? "?"
        return byte < 0x20 || byte == 0x7F ? String(format: "control character 0x%02X", byte) : "'\(scalar)'"
    }

    // MARK: document

    mutating func document() throws(TOMLParseError) -> TOMLTable {
        let root = Node(.header)
        var current = root
        while true {
            skipWhitespace()
            guard let byte = peek else { break }
            switch byte {
            case UInt8(ascii: "#"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
                break
            case UInt8(ascii: "["):
                current = try tableHeader(root: root)
            default:
                try keyValue(into: current)
            }
            try endOfLine()
        }
        return root.frozen()
    }

    private mutating func skipWhitespace() {
        while let byte = peek, byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { index += 1 }
    }

    /// Optional comment, then a newline or the end of the text.
    private mutating func endOfLine() throws(TOMLParseError) {
        skipWhitespace()
        if peek == UInt8(ascii: "#") { try comment() }
        if peek == UInt8(ascii: "\r") && peek(1) == UInt8(ascii: "\n") { index += 1 }
        guard let byte = peek else { return }
        guard byte == UInt8(ascii: "\n") else { throw failure("expected the end of the line, saw \(describeNext())") }
        index += 1
        line += 1
    }

    private mutating func comment() throws(TOMLParseError) {
        index += 1
        while let byte = peek, byte != UInt8(ascii: "\n") {
            if (byte < 0x20 && byte != UInt8(ascii: "\t") && !(byte == UInt8(ascii: "\r") && peek(1) == UInt8(ascii: "\n"))) || byte == 0x7F {
                throw failure("\(describeNext()) in a comment")
            }
            index += 1
        }
    }

    /// Whitespace, newlines and comments inside arrays.
    private mutating func skipBlank() throws(TOMLParseError) {
        while let byte = peek {
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"): index += 1
            case UInt8(ascii: "\n"): index += 1; line += 1
            case UInt8(ascii: "\r") where peek(1) == UInt8(ascii: "\n"): index += 1
            case UInt8(ascii: "#"): try comment()
            default: return
            }
        }
    }

    // MARK: tables and keys

    private mutating func tableHeader(root: Node) throws(TOMLParseError) -> Node {
        index += 1
        let isArray = peek == UInt8(ascii: "[")
        if isArray { index += 1 }
        skipWhitespace()
        let path = try key()
        guard peek == UInt8(ascii: "]"), !isArray || peek(1) == UInt8(ascii: "]") else {
            throw failure("expected '\(isArray ? "]]" : "]")' to close the table header, saw \(describeNext())")
        }
        index += isArray ? 2 : 1
        let name = path.joined(separator: ".")

        var table = root
        for part in path.dropLast() {
            switch table.entries[part] {
            case nil:
                let node = Node(.implicit)
                table.entries[part] = .table(node)
                table = node
            case .table(let node) where node.origin != .inline:
                table = node
            case .tables(let nodes):
                table = nodes[nodes.count - 1]
            default:
                throw failure("cannot define [\(name)]: \(part) is already a value")
            }
        }
        let last = path[path.count - 1]
        if isArray {
            switch table.entries[last] {
            case nil:
                let node = Node(.header)
                table.entries[last] = .tables([node])
                return node
            case .tables(var nodes):
                let node = Node(.header)
                nodes.append(node)
                table.entries[last] = .tables(nodes)
                return node
            default:
                throw failure("cannot define [[\(name)]]: it is already a table or value")
            }
        }
        switch table.entries[last] {
        case nil:
            let node = Node(.header)
            table.entries[last] = .table(node)
            return node
        case .table(let node) where node.origin == .implicit:
            node.origin = .header
            return node
        default:
            throw failure("table [\(name)] is defined twice")
        }
    }

    /// A dotted key: bare, "basic" or 'literal' parts joined by dots.
    private mutating func key() throws(TOMLParseError) -> [String] {
        var parts: [String] = []
        while true {
            skipWhitespace()
            guard let byte = peek else { throw failure("expected a key, saw the end of the text") }
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") {
                if peek(1) == byte && peek(2) == byte { throw failure("a key cannot be a multi-line string") }
                parts.append(try string())
            } else {
                let start = index
                while let next = peek, Self.isBareKeyByte(next) { index += 1 }
                guard index > start else { throw failure("expected a key (letters, digits, '_', '-' or a quoted key), saw \(describeNext())") }
                parts.append(String(decoding: bytes[start..<index], as: UTF8.self))
            }
            skipWhitespace()
            guard peek == UInt8(ascii: ".") else { return parts }
            index += 1
        }
    }

    private static func isBareKeyByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"): true
        default: false
        }
    }

    private mutating func keyValue(into table: Node) throws(TOMLParseError) {
        let path = try key()
        guard peek == UInt8(ascii: "=") else { throw failure("expected '=' after the key \(path.joined(separator: ".")), saw \(describeNext())") }
        index += 1
        skipWhitespace()
        let value = try value()
        var target = table
        for part in path.dropLast() {
            switch target.entries[part] {
            case nil:
                let node = Node(.dotted)
                target.entries[part] = .table(node)
                target = node
            case .table(let node) where node.origin == .dotted || node.origin == .implicit:
                target = node
            default:
                throw failure("cannot set \(path.joined(separator: ".")): \(part) is already defined")
            }
        }
        let last = path[path.count - 1]
        guard target.entries[last] == nil else { throw failure("the key \(path.joined(separator: ".")) is defined twice") }
        target.entries[last] = .value(value)
    }

    // MARK: values

    private mutating func value() throws(TOMLParseError) -> TOMLValue {
        guard let byte = peek else { throw failure("expected a value, saw the end of the text") }
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "'"):
            return .string(try string())
        case UInt8(ascii: "["):
            return try nested { (parser: inout TOMLParser) throws(TOMLParseError) in try parser.array() }
        case UInt8(ascii: "{"):
            return try nested { (parser: inout TOMLParser) throws(TOMLParseError) in try parser.inlineTable() }
        case UInt8(ascii: "t") where matches("true"):
            index += 4
            return .boolean(true)
        case UInt8(ascii: "f") where matches("false"):
            index += 5
            return .boolean(false)
        default:
            return try numberOrDate()
        }
    }

    private mutating func nested(_ body: (inout TOMLParser) throws(TOMLParseError) -> TOMLValue) throws(TOMLParseError) -> TOMLValue {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else { throw failure("values nested deeper than \(Self.maxDepth) levels") }
        return try body(&self)
    }

    private func matches(_ word: String) -> Bool {
        let utf8 = Array(word.utf8)
        guard index + utf8.count <= bytes.count, Array(bytes[index..<index + utf8.count]) == utf8 else { return false }
        guard let after = peek(utf8.count) else { return true }
        return !Self.isBareKeyByte(after)
    }

    private mutating func array() throws(TOMLParseError) -> TOMLValue {
        index += 1
        var elements: [TOMLValue] = []
        while true {
            try skipBlank()
            if peek == UInt8(ascii: "]") { index += 1; return .array(elements) }
            elements.append(try value())
            try skipBlank()
            switch peek {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"): index += 1; return .array(elements)
            default: throw failure("expected ',' or ']' in an array, saw \(describeNext())")
            }
        }
    }

    private mutating func inlineTable() throws(TOMLParseError) -> TOMLValue {
        index += 1
        let node = Node(.inline)
        skipWhitespace()
        if peek == UInt8(ascii: "}") { index += 1; return .table(node.frozen()) }
        while true {
            skipWhitespace()
            try keyValue(into: node)
            skipWhitespace()
            switch peek {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "}"): index += 1; return .table(Self.sealed(node).frozen())
            default: throw failure("expected ',' or '}' in an inline table, saw \(describeNext())")
            }
        }
    }

    /// Dotted keys inside an inline table build sub-tables that are as closed as the inline table itself.
    private static func sealed(_ node: Node) -> Node {
        for case .table(let child) in node.entries.values { child.origin = .inline; _ = sealed(child) }
        return node
    }

    // MARK: strings

    private mutating func string() throws(TOMLParseError) -> String {
        let quote = bytes[index]
        let basic = quote == UInt8(ascii: "\"")
        let multiLine = peek(1) == quote && peek(2) == quote
        index += multiLine ? 3 : 1
        if multiLine {
            // A newline right after the opening delimiter is not part of the string.
            if peek == UInt8(ascii: "\n") { index += 1; line += 1 }
            else if peek == UInt8(ascii: "\r") && peek(1) == UInt8(ascii: "\n") { index += 2; line += 1 }
        }
        var result: [UInt8] = []
        while true {
            guard let byte = peek else { throw failure("unterminated string") }
            if byte == quote {
                if !multiLine { index += 1; break }
                if peek(1) == quote && peek(2) == quote {
                    // Up to two quotes right before the closing delimiter belong to the content.
                    var extra = 0
                    while extra < 2 && peek(3 + extra) == quote { extra += 1 }
                    result.append(contentsOf: repeatElement(quote, count: extra))
                    index += 3 + extra
                    break
                }
                result.append(byte)
                index += 1
                continue
            }
            if byte == UInt8(ascii: "\n") {
                guard multiLine else { throw failure("unterminated string (a newline inside a single-line string)") }
                result.append(byte); index += 1; line += 1
                continue
            }
            if byte == UInt8(ascii: "\r") && multiLine && peek(1) == UInt8(ascii: "\n") {
                result.append(UInt8(ascii: "\n")); index += 2; line += 1
                continue
            }
            if (byte < 0x20 && byte != UInt8(ascii: "\t")) || byte == 0x7F {
                throw failure("\(describeNext()) in a string")
            }
            if basic && byte == UInt8(ascii: "\\") {
                try escape(into: &result, multiLine: multiLine)
                continue
            }
            result.append(byte)
            index += 1
        }
        return String(decoding: result, as: UTF8.self)
    }

    private mutating func escape(into result: inout [UInt8], multiLine: Bool) throws(TOMLParseError) {
        index += 1
        guard let byte = peek else { throw failure("unterminated string") }
        index += 1
        switch byte {
        case UInt8(ascii: "b"): result.append(0x08)
        case UInt8(ascii: "t"): result.append(0x09)
        case UInt8(ascii: "n"): result.append(0x0A)
        case UInt8(ascii: "f"): result.append(0x0C)
        case UInt8(ascii: "r"): result.append(0x0D)
        case UInt8(ascii: "\""): result.append(byte)
        case UInt8(ascii: "\\"): result.append(byte)
        case UInt8(ascii: "u"), UInt8(ascii: "U"):
            let count = byte == UInt8(ascii: "u") ? 4 : 8
            guard index + count <= bytes.count,
                  let code = UInt32(String(decoding: bytes[index..<index + count], as: UTF8.self), radix: 16),
                  bytes[index..<index + count].allSatisfy({ Character(UnicodeScalar($0)).isHexDigit }),
                  let scalar = Unicode.Scalar(code)
            else { throw failure("invalid \\\(Character(UnicodeScalar(byte))) escape: expected \(count) hex digits of a Unicode scalar value") }
            index += count
            result.append(contentsOf: Array(String(Character(scalar)).utf8))
        case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
            // Line-ending backslash (multi-line strings only): the newline and all whitespace after it are dropped.
            index -= 1
            guard multiLine else { throw failure("invalid escape sequence \\\(describeNext())") }
            var sawNewline = false
            while let next = peek {
                if next == UInt8(ascii: " ") || next == UInt8(ascii: "\t") { index += 1 }
                else if next == UInt8(ascii: "\n") { index += 1; line += 1; sawNewline = true }
                else if next == UInt8(ascii: "\r") && peek(1) == UInt8(ascii: "\n") { index += 1 }
                else { break }
            }
            guard sawNewline else { throw failure("a backslash followed by spaces must end the line") }
        default:
            index -= 1
            throw failure("invalid escape sequence \\\(describeNext())")
        }
    }

    // MARK: numbers and date-times

    private mutating func numberOrDate() throws(TOMLParseError) -> TOMLValue {
        let start = index
        // Date-times: a date (dddd-) or a local time (dd:); a space may separate date and time.
        if let a = peek, let b = peek(1), Self.isDigit(a), Self.isDigit(b),
           peek(2) == UInt8(ascii: ":") || (peek(2).map(Self.isDigit) == true && peek(3).map(Self.isDigit) == true && peek(4) == UInt8(ascii: "-")) {
            while let byte = peek, Self.isDigit(byte) || "-:.TtZz+".utf8.contains(byte)
                    || (byte == UInt8(ascii: " ") && peek(1).map(Self.isDigit) == true && index - start == 10) {
                index += 1
            }
            let text = String(decoding: bytes[start..<index], as: UTF8.self)
            guard Self.isDateTime(text) else { throw failure("invalid date-time \(text)") }
            return .dateTime(text)
        }
        while let byte = peek, Self.isBareKeyByte(byte) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: ".") { index += 1 }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        guard !text.isEmpty else { throw failure("expected a value, saw \(describeNext())") }
        if let integer = Self.integer(text) { return .integer(integer) }
        if let float = Self.float(text) { return .float(float) }
        throw failure("invalid value \(text)")
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
    private static func isASCIIDigit(_ character: Character) -> Bool { character >= "0" && character <= "9" }

    /// Digits with single underscores between them.
    private static func digits(_ text: Substring, _ isDigit: (Character) -> Bool) -> String? {
        guard let first = text.first, let last = text.last, isDigit(first), isDigit(last), !text.contains("__") else { return nil }
        guard text.allSatisfy({ $0 == "_" || isDigit($0) }) else { return nil }
        return text.replacingOccurrences(of: "_", with: "")
    }

    private static func integer(_ text: String) -> Int? {
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] where text.hasPrefix(prefix) {
            let body = text.dropFirst(2)
            guard let digits = digits(body, { $0.isHexDigit && Int(String($0), radix: radix) != nil }) else { return nil }
            return Int(digits, radix: radix)
        }
        var body = Substring(text)
        if body.first == "+" || body.first == "-" { body = body.dropFirst() }
        guard let digits = digits(body, Self.isASCIIDigit), digits == "0" || !digits.hasPrefix("0") else { return nil }
        return Int(text.first == "-" ? "-" + digits : digits)
    }

    private static func float(_ text: String) -> Double? {
        var body = Substring(text)
        let negative = body.first == "-"
        if body.first == "+" || body.first == "-" { body = body.dropFirst() }
        if body == "inf" { return negative ? -.infinity : .infinity }
        if body == "nan" { return .nan }
        let exponentSplit = body.split(separator: "e", maxSplits: 1, omittingEmptySubsequences: false)
            .flatMap { $0.split(separator: "E", maxSplits: 1, omittingEmptySubsequences: false) }
        guard exponentSplit.count <= 2 else { return nil }
        let mantissa = exponentSplit[0]
        let parts = mantissa.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = digits(parts[0], Self.isASCIIDigit), whole == "0" || !whole.hasPrefix("0") else { return nil }
        var normalized = whole
        if parts.count == 2 {
            guard let fraction = digits(parts[1], Self.isASCIIDigit) else { return nil }
            normalized += "." + fraction
        }
        if exponentSplit.count == 2 {
            var exponent = exponentSplit[1]
            var sign = ""
            if exponent.first == "+" || exponent.first == "-" { sign = String(exponent.first!); exponent = exponent.dropFirst() }
            guard let digits = digits(exponent, Self.isASCIIDigit) else { return nil }
            normalized += "e" + sign + digits
        } else if parts.count == 1 {
            return nil   // an integer, not a float
        }
        return Double((negative ? "-" : "") + normalized)
    }

    /// RFC 3339 shapes TOML allows: date, time, local or offset date-time (T or space), fractional seconds.
    private static func isDateTime(_ text: String) -> Bool {
        let pattern = #"^(\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?)?|\d{2}:\d{2}:\d{2}(\.\d+)?)$"#
        return text.range(of: pattern, options: .regularExpression) != nil
    }
}
