import AuditEvents
import Detection
import Testing

/// One test per grammar feature and semantic rule, on small ECS documents.
@Suite("KQL")
struct KQLTests {
    func matches(_ query: String, _ document: JSONValue) throws -> Bool {
        try CompiledQuery(parsing: query).matches(try #require(document.objectValue))
    }

    let event: JSONValue = [
        "event": ["dataset": "kubernetes.audit_logs", "action": "get"],
        "user": ["name": "system:serviceaccount:payments:api"],
        "source": ["ip": ["10.1.2.3", "2001:db8::7"]],
        "http": ["status": 403],
        "flags": ["privileged": true, "hostPID": false],
        "note": "a \"quoted\" *star* and (parens)",
        "path": "/api/v1/namespaces/kube-system/secrets",
        "empty": "",
        "kubernetes": ["audit": [
            "annotations": ["authorization_k8s_io/decision": "forbid"],
            "user": ["groups": ["system:serviceaccounts", "system:authenticated"], "extra": ["authentication.kubernetes.io/pod-name": ["api-7d9"]]],
            "requestObject": ["spec": ["containers": [
                ["image": "nginx:1.27", "securityContext": ["privileged": false]],
                ["image": "evil/miner:latest", "securityContext": ["privileged": true]],
            ]]],
            "stageTimestamp": "2026-11-20T09:14:03.513901Z",
        ]],
    ]

    @Test func keywordsAreCaseInsensitiveAndNeedWhitespace() throws {
        #expect(try matches("event.action:get AND user.name:* Or not event.action:list", event))
        #expect(try KQLParser.parse("a:b and c:d") == KQLParser.parse("a:b AND c:d"))
        // "andy" is a value, not the keyword.
        #expect(try KQLParser.parse("a:andy") == .field("a", .value(.keyword("andy"))))
    }

    @Test func precedenceIsNotThenAndThenOr() throws {
        let query = try KQLParser.parse("a:1 or b:2 and not c:3")
        #expect(query == .or([.field("a", .value(.keyword("1"))), .and([.field("b", .value(.keyword("2"))), .not(.field("c", .value(.keyword("3"))))])]))
        #expect(try matches("event.action:list or event.action:get and not user.name:nobody", event))
        #expect(try !matches("(event.action:list or event.action:get) and user.name:nobody", event))
    }

    @Test func valueListsCombinePerField() throws {
        #expect(try matches("event.action:(list or get)", event))
        #expect(try !matches("event.action:(list or watch)", event))
        #expect(try matches("kubernetes.audit.user.groups:(system\\:authenticated and system\\:serviceaccounts)", event))
        #expect(try !matches("kubernetes.audit.user.groups:(system\\:authenticated and not system\\:serviceaccounts)", event))
        #expect(try matches("user.name:(* and not (system\\:node\\:* or eks\\:*))", event))
        #expect(try !matches("user.name:(* and not (system\\:serviceaccount\\:* or eks\\:*))", event))
    }

    @Test func quotedPhrasesAreLiteralWithEscapes() throws {
        #expect(try matches(#"note:"a \"quoted\" *star* and (parens)""#, event))
        #expect(try !matches(#"note:"*star*""#, event), "a quoted star is a star")
        #expect(try KQLParser.parse(#"a:"tab\there\nnew\\""#) == .field("a", .value(.phrase("tab\there\nnew\\"))))
        #expect(throws: KQLSyntaxError.self) { try KQLParser.parse(#"a:"bad \q escape""#) }
    }

    @Test func unquotedEscapes() throws {
        #expect(try KQLParser.parse(#"a:x\:y\(z\)\\w\"\*\<\>\{\}"#) == .field("a", .value(.keyword(#"x:y(z)\w"*<>{}"#))))
        #expect(try KQLParser.parse(#"a:\and"#) == .field("a", .value(.keyword("and"))))
        #expect(try matches(#"note:*\"quoted\"*"#, event))
    }

    @Test func wildcardsAnywhere() throws {
        #expect(try matches("path:/api/v1/*", event))
        #expect(try matches("path:*/secrets", event))
        #expect(try matches("path:*kube-system*", event))
        #expect(try matches("path:/api/*/kube-system/*crets", event))
        #expect(try !matches("path:/api/*/default/*", event))
        #expect(try matches("user.name:system\\:serviceaccount\\:*", event))
        #expect(try !matches("user.name:System\\:*", event), "matching is case-sensitive")
        #expect(try !matches("path:/api/v1", event), "values match whole, not as prefixes")
    }

    @Test func existsAndMissingFields() throws {
        #expect(try matches("user.name:*", event))
        #expect(try !matches("missing.field:*", event))
        #expect(try !matches("empty:*", event), "an empty string is absent, as Elastic's pipeline drops it")
        #expect(try matches("not missing.field:anything", event), "not field:x is true when the field is missing")
        #expect(try !matches("missing.field:anything", event))
        #expect(try matches("missing.field:(x or not *)", event))
    }

    /// `field:*` on an object of the document: exists when the object has a value, on the decoded event's
    /// field view as on its ECS document (the KQL fuzz target found `event:*` false on the view).
    @Test func existsOnObjectsAgreesBetweenTheEventAndItsDocument() throws {
        let raw = #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","verb":"get","user":{"username":"u"},"responseStatus":{"code":403}}"#
        let gke = #"{"protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","methodName":"io.k8s.core.v1.secrets.get","status":{"code":7}},"insertId":"i","timestamp":"2026-11-20T12:00:00Z","resource":{"type":"k8s_cluster","labels":{"cluster_name":"c"}}}"#
        let queries = ["event:*", "orchestrator:*", "orchestrator.resource:*", "user:*", "source:*", "related:*", "kubernetes:*",
                       "kubernetes.audit:*", "kubernetes.audit.responseStatus:*", "cloud:*", "not event:*", "user_agent:*"]
        var compared = 0
        for record in [raw, gke] {
            Array(record.utf8).withUnsafeBytes { bytes in
                AuditRecordDecoder().decode(bytes, ingestTime: 1) { result in
                    guard case .success(let event) = result else { Issue.record("did not decode: \(record)"); return }
                    for text in queries {
                        let query = try! CompiledQuery(parsing: text)
                        #expect(query.matches(event) == query.matches(event.normalized()), "\(text) on \(record)")
                        compared += 1
                    }
                    #expect(try! CompiledQuery(parsing: "event:* and kubernetes.audit.responseStatus:* and not cloud:*").matches(event))
                }
            }
        }
        #expect(compared == 2 * queries.count)
    }

    @Test func typedUnquotedValues() throws {
        #expect(try matches("http.status:403", event))
        #expect(try matches(#"http.status:"403""#, event))
        #expect(try !matches("http.status:404", event))
        #expect(try matches("flags.privileged:true and flags.hostPID:false", event))
        #expect(try !matches("flags.privileged:false", event))
    }

    @Test func arraysMatchIfAnyElementDoes() throws {
        #expect(try matches("source.ip:10.1.2.3", event))
        #expect(try matches("kubernetes.audit.requestObject.spec.containers.image:evil/*", event))
        #expect(try matches("kubernetes.audit.requestObject.spec.containers.securityContext.privileged:true", event))
    }

    @Test func ipFieldsMatchCIDRBlocks() throws {
        #expect(try matches("source.ip:10.0.0.0/8", event))
        #expect(try matches("source.ip:2001\\:db8\\:\\:/32", event))
        #expect(try !matches("source.ip:192.168.0.0/16", event))
        #expect(try matches("source.ip:2001\\:0db8\\:0\\:0\\:0\\:0\\:0\\:7", event), "IPv6 compares by address, not text")
    }

    @Test func rangesOnNumbersDatesAndStrings() throws {
        #expect(try matches("http.status >= 400 and http.status < 500", event))
        #expect(try !matches("http.status > 403", event))
        #expect(try matches("kubernetes.audit.stageTimestamp > 2026-11-20", event))
        #expect(try matches(#"kubernetes.audit.stageTimestamp <= "2026-11-20T09:14:04Z""#, event))
        #expect(try !matches("kubernetes.audit.stageTimestamp < 2026-01-01", event))
        #expect(try matches("user.name > system", event))
    }

    @Test func nestedQueriesHoldOnTheSameObject() throws {
        let same = "kubernetes.audit.requestObject.spec.containers:{ image:evil/* and securityContext.privileged:true }"
        let mixed = "kubernetes.audit.requestObject.spec.containers:{ image:nginx* and securityContext.privileged:true }"
        #expect(try matches(same, event))
        #expect(try !matches(mixed, event))
        // Without nesting, the conditions may hold on different elements.
        #expect(try matches("kubernetes.audit.requestObject.spec.containers.image:nginx* and kubernetes.audit.requestObject.spec.containers.securityContext.privileged:true", event))
    }

    @Test func freeTextMatchesAnyField() throws {
        #expect(try matches("forbid", event))
        #expect(try matches("api-7d9", event))
        #expect(try !matches("permit", event))
        #expect(try matches(#""kubernetes.audit_logs" and get"#, event))
    }

    @Test func fieldNamesWithSlashesDotsAndEscapes() throws {
        #expect(try matches("kubernetes.audit.annotations.authorization_k8s_io/decision:forbid", event))
        #expect(try matches("kubernetes.audit.user.extra.authentication.kubernetes.io/pod-name:api-*", event), "dotted keys resolve like nested ones")
        #expect(try KQLParser.parse(#"weird\:field:1"#) == .field("weird:field", .value(.keyword("1"))))
        #expect(try KQLParser.parse(#""quoted field":1"#) == .field("quoted field", .value(.keyword("1"))))
    }

    @Test func parseErrorsGivePositionAndExpectation() throws {
        let cases: [(String, Int, String)] = [
            ("a:1 b:2", 4, "'and', 'or'"),
            ("a:(1 or 2", 9, "')'"),
            ("(a:1", 4, "')'"),
            ("a:", 2, "a value"),
            ("a:1 and", 7, "a field"),
            ("a:{ b:1", 7, "'}'"),
            (#"a:"open"#, 2, "closing"),
            ("a* :1", 0, "field name"),
            ("a <", 3, "a number"),
        ]
        for (query, position, expected) in cases {
            let error = #expect(throws: KQLSyntaxError.self, "\(query)") { try KQLParser.parse(query) }
            #expect(error?.position == position, "\(query): \(String(describing: error))")
            #expect(error?.expected.contains(expected) == true, "\(query): \(String(describing: error))")
        }
    }

    @Test func prefilterLiteralsComeFromVerbatimFieldsOnly() throws {
        let seed = try CompiledQuery(parsing: #"event.dataset: "kubernetes.audit_logs" and kubernetes.audit.user.username: system\:serviceaccount\:* and kubernetes.audit.annotations.authorization_k8s_io/decision: "forbid""#)
        #expect(seed.requiredLiterals == [["system:serviceaccount:"], ["forbid"]])
        #expect(try CompiledQuery(parsing: "event.outcome:failure").requiredLiterals == nil)
        #expect(try CompiledQuery(parsing: "not kubernetes.audit.verb:get").requiredLiterals == nil)
        #expect(try CompiledQuery(parsing: "kubernetes.audit.verb:(create or patch)").requiredLiterals == [["create", "patch"]])
        #expect(try CompiledQuery(parsing: "kubernetes.audit.verb:create or event.outcome:failure").requiredLiterals == nil)
        #expect(try CompiledQuery(parsing: "kubernetes.audit.requestObject.spec.hostPID:true").requiredLiterals == nil)
    }
}
