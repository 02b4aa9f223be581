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
        let operatorError = #expect(throws: RegexSyntaxError.self) { try LinearRegex(lucene: "a#b") }
        #expect(operatorError?.expected.contains("\\#") == true)
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
}
