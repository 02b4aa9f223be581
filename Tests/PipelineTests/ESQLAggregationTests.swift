// Aggregating ES|QL rules' scheduled executions: panes, lateness and de-duplication against a direct computation.
import AuditEvents
import Detection
import Foundation
import Pipeline
import TestSupport
import Testing

@Suite("ES|QL scheduled aggregation")
struct ESQLAggregationTests {
    static let query = """
        FROM logs | WHERE kubernetes.audit.verb != "watch"
        | STATS n = COUNT(*), spread = COUNT_DISTINCT(kubernetes.audit.objectRef.namespace), verbs = VALUES(kubernetes.audit.verb),
                first = MIN(@timestamp) BY kubernetes.audit.user.username
        | WHERE spread >= 2
        """

    struct Event {
        var time: Int64
        var user: String
        var namespace: String
        var verb: String

        var document: JSONObject {
            ["@timestamp": .string(Timestamp.rfc3339(milliseconds: time)),
             "kubernetes": ["audit": ["verb": .string(verb), "user": ["username": .string(user)], "objectRef": ["namespace": .string(namespace)]]]]
        }
    }

    struct Row: Equatable, CustomStringConvertible {
        var execution: Int64
        var user: String
        var count: Int64
        var spread: Int64
        var verbs: [String]
        var first: Int64
        var duplicate: Bool
        var description: String { "T=\(execution) \(user) n=\(count) spread=\(spread) verbs=\(verbs) first=\(first)\(duplicate ? " dup" : "")" }
    }

    /// What Elastic's schedule computes, directly from the events: for each execution T, the events of
    /// [T − lookback, T) that had arrived before stream time (less grace) passed T, grouped by user.
    static func reference(_ arrivals: [Event], interval: Int64, lookback: Int64, grace: Int64) -> [Row] {
        func floorGrid(_ time: Int64) -> Int64 { (time >= 0 ? time / interval : -((-time + interval - 1) / interval)) * interval }
        var streamTime = Int64.min
        var contributions: [(event: Event, after: Int64)] = []  // executions after `after` see the event
        for event in arrivals {
            let executed = streamTime == .min ? Int64.min : floorGrid(streamTime - grace)
            streamTime = max(streamTime, event.time)
            guard event.verb != "watch" else { continue }
            if executed != .min, event.time + lookback <= executed { continue }  // late
            contributions.append((event, executed))
        }
        guard let earliest = contributions.map(\.event.time).min(), let latest = contributions.map(\.event.time).max() else { return [] }
        var rows: [Row] = []
        var passed: [String: Int64] = [:]
        var time = floorGrid(earliest) + interval
        while time <= floorGrid(latest + lookback) + interval {
            let inWindow = contributions.filter { $0.after < time && $0.event.time >= time - lookback && $0.event.time < time }.map(\.event)
            for (user, events) in Dictionary(grouping: inWindow, by: \.user).sorted(by: { $0.key < $1.key }) {
                let spread = Set(events.map(\.namespace)).count
                guard spread >= 2 else { continue }
                let duplicate = lookback > interval && passed[user] == time - interval
                passed[user] = time
                rows.append(Row(execution: time, user: user, count: Int64(events.count), spread: Int64(spread),
                                verbs: Set(events.map(\.verb)).sorted(), first: events.map(\.time).min()!, duplicate: duplicate))
            }
            time += interval
        }
        return rows
    }

    static func row(_ result: ESQLExecutionResult) -> Row {
        var columns: [String: ESQLValue] = [:]
        for column in result.columns { columns[column.name] = column.value }
        func int(_ name: String) -> Int64 { if case .integer(let value)? = columns[name] { value } else { -1 } }
        let verbs = columns["verbs"]?.elements.compactMap(\.stringValue) ?? []
        let first: Int64 = if case .date(let time)? = columns["first"] { time } else { -1 }
        return Row(execution: result.execution, user: columns["kubernetes.audit.user.username"]?.stringValue ?? "?", count: int("n"),
                   spread: int("spread"), verbs: verbs, first: first, duplicate: result.duplicate)
    }

    /// Seeded histories — events out of order within the grace period, some late beyond it, replays of
    /// events already applied, and restarts from the changelog form at random points — give exactly the
    /// rows of the direct computation, whatever the schedule (overlapping windows or not).
    struct Schedule: Sendable, CustomTestStringConvertible {
        var interval: Int64
        var lookback: Int64
        var testDescription: String { "every \(interval / 1000) s over \(lookback / 1000) s" }
    }
    static let schedules = [Schedule(interval: 5 * 60_000, lookback: 6 * 60_000), Schedule(interval: 2 * 60_000, lookback: 3 * 60_000),
                            Schedule(interval: 5 * 60_000, lookback: 5 * 60_000), Schedule(interval: 60_000, lookback: 10 * 60_000)]

    @Test(arguments: Self.schedules)
    func streamingEqualsTheScheduleComputedDirectly(schedule: Schedule) throws {
        let program = try ESQLProgram(parsing: Self.query)
        let grace: Int64 = 30_000
        let base = UInt64.random(in: 1...1_000_000)
        print("ES|QL aggregation: seeds \(base)…\(base + 99), schedule every \(schedule.interval / 1000) s over \(schedule.lookback / 1000) s")
        var alerted = 0
        for seed in base..<(base + 100) {
            var random = SyntheticAuditTraffic.Generator(seed: seed)
            var time: Int64 = 1_763_625_600_000
            var arrivals: [Event] = []
            for _ in 0..<Int.random(in: 20...120, using: &random) {
                time += Int64.random(in: 0...40_000, using: &random)
                var eventTime = time
                let roll = Int.random(in: 0..<100, using: &random)
                if roll < 10 { eventTime -= Int64.random(in: 1...grace, using: &random) }
                if roll == 10 { eventTime -= Int64.random(in: 100_000...900_000, using: &random) }
                arrivals.append(Event(time: eventTime, user: ["ann", "bob", "eve"].randomElement(using: &random)!,
                                      namespace: ["a", "b", "c", "d"].randomElement(using: &random)!,
                                      verb: ["get", "list", "watch"].randomElement(using: &random)!))
            }
            let expected = Self.reference(arrivals, interval: schedule.interval, lookback: schedule.lookback, grace: grace)

            var aggregation = ScheduledAggregation(interval: schedule.interval, lookback: schedule.lookback, functions: program.aggregateFunctions)
            var streamTime = Int64.min
            var results: [ESQLExecutionResult] = []
            for (index, event) in arrivals.enumerated() {
                func apply(_ event: Event, position: Int) {
                    streamTime = max(streamTime, event.time)
                    let document = event.document
                    if let slots = program.evaluate(document, now: event.time) {
                        let (groups, inputs) = program.contributions(slots, document: document, now: event.time)
                        for keys in groups {
                            let key = RuleMatch(groupValues: keys.map(ESQLContribution.keyText), eventTime: event.time, documentBytes: [],
                                                source: RecordPosition(topic: "t", partition: 0, offset: 0)).groupKey
                            _ = aggregation.add(key: key, keys: keys, partials: program.partials(inputs), time: event.time,
                                                position: Int64(position), source: "t/0")
                        }
                    }
                    results += aggregation.run(upTo: streamTime - grace, program: program)
                }
                apply(event, position: index)
                // A replay of an earlier event (its input read again): recognized, not counted twice.
                if index > 0, Int.random(in: 0..<10, using: &random) == 0 {
                    let earlier = Int.random(in: max(0, index - 5)..<index, using: &random)
                    apply(arrivals[earlier], position: earlier)
                }
                // A restart: every group through its changelog form, executions from the stream time.
                if Int.random(in: 0..<8, using: &random) == 0 {
                    var restored = ScheduledAggregation(interval: schedule.interval, lookback: schedule.lookback, functions: program.aggregateFunctions)
                    for (key, group) in aggregation.groups {
                        let bytes = StateCodec.encode(group: group, ruleID: "r")
                        let decoded = try bytes.withUnsafeBytes { try StateCodec.decodeGroup($0) }
                        #expect(decoded == group, "seed \(seed): a group reads back from the changelog")
                        restored.restore(key: key, group: decoded)
                    }
                    if streamTime != .min { restored.restore(horizon: streamTime - grace) }
                    aggregation = restored
                }
            }
            #expect(aggregation.paneCount == aggregation.groups.values.reduce(0) { $0 + $1.panes.count }, "seed \(seed): the pane count kept as panes change")
            results += aggregation.run(upTo: .max, program: program)
            #expect(aggregation.paneCount == 0)
            let actual = results.map(Self.row)
            let difference = zip(actual, expected).first { $0.0 != $0.1 }.map { "\($0.0) vs \($0.1)" } ?? "in length"
            #expect(actual == expected, "seed \(seed): \(actual.count) rows, expected \(expected.count); first difference: \(difference)")
            alerted += expected.count { !$0.duplicate }
            #expect(aggregation.groups.isEmpty, "every pane is dropped once no execution covers it")
        }
        print("ES|QL aggregation: \(alerted) alerting rows over 100 histories")
        #expect(alerted > 50, "the histories alert")
    }

    /// A contribution applied in the process that made it is read from the value it carries, one that
    /// crossed a topic from its bytes: both must be the same contribution. Seeded.
    @Test func aCarriedContributionEqualsItsBytesDecoded() throws {
        let rule = try CompiledRule(DetectionRule.load(file: packageRoot.appendingPathComponent("Tests/Fixtures/rules/esql_namespace_spread_by_denied_account.toml").path))
        let seed = UInt64.random(in: 1...1_000_000)
        print("ES|QL contributions: seed \(seed)")
        var random = SyntheticAuditTraffic.Generator(seed: seed)
        var compared = 0
        for index in 0..<300 {
            let namespaces = (0..<Int.random(in: 0...3, using: &random)).map { _ in ["default", "data", "vault", "ns-\u{e9}"].randomElement(using: &random)! }
            let namespace = namespaces.first.map { #""objectRef":{"resource":"pods","namespace":"\#($0)"},"# } ?? ""
            let user = ["system:serviceaccount:a:b", "system:serviceaccount:c:\\\"d", "alice"].randomElement(using: &random)!
            let time = 1_763_625_600_000 + Int64(index) * Int64.random(in: 1...9_999, using: &random)
            let stamp = Timestamp.rfc3339(milliseconds: time)
            let json = #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"id-\#(index)","stage":"ResponseComplete","verb":"\#(["get", "list"].randomElement(using: &random)!)","#
                + #""user":{"username":"\#(user)"},\#(namespace)"requestReceivedTimestamp":"\#(stamp)","stageTimestamp":"\#(stamp)","#
                + #""annotations":{"authorization.k8s.io/decision":"\#(Bool.random(using: &random) ? "forbid" : "allow")"}}"#
            try Array(json.utf8).withUnsafeBytes { record in
                try AuditRecordDecoder().decode(record, ingestTime: time) { result in
                    let event = try result.get()
                    for match in rule.ruleMatches(for: event, groupBy: [], source: RecordPosition(topic: "t", partition: 0, offset: Int64(index)),
                                                  sequence: 0, ingestTime: time) {
                        var wire = match  // as a repartition record carries it: the bytes alone
                        wire.documentBytes = match.documentBytes
                        wire.contribution = nil
                        #expect(!wire.documentBytes.isEmpty)
                        let carried = try #require(match.contribution, "seed \(seed): a contribution made here carries its value")
                        #expect(ESQLContribution(wire) == carried, "seed \(seed), event \(index): \(String(decoding: match.documentBytes, as: UTF8.self))")
                        compared += 1
                    }
                }
            }
        }
        print("ES|QL contributions: \(compared) compared")
        #expect(compared > 50)
    }

    @Test func aLateEventIsCountedNotApplied() throws {
        let program = try ESQLProgram(parsing: Self.query)
        var aggregation = ScheduledAggregation(interval: 60_000, lookback: 60_000, functions: program.aggregateFunctions)
        let partials = program.partials([.null, .string("a"), .string("get"), .date(0)])
        let first = aggregation.add(key: "k", keys: [.string("ann")], partials: partials, time: 10 * 60_000, position: 1, source: "s")
        #expect(first)
        _ = aggregation.run(upTo: 20 * 60_000, program: program)
        let late = aggregation.add(key: "k", keys: [.string("ann")], partials: partials, time: 5 * 60_000, position: 2, source: "s")
        #expect(!late)
        #expect(aggregation.lateCount == 1)
    }
}
