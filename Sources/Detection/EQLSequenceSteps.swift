// EQL sequences, per event: which steps (and whether the until query) an event matches, under which join key.
import AuditEvents

/// A parsed sequence ready to evaluate event by event: its steps with `runs=N` expanded, each step's join
/// key fields (the sequence's `by` fields, then the step's own), its `until` query and its `maxspan`. The
/// state machine that joins the steps into sequences lives with the pipeline's state (it is keyed,
/// persisted state); this type only tells it what one event brings.
public struct EQLSequenceSteps: Sendable {
    public struct Step: Sendable {
        public let matcher: EQLEventMatcher
        /// The join key's fields for this step, in key order.
        public let keys: [FieldPath]
    }

    public let sequence: EQLSequence
    public let steps: [Step]
    public let until: Step?
    /// The longest time from the first step to the last (nil: the sequence states none).
    public var maxspanMilliseconds: Int64? { sequence.maxspanMilliseconds }

    /// The bit of a step mask that marks an event matching the `until` query.
    public static let untilBit: UInt32 = 1 << 31
    /// Steps are bits of a 32-bit mask, the last one reserved for `until`.
    public static let maximumSteps = 31

    public init(_ sequence: EQLSequence) throws(EQLSyntaxError) {
        self.sequence = sequence
        func keys(of step: EQLSequence.Step) throws(EQLSyntaxError) -> [FieldPath] {
            var fields: [FieldPath] = []
            for key in sequence.joinKeys + step.joinKeys {
                // Elasticsearch joins on field values; an expression as a key is rejected there too.
                guard case .field(let path) = key else {
                    throw EQLSyntaxError(message: "join key \(key) is not a field", position: 0, expected: "a field name as join key")
                }
                fields.append(FieldPath(path))
            }
            return fields
        }
        var steps: [Step] = []
        for step in sequence.steps {
            let compiled = Step(matcher: try EQLEventMatcher(step.query), keys: try keys(of: step))
            steps += Array(repeating: compiled, count: step.runs)
        }
        guard steps.count <= Self.maximumSteps else {
            throw EQLSyntaxError(message: "a sequence of \(steps.count) steps (runs included)", position: 0,
                                 expected: "at most \(Self.maximumSteps) steps")
        }
        if let keyCount = steps.first?.keys.count, steps.contains(where: { $0.keys.count != keyCount }) {
            throw EQLSyntaxError(message: "steps with different numbers of join keys", position: 0, expected: "the same number of join keys in every step")
        }
        self.steps = steps
        until = try sequence.until.map { step throws(EQLSyntaxError) in Step(matcher: try EQLEventMatcher(step.query), keys: try keys(of: step)) }
        if let until, until.keys.count != steps[0].keys.count {
            throw EQLSyntaxError(message: "an until query with a different number of join keys", position: 0, expected: "the same join keys as the steps")
        }
    }

    /// What the event brings to the sequence: for each join key it has, the mask of the steps it matches
    /// (bit `i` for step `i`, ``untilBit`` for the until query). An event with a join key field missing
    /// joins nothing under that key, as in Elasticsearch (only optional `?` fields join on null).
    public func matches(_ event: some KQLDocument) -> [(key: [String], steps: UInt32)] {
        var result: [(key: [String], steps: UInt32)] = []
        func add(_ bit: UInt32, _ step: Step) {
            guard step.matcher.matches(event) else { return }
            var key: [String] = []
            key.reserveCapacity(step.keys.count)
            for field in step.keys {
                var value: String?
                event.forEachValue(of: field) { found in
                    value = found.stringValue
                    return false
                }
                guard let value else { return }
                key.append(value)
            }
            if let index = result.firstIndex(where: { $0.key == key }) {
                result[index].steps |= bit
            } else {
                result.append((key, bit))
            }
        }
        for (index, step) in steps.enumerated() { add(1 << UInt32(index), step) }
        if let until { add(Self.untilBit, until) }
        return result
    }

    /// Whether the event matches any step or the until query (join keys aside).
    public func matchesAny(_ event: some KQLDocument) -> Bool {
        steps.contains { $0.matcher.matches(event) } || until?.matcher.matches(event) == true
    }

    /// Literals a record must contain to match a step or the until query: the disjunction of theirs.
    public var requiredLiterals: [[String]]? {
        var alternatives = steps.map { $0.matcher.requiredLiterals ?? [] }
        if let until { alternatives.append(until.matcher.requiredLiterals ?? []) }
        let groups = PrefilterLiterals.disjunction(alternatives)
        return groups.isEmpty ? nil : groups
    }

    /// The sequence's join key fields as written (for alerts and printing).
    public var joinKeyNames: [String] { steps.first?.keys.map(\.name) ?? [] }
}
