import AuditEvents
import Foundation
import TestSupport
import Testing

/// `audit-sentinel replay`: the pipeline's detection and suppression over a file, no Kafka.
@Suite("replay command")
struct ReplayCommandTests {
    let cli = MatchCommandTests()

    /// Twenty denials of one account over 200 s, others' traffic around them, two denials of another
    /// account ten minutes later: two alerts, each with an update.
    func auditLog() -> String {
        var traffic = SyntheticAuditTraffic(seed: 9, startMilliseconds: 1_763_625_600_000, spacingMilliseconds: 0)
        var lines: [String] = []
        let start: Int64 = 1_763_625_600_000
        for second in stride(from: 0, to: 200, by: 10) {
            traffic.clock = start + Int64(second) * 1000
            lines.append(traffic.next(.normal).json)
            lines.append(traffic.next(.deniedServiceAccount, user: "system:serviceaccount:payments:checkout-api", namespace: "vault", resource: "secrets").json)
            lines.append(traffic.next(.deniedUser).json)
        }
        for second in [600, 610] {
            traffic.clock = start + Int64(second) * 1000
            lines.append(traffic.next(.deniedServiceAccount, user: "system:serviceaccount:ci:deployer").json)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    @Test func alertsAndUpdatesAsThePipelineWould() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("audit-\(UUID().uuidString).log")
        try auditLog().write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try cli.run(["replay", "--rules", packageRoot.appendingPathComponent("Config/rules").path, file.path])
        #expect(result.status == 0)
        let documents = try result.stdout.split(separator: "\n").map { try JSONValue.parse(String($0)) }
        #expect(documents.count == 4, "two new alerts and their updates")
        let thief = documents.filter { $0[path: "user.name"] == "system:serviceaccount:payments:checkout-api" }
        #expect(thief.map { $0[path: "kibana.alert.suppression.docs_count"] } == [0, 19])
        #expect(thief.first?[path: "kibana.alert.uuid"] == thief.last?[path: "kibana.alert.uuid"])
        #expect(thief.last?[path: "kibana.alert.suppression.summary.namespaces"] == ["vault"])
        // event.ingested comes from the events themselves (stageTimestamp), never from the wall clock.
        #expect(thief.first?[path: "event.ingested"]?.stringValue?.hasPrefix("2025-11-20T0") == true)
        #expect(result.stderr.contains("62 events, 0 undecodable, 2 alerts, 2 updates"))

        // The same input gives the same documents; gzip-compressed input is read too.
        let gz = file.path + ".gz"
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        gzip.arguments = ["sh", "-c", "gzip -c \"$0\" > \"$1\"", file.path, gz]
        try gzip.run()
        gzip.waitUntilExit()
        defer { try? FileManager.default.removeItem(atPath: gz) }
        let again = try cli.run(["replay", "--rules", packageRoot.appendingPathComponent("Config/rules").path, gz])
        #expect(again.stdout.split(separator: "\n").count == 4)
        #expect(again.stdout.replacingOccurrences(of: gz, with: file.path) == result.stdout)
    }

    /// `--cluster-name` (run's `topics.cluster_names`): raw events do not name their cluster; the alert
    /// carries the configured name (the event document copied into it); without one, none.
    @Test func aConfiguredClusterNameReachesTheAlerts() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("audit-\(UUID().uuidString).log")
        try auditLog().write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let rules = packageRoot.appendingPathComponent("Config/rules").path
        let named = try cli.run(["replay", "--rules", rules, "--cluster-name", "prod-eu-1", file.path])
        #expect(named.status == 0)
        let documents = try named.stdout.split(separator: "\n").map { try JSONValue.parse(String($0)) }
        #expect(documents.count == 4)
        for document in documents { #expect(document[path: "orchestrator.cluster.name"] == "prod-eu-1") }
        let unnamed = try cli.run(["replay", "--rules", rules, file.path])
        let plain = try unnamed.stdout.split(separator: "\n").map { try JSONValue.parse(String($0)) }
        #expect(plain.count == 4 && plain.allSatisfy { $0[path: "orchestrator.cluster.name"] == nil })
    }

    /// The README's full documents are what the commands it quotes print (so the README stays true).
    @Test func theReadmesFullDocumentsAreWhatReplayPrints() throws {
        let readme = try String(contentsOf: packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        func block(after marker: String) throws -> JSONValue {
            let start = try #require(readme.range(of: marker)?.upperBound)
            let open = try #require(readme.range(of: "```json\n", range: start..<readme.endIndex)?.upperBound)
            let close = try #require(readme.range(of: "\n```", range: open..<readme.endIndex)?.lowerBound)
            return try JSONValue.parse(String(readme[open..<close]))
        }
        let sample = FileManager.default.temporaryDirectory.appendingPathComponent("sample-\(UUID().uuidString).ndjson")
        defer { try? FileManager.default.removeItem(at: sample) }
        let generated = try cli.run(["generate", "--count", "400", "--denied-fraction", "0.05", "--seed", "11", "--output", sample.path])
        #expect(generated.status == 0)
        for (marker, format) in [("<summary>Elastic Security (Kibana) alert", "ecs"), ("<summary>OCSF 1.1 Detection Finding", "ocsf")] {
            let replayed = try cli.run(["replay", "--topic", "k8s-audit", "--cluster-name", "prod-eu-1", "--format", format, sample.path])
            #expect(replayed.status == 0)
            let first = try JSONValue.parse(String(try #require(replayed.stdout.split(separator: "\n").first)))
            #expect(try block(after: marker) == first, "README's \(format) document differs from replay's: regenerate it")
        }
    }

    @Test func ocsfOutputAndErrors() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("audit-\(UUID().uuidString).log")
        try ("{not json\n" + auditLog()).write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try cli.run(["replay", "--format", "ocsf", "--rules", packageRoot.appendingPathComponent("Config/rules").path, file.path])
        #expect(result.status == 0)
        let findings = try result.stdout.split(separator: "\n").map { try JSONValue.parse(String($0)) }
        #expect(findings.allSatisfy { $0[path: "class_uid"] == 2004 })
        // The first window closes (update) when the second account's events move stream time past it.
        #expect(findings.map { $0[path: "activity_id"] } == [1, 2, 1, 2])
        #expect(result.stderr.contains("1 undecodable"))
        #expect(try cli.run(["replay", "--format", "xml", file.path]).status == 2)
        #expect(try cli.run(["replay", "--rules", "/nonexistent", file.path]).status == 2)
    }
}
