// Regular expressions in linear time: Lucene's syntax (Elasticsearch's regexp, EQL's regex), run as a Thompson NFA.

/// A regular expression in Lucene's syntax — what Elasticsearch's `regexp` query, EQL's `regex` and
/// ES|QL's `RLIKE` take — matched against a whole value (Lucene's expressions are anchored at both ends).
/// Supported: literals, `.`, `[…]` classes with ranges and `[^…]`, `\d \D \s \S \w \W`, `\` escapes, `"…"`
/// literal strings, grouping `( )`, `|`, the repetitions `* + ? {n} {n,} {n,m}`, and the operators
/// Elasticsearch enables (`RegExp`'s default, all flags): `&` intersection (binding looser than
/// concatenation, tighter than `|`; its right operand may begin with a literal `|` or `)`, as Lucene reads
/// it), `@` any string and `#` the empty language. Lucene's `~` complement and `<n-m>` intervals, and the
/// characters `^ $` (not anchors in Lucene), are refused unescaped, so a pattern never means something
/// other than what it says: escape them to match them.
///
/// Matching simulates the automaton over the text's Unicode scalars with one set of states per position
/// (no backtracking): time O(text × pattern) for every pattern and text, so text an attacker controls (a
/// request URI, a user agent) cannot make a rule slow. Patterns are bounded (``maximumProgram``).
public struct LinearRegex: Sendable, CustomStringConvertible {
    enum Instruction: Sendable, Equatable {
        case scalar(Unicode.Scalar)
        case any
        case set(CharacterSet)
        /// One character both tests accept: the product of an intersection's two automata.
        indirect case both(Instruction, Instruction)
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

        // One stack for every closure, reused: the per-character step allocates nothing.
        var stack: [Int] = []
        stack.reserveCapacity(16)
        func add(_ start: Int, to list: inout [Int]) {
            stack.append(start)
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
                if Self.accepts(program[pc], scalar) { add(pc + 1, to: &next) }
            }
            swap(&current, &next)
            if current.isEmpty { return false }
        }
        return current.contains { program[$0] == .match }
    }

    static func accepts(_ instruction: Instruction, _ scalar: Unicode.Scalar) -> Bool {
        switch instruction {
        case .scalar(let expected): scalar == expected
        case .any: true
        case .set(let set): set.contains(scalar)
        case .both(let first, let second): accepts(first, scalar) && accepts(second, scalar)
        case .match, .split, .jump: false
        }
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
        case intersection(Node, Node)
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
            var branches = [try parseIntersection()]
            while current == "|" {
                position += 1
                branches.append(try parseIntersection())
            }
            return branches.count == 1 ? branches[0] : .alternation(branches)
        }

        /// `a&b`: both must match the same text. Lucene parses the right operand from its first character
        /// on, so `x&|y` intersects `x` with the literal text `|y`.
        mutating func parseIntersection(literalFirst: Bool = false) throws(RegexSyntaxError) -> Node {
            let left = try parseConcatenation(literalFirst: literalFirst)
            guard current == "&" else { return left }
            position += 1
            depth += 1
            defer { depth -= 1 }
            guard depth <= Self.maximumDepth else { throw error("nesting deeper than \(Self.maximumDepth)", expected: "a flatter pattern") }
            return .intersection(left, try parseIntersection(literalFirst: true))
        }

        mutating func parseConcatenation(literalFirst: Bool = false) throws(RegexSyntaxError) -> Node {
            var parts: [Node] = []
            if literalFirst, let scalar = current, scalar == "|" || scalar == ")" {
                parts.append(literal(scalar))
                position += 1
            }
            while let scalar = current, scalar != "|", scalar != ")", scalar != "&" {
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
            case "@":
                position += 1
                return .repeated(.any, min: 0, max: nil)
            case "#":
                position += 1
                return .set(CharacterSet(ranges: [], negated: false))  // no character: the empty language
            case "~", "<":
                throw error("Lucene's operator '\(scalar)' is not supported", expected: "'\\\(scalar)' to match the character itself")
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

    struct Compiler: ThompsonCompiler {
        var program: [Instruction] = []
        static var maximumProgram: Int { LinearRegex.maximumProgram }
        static func split(_ first: Int, _ second: Int) -> Instruction { .split(first, second) }
        static func jump(_ target: Int) -> Instruction { .jump(target) }

        mutating func emit(_ node: Node) throws(RegexSyntaxError) {
            switch node {
            case .empty: break
            case .scalar(let scalar): try append(.scalar(scalar))
            case .any: try append(.any)
            case .set(let set): try append(.set(set))
            case .concatenation(let parts): for part in parts { try emit(part) }
            case .alternation(let branches): try emitAlternation(branches)
            case .intersection(let left, let right): try emitProduct(left, right)
            case .repeated(let inner, let min, let max): try emitRepetition(inner, min: min, max: max, lazy: false)
            }
        }

        /// An automaton's character-consuming states without its epsilon moves: from each state, the
        /// consuming states (and whether acceptance) its successor reaches.
        struct Closure {
            let program: [Instruction]
            func reach(_ start: Int) -> (states: [Int], accepts: Bool) {
                var states: [Int] = []
                var accepts = false
                var seen = Set<Int>()
                var stack = [start]
                while let pc = stack.popLast() {
                    guard seen.insert(pc).inserted else { continue }
                    switch program[pc] {
                    case .jump(let target): stack.append(target)
                    case .split(let first, let second): stack += [second, first]
                    case .match: accepts = true
                    default: states.append(pc)
                    }
                }
                return (states.sorted(), accepts)
            }
        }

        /// The intersection as the product of the two operands' automata: a state per pair of consuming
        /// states reachable together, consuming a character both accept. Bounded like any program.
        mutating func emitProduct(_ left: Node, _ right: Node) throws(RegexSyntaxError) {
            func standalone(_ node: Node) throws(RegexSyntaxError) -> Closure {
                var compiler = Compiler()
                try compiler.emit(node)
                try compiler.append(.match)
                return Closure(program: compiler.program)
            }
            let (a, b) = (try standalone(left), try standalone(right))
            struct Pair: Hashable { var left: Int; var right: Int }
            func successors(_ x: (states: [Int], accepts: Bool), _ y: (states: [Int], accepts: Bool)) -> (pairs: [Pair], accepts: Bool) {
                (x.states.flatMap { p in y.states.map { Pair(left: p, right: $0) } }, x.accepts && y.accepts)
            }
            var index: [Pair: Int] = [:]
            var order: [Pair] = []
            func intern(_ pair: Pair) throws(RegexSyntaxError) -> Int {
                if let known = index[pair] { return known }
                guard order.count < LinearRegex.maximumProgram else {
                    throw RegexSyntaxError(message: "an intersection expands to more than \(LinearRegex.maximumProgram) states", position: 0, expected: "a smaller pattern")
                }
                index[pair] = order.count
                order.append(pair)
                return order.count - 1
            }
            let start = successors(a.reach(0), b.reach(0))
            for pair in start.pairs { _ = try intern(pair) }
            var edges: [(pairs: [Int], accepts: Bool)] = []
            var next = 0
            while next < order.count {
                let pair = order[next]
                let step = successors(a.reach(pair.left + 1), b.reach(pair.right + 1))
                var targets: [Int] = []
                for successor in step.pairs { targets.append(try intern(successor)) }
                edges.append((targets, step.accepts))
                next += 1
            }
            // Layout: a dispatch to the start pairs (or past the product); then per pair, its consuming
            // instruction and a dispatch to its successors. Dispatches are split chains, patched once every
            // pair's address is known.
            var dispatches: [(at: Int, targets: [Int], accepts: Bool)] = []
            func dispatch(_ targets: [Int], accepts: Bool) throws(RegexSyntaxError) {
                let at = program.count
                let count = targets.count + (accepts ? 1 : 0)
                if count == 0 {
                    try append(.set(CharacterSet(ranges: [], negated: false)))  // a dead end
                    return
                }
                for _ in 0..<count { try append(.jump(-1)) }
                dispatches.append((at, targets, accepts))
            }
            try dispatch(start.pairs.map { index[$0]! }, accepts: start.accepts)
            var address: [Int] = []
            for (pairIndex, pair) in order.enumerated() {
                address.append(program.count)
                try append(.both(a.program[pair.left], b.program[pair.right]))
                try dispatch(edges[pairIndex].pairs, accepts: edges[pairIndex].accepts)
            }
            let exit = program.count
            for entry in dispatches {
                let destinations = entry.targets.map { address[$0] } + (entry.accepts ? [exit] : [])
                for (offset, destination) in destinations.enumerated() {
                    let pc = entry.at + offset
                    program[pc] = offset == destinations.count - 1 ? .jump(destination) : .split(destination, pc + 1)
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

/// What the two regex compilers share: a Thompson program under construction, with split and jump
/// instructions, bounded in size, and how alternations and repetitions are laid out in it.
protocol ThompsonCompiler {
    associatedtype Instruction
    associatedtype Node
    var program: [Instruction] { get set }
    static var maximumProgram: Int { get }
    /// A fork: both targets are followed, `first` with priority.
    static func split(_ first: Int, _ second: Int) -> Instruction
    static func jump(_ target: Int) -> Instruction
    mutating func emit(_ node: Node) throws(RegexSyntaxError)
}

extension ThompsonCompiler {
    mutating func append(_ instruction: Instruction) throws(RegexSyntaxError) {
        guard program.count < Self.maximumProgram else {
            throw RegexSyntaxError(message: "the pattern expands to more than \(Self.maximumProgram) states", position: 0,
                                   expected: "smaller repetition counts")
        }
        program.append(instruction)
    }

    /// `split L1, next; L1: branch; jump end; next: split …`, the leftmost branch first; the forward
    /// targets are patched once known.
    mutating func emitAlternation(_ branches: [Node]) throws(RegexSyntaxError) {
        var jumps: [Int] = []
        for (index, branch) in branches.enumerated() {
            if index < branches.count - 1 {
                let split = program.count
                try append(Self.split(split + 1, -1))
                try emit(branch)
                jumps.append(program.count)
                try append(Self.jump(-1))
                program[split] = Self.split(split + 1, program.count)
            } else {
                try emit(branch)
            }
        }
        for jump in jumps { program[jump] = Self.jump(program.count) }
    }

    /// `min` copies, then `max - min` optional ones (each a split into it or past every remaining one), or
    /// a loop `L: split body, end; body; jump L` when unbounded. A lazy repetition prefers the exit.
    mutating func emitRepetition(_ inner: Node, min: Int, max: Int?, lazy: Bool) throws(RegexSyntaxError) {
        func patch(_ split: Int, exit: Int) { program[split] = lazy ? Self.split(exit, split + 1) : Self.split(split + 1, exit) }
        for _ in 0..<min { try emit(inner) }
        if let max {
            var splits: [Int] = []
            for _ in min..<max {
                splits.append(program.count)
                try append(Self.split(program.count + 1, -1))
                try emit(inner)
            }
            for split in splits { patch(split, exit: program.count) }
        } else {
            let loop = program.count
            try append(Self.split(loop + 1, -1))
            try emit(inner)
            try append(Self.jump(loop))
            patch(loop, exit: program.count)
        }
    }
}
