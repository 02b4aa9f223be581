// The ES|QL parser: Elastic's 11 ES|QL rules, errors with line and column, and the printed form parsing back.
import Detection
import Foundation
import TestSupport
import Testing

@Suite("ES|QL parser")
struct ESQLParserTests {
    @Test func commandsAndExpressions() throws {
        let query = try ESQLParser.parse("""
            from logs-kubernetes.audit_logs-* metadata _id, _index
            | where event.action == "get" and not user.name in ("a", "b") and source.ip is not null
                and `kubernetes.audit.annotations.authorization_k8s_io/decision` != "allow" // a comment
            | eval decoded = URL_DECODE(kubernetes.audit.requestURI), n = 2 * (x + 1) - -3
            | grok decoded "%{DATA:raw}&%{GREEDYDATA}"
            | stats Esql.count = count(*), Esql.names = values(name) by user.name, source.ip
            | where Esql.count >= 3 and @timestamp >= NOW() - 9 minutes /* block */
            | rename a as b
            | sort Esql.count desc nulls last, b
            | limit 10
            | keep user.name, Esql.*, *_values
            | drop `odd name`
            """)
        #expect(query.indices == ["logs-kubernetes.audit_logs-*"])
        #expect(query.metadata == ["_id", "_index"])
        #expect(query.commands.map(\.name) == ["WHERE", "EVAL", "GROK", "STATS", "WHERE", "RENAME", "SORT", "LIMIT", "KEEP", "DROP"])
        guard case .where(let condition) = query.commands[0] else { Issue.record("not a WHERE"); return }
        #expect(condition.description.contains(#"(NOT (user.name IN ("a", "b")))"#))
        #expect(condition.description.contains("`kubernetes.audit.annotations.authorization_k8s_io/decision`"))
        guard case .stats(let aggregates, let by) = query.commands[3] else { Issue.record("not STATS"); return }
        #expect(aggregates.map(\.name) == ["Esql.count", "Esql.names"])
        #expect(aggregates.first?.expression == .function("COUNT", [.star]))
        #expect(by == [.field("user.name"), .field("source.ip")])
        guard case .where(let recent) = query.commands[4] else { Issue.record("not a WHERE"); return }
        #expect(recent.description.contains("(NOW() - 9 minutes)"))
        guard case .keep(let columns) = query.commands[8] else { Issue.record("not KEEP"); return }
        #expect(columns == ["user.name", "Esql.*", "*_values"])
        #expect(try ESQLParser.parse(query.description) == query, "the printed form parses back")
    }

    @Test func errorsNameTheLineColumnAndExpectation() {
        func failure(_ text: String) -> ESQLSyntaxError? {
            #expect(throws: ESQLSyntaxError.self) { try ESQLParser.parse(text) }
        }
        let equals = failure("FROM x\n| WHERE a = 1")
        #expect(equals?.line == 2 && equals?.column == 11 && equals?.expected.contains("==") == true, "\(equals?.description ?? "")")
        let unsupported = failure("FROM x | ENRICH policy")
        #expect(unsupported?.message.contains("ENRICH command is not supported") == true)
        let unknown = failure("FROM x | FROB y")
        #expect(unknown?.message.contains("unknown command 'FROB'") == true && unknown?.expected.contains("STATS") == true)
        let unclosed = failure("FROM x\n| WHERE a == \"b")
        #expect(unclosed?.line == 2 && unclosed?.column == 14)
        #expect(failure("WHERE a == 1")?.expected == "FROM")
        #expect(failure("FROM x | LIMIT -1") != nil)
        #expect(failure("FROM x | WHERE a IN 1") != nil)
        #expect(failure("FROM x | STATS") != nil)
        let deep = failure("FROM x | WHERE " + String(repeating: "(", count: 5_000) + "a" + String(repeating: ")", count: 5_000))
        #expect(deep?.message.contains("nesting") == true, "a hostile query is refused, not a stack overflow")
    }

    /// Random expression trees: printed, then parsed back to the same tree (seeded).
    @Test func printedExpressionsParseBack() throws {
        let seed = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_ESQL_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...1_000_000)
        print("ES|QL round trip: seed \(seed) (AUDIT_SENTINEL_ESQL_SEED reruns it)")
        var random = SplitMix(seed: seed)
        func name() -> String { ["a", "user.name", "kubernetes.audit.verb", "@timestamp", "Esql.x", "odd-name", "by", "a.b/c"][random.next(0...7)] }
        func expression(_ depth: Int) -> ESQLExpression {
            let leaf = depth >= 4 || random.next(0...2) == 0
            if leaf {
                switch random.next(0...6) {
                case 0: return .literal(.string(["x", "a \"q\"", "tab\there", "back\\slash", ""][random.next(0...4)]))
                case 1: return .literal(.integer(Int64(random.next(0...1000))))
                case 2: return .literal(.double([1.5, 0.25, 1e20][random.next(0...2)]))
                case 3: return .literal([.boolean(true), .boolean(false), .null][random.next(0...2)])
                case 4: return .literal(.timeSpan(quantity: Int64(random.next(1...60)), unit: ["minutes", "hours", "days"][random.next(0...2)]))
                default: return .field(name())
                }
            }
            let a = expression(depth + 1)
            switch random.next(0...10) {
            case 0: return .not(a)
            case 1: return .and(a, expression(depth + 1))
            case 2: return .or(a, expression(depth + 1))
            case 3: return .compare(a, [.equal, .notEqual, .less, .lessOrEqual, .greater, .greaterOrEqual][random.next(0...5)], expression(depth + 1))
            case 4: return .arithmetic(a, [.add, .subtract, .multiply, .divide, .modulo][random.next(0...4)], expression(depth + 1))
            case 5: return .negate(a)
            case 6: return .membership(a, (0..<random.next(1...3)).map { _ in expression(depth + 1) }, negated: random.next(0...1) == 0)
            case 7: return .like(a, ["*x?", "a.*b"][random.next(0...1)], regex: random.next(0...1) == 0, negated: random.next(0...1) == 0)
            case 8: return .isNull(a, negated: random.next(0...1) == 0)
            case 9: return .function(["COUNT", "TO_STRING", "CASE", "NOW"][random.next(0...3)], random.next(0...3) == 0 ? [.star] : [a])
            default: return .function("CONCAT", [a, expression(depth + 1)])
            }
        }
        for _ in 0..<500 {
            let condition = expression(0)
            let query = ESQLQuery(indices: ["logs-*"], metadata: [], commands: [
                .where(condition), .eval([ESQLAssignment(name: name(), expression: expression(1))]),
                .stats([ESQLAssignment(name: "Esql.n", expression: expression(2))], by: [.field(name())]),
                .sort([ESQLOrder(expression: expression(3), descending: random.next(0...1) == 0, nullsFirst: [nil, true, false][random.next(0...2)])]),
            ])
            let printed = query.description
            let parsed = try ESQLParser.parse(printed)
            #expect(parsed == query, "seed \(seed): \(printed)")
            guard case .where(let again) = parsed.commands[0] else { continue }
            #expect(again == condition, "seed \(seed): \(printed)")
        }
    }
}

/// Elastic's ES|QL rules (from ../shared/testdata): every query parses, and prints a form that parses back.
@Suite("ES|QL parser: Elastic's Kubernetes ES|QL rules", .enabled(if: SharedTestData.rulesAvailable, SharedTestData.rulesSkipReason))
struct ElasticESQLRulesParseTests {
    @Test func allElevenParse() throws {
        var parsed = 0
        var commands: Set<String> = []
        for name in try FileManager.default.contentsOfDirectory(atPath: SharedTestData.rules.path).sorted() where name.hasSuffix(".toml") {
            let table = try TOMLTable(parsing: String(contentsOf: SharedTestData.rules.appendingPathComponent(name), encoding: .utf8))
            guard table["rule"]?.table?["language"]?.string == "esql", let text = table["rule"]?.table?["query"]?.string else { continue }
            let query = try ESQLParser.parse(text)
            #expect(try ESQLParser.parse(query.description) == query, "\(name)")
            commands.formUnion(query.commands.map(\.name))
            parsed += 1
        }
        #expect(parsed == 11)
        #expect(commands == ["WHERE", "EVAL", "STATS", "KEEP", "GROK"])
    }
}
