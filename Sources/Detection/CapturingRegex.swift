// Regular expressions with captures in linear time: Java's syntax (ES|QL's REPLACE) and Grok's (GROK), as a Pike VM.

/// A regular expression in the regular subset of Java's (and Oniguruma's) syntax, searched for in a text
/// with capture groups — what ES|QL's `REPLACE` (Java's `Matcher.replaceAll`) and `GROK` (Grok patterns
/// over Joni) need. Matching is leftmost-first with the submatches a backtracking engine would report
/// (greedy and lazy quantifiers keep their preference), but runs as a Pike VM: one ordered list of
/// threads per position, so time is O(text × pattern) for every pattern and text, whoever wrote the text.
///
/// Supported: literals and escapes, `.` (no line terminator), `[…]` classes with ranges, `[^…]` and
/// `\d \D \s \S \w \W` inside or outside, groups `( )`, `(?: )`, named `(?<name> )`, `|`, the quantifiers
/// `* + ? {n} {n,} {n,m}` and their lazy forms (`*?` …), anchors `^ $ \A \z \Z` and word boundaries
/// `\b \B`. Refused, since no automaton runs them: back-references, look-around, atomic groups, possessive
/// quantifiers and inline flags.
public struct CapturingRegex: Sendable, CustomStringConvertible {
    enum Assertion: Sendable, Equatable { case start, end, endBeforeFinalNewline, wordBoundary, notWordBoundary }

    enum Instruction: Sendable, Equatable {
        case scalar(Unicode.Scalar)
        case any
        case set(LinearRegex.CharacterSet)
        /// Try the first target before the second.
        case split(Int, Int)
        case jump(Int)
        case save(Int)
        case assert(Assertion)
        case match
    }

    public enum Dialect: Sendable {
        /// Java's `java.util.regex`: `.` matches no line terminator (`\n \r \u{85} \u{2028} \u{2029}`).
        case java
        /// Oniguruma's Ruby syntax, as Grok runs it (Joni): `.` matches anything but `\n`.
        case oniguruma
    }

    public let pattern: String
    let program: [Instruction]
    /// The name of each capture group (index 0 is the whole match), nil for unnamed groups.
    public let groupNames: [String?]
    public static let maximumProgram = 20_000

    public init(_ pattern: String, dialect: Dialect = .java) throws(RegexSyntaxError) {
        self.pattern = pattern
        var parser = Parser(scalars: Array(pattern.unicodeScalars), dialect: dialect)
        let node = try parser.parseAlternation()
        guard parser.position == parser.scalars.count else {
            throw RegexSyntaxError(message: "unmatched ')'", position: parser.position, expected: "the end of the pattern")
        }
        var compiler = Compiler()
        try compiler.emit(.group(node, index: 0))
        try compiler.append(.match)
        program = compiler.program
        groupNames = [nil] + parser.names
    }

    public var description: String { "/\(pattern)/" }
    public var groupCount: Int { groupNames.count }
    public var programSize: Int { program.count }

    /// The leftmost match at or after `start`: the scalar range of every group (nil for a group that did
    /// not take part), or nil when there is none.
    public func firstMatch(in text: [Unicode.Scalar], from start: Int = 0) -> [Range<Int>?]? {
        var steps = 0
        return search(text, from: start, steps: &steps)
    }

    public func firstMatch(in text: String) -> [String?]? {
        let scalars = Array(text.unicodeScalars)
        guard let groups = firstMatch(in: scalars) else { return nil }
        return groups.map { range in range.map { String(String.UnicodeScalarView(scalars[$0])) } }
    }

    /// As ``firstMatch(in:from:)``, counting thread steps: at most (text length + 1) × program size for the
    /// search, whatever the pattern — the linear-time guarantee, testable without a clock.
    public func firstMatchCountingSteps(_ text: String) -> (matched: Bool, steps: Int) {
        var steps = 0
        let found = search(Array(text.unicodeScalars), from: 0, steps: &steps)
        return (found != nil, steps)
    }

    /// Java's `Matcher.replaceAll`: every non-overlapping match, left to right, replaced; in the
    /// replacement `$n` and `${name}` insert a group, `\x` inserts `x`. An empty match inserts the
    /// replacement and the search goes on one character later.
    public func replacingAll(in text: String, with replacement: String) -> String {
        let scalars = Array(text.unicodeScalars)
        var output = String.UnicodeScalarView()
        var position = 0
        var copied = 0
        var steps = 0
        while position <= scalars.count, let groups = search(scalars, from: position, steps: &steps), let whole = groups[0] {
            output.append(contentsOf: scalars[copied..<whole.lowerBound])
            appendReplacement(replacement, groups: groups, text: scalars, to: &output)
            copied = whole.upperBound
            if whole.isEmpty {
                if whole.upperBound < scalars.count { output.append(scalars[whole.upperBound]) }
                copied = whole.upperBound + 1
                position = whole.upperBound + 1
            } else {
                position = whole.upperBound
            }
        }
        if copied < scalars.count { output.append(contentsOf: scalars[copied...]) }
        return String(output)
    }

    private func appendReplacement(_ replacement: String, groups: [Range<Int>?], text: [Unicode.Scalar], to output: inout String.UnicodeScalarView) {
        let pieces = Array(replacement.unicodeScalars)
        var index = 0
        func insert(_ group: Int) { if group < groups.count, let range = groups[group] { output.append(contentsOf: text[range]) } }
        while index < pieces.count {
            let scalar = pieces[index]
            if scalar == "\\", index + 1 < pieces.count {
                output.append(pieces[index + 1])
                index += 2
            } else if scalar == "$", index + 1 < pieces.count, pieces[index + 1] == "{",
                let close = pieces[(index + 2)...].firstIndex(of: "}"),
                let group = groupNames.firstIndex(of: String(String.UnicodeScalarView(pieces[(index + 2)..<close])))
            {
                insert(group)
                index = close + 1
            } else if scalar == "$", index + 1 < pieces.count, pieces[index + 1].isASCII, let first = Int(String(pieces[index + 1])) {
                // Java takes more digits while they still name a group.
                var group = first
                index += 2
                while index < pieces.count, pieces[index].isASCII, let next = Int(String(pieces[index])), group * 10 + next < groups.count {
                    group = group * 10 + next
                    index += 1
                }
                insert(group)
            } else {
                output.append(scalar)
                index += 1
            }
        }
    }

    // MARK: The Pike VM

    private struct Thread {
        var pc: Int
        var slots: [Int]
    }

    private func search(_ text: [Unicode.Scalar], from start: Int, steps: inout Int) -> [Range<Int>?]? {
        let slotCount = groupNames.count * 2
        var current: [Thread] = []
        var next: [Thread] = []
        var mark = [Int](repeating: -1, count: program.count)
        var generation = 0
        var matched: [Int]?

        func isWord(_ position: Int) -> Bool {
            guard position >= 0, position < text.count else { return false }
            let value = text[position].value
            return (0x30...0x39).contains(value) || (0x41...0x5A).contains(value) || (0x61...0x7A).contains(value) || value == 0x5F
        }
        func holds(_ assertion: Assertion, at position: Int) -> Bool {
            switch assertion {
            case .start: return position == 0
            case .end: return position == text.count
            case .endBeforeFinalNewline: return position == text.count || (position == text.count - 1 && text[position] == "\n")
            case .wordBoundary: return isWord(position - 1) != isWord(position)
            case .notWordBoundary: return isWord(position - 1) == isWord(position)
            }
        }
        // Follows jumps, splits (first target first), saves and assertions, appending the threads that
        // wait on a character (or match) in priority order.
        func add(_ start: Int, _ slots: [Int], at position: Int, to list: inout [Thread]) {
            var stack: [(Int, [Int])] = [(start, slots)]
            while let (pc, threadSlots) = stack.popLast() {
                guard mark[pc] != generation else { continue }
                mark[pc] = generation
                steps += 1
                switch program[pc] {
                case .jump(let target): stack.append((target, threadSlots))
                case .split(let first, let second):
                    stack.append((second, threadSlots))
                    stack.append((first, threadSlots))
                case .save(let slot):
                    var updated = threadSlots
                    updated[slot] = position
                    stack.append((pc + 1, updated))
                case .assert(let assertion):
                    if holds(assertion, at: position) { stack.append((pc + 1, threadSlots)) }
                default: list.append(Thread(pc: pc, slots: threadSlots))
                }
            }
        }

        let empty = [Int](repeating: -1, count: slotCount)
        var position = start
        generation += 1
        add(0, empty, at: position, to: &current)
        while true {
            generation += 1
            next.removeAll(keepingCapacity: true)
            let scalar: Unicode.Scalar? = position < text.count ? text[position] : nil
            for thread in current {
                steps += 1
                switch program[thread.pc] {
                case .match:
                    matched = thread.slots
                // Lower-priority threads lose to this match.
                case .scalar(let expected):
                    if scalar == expected { add(thread.pc + 1, thread.slots, at: position + 1, to: &next) }
                    continue
                case .any:
                    if scalar != nil { add(thread.pc + 1, thread.slots, at: position + 1, to: &next) }
                    continue
                case .set(let set):
                    if let scalar, set.contains(scalar) { add(thread.pc + 1, thread.slots, at: position + 1, to: &next) }
                    continue
                default: continue
                }
                break
            }
            guard position < text.count else { break }
            position += 1
            // A new attempt starts one character later, with the lowest priority, until a match is found.
            if matched == nil { add(0, empty, at: position, to: &next) }
            swap(&current, &next)
            if current.isEmpty { break }
        }
        guard let matched else { return nil }
        return (0..<groupNames.count).map { group in
            let (low, high) = (matched[2 * group], matched[2 * group + 1])
            return low >= 0 && high >= low ? low..<high : nil
        }
    }

    // MARK: Parsing

    indirect enum Node {
        case empty
        case scalar(Unicode.Scalar)
        case any
        case set(LinearRegex.CharacterSet)
        case concatenation([Node])
        case alternation([Node])
        case repeated(Node, min: Int, max: Int?, lazy: Bool)
        case group(Node, index: Int?)
        case assertion(Assertion)
    }

    struct Parser {
        let scalars: [Unicode.Scalar]
        let dialect: Dialect
        var position = 0
        var depth = 0
        var names: [String?] = []

        init(scalars: [Unicode.Scalar], dialect: Dialect) {
            self.scalars = scalars
            self.dialect = dialect
        }

        var current: Unicode.Scalar? { position < scalars.count ? scalars[position] : nil }
        func peek(_ ahead: Int) -> Unicode.Scalar? { position + ahead < scalars.count ? scalars[position + ahead] : nil }

        func error(_ message: String, expected: String) -> RegexSyntaxError {
            RegexSyntaxError(message: message, position: position, expected: expected)
        }

        mutating func parseAlternation() throws(RegexSyntaxError) -> Node {
            depth += 1
            defer { depth -= 1 }
            guard depth <= LinearRegex.Parser.maximumDepth else { throw error("nesting deeper than \(LinearRegex.Parser.maximumDepth)", expected: "a flatter pattern") }
            var branches = [try parseConcatenation()]
            while current == "|" {
                position += 1
                branches.append(try parseConcatenation())
            }
            return branches.count == 1 ? branches[0] : .alternation(branches)
        }

        mutating func parseConcatenation() throws(RegexSyntaxError) -> Node {
            var parts: [Node] = []
            while let scalar = current, scalar != "|", scalar != ")" {
                var atom = try parseAtom()
                while let postfix = current, "*+?{".unicodeScalars.contains(postfix) {
                    if postfix == "{", !isRepetitionBrace() { break }
                    atom = try parseRepetition(of: atom)
                }
                parts.append(atom)
            }
            return parts.count == 1 ? parts[0] : (parts.isEmpty ? .empty : .concatenation(parts))
        }

        /// Whether a `{` starts `{n}`, `{n,}` or `{n,m}` (elsewhere Java refuses it; Oniguruma reads it as
        /// a literal, which we follow for Grok).
        func isRepetitionBrace() -> Bool {
            var index = position + 1
            var digits = 0
            while index < scalars.count, ("0"..."9").contains(scalars[index]) { index += 1; digits += 1 }
            guard digits > 0, index < scalars.count else { return dialect == .java }
            if scalars[index] == "}" { return true }
            guard scalars[index] == "," else { return dialect == .java }
            index += 1
            while index < scalars.count, ("0"..."9").contains(scalars[index]) { index += 1 }
            return index < scalars.count && scalars[index] == "}" || dialect == .java
        }

        mutating func parseRepetition(of atom: Node) throws(RegexSyntaxError) -> Node {
            if case .assertion = atom { throw error("a quantifier after an anchor", expected: "a character or group before it") }
            let scalar = current!
            position += 1
            var (low, high): (Int, Int?)
            switch scalar {
            case "*": (low, high) = (0, nil)
            case "+": (low, high) = (1, nil)
            case "?": (low, high) = (0, 1)
            default:
                var limits = LinearRegex.Parser(scalars: scalars, caseInsensitive: false)
                limits.position = position
                low = try limits.parseNumber()
                high = low
                if limits.current == "," {
                    limits.position += 1
                    high = limits.current == "}" ? nil : try limits.parseNumber()
                }
                position = limits.position
                guard current == "}" else { throw error("unclosed repetition", expected: "'}' after {n}, {n,} or {n,m}") }
                position += 1
                if let high, high < low { throw error("repetition {\(low),\(high)} has its bounds reversed", expected: "{n,m} with n ≤ m") }
            }
            var lazy = false
            if current == "?" {
                lazy = true
                position += 1
            } else if current == "+" {
                throw error("possessive quantifiers are not supported (no automaton runs them)", expected: "a greedy or lazy quantifier")
            }
            return .repeated(atom, min: low, max: high, lazy: lazy)
        }

        mutating func parseAtom() throws(RegexSyntaxError) -> Node {
            let scalar = current!
            switch scalar {
            case "(":
                position += 1
                var index: Int?
                if current == "?" {
                    position += 1
                    switch current {
                    case ":": position += 1
                    case "<" where peek(1) != "=" && peek(1) != "!", "P" where peek(1) == "<":
                        if current == "P" { position += 1 }
                        position += 1
                        var name = ""
                        while let next = current, next != ">" {
                            name.unicodeScalars.append(next)
                            position += 1
                        }
                        guard current == ">", !name.isEmpty else { throw error("unclosed group name", expected: "'>' after the name") }
                        position += 1
                        names.append(name)
                        index = names.count
                    default:
                        throw error("look-around, atomic groups and inline flags are not supported (no automaton runs them)",
                                    expected: "'(?:', '(?<name>' or '('")
                    }
                } else {
                    names.append(nil)
                    index = names.count
                }
                let inner = try parseAlternation()
                guard current == ")" else { throw error("unclosed group", expected: "')'") }
                position += 1
                return .group(inner, index: index)
            case "[":
                return .set(try parseClass())
            case ".":
                position += 1
                switch dialect {
                case .java: return .set(LinearRegex.CharacterSet(ranges: [0x0A...0x0A, 0x0D...0x0D, 0x85...0x85, 0x2028...0x2029], negated: true))
                case .oniguruma: return .set(LinearRegex.CharacterSet(ranges: [0x0A...0x0A], negated: true))
                }
            case "^":
                position += 1
                return .assertion(.start)
            case "$":
                position += 1
                return .assertion(.endBeforeFinalNewline)
            case "\\":
                position += 1
                guard let escaped = current else { throw error("a pattern ending in '\\'", expected: "a character after '\\'") }
                position += 1
                if let shorthand = LinearRegex.Parser.shorthand(escaped) { return .set(shorthand) }
                switch escaped {
                case "b": return .assertion(.wordBoundary)
                case "B": return .assertion(.notWordBoundary)
                case "A": return .assertion(.start)
                case "z": return .assertion(.end)
                case "Z": return .assertion(.endBeforeFinalNewline)
                default: return .scalar(try escapedLiteral(escaped))
                }
            case "*", "+", "?":
                throw error("'\(scalar)' repeats nothing", expected: "a character or group before it")
            default:
                position += 1
                return .scalar(scalar)
            }
        }

        /// The character a `\x` escape stands for; a letter or digit that is no known escape is refused
        /// (Java refuses them, and `\1` is a back-reference).
        mutating func escapedLiteral(_ escaped: Unicode.Scalar) throws(RegexSyntaxError) -> Unicode.Scalar {
            switch escaped {
            case "t": return "\t"
            case "n": return "\n"
            case "r": return "\r"
            case "f": return "\u{0C}"
            case "e": return "\u{1B}"
            case "x", "u":
                let count = escaped == "x" ? 2 : 4
                var value: UInt32 = 0
                for _ in 0..<count {
                    guard let digit = current, digit.isASCII, let number = UInt32(String(digit), radix: 16) else {
                        throw error("a short \\\(escaped) escape", expected: "\(count) hexadecimal digits")
                    }
                    value = value * 16 + number
                    position += 1
                }
                guard let scalar = Unicode.Scalar(value) else { throw error("\\\(escaped) names no character", expected: "a valid code point") }
                return scalar
            default:
                if escaped.isASCII, escaped.properties.isAlphabetic || ("0"..."9").contains(escaped) {
                    throw error("'\\\(escaped)' is not supported (back-references and other escapes have no automaton)",
                                expected: "an escaped symbol or one of \\d \\s \\w \\b \\t \\n")
                }
                return escaped
            }
        }

        mutating func parseClass() throws(RegexSyntaxError) -> LinearRegex.CharacterSet {
            let start = position
            position += 1  // [
            var negated = false
            if current == "^" {
                negated = true
                position += 1
            }
            var ranges: [ClosedRange<UInt32>] = []
            var first = true
            while let scalar = current, scalar != "]" || first {
                first = false
                if scalar == "[" { throw error("nested classes are not supported", expected: "'\\[' for the character") }
                if scalar == "&", peek(1) == "&" { throw error("class intersections are not supported", expected: "'\\&' for the character") }
                var low: Unicode.Scalar
                position += 1
                if scalar == "\\" {
                    guard let escaped = current else { break }
                    position += 1
                    if let shorthand = LinearRegex.Parser.shorthand(escaped) {
                        ranges += shorthand.negated ? LinearRegex.Parser.complement(shorthand.ranges) : shorthand.ranges
                        continue
                    }
                    low = try escapedLiteral(escaped)
                } else {
                    low = scalar
                }
                var high = low
                if current == "-", let after = peek(1), after != "]" {
                    position += 2
                    high = after
                    if after == "\\" {
                        guard let escaped = current else { break }
                        position += 1
                        high = try escapedLiteral(escaped)
                    }
                    guard low.value <= high.value else { throw error("class range \(low)-\(high) is reversed", expected: "a range from low to high") }
                }
                ranges.append(low.value...high.value)
            }
            guard current == "]" else { throw RegexSyntaxError(message: "unclosed class", position: start, expected: "']'") }
            position += 1
            return LinearRegex.CharacterSet(ranges: ranges, negated: negated)
        }
    }

    // MARK: Compiling

    struct Compiler: ThompsonCompiler {
        var program: [Instruction] = []
        static var maximumProgram: Int { CapturingRegex.maximumProgram }
        static func split(_ first: Int, _ second: Int) -> Instruction { .split(first, second) }
        static func jump(_ target: Int) -> Instruction { .jump(target) }

        mutating func emit(_ node: Node) throws(RegexSyntaxError) {
            switch node {
            case .empty: break
            case .scalar(let scalar): try append(.scalar(scalar))
            case .any: try append(.any)
            case .set(let set): try append(.set(set))
            case .assertion(let assertion): try append(.assert(assertion))
            case .concatenation(let parts): for part in parts { try emit(part) }
            case .group(let inner, let index):
                if let index { try append(.save(2 * index)) }
                try emit(inner)
                if let index { try append(.save(2 * index + 1)) }
            case .alternation(let branches): try emitAlternation(branches)
            case .repeated(let inner, let min, let max, let lazy): try emitRepetition(inner, min: min, max: max, lazy: lazy)
            }
        }
    }
}

/// A Grok expression (`%{PATTERN:field:type}` references into a pattern library, around regular
/// expression text in Oniguruma's syntax), compiled to one ``CapturingRegex``. Searched, not anchored, as
/// Elasticsearch's Grok matches; the fields are the named references and named groups.
public struct Grok: Sendable {
    public enum FieldType: String, Sendable { case string, int, long, float, double, boolean }

    public let pattern: String
    public let regex: CapturingRegex
    /// The output fields, in pattern order, with the capture group that fills each.
    public let fields: [(name: String, group: Int, type: FieldType)]

    /// The library: Grok's standard definitions of the patterns a rule is likely to name, each regular
    /// (the library's look-behind and atomic forms are written without them, which changes no match of
    /// the definitions below on its own). A reference to another name is refused at load, naming it.
    public static let library: [String: String] = [
        "DATA": ".*?", "GREEDYDATA": ".*", "NOTSPACE": "\\S+", "SPACE": "\\s*", "WORD": "\\b\\w+\\b",
        "INT": "(?:[+-]?(?:[0-9]+))", "POSINT": "\\b(?:[1-9][0-9]*)\\b", "NONNEGINT": "\\b(?:[0-9]+)\\b",
        "BASE10NUM": "(?:[+-]?(?:(?:[0-9]+(?:\\.[0-9]+)?)|(?:\\.[0-9]+)))", "NUMBER": "(?:%{BASE10NUM})",
        "BASE16NUM": "(?:[+-]?(?:0x)?(?:[0-9A-Fa-f]+))",
        "USERNAME": "[a-zA-Z0-9._-]+", "USER": "%{USERNAME}", "EMAILLOCALPART": "[a-zA-Z0-9!#$%&'*+\\-/=?^_`{|}~]{1,64}(?:\\.[a-zA-Z0-9!#$%&'*+\\-/=?^_`{|}~]{1,62}){0,63}",
        "HOSTNAME": "\\b(?:[0-9A-Za-z][0-9A-Za-z-]{0,62})(?:\\.(?:[0-9A-Za-z][0-9A-Za-z-]{0,62}))*(?:\\.?|\\b)",
        "IPV4": "(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]{1,2})\\.(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]{1,2})\\.(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]{1,2})\\.(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]{1,2}))",
        "UUID": "[A-Fa-f0-9]{8}-(?:[A-Fa-f0-9]{4}-){3}[A-Fa-f0-9]{12}",
        "URIPROTO": "[A-Za-z](?:[A-Za-z0-9+\\-.]+)+", "URIPATH": "(?:/[A-Za-z0-9$.+!*'(){},~:;=@#%&_\\-]*)+",
        "URIPARAM": "\\?[A-Za-z0-9$.+!*'|(){},~@#%&/=:;_?\\-\\[\\]<>]*",
        "LOGLEVEL": "(?:[Aa]lert|ALERT|[Tt]race|TRACE|[Dd]ebug|DEBUG|[Nn]otice|NOTICE|[Ii]nfo|INFO|[Ww]arn?(?:ing)?|WARN?(?:ING)?|[Ee]rr?(?:or)?|ERR?(?:OR)?|[Cc]rit?(?:ical)?|CRIT?(?:ICAL)?|[Ff]atal|FATAL|[Ss]evere|SEVERE|EMERG(?:ENCY)?|[Ee]merg(?:ency)?)",
    ]

    public init(_ pattern: String) throws(RegexSyntaxError) {
        self.pattern = pattern
        var fields: [(String, FieldType)] = []
        let expanded = try Self.expand(pattern, fields: &fields, depth: 0)
        regex = try CapturingRegex(expanded, dialect: .oniguruma)
        var result: [(name: String, group: Int, type: FieldType)] = []
        var typeOf: [String: FieldType] = [:]
        for (name, type) in fields { typeOf[name] = type }
        for (group, name) in regex.groupNames.enumerated() {
            guard let name, !result.contains(where: { $0.name == name }) else { continue }
            result.append((name, group, typeOf[name] ?? .string))
        }
        self.fields = result
    }

    /// `%{NAME}` → `(?:definition)`, `%{NAME:field[:type]}` → `(?<field>definition)`.
    static func expand(_ text: String, fields: inout [(String, FieldType)], depth: Int) throws(RegexSyntaxError) -> String {
        guard depth < 20 else { throw RegexSyntaxError(message: "pattern references nest deeper than 20", position: 0, expected: "a library without cycles") }
        var output = ""
        var rest = Substring(text)
        while let open = rest.range(of: "%{") {
            output += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].firstIndex(of: "}") else {
                throw RegexSyntaxError(message: "unclosed %{", position: text.distance(from: text.startIndex, to: open.lowerBound), expected: "'}'")
            }
            let parts = rest[open.upperBound..<close].split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard let definition = library[parts[0]] else {
                throw RegexSyntaxError(message: "unknown Grok pattern %{\(parts[0])}", position: text.distance(from: text.startIndex, to: open.lowerBound),
                                       expected: "one of " + library.keys.sorted().joined(separator: ", "))
            }
            let inner = try expand(definition, fields: &fields, depth: depth + 1)
            if parts.count >= 2, !parts[1].isEmpty {
                let type = parts.count == 3 ? FieldType(rawValue: parts[2]) : .string
                guard let type else {
                    throw RegexSyntaxError(message: "unknown Grok type :\(parts[2])", position: 0, expected: "int, long, float, double, boolean or string")
                }
                fields.append((parts[1], type))
                output += "(?<\(parts[1])>\(inner))"
            } else {
                output += "(?:\(inner))"
            }
            rest = rest[rest.index(after: close)...]
        }
        return output + rest
    }

    /// The fields' values for `text`, in ``fields`` order; nil when the pattern does not match.
    public func captures(_ text: String) -> [String?]? {
        let scalars = Array(text.unicodeScalars)
        guard let groups = regex.firstMatch(in: scalars) else { return nil }
        return fields.map { field in groups[field.group].map { String(String.UnicodeScalarView(scalars[$0])) } }
    }
}
