import AuditEvents
import Foundation
import TestSupport
import Testing

/// `audit-sentinel match` and `check-rule`, run as a user runs them (the binary `swift build` made).
@Suite("match and check-rule commands")
struct MatchCommandTests {
    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("audit-sentinel")
    }

    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    func run(_ arguments: [String], stdin: [UInt8]? = nil) throws -> Run {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        let input = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin)) }
        try input.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
    }

    let seed = packageRoot.appendingPathComponent("Config/rules/kubernetes_denied_service_account_request.toml").path
    let fixtures = packageRoot.appendingPathComponent("Tests/AuditEventsTests/Fixtures")

    @Test func versionFlagPrintsWhatTheVersionCommandPrints() throws {
        let flag = try run(["--version"])
        let command = try run(["version"])
        #expect(flag.status == 0 && command.status == 0)
        #expect(flag.stdout == command.stdout)
        #expect(flag.stdout.hasPrefix("audit-sentinel ") && flag.stdout.contains("\nlibrdkafka "))
    }

    @Test func printsMatchingDocumentsAsJSONLines() throws {
        let result = try run(["match", "--rule", seed, fixtures.appendingPathComponent("denied-serviceaccount.json").path,
                              fixtures.appendingPathComponent("eventlist-batch.json").path, fixtures.appendingPathComponent("minimal.json").path])
        #expect(result.status == 0)
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count == 2)
        let documents = try lines.map { try JSONValue.parse(String($0)) }
        #expect(documents.map { $0[path: "kubernetes.audit.auditID"] } == ["7f3c2a8e-1d4b-4c55-9a0e-5b2f6c1d9e01", "a2"])
        #expect(documents.allSatisfy { $0[path: "event.outcome"] == "failure" })
    }

    @Test func readsStandardInputAndQueries() throws {
        let input = try Data(contentsOf: fixtures.appendingPathComponent("eventlist-batch.json"))
        let result = try run(["match", "--query", "kubernetes.audit.verb:(list or patch) and source.ip:10.244.0.0/16"], stdin: Array(input))
        #expect(result.status == 0)
        #expect(result.stdout.split(separator: "\n").count == 2)
    }

    /// `--eql`: the same events as the equivalent KQL query; a syntax error names its position.
    @Test func eqlEventQueriesMatchAsTheirKQLEquivalent() throws {
        let input = Array(try Data(contentsOf: fixtures.appendingPathComponent("eventlist-batch.json")))
        let eql = try run(["match", "--eql", #"any where kubernetes.audit.verb in ("list", "patch") and cidrMatch(source.ip, "10.244.0.0/16")"#], stdin: input)
        let kql = try run(["match", "--query", "kubernetes.audit.verb:(list or patch) and source.ip:10.244.0.0/16"], stdin: input)
        #expect(eql.status == 0 && eql.stdout == kql.stdout && eql.stdout.split(separator: "\n").count == 2)
        let bad = try run(["match", "--eql", #"any where verb = "get""#], stdin: input)
        #expect(bad.status == 2 && bad.stderr.contains("EQL syntax error at character 15"), "\(bad.stderr)")
        #expect(try run(["match", "--eql", "any where true", "--query", "a:b"], stdin: input).status != 0, "one of them")
    }

    @Test func exitsOneWhenNothingMatchesAndTwoOnErrors() throws {
        let minimal = fixtures.appendingPathComponent("minimal.json").path
        #expect(try run(["match", "--query", "kubernetes.audit.verb:delete", minimal]).status == 1)
        let badQuery = try run(["match", "--query", "verb:(", minimal])
        #expect(badQuery.status == 2)
        #expect(badQuery.stderr.contains("KQL syntax error at character 6"))
        #expect(try run(["match", "--query", "a:b", "/nonexistent/file.log"]).status == 2)
        #expect(try run(["match", minimal]).status != 0, "a rule or a query is required")
    }

    @Test func badRecordsAreReportedAndSkipped() throws {
        let good = try Data(contentsOf: fixtures.appendingPathComponent("denied-serviceaccount.json"))
        let input = Array("{broken\n".utf8) + Array(good)
        let result = try run(["match", "--rule", seed], stdin: input)
        #expect(result.status == 0)
        #expect(result.stdout.split(separator: "\n").count == 1)
        #expect(result.stderr.contains("invalid_json"))
        #expect(result.stderr.contains("1 record(s) could not be decoded"))
    }

    /// `match --esql`: without STATS, the passing events with their computed columns; with STATS, the rows
    /// of every scheduled execution, each with its time.
    @Test func esqlPrintsRowsAndScheduledExecutions() throws {
        var input: [UInt8] = []
        for (index, name) in ["a", "b", "c"].enumerated() {
            input += auditEvent(["objectRef.resource": "secrets", "objectRef.name": .string(name),
                                 "requestReceivedTimestamp": .string("2026-11-20T09:0\(index):10.000000Z")]) + [10]
        }
        let rows = try run(["match", "--esql", #"FROM logs | WHERE kubernetes.audit.objectRef.name LIKE "*b" | EVAL n = TO_UPPER(kubernetes.audit.objectRef.name)"#], stdin: input)
        #expect(rows.status == 0)
        let lines = rows.stdout.split(separator: "\n")
        #expect(lines.count == 1 && lines.first?.contains(#""n":"B""#) == true, "\(rows.stdout)")
        let stats = try run(["match", "--esql", "FROM logs | STATS names = COUNT_DISTINCT(kubernetes.audit.objectRef.name) BY user.name | WHERE names >= 2",
                             "--interval", "2m", "--from", "now-4m"], stdin: input)
        #expect(stats.status == 0)
        // Executions every two minutes over four minutes: 09:02 sees a and b, 09:04 a, b and c, 09:06 only c.
        let executions = stats.stdout.split(separator: "\n").map(String.init)
        #expect(executions == [
            #"{"@execution":"2026-11-20T09:02:00.000Z","names":2,"user.name":"alice@example.com"}"#,
            #"{"@execution":"2026-11-20T09:04:00.000Z","names":3,"user.name":"alice@example.com"}"#,
        ], "\(stats.stdout)")
        let refused = try run(["match", "--esql", "FROM logs | MV_EXPAND x"], stdin: input)
        #expect(refused.status == 2 && refused.stderr.contains("MV_EXPAND"))
    }

    @Test func checkRuleSummarizesOrExplains() throws {
        let ok = try run(["check-rule", seed])
        #expect(ok.status == 0)
        #expect(ok.stdout.contains("Kubernetes Denied Service Account Request [query, medium, risk 47]"))
        let broken = FileManager.default.temporaryDirectory.appendingPathComponent("broken-\(UUID().uuidString).toml")
        try """
            [rule]
            name = "ES|QL one"
            rule_id = "x"
            description = "d"
            risk_score = 1
            severity = "low"
            type = "esql"
            language = "esql"
            query = "FROM logs | ENRICH policy ON user.name"
            """.write(to: broken, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: broken) }
        let failed = try run(["check-rule", seed, broken.path])
        #expect(failed.status == 2)
        #expect(failed.stderr.contains("ES|QL one"))
        #expect(failed.stderr.contains("ENRICH"), "the unsupported command is named: \(failed.stderr)")
    }
}

extension MatchCommandTests {
    /// `match` on Elastic's own fixtures: raw events, a GKE entry and an AKS record in one NDJSON file.
    @Test(.enabled(if: SharedTestData.rulesAvailable, SharedTestData.rulesSkipReason))
    func matchesElasticsFixtures() throws {
        let log = SharedTestData.rules.deletingLastPathComponent()
            .appendingPathComponent("elastic-integrations-audit-logs/unpaired-0b97ab02/test-audit.log").path
        let gke = try run(["match", "--query", "orchestrator.cluster.name:test-cluster", log])
        #expect(gke.status == 0)
        #expect(try JSONValue.parse(String(gke.stdout.split(separator: "\n").first ?? ""))[path: "kubernetes.audit.auditID"] == "1234abcd")
        let aks = try run(["match", "--query", "kubernetes.audit.aks_metadata.category:kube-audit-admin and user.name:aksService", log])
        #expect(aks.stdout.split(separator: "\n").count == 1)
        let all = try run(["match", "--query", "event.kind:event", log])
        #expect(all.stdout.split(separator: "\n").count == 5)
        #expect(try run(["match", "--rule", seed, log]).status == 1, "Elastic's fixtures hold no denial")
    }
}
