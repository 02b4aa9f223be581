import AuditEvents
import Detection
import Foundation
import Testing

/// An ECS-shaped document from dotted paths.
private func document(_ fields: KeyValuePairs<String, JSONValue>) -> JSONObject {
    var object = JSONObject()
    for (path, value) in fields { object.setDotted(value, path) }
    return object
}

extension JSONObject {
    fileprivate mutating func setDotted(_ value: JSONValue, _ path: String) {
        let parts = path.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return self[path] = value }
        var inner = self[parts[0]]?.objectValue ?? JSONObject()
        inner.setDotted(value, parts[1])
        self[parts[0]] = .object(inner)
    }
}

/// The value of `EVAL x = <expression>` on a document.
private func value(_ expression: String, _ fields: KeyValuePairs<String, JSONValue> = [:], now: Int64 = 0) throws -> ESQLValue {
    let program = try ESQLProgram(parsing: "FROM logs | EVAL x = \(expression)")
    let slots = try #require(program.evaluate(document(fields), now: now))
    return program.outputColumns(slots).first { $0.name == "x" }?.value ?? .null
}

private func passes(_ condition: String, _ fields: KeyValuePairs<String, JSONValue>) throws -> Bool {
    try ESQLProgram(parsing: "FROM logs | WHERE \(condition)").evaluate(document(fields), now: 0) != nil
}

@Suite("ES|QL evaluation")
struct ESQLEvaluatorTests {
    @Test func nullsAndMultiValuedFieldsFollowESQL() throws {
        // A missing field is null; comparisons with null are null, so neither a test nor its negation passes.
        #expect(try !passes("a == 1", [:]) && !passes("NOT a == 1", [:]))
        #expect(try passes("a IS NULL", [:]) && !passes("a IS NOT NULL", [:]))
        // A multi-valued field: null for comparisons and single-value functions, not null for IS NULL.
        let multi: KeyValuePairs<String, JSONValue> = ["ips": ["10.0.0.1", "10.0.0.2"]]
        #expect(try !passes("ips == \"10.0.0.1\"", multi) && !passes("NOT ips == \"10.0.0.1\"", multi))
        #expect(try !passes("NOT ips IN (\"::1\", \"127.0.0.1\")", multi), "NOT IN on a multi-valued field is null, as in ES|QL")
        #expect(try passes("ips IS NOT NULL", multi))
        #expect(try value("MV_COUNT(ips)", multi) == .integer(2) && value("MV_FIRST(ips)", multi) == .string("10.0.0.1"))
        #expect(try value("STARTS_WITH(ips, \"10.\")", multi) == .null)
        // One value in an array is that value.
        #expect(try passes("NOT ips IN (\"::1\", \"127.0.0.1\")", ["ips": ["203.0.113.9"]]))
        // Three-valued logic: null AND false is false, null OR true is true.
        #expect(try passes("NOT (a == 1 AND b == 2)", ["b": 3]))
        #expect(try passes("a == 1 OR b == 2", ["b": 2]) && !passes("a == 1 OR b == 3", ["b": 2]))
        // IN with a null in the list: true if found, else null.
        #expect(try passes("b IN (1, a, 2)", ["b": 2]) && !passes("NOT b IN (1, a)", ["b": 2]))
    }

    @Test func typesCompareAsElasticsearchMapsThem() throws {
        #expect(try passes("code >= 200 AND code < 300", ["code": 204]) && passes("code IN (401, 403)", ["code": 403]))
        #expect(try passes("ratio > 1", ["ratio": .number(JSONNumber("1.5"))]) && passes("code == 200.0", ["code": 200]))
        #expect(try !passes("code == \"200\"", ["code": 200]), "a number is not a keyword")
        #expect(try passes("@timestamp >= \"2026-11-20T09:00:00Z\"", ["@timestamp": "2026-11-20T09:00:10.000Z"]), "dates compare with date strings")
        #expect(try value("@timestamp + 9 minutes", ["@timestamp": "2026-11-20T09:00:10.000Z"])
                == .date(Timestamp.milliseconds(fromRFC3339: "2026-11-20T09:09:10Z")!))
        #expect(try value("NOW() - 1 hour", now: 7_200_000) == .date(3_600_000))
        #expect(try value("DATE_TRUNC(1 minute, @timestamp)", ["@timestamp": "2026-11-20T09:07:59.999Z"])
                == .date(Timestamp.milliseconds(fromRFC3339: "2026-11-20T09:07:00Z")!))
        #expect(try value("DATE_TRUNC(1 month, @timestamp)", ["@timestamp": "2024-02-29T23:00:00Z"])
                == .date(Timestamp.milliseconds(fromRFC3339: "2024-02-01T00:00:00Z")!))
        #expect(try value("DATE_TRUNC(1 week, @timestamp)", ["@timestamp": "2026-12-02T10:00:00Z"])
                == .date(Timestamp.milliseconds(fromRFC3339: "2026-11-30T00:00:00Z")!), "weeks start on Monday")
        #expect(try value("@timestamp + 1 month", ["@timestamp": "2026-01-31T08:00:00Z"])
                == .date(Timestamp.milliseconds(fromRFC3339: "2026-02-28T08:00:00Z")!), "calendar months clamp the day")
        #expect(try value("9223372036854775807 + 1") == .null, "integer overflow is null")
        #expect(try value("7 / 2") == .integer(3) && value("7 / 2.0") == .double(3.5) && value("1 / 0") == .null)
        #expect(try value("TO_STRING(code)", ["code": 403]) == .string("403") && value("TO_STRING(1.0)") == .string("1.0"))
        #expect(try value("TO_STRING(@timestamp)", ["@timestamp": "2026-11-20T09:00:10Z"]) == .string("2026-11-20T09:00:10.000Z"))
    }

    @Test func functionsTheRulesUse() throws {
        let uri = "/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=cat+%2Fetc%2Fshadow&container=c&stdout=true"
        #expect(try value("URL_DECODE(u)", ["u": .string(uri)])
                == .string("/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=cat /etc/shadow&container=c&stdout=true"))
        #expect(try value("URL_DECODE(\"bad%2\")") == .null, "an incomplete escape cannot be decoded")
        #expect(try value("URL_DECODE(\"%E2%9C%93%FF\")") == .string("✓\u{FFFD}"))
        #expect(try value("REPLACE(\"a+b+c\", \"\\\\+\", \" \")") == .string("a b c"))
        #expect(try value("REPLACE(\"abc\", \"x*\", \"-\")") == .string("-a-b-c-"), "empty matches as Java's replaceAll")
        #expect(try value("REPLACE(\"2026-12-02\", \"(\\\\d+)-(\\\\d+)-(\\\\d+)\", \"$3.$2.$1\")") == .string("02.12.2026"))
        #expect(try value("CASE(code == 403, \"denied\", code == 200, \"ok\", \"other\")", ["code": 200]) == .string("ok"))
        #expect(try value("CASE(code == 403, \"denied\")", ["code": 200]) == .null)
        #expect(try value("CASE(a == 1, \"x\", \"fallback\")") == .string("fallback"), "a null condition is not true")
        #expect(try value("COALESCE(a, b, \"z\")", ["b": "y"]) == .string("y"))
        #expect(try value("TO_LOWER(\"AbC\")") == .string("abc") && value("TO_UPPER(s)", ["s": ["a", "b"]]) == .multi([.string("A"), .string("B")]))
        #expect(try value("LENGTH(\"héllo\")") == .integer(5) && value("SUBSTRING(\"kubernetes\", 5, 3)") == .string("rne"))
        #expect(try value("CONCAT(\"a\", 1, \"b\")") == .string("a1b") && value("CONCAT(\"a\", x)") == .null)
        #expect(try value("ENDS_WITH(\"pods/exec\", \"/exec\")") == .boolean(true) && value("LOCATE(\"abcabc\", \"ca\")") == .integer(3))
        #expect(try value("MV_DEDUPE(v)", ["v": ["a", "b", "a"]]) == .multi([.string("a"), .string("b")]))
        #expect(try value("MV_CONCAT(v, \",\")", ["v": ["a", "b"]]) == .string("a,b") && value("MV_MAX(v)", ["v": [3, 9, 1]]) == .integer(9))
        #expect(try passes("s LIKE \"sh.helm.release.*\"", ["s": "sh.helm.release.v1.x"]) && !passes("s LIKE \"sh.helm.release.*\"", ["s": "shxhelm"]))
        #expect(try passes("s LIKE \"*.pem\"", ["s": "/tls/key.pem"]) && !passes("s LIKE \"*.pem\"", ["s": "key.pem.bak"]))
        #expect(try passes("s LIKE \"exact\"", ["s": "exact"]) && !passes("s LIKE \"exact\"", ["s": "exactly"]) && passes("s LIKE \"*\"", ["s": "x"]))
        #expect(try passes("s LIKE \"*é*\"", ["s": "café"]) && !passes("s LIKE \"*x*\"", ["s": "café"]))
        #expect(try passes("s LIKE \"a\\\\*?\"", ["s": "a*b"]) && !passes("s LIKE \"a\\\\*?\"", ["s": "aXb"]), "an escaped star is literal")
        #expect(try passes("s RLIKE \"\"\"(eks:|system:kube-).*\"\"\"", ["s": "eks:node"]) && !passes("s RLIKE \"eks:\"", ["s": "eks:node"]),
                "RLIKE matches the whole value")
    }

    @Test func kqlInsideESQLQueriesTheEvent() throws {
        let rule: KeyValuePairs<String, JSONValue> = ["kubernetes.audit.requestObject.rules": [["verbs": ["get"], "resources": ["pods"]], ["verbs": ["*"], "resources": ["secrets"]]]]
        #expect(try passes(#"KQL(""" kubernetes.audit.requestObject.rules.verbs:("*" or "escalate") """)"#, rule))
        #expect(try !passes(#"KQL(""" kubernetes.audit.requestObject.rules.verbs:"escalate" """)"#, rule))
    }

    @Test func grokAndDissectExtractColumns() throws {
        let program = try ESQLProgram(parsing: #"""
            FROM logs | GROK u "%{DATA}/exec\\?%{DATA:raw}&(?:container|stdin|stdout|stderr)=%{GREEDYDATA}"
            | DISSECT u "/api/%{version}/namespaces/%{ns}/%{rest}"
            """#)
        let slots = try #require(program.evaluate(document(["u": "/api/v1/namespaces/d/pods/p/exec?command=id&command=-u&stdin=true&stdout=true"]), now: 0))
        let columns = Dictionary(uniqueKeysWithValues: program.outputColumns(slots).map { ($0.name, $0.value) })
        #expect(columns["raw"] == .string("command=id&command=-u"), "DATA is lazy: the first delimiter that lets the rest match")
        #expect(columns["version"] == .string("v1") && columns["ns"] == .string("d"))
        let typed = try ESQLProgram(parsing: #"FROM logs | GROK s "%{WORD:user} took %{INT:ms:int}ms""#)
        let row = try #require(typed.evaluate(document(["s": "alice took 42ms"]), now: 0))
        #expect(typed.outputColumns(row).map(\.value) == [.string("alice"), .integer(42)])
        let miss = try #require(typed.evaluate(document(["s": "nothing here"]), now: 0))
        #expect(typed.outputColumns(miss).isEmpty, "no match: the columns are null")
    }

    @Test func columnsResolveAtCompileTime() throws {
        func refusal(_ query: String) -> String {
            do {
                _ = try ESQLProgram(parsing: query)
                return ""
            } catch { return error.description }
        }
        #expect(refusal("FROM x | DROP a | WHERE a == 1").contains("unknown column [a]"))
        #expect(refusal("FROM x | STATS n = COUNT(*) BY u | WHERE verb == \"get\"").contains("unknown column [verb]"))
        #expect(refusal("FROM x | WHERE FOO(a)").contains("function FOO is not supported"))
        #expect(refusal("FROM x | WHERE NOW() > @timestamp | STATS c = COUNT(*)").contains("NOW() before STATS"))
        #expect(refusal("FROM x | EVAL d = DATE_TRUNC(1 hour, NOW() - 1 day) | STATS c = COUNT(*) BY d").contains("NOW() before STATS"))
        #expect(refusal("FROM x | STATS c = COUNT(*) | WHERE NOW() > @timestamp").contains("unknown column [@timestamp]"),
                "NOW() after STATS is allowed; @timestamp is gone")
        #expect(refusal("FROM x | STATS c = COUNT(*) | EVAL t = NOW()").isEmpty, "NOW() after STATS is the execution time")
        #expect(refusal("FROM x | EVAL now_seen = \"NOW()\" | STATS c = COUNT(*) BY now_seen").isEmpty, "a string is not a call")
        #expect(refusal("FROM x | SORT a").contains("SORT before STATS"))
        #expect(refusal("FROM x | STATS c = COUNT(*) | STATS d = COUNT(*)").contains("a second STATS"))
        #expect(refusal("FROM x | STATS c = COUNT(*) + 1").contains("one aggregate function"))
        #expect(refusal("FROM x | WHERE a RLIKE \"a~b\"").contains("RLIKE"))
        #expect(refusal("FROM x | GROK a \"%{NOPE:x}\"").contains("unknown Grok pattern %{NOPE}"))
        #expect(refusal("FROM x\n| WHERE a ==").contains("line 2"), "syntax errors name the line")
        // EVAL shadows, RENAME moves, KEEP selects; the source stays readable until dropped.
        let program = try ESQLProgram(parsing: "FROM x | EVAL a = 1, b = a + 1 | RENAME b AS c | EVAL a = c * 10 | KEEP a, c, verb")
        let slots = try #require(program.evaluate(document(["verb": "get"]), now: 0))
        #expect(program.outputColumns(slots).map(\.name) == ["a", "c"] && program.outputColumns(slots).map(\.value) == [.integer(20), .integer(2)])
    }

    /// Without STATS, `NOW()` is the event's time (its rule's timestamp field), for any document.
    @Test func nowIsTheEventsTimeOnAnyDocument() throws {
        let toml = """
            [rule]
            name = "recent"
            rule_id = "e1"
            type = "esql"
            language = "esql"
            risk_score = 21
            severity = "low"
            description = "d"
            timestamp_override = "event.ingested"
            query = "FROM logs | WHERE @timestamp >= NOW() - 1 minute"
            """
        let rule = try CompiledRule(DetectionRule.parse(toml: toml, file: "recent.toml"))
        let fresh = document(["@timestamp": "2026-11-20T09:00:30.000Z", "event.ingested": "2026-11-20T09:01:00.000Z"])
        let stale = document(["@timestamp": "2026-11-20T08:00:00.000Z", "event.ingested": "2026-11-20T09:01:00.000Z"])
        #expect(rule.eventTime(fresh) == Timestamp.milliseconds(fromRFC3339: "2026-11-20T09:01:00.000Z"))
        #expect(rule.matches(fresh) && !rule.matches(stale))
    }

    /// STATS over rows, merged from partial aggregates in any grouping: the result equals aggregating all
    /// rows at once (the property the pipeline's panes rely on). Seeded.
    @Test func partialAggregatesMergeToTheWholeAggregate() throws {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("ESQL partial aggregates seed: \(seed)")
        var random = SplitMix(seed: seed)
        let program = try ESQLProgram(parsing: """
            FROM x | STATS n = COUNT(*), v = COUNT(v), d = COUNT_DISTINCT(v), vs = VALUES(v), lo = MIN(v), hi = MAX(v), s = SUM(v), a = AVG(v) BY g
            """)
        for _ in 0..<200 {
            let rows: [[ESQLValue]] = (0..<Int(random.next() % 12)).map { _ in
                let count = Int(random.next() % 3)
                let values = (0..<count).map { _ in ESQLValue.integer(Int64(random.next() % 7)) }
                let value = ESQLValue.from(values)
                return Array(repeating: value, count: 8).enumerated().map { index, value in index == 0 ? .null : value }
            }
            let functions = program.aggregateFunctions
            var whole = functions.map(ESQLPartialAggregate.empty)
            var pieces: [[ESQLPartialAggregate]] = [functions.map(ESQLPartialAggregate.empty)]
            for row in rows {
                let partials = program.partials(row)
                for index in whole.indices { whole[index].add(row[index], star: index == 0, function: functions[index]) }
                if random.next() % 3 == 0 { pieces.append(functions.map(ESQLPartialAggregate.empty)) }
                for index in whole.indices { pieces[pieces.count - 1][index].merge(partials[index], function: functions[index]) }
            }
            var merged = functions.map(ESQLPartialAggregate.empty)
            for piece in pieces.shuffled(using: &random) {
                for index in merged.indices { merged[index].merge(piece[index], function: functions[index]) }
            }
            #expect(zip(merged, functions).map { $0.result($1) } == zip(whole, functions).map { $0.result($1) }, "seed \(seed)")
            for partial in merged { #expect(ESQLPartialAggregate(encoded: partial.encoded) == partial, "the changelog form reads back") }
        }
        // The results themselves, on a known input.
        var aggregates = program.aggregateFunctions.map(ESQLPartialAggregate.empty)
        for value: ESQLValue in [.integer(3), .multi([.integer(1), .integer(3)]), .null] {
            for (index, function) in program.aggregateFunctions.enumerated() { aggregates[index].add(value, star: index == 0, function: function) }
        }
        #expect(zip(aggregates, program.aggregateFunctions).map { $0.result($1) }
                == [.integer(3), .integer(3), .integer(2), .multi([.integer(1), .integer(3)]), .integer(1), .integer(3), .integer(7), .double(7.0 / 3)])
    }

    @Test func valuesEncodeAndReadBack() {
        let values: [ESQLValue] = [.null, .boolean(true), .integer(-5), .double(0.1), .string("x"), .date(1_700_000_000_123),
                                   .span(milliseconds: 60_000, months: 0), .multi([.string("a"), .integer(1)])]
        for value in values { #expect(ESQLValue(encoded: value.encoded) == value) }
    }
}

/// The seeded generator of the EQL parser tests, for `shuffled(using:)` too.
extension SplitMix: RandomNumberGenerator {}
