// The deterministic simulation under swift test: a few hundred seeded histories (make test runs 10 000 in release).
import AuditEvents
import Detection
import Foundation
@testable import PipelineSimulation
import Testing
import TestSupport

@Suite("Deterministic simulation (in-memory driver, no broker)")
struct SimulationTests {
    static let rules = try! RuleSet.load(files: [packageRoot.appendingPathComponent("Config/rules/kubernetes_denied_service_account_request.toml").path])

    /// `AUDIT_SENTINEL_SIM_SEED` reruns one seed (a failure names it); `AUDIT_SENTINEL_SIM_SCHEDULES` sets how
    /// many run here. The long runs are `audit-sentinel-sim` (release build): `make test` and `make chaos`.
    @Test func everyScheduleGivesTheAlertsOfAnUninterruptedRun() {
        let environment = ProcessInfo.processInfo.environment
        if let only = environment["AUDIT_SENTINEL_SIM_SEED"].flatMap(UInt64.init) {
            let failure = Simulation.check(seed: only, rules: Self.rules)
            #expect(failure == nil, "\(failure ?? "")")
            return
        }
        let count = environment["AUDIT_SENTINEL_SIM_SCHEDULES"].flatMap(Int.init) ?? 300
        let base = environment["AUDIT_SENTINEL_SIM_BASE_SEED"].flatMap(UInt64.init) ?? 1_000_001
        let failures = Simulation.run(base: base, count: count, threads: 2, rules: Self.rules)
        print("simulation: seeds \(base)…\(base + UInt64(count) - 1), \(failures.count) failing")
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }
}

@Suite("Deterministic simulation: coverage of EQL sequences")
struct SimulationSequenceCoverageTests {
    /// The property above is only as strong as its histories: they must complete sequences (and leave some
    /// pending across the faults), or the sequence rule beside the denied-request rule proves nothing.
    @Test func referenceRunsCompleteSequences() throws {
        var shells = 0
        var seedsWithSequences = 0
        for seed in UInt64(1_000_001)...1_000_080 {
            var simulation = Simulation(seed: seed, rules: SimulationTests.rules)
            let outcome = simulation.reference(simulation.makeInput())
            let count = outcome.finals.values.count { document in
                guard let alert = (try? JSONValue.parse(document))?.objectValue?[path: "kibana.alert"]?.objectValue else { return false }
                return alert[path: "rule.rule_id"]?.stringValue == Simulation.sequenceRule.id && alert["building_block_type"] == nil
            }
            shells += count
            if count > 0 { seedsWithSequences += 1 }
        }
        print("simulation coverage: \(shells) completed sequences in \(seedsWithSequences) of 80 reference runs")
        #expect(seedsWithSequences >= 20)
    }

    /// Likewise for the aggregating ES|QL rule: its executions must alert in many histories, with groups
    /// whose windows span several executions (so that faults land mid-window).
    @Test func referenceRunsAlertOnScheduledAggregates() throws {
        var alerts = 0
        var seedsWithAlerts = 0
        var spread = 0
        for seed in UInt64(1_000_001)...1_000_080 {
            var simulation = Simulation(seed: seed, rules: SimulationTests.rules)
            let outcome = simulation.reference(simulation.makeInput())
            let rows = outcome.finals.values.compactMap { document -> JSONObject? in
                guard let object = (try? JSONValue.parse(document))?.objectValue,
                    object[path: "kibana.alert.rule.rule_id"]?.stringValue == Simulation.esqlRule.id
                else { return nil }
                return object
            }
            alerts += rows.count
            if !rows.isEmpty { seedsWithAlerts += 1 }
            spread += rows.count { ($0[path: "Esql.event_count"].flatMap { if case .number(let n) = $0 { n.intValue } else { nil } } ?? 0) >= 3 }
        }
        print("simulation coverage: \(alerts) ES|QL execution alerts in \(seedsWithAlerts) of 80 reference runs, \(spread) over 3 events or more")
        #expect(seedsWithAlerts >= 20)
        #expect(spread >= 10)
    }
}
