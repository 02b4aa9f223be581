// Regular expressions in linear time: Lucene's syntax (Elasticsearch's regexp, EQL's regex), run as a Thompson NFA.

/// A regular expression in Lucene's syntax — what Elasticsearch's `regexp` query, EQL's `regex` and
/// ES|QL's `RLIKE` take — matched against a whole value (Lucene's expressions are anchored at both ends).
/// Supported: literals, `.`, `[…]` classes with ranges and `[^…]`, `\d \D \s \S \w \W`, `\` escapes, `"…"`
/// literal strings, grouping `( )`, `|`, and the repetitions `* + ? {n} {n,} {n,m}`. Lucene's optional
/// operators `~ & < @ #` and the characters `^ $` (not anchors in Lucene) are refused unescaped, so a
/// pattern never means something other than what it says: escape them to match them.
///
/// Matching simulates the automaton over the text's Unicode scalars with one set of states per position
/// (no backtracking): time O(text × pattern) for every pattern and text, so text an attacker controls (a
/// request URI, a user agent) cannot make a rule slow. Patterns are bounded (``maximumProgram``).
public struct LinearRegex: Sendable, CustomStringConvertible {
    enum Instruction: Sendable, Equatable {
        case scalar(Unicode.Scalar)
        case any
        case set(CharacterSet)
        case split(Int, Int)
        case jump(Int)
        case match
    }

    /// Ranges of scalars, possibly negated; folded to lower case when the expression ignores case.
    struct CharacterSet: Sendable, Equatable {
        var ranges: [ClosedRange<UInt32>]
        var negated: Bool
        func contains(_ scalar: Unicode.Scalar) -> Bool {
            let value = scalar.value
            return ranges.contains { $0.contains(value) } != negated
        }
    }

    public let pattern: String
    public let caseInsensitive: Bool
    let program: [Instruction]

    /// Instructions a pattern may compile to (a repetition expands its operand): bounds memory and the
    /// per-character cost.
    public static let maximumProgram = 20_000

    public init(lucene pattern: String, caseInsensitive: Bool = false) throws(RegexSyntaxError) {
        self.pattern = pattern
        self.caseInsensitive = caseInsensitive
        var parser = Parser(scalars: Array(pattern.unicodeScalars), caseInsensitive: caseInsensitive)
        let node = try parser.parseAlternation()
        guard parser.position == parser.scalars.count else {
            throw RegexSyntaxError(message: "unexpected '\(parser.scalars[parser.position])'", position: parser.position, expected: "the end of the pattern")
        }
        var compiler = Compiler()
        try compiler.emit(node)
        compiler.program.append(.match)
        program = compiler.program
    }

    public var description: String { "/\(pattern)/" + (caseInsensitive ? "i" : "") }

    /// Whether the whole text matches.
    public func matches(_ text: String) -> Bool {
        var steps = 0
        return run(text.unicodeScalars, steps: &steps)
    }

    /// Whether the whole text (UTF-8; invalid sequences read as U+FFFD) matches.
    public func matches(utf8 bytes: UnsafeRawBufferPointer) -> Bool {
        var steps = 0
        return run(String(decoding: bytes, as: UTF8.self).unicodeScalars, steps: &steps)
    }

    /// As ``matches(_:)``, counting the automaton's state visits: at most (text length + 1) × program
    /// size, whatever the pattern — the linear-time guarantee, made testable without a clock.
    public func matchCountingSteps(_ text: String) -> (matched: Bool, steps: Int) {
        var steps = 0
        let matched = run(text.unicodeScalars, steps: &steps)
        return (matched, steps)
    }

    public var programSize: Int { program.count }

    private func run(_ text: String.UnicodeScalarView, steps: inout Int) -> Bool {
        let size = program.count
        var current = [Int]()
        var next = [Int]()
        current.reserveCapacity(size)
        next.reserveCapacity(size)
        // The generation at which each instruction was last added: each joins a list at most once per step.
        var mark = [Int](repeating: -1, count: size)
        var generation = 0

        func add(_ start: Int, to list: inout [Int]) {
            var stack = [start]
            while let pc = stack.popLast() {
                guard mark[pc] != generation else { continue }
                mark[pc] = generation
                steps += 1
                switch program[pc] {
                case .jump(let target): stack.append(target)
                case .split(let first, let second):
                    stack.append(second)
                    stack.append(first)
                default: list.append(pc)
                }
            }
        }

        add(0, to: &current)
        for raw in text {
            let scalar = caseInsensitive ? Self.fold(raw) : raw
            generation += 1
            next.removeAll(keepingCapacity: true)
            for pc in current {
                steps += 1
                let advances: Bool
                switch program[pc] {
                case .scalar(let expected): advances = scalar == expected
                case .any: advances = true
                case .set(let set): advances = set.contains(scalar)
                case .match, .split, .jump: advances = false
                }
                if advances { add(pc + 1, to: &next) }
            }
            swap(&current, &next)
            if current.isEmpty { return false }
        }
        return current.contains { program[$0] == .match }
    }

    /// Simple case folding of one scalar (a mapping to several scalars leaves it as it is).
    static func fold(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
        if scalar.isASCII {
            let value = scalar.value
            return value >= 0x41 && value <= 0x5A ? Unicode.Scalar(value + 0x20)! : scalar
        }
        let lower = scalar.properties.lowercaseMapping.unicodeScalars
        return lower.count == 1 ? lower.first! : scalar
    }

    // MARK: Parsing

    indirect enum Node {
        case empty
        case scalar(Unicode.Scalar)
        case any
        case set(CharacterSet)
        case concatenation([Node])
        case alternation([Node])
        case repeated(Node, min: Int, max: Int?)
    }

    struct Parser {
        let scalars: [Unicode.Scalar]
        let caseInsensitive: Bool
        var position = 0
        var depth = 0
        static let maximumDepth = 100
        static let maximumRepeat = 1000

        init(scalars: [Unicode.Scalar], caseInsensitive: Bool) {
            self.scalars = scalars
            self.caseInsensitive = caseInsensitive
        }

        var current: Unicode.Scalar? { position < scalars.count ? scalars[position] : nil }

        func error(_ message: String, expected: String) -> RegexSyntaxError {
            RegexSyntaxError(message: message, position: position, expected: expected)
        }

        mutating func parseAlternation() throws(RegexSyntaxError) -> Node {
            depth += 1
            defer { depth -= 1 }
            guard depth <= Self.maximumDepth else { throw error("nesting deeper than \(Self.maximumDepth)", expected: "a flatter pattern") }
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
                    atom = try parseRepetition(of: atom)
                }
                parts.append(atom)
            }
            return parts.count == 1 ? parts[0] : (parts.isEmpty ? .empty : .concatenation(parts))
        }

        mutating func parseRepetition(of atom: Node) throws(RegexSyntaxError) -> Node {
            let scalar = current!
            position += 1
            switch scalar {
            case "*": return .repeated(atom, min: 0, max: nil)
            case "+": return .repeated(atom, min: 1, max: nil)
            case "?": return .repeated(atom, min: 0, max: 1)
            default:
                let low = try parseNumber()
                var high: Int? = low
                if current == "," {
                    position += 1
                    high = current == "}" ? nil : try parseNumber()
                }
                guard current == "}" else { throw error("unclosed repetition", expected: "'}' after {n}, {n,} or {n,m}") }
                position += 1
                if let high, high < low { throw error("repetition {\(low),\(high)} has its bounds reversed", expected: "{n,m} with n ≤ m") }
                return .repeated(atom, min: low, max: high)
            }
        }

        mutating func parseNumber() throws(RegexSyntaxError) -> Int {
            var value = 0
            var digits = 0
            while let scalar = current, let digit = Int(String(scalar)), scalar.isASCII {
                value = value * 10 + digit
                guard value <= Self.maximumRepeat else { throw error("a repetition count over \(Self.maximumRepeat)", expected: "a smaller count") }
                digits += 1
                position += 1
            }
            guard digits > 0 else { throw error("a repetition without a count", expected: "a number") }
            return value
        }

        mutating func parseAtom() throws(RegexSyntaxError) -> Node {
            let scalar = current!
            switch scalar {
            case "(":
                position += 1
                let inner = try parseAlternation()
                guard current == ")" else { throw error("unclosed group", expected: "')'") }
                position += 1
                return inner
            case "[":
                return .set(try parseClass())
            case ".":
                position += 1
                return .any
            case "\\":
                position += 1
                guard let escaped = current else { throw error("a pattern ending in '\\'", expected: "a character after '\\'") }
                position += 1
                if let shorthand = Self.shorthand(escaped) { return .set(shorthand) }
                return literal(escaped)
            case "\"":
                position += 1
                var parts: [Node] = []
                while let inner = current, inner != "\"" {
                    parts.append(literal(inner))
                    position += 1
                }
                guard current == "\"" else { throw error("unclosed quoted string", expected: "'\"'") }
                position += 1
                return parts.isEmpty ? .empty : .concatenation(parts)
            case "*", "+", "?", "{":
                throw error("'\(scalar)' repeats nothing", expected: "a character or group before it")
            case "~", "&", "<", "@", "#":
                throw error("Lucene's optional operator '\(scalar)' is not supported", expected: "'\\\(scalar)' to match the character itself")
            case "^", "$":
                throw error("'\(scalar)' is not an anchor in Lucene's syntax (patterns match whole values)", expected: "'\\\(scalar)' to match the character itself")
            case "]", "}":
                throw error("unmatched '\(scalar)'", expected: "'\\\(scalar)' to match the character itself")
            default:
                position += 1
                return literal(scalar)
            }
        }

        func literal(_ scalar: Unicode.Scalar) -> Node {
            .scalar(caseInsensitive ? LinearRegex.fold(scalar) : scalar)
        }

        static func shorthand(_ scalar: Unicode.Scalar) -> CharacterSet? {
            let digits: [ClosedRange<UInt32>] = [0x30...0x39]
            let spaces: [ClosedRange<UInt32>] = [0x09...0x0D, 0x20...0x20]
            let word: [ClosedRange<UInt32>] = [0x30...0x39, 0x41...0x5A, 0x5F...0x5F, 0x61...0x7A]
            switch scalar {
            case "d": return CharacterSet(ranges: digits, negated: false)
            case "D": return CharacterSet(ranges: digits, negated: true)
            case "s": return CharacterSet(ranges: spaces, negated: false)
            case "S": return CharacterSet(ranges: spaces, negated: true)
            case "w": return CharacterSet(ranges: word, negated: false)
            case "W": return CharacterSet(ranges: word, negated: true)
            default: return nil
            }
        }

        mutating func parseClass() throws(RegexSyntaxError) -> CharacterSet {
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
                var low: Unicode.Scalar
                if scalar == "\\" {
                    position += 1
                    guard let escaped = current else { break }
                    position += 1
                    if let shorthand = Self.shorthand(escaped) {
                        // A negated shorthand inside a class: its complement's ranges.
                        ranges += shorthand.negated ? Self.complement(shorthand.ranges) : shorthand.ranges
                        continue
                    }
                    low = escaped
                } else {
                    low = scalar
                    position += 1
                }
                var high = low
                if current == "-", position + 1 < scalars.count, scalars[position + 1] != "]" {
                    position += 1
                    var upper = current!
                    position += 1
                    if upper == "\\" {
                        guard let escaped = current else { break }
                        upper = escaped
                        position += 1
                    }
                    high = upper
                    guard low.value <= high.value else {
                        throw RegexSyntaxError(message: "class range \(low)-\(high) is reversed", position: position, expected: "a range from low to high")
                    }
                }
                ranges.append(low.value...high.value)
            }
            guard current == "]" else { throw RegexSyntaxError(message: "unclosed class", position: start, expected: "']'") }
            position += 1
            if caseInsensitive { ranges = Self.folded(ranges) }
            return CharacterSet(ranges: ranges, negated: negated)
        }

        /// Adds the lower-case counterparts of a class's letters (ASCII, and single scalars elsewhere).
        static func folded(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
            var result = ranges
            for range in ranges {
                let (low, high) = (max(range.lowerBound, 0x41), min(range.upperBound, 0x5A))
                if low <= high { result.append((low + 0x20)...(high + 0x20)) }
                if range.upperBound > 0x7F, range.count <= 512 {
                    for value in max(range.lowerBound, 0x80)...range.upperBound {
                        if let scalar = Unicode.Scalar(value) {
                            let lower = LinearRegex.fold(scalar).value
                            if lower != value { result.append(lower...lower) }
                        }
                    }
                }
            }
            return result
        }

        static func complement(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
            var result: [ClosedRange<UInt32>] = []
            var next: UInt32 = 0
            for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
                if range.lowerBound > next { result.append(next...(range.lowerBound - 1)) }
                next = max(next, range.upperBound + 1)
            }
            if next <= 0x10FFFF { result.append(next...0x10FFFF) }
            return result
        }
    }

    // MARK: Compiling

    struct Compiler {
        var program: [Instruction] = []

        mutating func append(_ instruction: Instruction) throws(RegexSyntaxError) {
            guard program.count < LinearRegex.maximumProgram else {
                throw RegexSyntaxError(message: "the pattern expands to more than \(LinearRegex.maximumProgram) states", position: 0,
                                       expected: "smaller repetition counts")
            }
            program.append(instruction)
        }

        mutating func emit(_ node: Node) throws(RegexSyntaxError) {
            switch node {
            case .empty: break
            case .scalar(let scalar): try append(.scalar(scalar))
            case .any: try append(.any)
            case .set(let set): try append(.set(set))
            case .concatenation(let parts): for part in parts { try emit(part) }
            case .alternation(let branches):
                // split L1, next; L1: branch; jump end; next: split … — the jumps patched once the end is known.
                var jumps: [Int] = []
                for (index, branch) in branches.enumerated() {
                    if index < branches.count - 1 {
                        let split = program.count
                        try append(.split(split + 1, -1))
                        try emit(branch)
                        jumps.append(program.count)
                        try append(.jump(-1))
                        program[split] = .split(split + 1, program.count)
                    } else {
                        try emit(branch)
                    }
                }
                for jump in jumps { program[jump] = .jump(program.count) }
            case .repeated(let inner, let min, let max):
                for _ in 0..<min { try emit(inner) }
                if let max {
                    // Each optional copy: split into it or past every remaining one.
                    var splits: [Int] = []
                    for _ in min..<max {
                        splits.append(program.count)
                        try append(.split(program.count + 1, -1))
                        try emit(inner)
                    }
                    for split in splits { program[split] = .split(split + 1, program.count) }
                } else {
                    // L: split body, end; body; jump L
                    let loop = program.count
                    try append(.split(loop + 1, -1))
                    try emit(inner)
                    try append(.jump(loop))
                    program[loop] = .split(loop + 1, program.count)
                }
            }
        }
    }
}

public struct RegexSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    /// Scalar offset in the pattern.
    public var position: Int
    public var expected: String
    public var description: String { "regular expression error at character \(position): \(message), expected \(expected)" }
}
