// Deterministic simulation of the stateful pipeline: random schedules of polls, rebalances, crashes and failed deliveries.
import AuditEvents
import Detection
import Foundation
import Kafka
import Pipeline
import Testing

/// One simulated history: an input, and a schedule of steps over 1–3 members of the in-memory driver.
/// The property: whatever the schedule, the alerts topic ends with the same set of alert ids, the same final
/// version of each (byte for byte), and one first document per id, as one member reading the same input
/// without interruption. Seeded: a failing seed is printed and `AUDIT_SENTINEL_SIM_SEED=<seed>` reruns it alone.
struct Simulation {
    struct Input {
        var records: [(value: [UInt8], timestamp: Int64)]
        /// Input positions after which the producers pause and the wall clock moves on (idle time).
        var pauses: [Int: Int64]
    }

    static let rules: RuleSet = {
        // The project's shipped rule, unchanged; a test without it cannot run anyway.
        try! RuleSet.load(files: [packageRoot.appendingPathComponent("Config/rules/kubernetes_denied_service_account_request.toml").path])
    }()

    let seed: UInt64
    var random: SyntheticAuditTraffic.Generator
    let configuration: PipelineConfiguration

    init(seed: UInt64) {
        self.seed = seed
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
        var traffic = SyntheticAuditTraffic(seed: seed, startMilliseconds: start, spacingMilliseconds: 0)
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
            traffic.clock = eventTime
            if roll >= 95 {
                records.append((Array(#"{"kind":"Event","verb":"get","user":{"username":"x""#.utf8), time))
                continue
            }
            let kind: SyntheticAuditTraffic.Kind = roll < 65 ? .deniedServiceAccount : (roll < 85 ? .normal : .deniedUser)
            let user = kind == .deniedServiceAccount ? accounts.randomElement(using: &random) : nil
            records.append((Array(traffic.next(kind, user: user).json.utf8), eventTime))
        }
        var pauses: [Int: Int64] = [:]
        // Without a repartition topic an idle close is not written to a log before it acts, so a crash can
        // make it happen at another place in the input: those schedules have no idle periods.
        for _ in 0..<(configuration.skipRepartition ? 0 : Int.random(in: 0...2, using: &random)) {
            pauses[Int.random(in: 1..<count, using: &random)] = Int64.random(in: 61_000...300_000, using: &random)
        }
        return Input(records: records, pauses: pauses)
    }

    struct Outcome: Equatable {
        /// Per alert id: its final version.
        var finals: [String: [UInt8]]
        /// Per alert id: the distinct documents of its `new` versions (one, when all is well).
        var firsts: [String: Set<[UInt8]>]
    }

    static func dump(_ driver: InMemoryDriver, _ label: String) {
        for entry in driver.records(of: "alerts") {
            let doc = (try? JSONValue.parse(entry.record.value ?? []).objectValue) ?? [:]
            let kind = entry.record.headers.first { $0.name == "alert.kind" }.map { String(decoding: $0.value ?? [], as: UTF8.self) } ?? ""
            print("\(label) \(String(decoding: entry.record.key ?? [], as: UTF8.self).prefix(8)) \(kind) late=\(doc[path: "kibana.alert.suppression.late"].map { "\($0)" } ?? "-") n=\(doc[path: "kibana.alert.suppression.docs_count"].map { "\($0)" } ?? "-") src=\(doc[path: "kibana.alert.ancestors"].map { "\($0)" }?.suffix(20) ?? "")")
        }
    }

    static func outcome(_ driver: InMemoryDriver, alertsTopic: String) -> Outcome {
        if ProcessInfo.processInfo.environment["SIM_DUMP"] != nil { dump(driver, driver.memberIDs.count == 1 && driver.memberIDs[0] == 0 ? "R" : "S") }
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
        let driver = InMemoryDriver(configuration: configuration, rules: Self.rules)
        driver.debugTrace = ProcessInfo.processInfo.environment["SIM_TRACE_REF"] != nil
        driver.join()
        var position = 0
        Self.feed(input, from: &position, to: input.records.count, driver: driver, random: &random)
        Self.quiesce(driver, advancing: 30 * 60_000, random: &random)
        if ProcessInfo.processInfo.environment["SIM_TRACE"] != nil { print("reference counters \(driver.counters)") }
        return Self.outcome(driver, alertsTopic: configuration.alertsTopic)
    }

    /// Random steps until the input is consumed, then the same ending as the reference.
    mutating func simulate(_ input: Input) -> (outcome: Outcome, steps: Int, faults: [String: Int]) {
        let driver = InMemoryDriver(configuration: configuration, rules: Self.rules)
        driver.join()
        var position = 0
        var steps = 0
        var faults: [String: Int] = [:]
        let trace = ProcessInfo.processInfo.environment["SIM_TRACE"] != nil
        driver.debugTrace = trace
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
        if trace { print("counters \(driver.counters)") }
        return (Self.outcome(driver, alertsTopic: configuration.alertsTopic), steps, faults)
    }

    /// Runs one seed; returns a description of what differs, or nil.
    static func check(seed: UInt64) -> String? {
        var simulation = Simulation(seed: seed)
        let input = simulation.makeInput()
        let expected = simulation.reference(input)
        let (actual, steps, faults) = simulation.simulate(input)
        var problems: [String] = []
        let missing = Set(expected.finals.keys).subtracting(actual.finals.keys)
        let unexpected = Set(actual.finals.keys).subtracting(expected.finals.keys)
        if !missing.isEmpty { problems.append("\(missing.count) alert ids missing") }
        if !unexpected.isEmpty { problems.append("\(unexpected.count) unexpected alert ids") }
        let differing = expected.finals.filter { actual.finals[$0.key] != nil && actual.finals[$0.key] != $0.value }
        if !differing.isEmpty {
            let example = differing.first!
            problems.append("\(differing.count) final versions differ, e.g. \(example.key): expected \(summary(example.value)), got \(summary(actual.finals[example.key]!))")
        }
        let conflicting = actual.firsts.filter { $0.value.count > 1 }
        if !conflicting.isEmpty { problems.append("\(conflicting.count) alert ids with more than one first document") }
        guard !problems.isEmpty else { return nil }
        return "seed \(seed) (\(input.records.count) records, \(steps) steps, \(faults.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")); "
            + "partitions \(simulation.configuration.internalPartitions)\(simulation.configuration.skipRepartition ? ", no repartition" : "")): "
            + problems.joined(separator: "; ")
            + " — rerun alone with AUDIT_SENTINEL_SIM_SEED=\(seed)"
    }

    static func summary(_ document: [UInt8]) -> String {
        guard let object = try? JSONValue.parse(document).objectValue else { return "unparsable" }
        let count = object[path: "kibana.alert.suppression.docs_count"].map { "\($0)" } ?? "-"
        let start = object[path: "kibana.alert.suppression.start"].map { "\($0)" } ?? "-"
        return "docs_count \(count), start \(start)"
    }
}

@Suite("Deterministic simulation (in-memory driver, no broker)")
struct SimulationTests {
    /// Blocks of seeds run in parallel; `AUDIT_SENTINEL_SIM_SCHEDULES` sets the total (`make chaos` runs more).
    static let blocks = 8
    static var schedules: Int { Int(ProcessInfo.processInfo.environment["AUDIT_SENTINEL_SIM_SCHEDULES"] ?? "") ?? 10_000 }

    @Test(arguments: 0..<blocks)
    func everyScheduleGivesTheAlertsOfAnUninterruptedRun(block: Int) throws {
        if let only = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_SIM_SEED"].flatMap(UInt64.init) {
            guard block == 0 else { return }
            let failure = Simulation.check(seed: only)
            #expect(failure == nil, "\(failure ?? "")")
            return
        }
        let base = UInt64(ProcessInfo.processInfo.environment["AUDIT_SENTINEL_SIM_BASE_SEED"] ?? "") ?? 1
        let perBlock = (Self.schedules + Self.blocks - 1) / Self.blocks
        var failures: [String] = []
        for index in 0..<perBlock {
            let seed = base + UInt64(block * perBlock + index)
            if let failure = Simulation.check(seed: seed) {
                failures.append(failure)
                if failures.count >= 3 { break }
            }
        }
        print("simulation block \(block): seeds \(base + UInt64(block * perBlock))…\(base + UInt64((block + 1) * perBlock) - 1), \(failures.count) failing")
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }
}

@Suite struct SimDebug {
    @Test func debugSeed() throws {
        guard let seed = ProcessInfo.processInfo.environment["SIM_DEBUG"].flatMap(UInt64.init) else { return }
        var simulation = Simulation(seed: seed)
        let input = simulation.makeInput()
        let expected = simulation.reference(input)
        let (actual, _, _) = simulation.simulate(input)
        print("expected ids \(expected.finals.count) actual \(actual.finals.count)")
        for (id, doc) in expected.finals.sorted(by: { $0.key < $1.key }) {
            print("E \(id) \(Simulation.summary(doc)) | A \(actual.finals[id].map(Simulation.summary) ?? "MISSING")")
        }
        for id in Set(actual.finals.keys).subtracting(expected.finals.keys) {
            let doc = (try? JSONValue.parse(actual.finals[id]!).objectValue) ?? [:]
            print("U \(id) \(Simulation.summary(actual.finals[id]!)) time \(doc[path: "kibana.alert.original_time"].map { "\($0)" } ?? "")")
        }
        for (id, doc) in expected.finals.sorted(by: { $0.key < $1.key }) where actual.finals[id] != doc {
            print("D \(id)\n  \(String(decoding: doc, as: UTF8.self))\n  \(String(decoding: actual.finals[id] ?? [], as: UTF8.self))")
        }
    }
}
