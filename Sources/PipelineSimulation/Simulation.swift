// The deterministic simulation: random histories of a consumer group on the in-memory driver, checked against one uninterrupted run.
import AuditEvents
import Detection
import Foundation
import Kafka
import Pipeline
import Synchronization

/// One simulated history: an input, and a schedule of steps over 1–3 members of the in-memory driver.
/// The property: whatever the schedule, the alerts topic ends with the same set of alert ids, the same final
/// version of each (byte for byte), and one first document per id, as one member reading the same input
/// without interruption. Seeded: a failing seed is printed and `AUDIT_SENTINEL_SIM_SEED=<seed>` reruns it alone.
public struct Simulation {
    public struct Input {
        var records: [(value: [UInt8], timestamp: Int64)]
        /// Input positions after which the producers pause and the wall clock moves on (idle time).
        var pauses: [Int: Int64]
    }

    public let seed: UInt64
    let rules: RuleSet
    var random: SyntheticAuditTraffic.Generator
    public let configuration: PipelineConfiguration

    /// An EQL sequence rule of our own over the simulation's events (`Tests/Fixtures/rules/`; the chaos
    /// test runs it too), run beside the given rules: a role created or patched, then a secret touched by
    /// the same account within two minutes, unless the role is deleted in between. Its pending sequences
    /// cross restarts and rebalances in every history.
    public static let sequenceRulePath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Tests/Fixtures/rules/sequence_role_change_then_secret_access.toml").path
    public static let sequenceRule = try! CompiledRule.load(file: sequenceRulePath)

    /// An aggregating ES|QL rule of our own (`Tests/Fixtures/rules/`), run beside them too: denied service
    /// accounts counted per namespace on a two-minute schedule over three-minute windows. Its groups'
    /// panes and executions cross restarts and rebalances in every history.
    public static let esqlRulePath = URL(fileURLWithPath: sequenceRulePath).deletingLastPathComponent()
        .appendingPathComponent("esql_namespace_spread_by_denied_account.toml").path
    public static let esqlRule = try! CompiledRule.load(file: esqlRulePath)

    public init(seed: UInt64, rules: RuleSet) {
        self.seed = seed
        let own = [Self.sequenceRule, Self.esqlRule].filter { rule in !rules.rules.contains { $0.id == rule.id } }
        self.rules = RuleSet(rules.rules + own)
        random = SyntheticAuditTraffic.Generator(seed: seed &* 0x9E37_79B9_7F4A_7C15 | 1)
        var configuration = PipelineConfiguration(
            applicationID: "sim", kafka: KafkaConfiguration([:]), inputTopics: ["audit"], alertsTopic: "alerts")
        configuration.skipRepartition = seed % 8 == 7
        configuration.internalPartitions = configuration.skipRepartition ? 1 : Int32(1 + seed % 4)
        configuration.defaultSuppression.durationMilliseconds = 2 * 60_000
        configuration.graceMilliseconds = 10_000
        configuration.idleTimeoutMilliseconds = 60_000
        configuration.interimUpdateMilliseconds = 30_000
        self.configuration = configuration
    }

    /// Accounts denied in bursts over ~15 minutes of event time (windows of 2 minutes open, close and are
    /// dropped), normal traffic, events slightly out of order and a few far beyond the grace period, some
    /// malformed records, and a pause or two.
    mutating func makeInput() -> Input {
        let start: Int64 = 1_763_625_600_000
        let accounts = (0..<Int.random(in: 2...5, using: &random)).map { "system:serviceaccount:ns\($0):sa\($0)" }
        let count = Int.random(in: 30...90, using: &random)
        var time = start
        var records: [(value: [UInt8], timestamp: Int64)] = []
        for _ in 0..<count {
            time += Int64.random(in: 0...25_000, using: &random)
            var eventTime = time
            let roll = Int.random(in: 0..<100, using: &random)
            if roll < 8 { eventTime -= Int64.random(in: 1...9_000, using: &random) }          // out of order, within grace
            if roll == 8 { eventTime -= Int64.random(in: 200_000...400_000, using: &random) }  // late
            if roll >= 95 {
                records.append((Array(#"{"kind":"Event","verb":"get","user":{"username":"x""#.utf8), time))
                continue
            }
            let user = roll < 65 ? accounts.randomElement(using: &random)! : (roll < 85 ? "system:serviceaccount:ok:fine" : "alice@example.com")
            records.append((Self.event(user: user, denied: roll < 65 || roll >= 85, at: eventTime, random: &random), eventTime))
        }
        var pauses: [Int: Int64] = [:]
        // Without a repartition topic an idle close is not written to a log before it acts, so a crash can
        // make it happen at another place in the input: those schedules have no idle periods.
        for _ in 0..<(configuration.skipRepartition ? 0 : Int.random(in: 0...2, using: &random)) {
            pauses[Int.random(in: 1..<count, using: &random)] = Int64.random(in: 61_000...300_000, using: &random)
        }
        return Input(records: records, pauses: pauses)
    }

    /// A small audit event (the fields the rule, the ECS view and the alert summary read): the simulation
    /// runs thousands of histories, so its events are a third the size of real ones.
    static func event(user: String, denied: Bool, at time: Int64, random: inout SyntheticAuditTraffic.Generator) -> [UInt8] {
        let verb = ["get", "list", "watch", "create", "delete", "patch"].randomElement(using: &random)!
        let resource = ["secrets", "pods", "configmaps", "roles", "leases"].randomElement(using: &random)!
        let namespace = ["default", "kube-system", "payments", "vault", "data"].randomElement(using: &random)!
        let stamp = Timestamp.rfc3339(milliseconds: time)
        let json = #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a-\#(time)","stage":"ResponseComplete","#
            + #""requestURI":"/api/v1/namespaces/\#(namespace)/\#(resource)","verb":"\#(verb)","user":{"username":"\#(user)"},"#
            + #""sourceIPs":["10.0.\#(Int.random(in: 0...3, using: &random)).\#(Int.random(in: 1...9, using: &random))"],"userAgent":"kubectl/v1.31.2","#
            + #""objectRef":{"resource":"\#(resource)","namespace":"\#(namespace)","apiVersion":"v1"},"responseStatus":{"code":\#(denied ? 403 : 200)},"#
            + #""requestReceivedTimestamp":"\#(stamp)","stageTimestamp":"\#(stamp)","annotations":{"authorization.k8s.io/decision":"\#(denied ? "forbid" : "allow")"}}"#
        return Array(json.utf8)
    }

    struct Outcome: Equatable {
        /// Per alert id: its final version.
        var finals: [String: [UInt8]]
        /// Per alert id: the distinct documents of its `new` versions (one, when all is well).
        var firsts: [String: Set<[UInt8]>]
    }

    static func outcome(_ driver: InMemoryDriver, alertsTopic: String) -> Outcome {
        var finals: [String: [UInt8]] = [:]
        var firsts: [String: Set<[UInt8]>] = [:]
        for entry in driver.records(of: alertsTopic) {
            let id = String(decoding: entry.record.key ?? [], as: UTF8.self)
            finals[id] = entry.record.value ?? []
            if entry.record.headers.contains(where: { $0.name == "alert.kind" && $0.value == Array("new".utf8) }) {
                firsts[id, default: []].insert(entry.record.value ?? [])
            }
        }
        return Outcome(finals: finals, firsts: firsts)
    }

    /// Feeds the input up to position `end`, pausing where the input says: everything so far processed and
    /// delivered, the clock moved on, every store punctuated.
    static func feed(_ input: Input, from: inout Int, to end: Int, driver: InMemoryDriver, random: inout SyntheticAuditTraffic.Generator) {
        while from < end {
            driver.pipe(input.records[from].value, timestamp: input.records[from].timestamp)
            from += 1
            if let pause = input.pauses[from] { quiesce(driver, advancing: pause, random: &random) }
        }
    }

    static func quiesce(_ driver: InMemoryDriver, advancing pause: Int64, random: inout SyntheticAuditTraffic.Generator) {
        driver.runUntilQuiet(using: &random)
        driver.advanceClock(by: pause)
        driver.runUntilQuiet(using: &random)
    }

    /// One member, no faults, the whole input.
    func reference(_ input: Input) -> Outcome {
        var random = SyntheticAuditTraffic.Generator(seed: seed ^ 0xABCD)
        let driver = InMemoryDriver(configuration: configuration, rules: rules)
        driver.join()
        var position = 0
        Self.feed(input, from: &position, to: input.records.count, driver: driver, random: &random)
        Self.quiesce(driver, advancing: 30 * 60_000, random: &random)
        return Self.outcome(driver, alertsTopic: configuration.alertsTopic)
    }

    /// Random steps until the input is consumed, then the same ending as the reference.
    mutating func simulate(_ input: Input) -> (outcome: Outcome, steps: Int, faults: [String: Int]) {
        let driver = InMemoryDriver(configuration: configuration, rules: rules)
        driver.join()
        var position = 0
        var steps = 0
        var faults: [String: Int] = [:]
        let trace = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_SIM_TRACE"] != nil
        while position < input.records.count || steps < 20 {
            steps += 1
            let members = driver.memberIDs
            let member = members.randomElement(using: &random)!
            let roll = Int.random(in: 0..<100, using: &random)
            if trace { print("step \(steps): roll \(roll) member \(member) of \(members) position \(position) in flight \(driver.unacknowledged(member)) committed \(driver.committed.sorted { $0.key.description < $1.key.description }.map { "\($0.key)@\($0.value)" }) fed \(driver.records(of: "audit").count)") }
            switch roll {
            case 0..<25:
                let chunk = Int.random(in: 1...(Int.random(in: 0..<4, using: &random) == 0 ? 40 : 6), using: &random)
                Self.feed(input, from: &position, to: min(input.records.count, position + chunk), driver: driver, random: &random)
            case 25..<55:
                let sizes = [1, 1, 2, 7, Int.random(in: 1...50, using: &random), Int.random(in: 1...3000, using: &random)]
                let size = sizes.randomElement(using: &random)!
                let rebalanceAfter = Int.random(in: 0..<12, using: &random) == 0 ? Int.random(in: 0..<max(1, size), using: &random) : nil
                let refuse = rebalanceAfter != nil && Bool.random(using: &random)
                if rebalanceAfter != nil { faults["rebalance in a poll", default: 0] += 1 }
                driver.poll(member, maxRecords: size, rebalanceAfter: rebalanceAfter, refuseCommits: refuse, using: &random)
            case 55..<80:
                let pending = driver.unacknowledged(member)
                let count = Int.random(in: 0...pending, using: &random)
                let fail = count > 0 && Int.random(in: 0..<6, using: &random) == 0 ? Int.random(in: 0..<count, using: &random) : nil
                if fail != nil { faults["failed delivery", default: 0] += 1 }
                driver.deliver(member, count: count, failAt: fail, failedPersisted: Bool.random(using: &random))
            case 80..<85 where members.count < 3:
                faults["join", default: 0] += 1
                driver.join()
            case 85..<88 where members.count > 1:
                faults["leave", default: 0] += 1
                driver.leave(member)
            case 88..<93:
                faults["crash", default: 0] += 1
                driver.crash(member, persisted: Int.random(in: 0...driver.unacknowledged(member), using: &random))
                if driver.memberIDs.isEmpty { driver.join() }
            case 93..<96:
                faults["rebalance", default: 0] += 1
                driver.rebalance(refuseCommits: Bool.random(using: &random))
            default:
                driver.poll(member, maxRecords: 0, using: &random)  // punctuation only
            }
        }
        Self.quiesce(driver, advancing: 30 * 60_000, random: &random)
        if trace {
            // What the run published, and the matches its stores read: the material to explain a failing seed.
            for entry in driver.records(of: configuration.alertsTopic) {
                let kind = entry.record.headers.first { $0.name == "alert.kind" }.map { String(decoding: $0.value ?? [], as: UTF8.self) } ?? "?"
                let object = (try? JSONValue.parse(entry.record.value ?? []))?.objectValue
                print("alert \(String(decoding: entry.record.key ?? [], as: UTF8.self)) \(kind) \(Self.summary(entry.record.value ?? [])) ancestors \(object?[path: "kibana.alert.ancestors"]?.serialized() ?? "-")")
            }
            for topic in driver.topology.matchesTopics.compactMap({ $0 }) {
                for entry in driver.records(of: topic) {
                    let text = String(decoding: entry.record.value ?? [], as: UTF8.self)
                    let tail = text.range(of: ",\"group\"").map { String(text[$0.lowerBound...]) } ?? String(text.suffix(200))
                    print("match \(topic)[\(entry.partition)]@\(entry.offset): \(tail.prefix(300))")
                }
            }
        }
        return (Self.outcome(driver, alertsTopic: configuration.alertsTopic), steps, faults)
    }

    /// Runs one seed; returns a description of what differs, or nil.
    public static func check(seed: UInt64, rules: RuleSet) -> String? {
        var simulation = Simulation(seed: seed, rules: rules)
        let input = simulation.makeInput()
        let expected = simulation.reference(input)
        let (actual, steps, faults) = simulation.simulate(input)
        var problems: [String] = []
        let missing = Set(expected.finals.keys).subtracting(actual.finals.keys)
        let unexpected = Set(actual.finals.keys).subtracting(expected.finals.keys)
        if !missing.isEmpty { problems.append("\(missing.count) alert ids missing") }
        if !unexpected.isEmpty {
            problems.append("\(unexpected.count) unexpected alert ids, e.g. \(unexpected.sorted()[0]): \(summary(actual.finals[unexpected.sorted()[0]]!))")
        }
        let differing = expected.finals.filter { actual.finals[$0.key] != nil && actual.finals[$0.key] != $0.value }
        if !differing.isEmpty {
            let example = differing.first!
            problems.append("\(differing.count) final versions differ, e.g. \(example.key): expected \(summary(example.value)), got \(summary(actual.finals[example.key]!))")
        }
        let conflicting = actual.firsts.filter { $0.value.count > 1 }
        if !conflicting.isEmpty {
            let example = conflicting.sorted { $0.key < $1.key }[0]
            problems.append("\(conflicting.count) alert ids with more than one first document, e.g. \(example.key): "
                            + example.value.map(summary).sorted().joined(separator: " vs "))
        }
        guard !problems.isEmpty else { return nil }
        return "seed \(seed) (\(input.records.count) records, \(steps) steps, \(faults.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")); "
            + "partitions \(simulation.configuration.internalPartitions)\(simulation.configuration.skipRepartition ? ", no repartition" : "")): "
            + problems.joined(separator: "; ")
            + " — rerun alone with AUDIT_SENTINEL_SIM_SEED=\(seed) (AUDIT_SENTINEL_SIM_TRACE=1 prints its steps)"
    }

    static func summary(_ document: [UInt8]) -> String {
        guard let object = try? JSONValue.parse(document).objectValue else { return "unparsable" }
        let rule = object[path: "kibana.alert.rule.name"]?.stringValue ?? "?"
        if object[path: "kibana.alert.rule.type"]?.stringValue == "esql" {
            return "\(rule), @timestamp \(object["@timestamp"].map { "\($0)" } ?? "-"), \(object[path: "kubernetes.audit.user.username"].map { "\($0)" } ?? "-"), "
                + "events \(object[path: "Esql.event_count"].map { "\($0)" } ?? "-"), namespaces \(object[path: "Esql.namespaces"].map { "\($0)" } ?? "-")"
        }
        let count = object[path: "kibana.alert.suppression.docs_count"].map { "\($0)" } ?? "-"
        let start = object[path: "kibana.alert.suppression.start"].map { "\($0)" } ?? "-"
        return "\(rule): docs_count \(count), start \(start)\(object[path: "kibana.alert.building_block_type"] != nil ? ", building block" : "")"
    }
}


extension Simulation {
    /// Checks `count` seeds from `base` on `threads` threads; returns the failures (at most `limit`; the
    /// run stops early once it has them).
    public static func run(base: UInt64, count: Int, threads: Int, rules: RuleSet, limit: Int = 5) -> [String] {
        final class Work: Sendable {
            let failures = Mutex<[String]>([])
            let next = Atomic<Int>(0)
        }
        let work = Work()
        let workers = (0..<max(1, threads)).map { _ in
            Thread {
                while true {
                    let index = work.next.add(1, ordering: .relaxed).oldValue
                    guard index < count, work.failures.withLock({ $0.count }) < limit else { return }
                    if let failure = check(seed: base + UInt64(index), rules: rules) { work.failures.withLock { $0.append(failure) } }
                }
            }
        }
        for worker in workers { worker.start() }
        while workers.contains(where: { !$0.isFinished }) { Thread.sleep(forTimeInterval: 0.01) }
        return work.failures.withLock { $0 }
    }
}
