import AuditEvents
import Detection
import Foundation
import TestSupport
import Testing

/// EQL event queries evaluated as Elasticsearch does: three-valued logic, value-by-value multi-valued
/// fields, case rules, patterns; Elastic's four event-query rules on events of our own; and the lazy field
/// view agreeing with the normalized document on random queries and events.
@Suite("EQL evaluator")
struct EQLEvaluatorTests {
    let document: JSONObject = try! JSONValue.parse(#"""
        {"user": {"name": "system:serviceaccount:ci:deployer", "groups": ["system:serviceaccounts", "system:masters"]},
         "source": {"ip": "10.1.2.3"}, "event": {"category": ["web"], "outcome": "failure"},
         "count": 7, "ok": true, "path": "/api/v1/namespaces/x/pods/p/exec?command=sh", "Mixed": "MiXeD"}
        """#).objectValue!

    func matches(_ query: String) throws -> Bool { try EQLEventMatcher(parsing: query).matches(document) }

    @Test func threeValuedLogicAndNull() throws {
        #expect(try matches(#"any where missing == null"#))
        #expect(try !matches(#"any where user.name == null"#))
        #expect(try matches(#"any where user.name != null"#))
        // A comparison with a missing field is null: neither it nor its negation matches.
        #expect(try !matches(#"any where missing == "x""#))
        #expect(try !matches(#"any where missing != "x""#))
        #expect(try !matches(#"any where not missing == "x""#))
        #expect(try !matches(#"any where missing in ("x")"#) && !matches(#"any where missing not in ("x")"#))
        // Kleene: null or true is true, null and false is false, null and true is null.
        #expect(try matches(#"any where missing == "x" or ok == true"#))
        #expect(try !matches(#"any where missing == "x" and ok == true"#))
        #expect(try matches(#"any where not (missing == "x" and ok == false)"#))
    }

    @Test func multiValuedFieldsCompareValueByValueAndCaseRules() throws {
        #expect(try matches(#"any where user.groups == "system:masters""#))
        #expect(try !matches(#"any where user.groups != "system:masters""#), "!= is true only when no value equals")
        #expect(try matches(#"any where user.groups != "system:nodes""#))
        #expect(try !matches(#"any where not user.groups == "system:masters""#))
        #expect(try !matches(#"any where Mixed == "mixed""#) && matches(#"any where Mixed : "mixed""#))
        #expect(try matches(#"any where Mixed in~ ("MIXED")"#) && !matches(#"any where Mixed in ("MIXED")"#))
        #expect(try matches(#"any where count == 7 and count >= 7.0 and count < 8 and count + 1 == 8 and count % 4 == 3"#))
        #expect(try !matches(#"any where count == "7""#), "a string never equals a number")
        #expect(try matches(#"web where true"#) && !matches(#"network where true"#), "the event category")
    }

    @Test func patternsAndFunctions() throws {
        #expect(try matches(#"any where path like "/api/*/pods/?/exec*""#))
        #expect(try !matches(#"any where path like "/API/*""#) && matches(#"any where path like~ "/API/*""#))
        #expect(try matches(#"any where path : "/API/*exec?COMMAND=SH""#))
        #expect(try matches(#"any where wildcard(user.name, "nothing*", "system:serviceaccount:*")"#))
        #expect(try matches(#"any where startsWith(user.name, "system:") and endsWith~(user.name, "DEPLOYER")"#))
        #expect(try !matches(#"any where stringContains(user.name, "CI")"#) && matches(#"any where stringContains~(user.name, "CI")"#))
        #expect(try matches(#"any where length(Mixed) == 5 and cidrMatch(source.ip, "10.0.0.0/8", "192.168.0.0/16")"#))
        #expect(try matches(#"any where concat(Mixed, "-", count) == "MiXeD-7" and number("12") == 12 and string(count) == "7""#))
        #expect(try matches(#"any where startsWith(user.groups, "system:m")"#), "any value of a multi-valued field")
        // regex: Lucene's syntax, whole values, value by value; regex~ ignores case.
        #expect(try matches(#"any where user.name regex "system:serviceaccount:[a-z]+:deploy.*""#))
        #expect(try !matches(#"any where user.name regex "serviceaccount""#), "a regex matches the whole value")
        #expect(try !matches(#"any where Mixed regex "mixed""#) && matches(#"any where Mixed regex~ "mixed""#))
        #expect(try matches(#"any where user.groups regex ("nothing", "system:mast.rs")"#))
        // Refused at compile time, with the reason.
        #expect(throws: EQLSyntaxError.self) { try EQLEventMatcher(parsing: #"any where a regex "x(""#) }
        #expect(throws: EQLSyntaxError.self) { try EQLEventMatcher(parsing: #"any where a regex "^x$""#) }
        #expect(throws: EQLSyntaxError.self) { try EQLEventMatcher(parsing: #"any where frobnicate(a)"#) }
        #expect(throws: EQLSyntaxError.self) { try EQLEventMatcher(parsing: #"any where startsWith(a)"#) }
        #expect(throws: EQLSyntaxError.self) { try EQLEventMatcher(parsing: #"sequence [any where a] [any where b]"#) }
    }

    /// A pattern with many stars against a long text an attacker could send: the single-backtrack matcher
    /// finishes (a backtracking one would not, within the limit); its cost is measured by no clock here.
    @Test(.timeLimit(.minutes(1))) func manyStarsAgainstALongTextFinish() throws {
        let hostile = String(repeating: "a", count: 100_000)
        let matcher = try EQLEventMatcher(parsing: #"any where path like "*a*a*a*a*a*a*a*a*b""#)
        #expect(!matcher.matches(["path": .string(hostile)] as JSONObject))
        #expect(try EQLEventMatcher(parsing: #"any where path like "*a*a*a*a*a*a*a*a*""#).matches(["path": .string(hostile)] as JSONObject))
    }

    /// Random queries over random traffic: the lazy field view and the normalized document give the same
    /// verdicts (seeded; prints its seed), and the generator reaches both verdicts.
    @Test func theFieldViewAndTheDocumentAgree() throws {
        let seed = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_EQL_SEED"].flatMap(UInt64.init) ?? 20_261_203
        print("EQL field view vs document: seed \(seed) (AUDIT_SENTINEL_EQL_SEED reruns it)")
        var random = SplitMix(seed: seed)
        var traffic = SyntheticAuditTraffic(seed: seed)
        let records = (0..<200).map { _ in Array(traffic.next(traffic.nextKind(deniedFraction: 0.3)).json.utf8) }
        let fields = ["kubernetes.audit.verb", "user.name", "source.ip", "kubernetes.audit.objectRef.resource", "event.outcome",
                      "kubernetes.audit.user.groups", "kubernetes.audit.responseStatus.code", "orchestrator.namespace", "missing.field",
                      "kubernetes.audit.annotations.authorization_k8s_io/decision", "user_agent.original", "event.action"]
        let values: [EQLLiteral] = [.string("get"), .string("list"), .string("failure"), .string("forbid"), .string("pods"), .string("secrets"),
                                    .string("system:serviceaccounts"), .integer(403), .integer(200), .null, .string("default")]
        var verdicts = [0, 0]
        for iteration in 0..<400 {
            func condition(_ depth: Int) -> EQLExpression {
                let field = EQLExpression.field(fields[random.next(0...(fields.count - 1))])
                let value = EQLExpression.literal(values[random.next(0...(values.count - 1))])
                switch depth > 0 ? random.next(0...6) : random.next(3...6) {
                case 0: return .and([condition(depth - 1), condition(depth - 1)])
                case 1: return .or([condition(depth - 1), condition(depth - 1)])
                case 2: return .not(condition(depth - 1))
                case 3: return .compare(field, random.next(0...1) == 0 ? .equal : .notEqual, value)
                case 4: return .membership(field, [value, .literal(values[random.next(0...(values.count - 1))])], caseInsensitive: random.next(0...1) == 0, negated: random.next(0...3) == 0)
                case 5: return .stringPredicate(field, .like, [.literal(.string(["*a*", "get", "s*s", "?ist", "*"][random.next(0...4)]))], caseInsensitive: random.next(0...1) == 0)
                default: return .function("startsWith", [field, .literal(.string(["sys", "l", "10.", ""][random.next(0...3)]))], caseInsensitive: false)
                }
            }
            let matcher = try EQLEventMatcher(EQLEventQuery(category: nil, condition: condition(3)))
            for record in records.prefix(20 + iteration % 20) {
                record.withUnsafeBytes { bytes in
                    AuditRecordDecoder().decode(bytes, ingestTime: 1) { result in
                        guard case .success(let event) = result else { return }
                        let lazy = matcher.matches(event)
                        verdicts[lazy ? 1 : 0] += 1
                        #expect(lazy == matcher.matches(event.normalized()), "seed \(seed), query \(iteration): \(matcher.query)")
                    }
                }
            }
        }
        print("EQL field view vs document: \(verdicts[1]) matches, \(verdicts[0]) non-matches")
        #expect(verdicts[0] > 1000 && verdicts[1] > 1000)
    }
}

/// Elastic's EQL event-query rules (from ../shared/testdata) on events of our own.
@Suite("EQL evaluator: Elastic's Kubernetes EQL rules", .enabled(if: SharedTestData.rulesAvailable, SharedTestData.rulesSkipReason))
struct ElasticEQLRulesEvaluateTests {
    /// Elastic's four event-query rules (read from ../shared): each matches an event of ours and not its near miss.
    @Test func elasticsEventQueryRulesMatchPositivesAndNotNearMisses() throws {
        func query(_ file: String) throws -> String {
            let table = try TOMLTable(parsing: String(contentsOf: SharedTestData.rules.appendingPathComponent(file), encoding: .utf8))
            return try #require(table["rule"]?.table?["query"]?.string, "\(file) has no query")
        }
        let deleted = try query("defense_evasion_events_deleted.toml")
        let anonymous = try query("execution_anonymous_create_update_patch_pod_request.toml")
        let forbidden = try query("execution_forbidden_creation_request.toml")
        let exec = try query("execution_user_exec_to_pod.toml")
        func event(verb: String, resource: String, stage: String = "ResponseComplete", level: String = "Request", user: String? = "alice",
                   decision: String = "allow", subresource: String? = nil, namespace: String = "default", name: String = "p") -> String {
            let userPart = user.map { #""user":{"username":"\#($0)"},"# } ?? ""
            let sub = subresource.map { #","subresource":"\#($0)""# } ?? ""
            return #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"\#(level)","auditID":"a","stage":"\#(stage)","verb":"\#(verb)",\#(userPart)"objectRef":{"resource":"\#(resource)","namespace":"\#(namespace)","name":"\#(name)"\#(sub)},"annotations":{"authorization.k8s.io/decision":"\#(decision)"}}"#
        }
        let cases: [(query: String, positive: String, nearMiss: String)] = [
            (deleted, event(verb: "delete", resource: "events"), event(verb: "delete", resource: "events", stage: "RequestReceived")),
            (anonymous, event(verb: "create", resource: "pods", user: "system:anonymous"), event(verb: "create", resource: "pods", user: "bob")),
            (anonymous, event(verb: "patch", resource: "pods", user: nil), event(verb: "get", resource: "pods", user: nil)),
            (forbidden, event(verb: "create", resource: "pods", decision: "forbid"), event(verb: "create", resource: "pods", decision: "allow")),
            (exec, event(verb: "create", resource: "pods", subresource: "exec"),
             event(verb: "create", resource: "pods", subresource: "exec", namespace: "trident", name: "trident-controller-7")),
        ]
        for (query, positive, nearMiss) in cases {
            let matcher = try EQLEventMatcher(parsing: query)
            for (text, expected) in [(positive, true), (nearMiss, false)] {
                var seen = 0
                Array(text.utf8).withUnsafeBytes { bytes in
                    AuditRecordDecoder().decode(bytes, ingestTime: 1) { result in
                        guard case .success(let event) = result else { Issue.record("did not decode: \(text)"); return }
                        seen += 1
                        #expect(matcher.matches(event) == expected, "\(query)\n on \(text)")
                        #expect(matcher.matches(event.normalized()) == expected, "the normalized document agrees")
                    }
                }
                #expect(seen == 1)
            }
        }
    }

    /// Loaded as rules (`type = "eql"`): they alert through the same path as KQL rules, their prefilter
    /// never rejects their positive event, and `replay` writes Kibana's EQL rule type into the alert.
    @Test func asRulesTheyAlertAndReplayWritesTheEQLRuleType() throws {
        let file = "execution_forbidden_creation_request.toml"
        let path = SharedTestData.rules.appendingPathComponent(file).path
        let rule = try CompiledRule.load(file: path)
        let positive = Array(#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","verb":"create","user":{"username":"mallory"},"objectRef":{"resource":"pods","namespace":"default"},"annotations":{"authorization.k8s.io/decision":"forbid"},"stageTimestamp":"2026-01-01T00:00:00Z","requestReceivedTimestamp":"2026-01-01T00:00:00Z"}"#.utf8)
        #expect(alerts(rule, positive))
        let prefilter = try #require(rule.prefilter, "the rule's literals make a prefilter")
        #expect(positive.withUnsafeBytes { prefilter.mightMatch($0) })
        #expect(!Array(#"{"kind":"Event","verb":"get"}"#.utf8).withUnsafeBytes { prefilter.mightMatch($0) }, "and it is selective")

        let input = FileManager.default.temporaryDirectory.appendingPathComponent("eql-\(UUID().uuidString).ndjson")
        try (String(decoding: positive, as: UTF8.self) + "\n").write(to: input, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: input) }
        let replayed = try MatchCommandTests().run(["replay", "--rules", path, input.path])
        #expect(replayed.status == 0, "\(replayed.stderr)")
        let alert = try JSONValue.parse(String(try #require(replayed.stdout.split(separator: "\n").first)))
        #expect(alert[path: "kibana.alert.rule.rule_type_id"] == "siem.eqlRule")
        #expect(alert[path: "kibana.alert.rule.category"] == "Event Correlation Rule")
        #expect(alert[path: "kibana.alert.rule.type"] == "eql")
        #expect(alert[path: "user.name"] == "mallory")
    }

    /// Elastic's sequence rule (RBAC change, then a workload created or patched by the same user within
    /// five minutes): `match` prints the one completed sequence as a JSON array of its two documents;
    /// `replay` writes two building-block alerts and their shell (ECS), or one finding with two evidences
    /// (OCSF). Near misses around it complete nothing: another user, too late, the wrong order, a denied
    /// RBAC change, a system:masters workload change.
    @Test func elasticsSequenceRuleAlertsOnASequenceAndNotOnNearMisses() throws {
        let path = SharedTestData.rules.appendingPathComponent("privilege_escalation_sensitive_rbac_change_followed_by_workload_modification.toml").path
        let rule = try CompiledRule.load(file: path)
        let sequence = try #require(rule.sequence)
        #expect(sequence.steps.count == 2 && sequence.maxspanMilliseconds == 300_000 && sequence.joinKeyNames == ["user.name"])
        func event(_ id: String, _ user: String, _ verb: String, _ resource: String, minute: Int, second: Int = 0,
                   decision: String = "allow", groups: [String] = ["system:authenticated"]) -> String {
            let time = "2026-03-01T10:\(String(format: "%02d", minute)):\(String(format: "%02d", second)).000000Z"
            let groupList = groups.map { "\"\($0)\"" }.joined(separator: ",")
            return #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"\#(id)","stage":"ResponseComplete","verb":"\#(verb)","user":{"username":"\#(user)","groups":[\#(groupList)]},"sourceIPs":["10.2.0.7"],"objectRef":{"resource":"\#(resource)","namespace":"default","name":"x"},"responseStatus":{"code":200},"requestReceivedTimestamp":"\#(time)","stageTimestamp":"\#(time)","annotations":{"authorization.k8s.io/decision":"\#(decision)"}}"#
        }
        let lines = [
            event("w-first", "carol", "create", "deployments", minute: 0),          // wrong order: workload first…
            event("r-carol", "carol", "update", "roles", minute: 1),                 // …then RBAC, nothing after
            event("r-denied", "dave", "create", "clusterroles", minute: 1, decision: "forbid"),
            event("w-dave", "dave", "patch", "deployments", minute: 2),             // follows only a denied change
            event("r-mallory", "mallory", "create", "clusterroles", minute: 2),
            event("w-other", "trent", "patch", "daemonsets", minute: 3),            // another user
            event("w-masters", "mallory", "patch", "daemonsets", minute: 3, groups: ["system:masters"]),
            event("w-mallory", "mallory", "create", "cronjobs", minute: 4),         // the sequence
            event("r-erin", "erin", "patch", "roles", minute: 5),
            event("w-erin", "erin", "create", "deployments", minute: 10, second: 1),  // 5 min 1 s later: too late
        ]
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("eql-sequence-\(UUID().uuidString).ndjson")
        try (lines.joined(separator: "\n") + "\n").write(to: input, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: input) }

        let matched = try MatchCommandTests().run(["match", "--rule", path, input.path])
        #expect(matched.status == 0, "\(matched.stderr)")
        let printed = matched.stdout.split(separator: "\n")
        #expect(printed.count == 1)
        let first = try #require(printed.first)
        let documents = try #require(try JSONValue.parse(String(first)).arrayValue)
        #expect(documents.map { $0[path: "kubernetes.audit.auditID"] } == ["r-mallory", "w-mallory"])

        let replayed = try MatchCommandTests().run(["replay", "--rules", path, input.path])
        #expect(replayed.status == 0, "\(replayed.stderr)")
        let alerts = try replayed.stdout.split(separator: "\n").map { try JSONValue.parse(String($0)) }
        #expect(alerts.count == 3)
        let groupID = try #require(alerts.first?[path: "kibana.alert.group.id"]?.stringValue)
        #expect(alerts.allSatisfy { $0[path: "kibana.alert.group.id"]?.stringValue == groupID })
        #expect(alerts.map { $0[path: "kibana.alert.building_block_type"] } == ["default", "default", nil])
        #expect(alerts.map { $0[path: "kibana.alert.group.index"] } == [0, 1, nil])
        #expect(alerts.map { $0[path: "kubernetes.audit.auditID"] } == ["r-mallory", "w-mallory", nil], "the shell holds only what both share")
        #expect(alerts.allSatisfy { $0[path: "kibana.alert.rule.type"] == "eql" && $0[path: "user.name"] == "mallory" })
        let shell = try #require(alerts.last)
        #expect(shell[path: "kibana.alert.depth"] == 2)
        let ancestors = try #require(shell[path: "kibana.alert.ancestors"]?.arrayValue)
        #expect(ancestors.compactMap { $0[path: "id"]?.stringValue }.suffix(2) == alerts.prefix(2).compactMap { $0[path: "kibana.alert.uuid"]?.stringValue })
        #expect(Set(alerts.compactMap { $0[path: "kibana.alert.uuid"]?.stringValue }).count == 3)

        let again = try MatchCommandTests().run(["replay", "--rules", path, input.path])
        #expect(again.stdout == replayed.stdout, "the same input gives the same bytes, ids included")

        let ocsf = try MatchCommandTests().run(["replay", "--format", "ocsf", "--rules", path, input.path])
        let findings = try ocsf.stdout.split(separator: "\n").map { try JSONValue.parse(String($0)) }
        #expect(findings.count == 1)
        #expect(findings.first?[path: "finding_info.uid"] == shell[path: "kibana.alert.uuid"])
        #expect(findings.first?[path: "evidences"]?.arrayValue?.map { $0[path: "data.kubernetes.audit.auditID"] } == ["r-mallory", "w-mallory"])
        #expect(findings.first?[path: "count"] == 2)
    }
}
