// The linear-time regular expressions: Lucene's syntax, a differential against ICU, and the step bound on hostile input.
import Detection
import Foundation
import Testing

@Suite("Linear-time regular expressions (Lucene syntax)")
struct LinearRegexTests {
    func matches(_ pattern: String, _ text: String, ignoringCase: Bool = false) throws -> Bool {
        try LinearRegex(lucene: pattern, caseInsensitive: ignoringCase).matches(text)
    }

    @Test func luceneSyntax() throws {
        #expect(try matches("a.c", "abc") && !matches("a.c", "abcd"), "anchored at both ends")
        #expect(try matches("[a-c]+x?", "abcab") && matches("[a-c]+x?", "abx") && !matches("[a-c]+", "abd"))
        #expect(try matches("[^0-9]*", "abc") && !matches("[^0-9]*", "ab1"))
        #expect(try matches("(ab|cd)*", "abcdab") && matches("(ab|cd)*", "") && !matches("(ab|cd)*", "abc"))
        #expect(try matches("\\d{3}-\\d{2,}", "123-45678") && !matches("\\d{3}-\\d{2,}", "12-45"))
        #expect(try matches("x{2,3}", "xxx") && !matches("x{2,3}", "xxxx") && matches("x{0}y", "y"))
        #expect(try matches("\\w+\\s\\W", "word_1 !") && matches("[\\d\\s]+", "1 2"))
        #expect(try matches("\"a.b\"c", "a.bc") && !matches("\"a.b\"c", "axbc"), "a quoted string is literal")
        #expect(try matches("a\\.b\\*", "a.b*") && matches("\\^\\$\\#", "^$#"))
        #expect(try matches("/api/v1/namespaces/[^/]+/pods/[^/]+/exec.*", "/api/v1/namespaces/x/pods/p/exec?command=sh"))
        #expect(try matches("ABC[d-f]", "abcE", ignoringCase: true) && !matches("ABC[d-f]", "abcE"))
        #expect(try matches("ÉTÉ", "été", ignoringCase: true), "case folding beyond ASCII")
        #expect(try matches("(a*)*", "aaaa") && matches("(|a)+", "a"), "empty loops terminate")
    }

    @Test func refusalsNameThePositionAndTheFix() throws {
        for (pattern, position) in [("a(b", 3), ("[ab", 0), ("a{3,1}", 6), ("*a", 0), ("a~b", 1), ("^a", 0), ("a$", 1), ("x{2000}", 5), ("a\\", 2)] {
            let error = #expect(throws: RegexSyntaxError.self) { try LinearRegex(lucene: pattern) }
            #expect(error?.position == position, "\(pattern): \(error?.description ?? "")")
        }
        let operatorError = #expect(throws: RegexSyntaxError.self) { try LinearRegex(lucene: "a<1-3>") }
        #expect(operatorError?.expected.contains("\\<") == true)
        let tooLarge = #expect(throws: RegexSyntaxError.self) { try LinearRegex(lucene: "((a{1000}){1000})") }
        #expect(tooLarge?.message.contains("states") == true)
    }

    /// Seeded random patterns over a shared subset (literals, `.`, classes, repetitions, alternation,
    /// groups) and random texts: the same verdict as ICU's backtracking engine (NSRegularExpression,
    /// anchored as Lucene anchors), case-sensitive and not.
    @Test func agreesWithICUOnRandomPatterns() throws {
        let seed = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_REGEX_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...1_000_000)
        print("regex differential: seed \(seed) (AUDIT_SENTINEL_REGEX_SEED reruns it)")
        var random = SplitMix(seed: seed)
        func pattern(_ depth: Int) -> String {
            var parts: [String] = []
            for _ in 0..<random.next(1...4) {
                var atom: String
                switch random.next(0...9) {
                case 0: atom = "."
                case 1: atom = "[a-b]"
                case 2: atom = "[^a]"
                case 3 where depth < 3: atom = "(" + pattern(depth + 1) + (random.next(0...1) == 0 ? "|" + pattern(depth + 1) : "") + ")"
                case 4: atom = "\\d"
                default: atom = ["a", "b", "c", "A"][random.next(0...3)]
                }
                switch random.next(0...7) {
                case 0: atom += "*"
                case 1: atom += "+"
                case 2: atom += "?"
                case 3: atom += "{\(random.next(0...2)),\(random.next(2...3))}"
                default: break
                }
                parts.append(atom)
            }
            return parts.joined()
        }
        var agreed = 0
        var matched = 0
        for _ in 0..<2_000 {
            let text = String((0..<random.next(0...8)).map { _ in Array("abcA1")[random.next(0...4)] })
            let source = pattern(0)
            let ignoringCase = random.next(0...3) == 0
            let ours = try LinearRegex(lucene: source, caseInsensitive: ignoringCase).matches(text)
            let icu = try NSRegularExpression(pattern: "^(?:" + source + ")$", options: ignoringCase ? [.caseInsensitive] : [])
            let theirs = icu.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
            #expect(ours == theirs, "seed \(seed): /\(source)/\(ignoringCase ? "i" : "") on \"\(text)\"")
            if ours == theirs { agreed += 1 }
            if ours { matched += 1 }
        }
        print("regex differential: \(agreed) of 2000 agree, \(matched) matches")
        #expect(matched > 100, "the corpus exercises matches too")
    }

    /// Patterns that take a backtracking engine exponential or quadratic time, on 1 MB of text: the
    /// automaton visits at most (length + 1) × 2 × program size states — counted, not timed.
    @Test(.timeLimit(.minutes(2))) func hostilePatternsStayLinearOnAMegabyte() throws {
        let megabyte = String(repeating: "a", count: 1 << 20)
        for source in ["(a*)*b", "(a|aa)*c", "(a+)+b", "(a|a)*b", "(.*a){8}b", "([a-z]+)*[0-9]"] {
            let regex = try LinearRegex(lucene: source)
            let (matched, steps) = regex.matchCountingSteps(megabyte)
            #expect(!matched, "\(source)")
            let bound = (megabyte.unicodeScalars.count + 1) * 2 * regex.programSize
            #expect(steps <= bound, "\(source): \(steps) steps > \(bound)")
            print("regex: /\(source)/ on 1 MB: \(steps) state visits (\(regex.programSize) states, bound \(bound))")
        }
    }

    /// Lucene's intersection, as Elasticsearch enables it: both operands match the same whole value. Seeded
    /// random operands: the product automaton agrees with running each operand alone.
    @Test func intersectionIsBothOperandsOnTheSameText() throws {
        #expect(try matches(".*ab.*&.*cd.*", "xxabyycd") && matches(".*ab.*&.*cd.*", "cdab") && !matches(".*ab.*&.*cd.*", "abab"))
        #expect(try matches("@", "anything") && matches("a@", "abc") && !matches("#", "") && !matches("a#|b", "a") && matches("a#|b", "b"))
        // Lucene reads an intersection's right operand from its first character: `x>&|0` is `x>` and the
        // literal `|0`, which no text is — as in Elastic's reverse-shell rule, where `bash\s+-i\s+>&|0>&1`
        // matches nothing.
        #expect(try !matches(".*(nc|bash -i >&|0>&1).*", "bash -i >&"))
        #expect(try matches(".*(nc|bash -i >&|0>&1).*", "x nc y") && !matches(".*(nc|bash -i >&|0>&1).*", "0>&1"))
        #expect(try matches("a&|", "a") == false && matches("(a|b)&(b|c)", "b") && !matches("(a|b)&(b|c)", "a"))
        let seed = UInt64.random(in: 1...1_000_000)
        print("regex intersection: seed \(seed)")
        var random = SplitMix(seed: seed)
        let atoms = ["a", "b", ".", "[ab]", "a*", "b+", "(a|b)", "(ab)?", ".*"]
        func operand() -> String { (0..<random.next(1...4)).map { _ in atoms[random.next(0...atoms.count - 1)] }.joined() }
        var both = 0
        for _ in 0..<1_000 {
            let (left, right) = (operand(), operand())
            let text = String((0..<random.next(0...6)).map { _ in Array("ab")[random.next(0...1)] })
            let expected = try LinearRegex(lucene: left).matches(text) && LinearRegex(lucene: right).matches(text)
            let ours = try LinearRegex(lucene: "(\(left))&(\(right))").matches(text)
            #expect(ours == expected, "seed \(seed): /(\(left))&(\(right))/ on \"\(text)\"")
            if expected { both += 1 }
        }
        #expect(both > 50, "the corpus exercises intersections that match")
    }
}

@Suite("Regular expressions with captures (Java and Grok syntax)")
struct CapturingRegexTests {
    /// Seeded random patterns (greedy and lazy quantifiers, groups, alternation, classes) searched in
    /// random texts: the same match and the same groups as ICU's backtracking engine, which reports what
    /// Java's does. Repeated operands cannot match the empty text, where engines differ on empty
    /// iterations.
    @Test func capturesAgreeWithICU() throws {
        let seed = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_REGEX_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...1_000_000)
        print("capturing regex differential: seed \(seed)")
        var random = SplitMix(seed: seed)
        func pattern(_ depth: Int) -> String {
            var parts: [String] = []
            for _ in 0..<random.next(1...3) {
                var atom: String
                switch random.next(0...8) {
                case 0: atom = "."
                case 1: atom = "[a-b]"
                case 2: atom = "[^a]"
                case 3 where depth < 2:
                    atom = (random.next(0...1) == 0 ? "(" : "(?:") + pattern(depth + 1) + (random.next(0...1) == 0 ? "|" + pattern(depth + 1) : "") + ")"
                case 4: atom = "\\d"
                default: atom = ["a", "b", "c"][random.next(0...2)]
                }
                // Only operands that consume a character get unbounded repetition.
                let consumes = !atom.hasPrefix("(")
                switch random.next(0...7) {
                case 0 where consumes: atom += random.next(0...1) == 0 ? "*" : "*?"
                case 1 where consumes: atom += random.next(0...1) == 0 ? "+" : "+?"
                case 2: atom += random.next(0...1) == 0 ? "?" : "??"
                case 3: atom += "{\(random.next(0...1)),\(random.next(1...2))}" + (random.next(0...1) == 0 ? "?" : "")
                default: break
                }
                parts.append(atom)
            }
            return parts.joined()
        }
        var matched = 0
        var replaced = 0
        for _ in 0..<2_000 {
            let text = String((0..<random.next(0...9)).map { _ in Array("abc1")[random.next(0...3)] })
            let source = pattern(0)
            let ours = try CapturingRegex(source)
            let icu = try NSRegularExpression(pattern: source)
            let scalars = Array(text.unicodeScalars)
            let mine = ours.firstMatch(in: scalars)
            let theirs = icu.firstMatch(in: text, range: NSRange(location: 0, length: (text as NSString).length))
            #expect((mine == nil) == (theirs == nil), "seed \(seed): /\(source)/ in \"\(text)\"")
            guard let mine, let theirs else { continue }
            matched += 1
            #expect(mine.count == theirs.numberOfRanges, "seed \(seed): /\(source)/ groups")
            for group in 0..<min(mine.count, theirs.numberOfRanges) {
                let range = theirs.range(at: group)
                let expected: Range<Int>? = range.location == NSNotFound ? nil : range.location..<(range.location + range.length)
                #expect(mine[group] == expected, "seed \(seed): /\(source)/ in \"\(text)\": group \(group) \(String(describing: mine[group])) vs \(String(describing: expected))")
            }
            let template = ["-", "<$0>", "$1", ""][random.next(0...3)]
            if template == "$1" && ours.groupCount < 2 { continue }
            let javaLike = icu.stringByReplacingMatches(in: text, range: NSRange(location: 0, length: (text as NSString).length), withTemplate: template)
            #expect(ours.replacingAll(in: text, with: template) == javaLike, "seed \(seed): replace /\(source)/ in \"\(text)\" with \(template)")
            replaced += 1
        }
        print("capturing regex differential: \(matched) of 2000 matched, \(replaced) replacements compared")
        #expect(matched > 300)
    }

    @Test func syntaxBeyondTheRegularSubsetIsRefused() {
        for pattern in ["(?=a)", "(?!a)", "(?<=a)b", "(?>a)", "a++", "(a)\\1", "(?i)a", "[a[b]]", "a{2"] {
            #expect(throws: RegexSyntaxError.self, "\(pattern)") { try CapturingRegex(pattern) }
        }
        #expect((try? CapturingRegex("a{2", dialect: .oniguruma)) != nil, "Oniguruma reads a brace that starts no count as itself")
    }

    /// The Pike VM on 1 MB of hostile text: at most (length + 1) × 3 × program size thread steps for the
    /// search, whatever the pattern — counted, not timed.
    @Test(.timeLimit(.minutes(2))) func hostilePatternsStayLinearOnAMegabyte() throws {
        let megabyte = String(repeating: "a", count: 1 << 20)
        for source in ["(a|aa)*c", "(.*?)(.*?)(.*?)x", "^(a|a?)+$b"] {
            let regex = try CapturingRegex(source)
            let (matched, steps) = regex.firstMatchCountingSteps(megabyte)
            #expect(!matched, "\(source)")
            let bound = (megabyte.unicodeScalars.count + 1) * 3 * regex.programSize
            #expect(steps <= bound, "\(source): \(steps) steps > \(bound)")
            print("capturing regex: /\(source)/ on 1 MB: \(steps) thread steps (\(regex.programSize) instructions)")
        }
        let grok = try Grok("%{DATA}/exec\\?%{DATA:raw_commands}&(?:container|stdin|stdout|stderr)=%{GREEDYDATA}")
        let uri = "/api/v1/namespaces/x/pods/p/exec?" + String(repeating: "command=a&", count: 100_000)
        let (matched, steps) = grok.regex.firstMatchCountingSteps(uri)
        #expect(!matched && steps <= (uri.unicodeScalars.count + 1) * 3 * grok.regex.programSize, "the rules' Grok pattern on 1 MB without a delimiter")
    }
}
