import AuditEvents
import Foundation
import TestSupport
import Testing

/// `audit-sentinel demo` (what `make demo` runs): embedded mock cluster, simulated traffic, real pipeline.
@Suite("demo command")
struct DemoCommandTests {
    @Test func showsAlertsForTheStolenTokenAndTheOperator() throws {
        let result = try MatchCommandTests().run(["demo", "--duration", "14", "--rate", "200", "--json",
                                                  "--rules", packageRoot.appendingPathComponent("Config/rules").path])
        #expect(result.status == 0)
        let documents = try result.stdout.split(separator: "\n").map { try JSONValue.parse(String($0)) }
        let users = Set(documents.compactMap { $0[path: "user.name"]?.stringValue })
        #expect(users == ["system:serviceaccount:payments:checkout-api", "system:serviceaccount:monitoring:node-exporter-operator"])
        let thief = documents.filter { $0[path: "user.name"] == "system:serviceaccount:payments:checkout-api" }
        // The stolen token alerts once, and its window's update (closed at the end) counts the rest.
        #expect(thief.first?[path: "kibana.alert.suppression.docs_count"] == 0)
        #expect(thief.count == 2)
        if case .number(let count)? = thief.last?[path: "kibana.alert.suppression.docs_count"] {
            #expect((count.intValue ?? 0) > 5)
        } else {
            Issue.record("no update for the stolen token's window")
        }
        #expect(documents.allSatisfy { $0[path: "event.kind"] == "signal" })
    }
}
