// EQL sequences: the state machine against an independent EQL engine, its rules one by one, its changelog form.
import AuditEvents
import Detection
import Foundation
import Pipeline
import PipelineSimulation
import TestSupport
import Testing

/// A generated corpus event: flat fields the queries test, always-present join keys, one multi-valued field.
private struct CorpusEvent {
    var id: Int
    var time: Int64
    var user: String
    var host: String
    var k: String
    var n: Int
    var ip: String
    var groups: [String]
    var optional: String?

    var json: JSONObject {
        var object: JSONObject = [
            "id": .number(JSONNumber(id)), "@timestamp": .number(JSONNumber(time)), "user": ["name": .string(user)],
            "host": .string(host), "k": .string(k), "n": .number(JSONNumber(n)), "ip": .string(ip),
        ]
        if !groups.isEmpty { object["groups"] = groups.count == 1 ? .string(groups[0]) : .array(groups.map(JSONValue.string)) }
        if let optional { object["m"] = .string(optional) }
        return object
    }
}

private struct CorpusGenerator {
    var random: SyntheticAuditTraffic.Generator

    mutating func pick<T>(_ values: [T]) -> T { values.randomElement(using: &random)! }
    mutating func chance(_ percent: Int) -> Bool { Int.random(in: 0..<100, using: &random) < percent }

    /// Events in non-decreasing time (ties included): the order a single partition delivers them in.
    mutating func events(count: Int) -> [CorpusEvent] {
        var time: Int64 = 1_000_000
        return (0..<count).map { index in
            time += pick([0, 0, 100, 400, 900, 1_500, 2_500])
            return CorpusEvent(
                id: index, time: time, user: pick(["ann", "bob"]), host: pick(["h1", "h2"]),
                k: chance(6) ? "z" : pick(["a", "b", "c", "d", "ab", "abc"]), n: Int.random(in: 0...9, using: &random),
                ip: "10.\(pick([0, 1])).\(Int.random(in: 0...3, using: &random)).\(Int.random(in: 1...9, using: &random))",
                groups: Array(["g1", "g2", "g3"].shuffled(using: &random).prefix(Int.random(in: 0...3, using: &random))),
                optional: chance(50) ? pick(["x", "y"]) : nil)
        }
    }

    /// A condition over always-present, single-valued, lowercase fields: where the two engines' semantics
    /// coincide (the package's `==` ignores case and its `not` is two-valued; neither shows on this data).
    mutating func condition(depth: Int = 0) -> String {
        if depth < 2, chance(40) {
            let left = condition(depth: depth + 1)
            let right = condition(depth: depth + 1)
            return chance(50) ? "(\(left) and \(right))" : "(\(left) or \(right))"
        }
        if depth < 2, chance(10) { return "not \(condition(depth: depth + 1))" }
        let letter = pick(["a", "b", "c", "d", "ab"])
        return pick([
            #"k == "\#(letter)""#, #"k != "\#(letter)""#, #"k in ("\#(letter)", "c")"#, #"k not in ("\#(letter)", "d")"#,
            "n > \(Int.random(in: 0...9, using: &random))", "n <= \(Int.random(in: 0...9, using: &random))",
            "n == \(Int.random(in: 0...9, using: &random))", #"k : "\#(letter.uppercased())""#, #"k like "a*""#, #"k like~ "A*B""#,
            #"startsWith(k, "a")"#, #"endsWith(k, "b")"#, #"stringContains(k, "b")"#, "length(k) == 2", #"wildcard(k, "*b*")"#,
            "add(n, 1) == \(Int.random(in: 1...10, using: &random))", #"cidrMatch(ip, "10.1.0.0/16")"#, #"k in~ ("AB", "C")"#,
            #"startsWith~(k, "A")"#, #"host == "h1""#,
        ])
    }

    mutating func sequence() -> String {
        var query = "sequence by user.name"
        if chance(70) { query += " with maxspan=\(Int.random(in: 1...8, using: &random))s" }
        let perStepKey = chance(30)
        for _ in 0..<Int.random(in: 2...4, using: &random) {
            query += " [any where \(condition())]" + (perStepKey ? " by host" : "")
        }
        if chance(30) { query += #" until [any where k == "z"]"# + (perStepKey ? " by host" : "") }
        return query
    }
}

/// Runs the independent engine (`scripts/eql-reference.py`, the PyPI `eql` package) on the cases; nil when
/// it is not installed outside CI (`make test` installs it; CI must run this).
private func referenceResults(_ cases: [JSONValue]) throws -> [[[Int]]]? {
    let python = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_PYTHON"] ?? "python3"
    let probe = Process()
    probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    probe.arguments = [python, "-c", "import eql"]
    probe.standardError = FileHandle.nullDevice
    try probe.run()
    probe.waitUntilExit()
    if probe.terminationStatus != 0 {
        if ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("the eql package is not installed for \(python) (scripts/deps.sh installs it)") }
        print("skipped: the differential needs Python's eql package (make test installs it into .venv)")
        return nil
    }
    let input = FileManager.default.temporaryDirectory.appendingPathComponent("eql-cases-\(UUID().uuidString).json")
    var bytes: [UInt8] = []
    JSONValue.object(["cases": .array(cases)]).write(to: &bytes, sortedKeys: true)
    try Data(bytes).write(to: input)
    defer { try? FileManager.default.removeItem(at: input) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [python, packageRoot.appendingPathComponent("scripts/eql-reference.py").path]
    process.standardInput = try FileHandle(forReadingFrom: input)
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    #expect(process.terminationStatus == 0)
    return String(decoding: data, as: UTF8.self).split(separator: "\n").map { line in
        (try? JSONValue.parse(Array(line.utf8)))?.arrayValue?.map { sequence in
            sequence.arrayValue?.compactMap { value -> Int? in
                if case .number(let number) = value { return number.intValue.map(Int.init) }
                return nil
            } ?? []
        } ?? []
    }
}

private func match(_ event: CorpusEvent, _ entry: (key: [String], steps: UInt32), sequence: Int) -> RuleMatch {
    var match = RuleMatch(groupValues: entry.key.map(Optional.some), eventTime: event.time, document: event.json,
                          source: RecordPosition(topic: "corpus", partition: 0, offset: Int64(event.id)), sequence: sequence)
    match.steps = entry.steps
    return match
}

/// Our sequences over the events in order: the ids of each completed sequence's events.
private func ourSequences(_ query: String, _ events: [CorpusEvent]) throws -> [[Int]] {
    guard case .sequence(let parsed) = try EQLParser.parse(query) else { throw CancellationError() }
    let steps = try EQLSequenceSteps(parsed)
    var pending = PendingSequences(stepCount: steps.steps.count, maxspan: steps.maxspanMilliseconds ?? .max / 4)
    var completed: [[Int]] = []
    for event in events {
        for (index, entry) in steps.matches(event.json).enumerated() {
            for sequence in pending.apply(match(event, entry, sequence: index)) {
                completed.append(sequence.events.map { Int($0.source.offset) })
            }
        }
    }
    return completed
}

@Suite("EQL sequences")
struct SequenceTests {
    /// The differential: random sequences (2–4 steps, join keys per sequence and per step, maxspan, until)
    /// and random event queries over seeded corpora, against Endgame's `eql` engine. Accounted for: the
    /// package compares a multi-valued field as a whole list, where Elasticsearch compares value by value —
    /// so the corpus's multi-valued `groups` is tested by event queries only, each event expanded into one
    /// event per value (an event matches when any expansion does: Elasticsearch's rule for a query naming
    /// the field once, outside a `not`).
    @Test func sequencesAndEventQueriesAgreeWithAnIndependentEngine() throws {
        let seed = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_EQL_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...1_000_000)
        print("eql differential: seed \(seed) (AUDIT_SENTINEL_EQL_SEED=\(seed) reruns it)")
        var generator = CorpusGenerator(random: SyntheticAuditTraffic.Generator(seed: seed))
        var cases: [JSONValue] = []
        var ours: [[[Int]]] = []
        var queries: [String] = []
        for index in 0..<400 {
            let events = generator.events(count: Int.random(in: 10...60, using: &generator.random))
            if index % 4 == 3 {
                // An event query, with the multi-valued field named once, positively.
                let group = generator.pick(["g1", "g2", "g3"])
                let query = "any where " + (generator.chance(50) ? #"(groups == "\#(group)" and \#(generator.condition()))"# : generator.condition())
                let matcher = try EQLEventMatcher(parsing: query)
                ours.append(events.filter { matcher.matches($0.json) }.map { [$0.id] })
                var expanded: [JSONValue] = []
                for event in events {
                    for value in event.groups.isEmpty ? [nil] : event.groups.map(Optional.some) {
                        var single = event
                        single.groups = value.map { [$0] } ?? []
                        expanded.append(.object(single.json))
                    }
                }
                cases.append(["query": .string(query), "events": .array(expanded)])
                queries.append(query)
            } else {
                let query = generator.sequence()
                ours.append(try ourSequences(query, events))
                cases.append(["query": .string(query), "events": .array(events.map { .object($0.json) })])
                queries.append(query)
            }
        }
        if let dump = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_EQL_DUMP"] {
            var bytes: [UInt8] = []
            JSONValue.object(["cases": .array(cases)]).write(to: &bytes, sortedKeys: true)
            try Data(bytes).write(to: URL(fileURLWithPath: dump))
        }
        guard let reference = try referenceResults(cases) else { return }
        #expect(reference.count == cases.count)
        var compared = 0
        var sequencesCompleted = 0
        for (index, expected) in reference.enumerated() where index < ours.count {
            // Event queries: the reference names an event once per matching expansion.
            let theirs = index % 4 == 3 ? Array(Set(expected.map { $0[0] })).sorted().map { [$0] } : expected
            #expect(ours[index] == theirs, "seed \(seed), case \(index): \(queries[index])")
            compared += 1
            if index % 4 != 3 { sequencesCompleted += ours[index].count }
        }
        print("eql differential: \(compared) cases compared, \(sequencesCompleted) sequences completed")
        #expect(sequencesCompleted > 100)
    }

    /// `with runs=N` is the step written N times.
    @Test func runsAreRepeatedSteps() throws {
        let seed = UInt64.random(in: 1...1_000_000)
        print("runs property: seed \(seed)")
        var generator = CorpusGenerator(random: SyntheticAuditTraffic.Generator(seed: seed))
        for _ in 0..<100 {
            let events = generator.events(count: 40)
            let first = generator.condition()
            let repeated = generator.condition()
            let runs = Int.random(in: 2...4, using: &generator.random)
            let span = "with maxspan=\(Int.random(in: 2...9, using: &generator.random))s"
            let compact = "sequence by user.name \(span) [any where \(first)] [any where \(repeated)] with runs=\(runs)"
            let written = "sequence by user.name \(span) [any where \(first)]" + String(repeating: " [any where \(repeated)]", count: runs)
            #expect(try ourSequences(compact, events) == ourSequences(written, events), "seed \(seed): \(compact)")
        }
    }

    private static func event(_ id: Int, _ time: Int64, _ k: String, user: String = "ann") -> CorpusEvent {
        CorpusEvent(id: id, time: time, user: user, host: "h1", k: k, n: 0, ip: "10.0.0.1", groups: [], optional: nil)
    }

    /// Elasticsearch's rules one by one, where arrival order and event time differ (which the package, a
    /// stream of ordered events, does not cover).
    @Test func outOfOrderEventsJoinByEventTime() throws {
        let query = #"sequence by user.name with maxspan=10s [any where k == "a"] [any where k == "b"]"#
        // A step-1 event older than the latest step-0 one joins the earlier step-0 event it follows.
        #expect(try ourSequences(query, [Self.event(0, 1_000, "a"), Self.event(1, 5_000, "a"), Self.event(2, 3_000, "b")]) == [[0, 2]])
        // A step-1 event before every step-0 event joins nothing.
        #expect(try ourSequences(query, [Self.event(0, 5_000, "a"), Self.event(1, 3_000, "b")]) == [])
        // Equal times: arrival order decides.
        #expect(try ourSequences(query, [Self.event(0, 5_000, "a"), Self.event(1, 5_000, "b")]) == [[0, 1]])
        // maxspan is inclusive; one millisecond more rejects.
        #expect(try ourSequences(query, [Self.event(0, 0, "a"), Self.event(1, 10_000, "b")]) == [[0, 1]])
        #expect(try ourSequences(query, [Self.event(0, 0, "a"), Self.event(1, 10_001, "b")]) == [])
        // Each key on its own.
        #expect(try ourSequences(query, [Self.event(0, 0, "a", user: "ann"), Self.event(1, 1, "b", user: "bob")]) == [])
    }

    @Test func untilDiscardsOnlyWhatCameBefore() throws {
        let query = #"sequence by user.name [any where k == "a"] [any where k == "b"] until [any where k == "z"]"#
        #expect(try ourSequences(query, [Self.event(0, 0, "a"), Self.event(1, 1, "z"), Self.event(2, 2, "b")]) == [])
        #expect(try ourSequences(query, [Self.event(0, 0, "a"), Self.event(1, 1, "z"), Self.event(2, 2, "a"), Self.event(3, 3, "b")]) == [[2, 3]])
        // An until event older than the pending sequence (read late) does not discard it.
        #expect(try ourSequences(query, [Self.event(0, 5, "a"), Self.event(1, 1, "z"), Self.event(2, 6, "b")]) == [[0, 2]])
    }

    @Test func missingJoinKeysJoinNothing() throws {
        let steps = try EQLSequenceSteps({ () throws -> EQLSequence in
            guard case .sequence(let parsed) = try EQLParser.parse(#"sequence by m [any where k == "a"] [any where k == "b"]"#) else { throw CancellationError() }
            return parsed
        }())
        var withKey = Self.event(0, 0, "a")
        withKey.optional = "x"
        #expect(steps.matches(withKey.json).map(\.key) == [["x"]])
        #expect(steps.matches(Self.event(1, 0, "a").json).isEmpty)
    }

    /// Pending state expires when stream time less grace passes start plus maxspan, and not before.
    @Test func pendingSequencesExpireByStreamTime() {
        var pending = PendingSequences(stepCount: 2, maxspan: 10_000)
        var first = RuleMatch(groupValues: ["ann"], eventTime: 1_000, document: [:], source: RecordPosition(topic: "t", partition: 0, offset: 0))
        first.steps = 1
        _ = pending.apply(first)
        #expect(pending.expire(horizon: 11_000) == [])
        #expect(pending.pendingCount == 1)
        #expect(pending.expire(horizon: 11_001) == ["=ann"])
        #expect(pending.pendingCount == 0)
        #expect(pending.expired == 1)
    }

    /// The changelog form round-trips: a restored key resumes exactly where it was.
    @Test func pendingSequencesRoundTripThroughTheChangelogForm() throws {
        let seed = UInt64.random(in: 1...1_000_000)
        var generator = CorpusGenerator(random: SyntheticAuditTraffic.Generator(seed: seed))
        for _ in 0..<50 {
            let query = generator.sequence()
            guard case .sequence(let parsed) = try EQLParser.parse(query) else { continue }
            let steps = try EQLSequenceSteps(parsed)
            var live = PendingSequences(stepCount: steps.steps.count, maxspan: steps.maxspanMilliseconds ?? 60_000)
            let events = generator.events(count: 40)
            let cut = Int.random(in: 0..<events.count, using: &generator.random)
            var liveCompleted: [[Int]] = []
            var restoredCompleted: [[Int]] = []
            var restored: PendingSequences?
            for (position, event) in events.enumerated() {
                if position == cut {
                    var copy = PendingSequences(stepCount: live.stepCount, maxspan: live.maxspan)
                    for key in live.keys.keys {
                        let bytes = StateCodec.encode(waiting: live.state(of: key)!, ruleID: "r")
                        copy.restore(key: key, waiting: try bytes.withUnsafeBytes { try StateCodec.decodeWaiting($0) })
                    }
                    #expect(copy.keys == live.keys, "seed \(seed): \(query)")
                    restored = copy
                }
                for (index, entry) in steps.matches(event.json).enumerated() {
                    let step = match(event, entry, sequence: index)
                    liveCompleted += live.apply(step).map { $0.events.map { Int($0.source.offset) } }
                    if restored != nil { restoredCompleted += restored!.apply(step).map { $0.events.map { Int($0.source.offset) } } }
                }
                if position < cut { restoredCompleted = liveCompleted }
            }
            #expect(liveCompleted == restoredCompleted, "seed \(seed): \(query)")
        }
    }

    /// Kibana offers alert suppression for EQL event queries only: a sequence rule asking for it is refused
    /// with the reason, not run with the setting silently ignored.
    @Test func aSequenceRuleWithAlertSuppressionIsRefused() throws {
        let text = try String(contentsOfFile: Simulation.sequenceRulePath, encoding: .utf8)
            + "\n[rule.alert_suppression]\ngroup_by = [\"user.name\"]\n\n[rule.alert_suppression.duration]\nvalue = 5\nunit = \"m\"\n"
        let rule = try DetectionRule.parse(toml: text, file: "sequence.toml")
        let error = #expect(throws: RuleLoadError.self) { try CompiledRule(rule) }
        #expect(error?.message.contains("alert_suppression") == true, "\(error?.message ?? "")")
        #expect(try CompiledRule(DetectionRule.parse(toml: String(contentsOfFile: Simulation.sequenceRulePath, encoding: .utf8))).sequence != nil)
    }
}
