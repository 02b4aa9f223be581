// ES|QL evaluation: a parsed query compiled against its column schema, run per event and per scheduled STATS execution.
import AuditEvents
import Foundation

public struct ESQLCompileError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// An ES|QL query compiled for a stream. Columns are resolved when the query is compiled (a name the
/// query has dropped, or never defined, is an error then, as in Elasticsearch); source fields are read from
/// the event. The commands before `STATS` (all of them, for a query without) run on each event; `STATS`
/// groups the resulting rows, and the commands after it run on the grouped rows of one execution.
///
/// Semantics follow ES|QL: a missing field is null; operators and single-value functions give null for
/// null or multi-valued operands; `AND`/`OR`/`NOT` are three-valued; `WHERE` keeps rows whose condition
/// is true; `LIKE` (wildcards `*` `?`, `\` escapes) and `RLIKE` (Lucene's syntax) match whole values in
/// linear time; `STATS … BY` puts a row with a multi-valued key in every group of its values and rows
/// with a null key in the null group. `NOW()` is the execution time after `STATS`, the event's time in a
/// query without `STATS`, and refused before `STATS` (each event belongs to several executions).
public struct ESQLProgram: Sendable {
    public let query: ESQLQuery
    let perEvent: [Stage]
    let perEventSlots: Int
    /// The computed columns a query without STATS ends with (its alerts add them to the source event).
    public let eventColumns: [(name: String, slot: Int)]
    let stats: Stats?
    let afterStats: [Stage]
    let afterStatsSlots: Int
    /// The columns an execution's rows end with.
    public let resultColumns: [(name: String, slot: Int)]
    public let requiredLiterals: [[String]]?

    struct Stats: Sendable {
        var aggregates: [(name: String, function: ESQLAggregateFunction, argument: Expr?)]
        var groups: [(name: String, expression: Expr)]
    }

    public var isAggregating: Bool { stats != nil }
    /// The STATS aggregates' functions, in column order.
    public var aggregateFunctions: [ESQLAggregateFunction] { stats?.aggregates.map(\.function) ?? [] }
    /// The STATS BY columns' names.
    public var groupNames: [String] { stats?.groups.map(\.name) ?? [] }

    public init(parsing text: String) throws(ESQLCompileError) {
        let query: ESQLQuery
        do throws(ESQLSyntaxError) {
            query = try ESQLParser.parse(text)
        } catch {
            throw ESQLCompileError(message: error.description)
        }
        try self.init(query)
    }

    public init(_ query: ESQLQuery) throws(ESQLCompileError) {
        self.query = query
        var schema = Schema(hasSource: true)
        var before: [Stage] = []
        var after: [Stage] = []
        var stats: Stats?
        var literals: [[String]] = []
        var eventSlots = 0
        if let statsIndex = query.commands.firstIndex(where: { if case .stats = $0 { true } else { false } }),
            query.commands[..<statsIndex].contains(where: { command in
                command.expressions.contains { $0.contains { if case .function("NOW", _) = $0 { true } else { false } } }
            })
        {
            // Each event belongs to several scheduled executions, each with its own NOW().
            throw ESQLCompileError(message: "NOW() before STATS: an event belongs to several scheduled executions; use NOW() after STATS")
        }
        for command in query.commands {
            // Every WHERE before STATS must hold (the commands between them drop no row), and a name no
            // command has defined yet is a source field.
            if case .where(let condition) = command, stats == nil {
                literals += Self.literals(condition, defined: Set(schema.columns.map(\.name)).union(schema.shadowed))
            }
            if case .stats(let aggregates, let by) = command {
                guard stats == nil else { throw ESQLCompileError(message: "a second STATS: one STATS per query runs as a stream") }
                stats = try Self.compileStats(aggregates, by: by, schema: schema)
                eventSlots = schema.slotCount
                schema = Schema(hasSource: false)
                for (name, _, _) in stats!.aggregates { schema.define(name) }
                for (name, _) in stats!.groups { schema.define(name) }
                continue
            }
            let stage = try Self.compile(command, schema: &schema, afterStats: stats != nil)
            if let stage {
                if stats == nil { before.append(stage) } else { after.append(stage) }
            }
        }
        perEvent = before
        afterStats = after
        self.stats = stats
        if stats == nil {
            perEventSlots = schema.slotCount
            eventColumns = schema.columns
            afterStatsSlots = 0
            resultColumns = []
        } else {
            perEventSlots = eventSlots
            eventColumns = []
            afterStatsSlots = schema.slotCount
            resultColumns = schema.columns
        }
        requiredLiterals = literals.isEmpty ? nil : literals
    }

    // MARK: Running

    /// The commands before STATS on one event (every command, for a query without STATS): the row's
    /// computed columns, or nil when a WHERE drops it.
    public func evaluate(_ document: some KQLDocument, now: Int64) -> [ESQLValue]? {
        var context = Context(document: document, slots: [ESQLValue](repeating: .null, count: perEventSlots), now: now)
        for stage in perEvent {
            guard stage.run(&context) else { return nil }
        }
        return context.slots
    }

    /// A query without STATS: the computed columns its result keeps, by name (null ones left out).
    public func outputColumns(_ slots: [ESQLValue]) -> [(name: String, value: ESQLValue)] {
        eventColumns.compactMap { column in slots[column.slot].isNull ? nil : (column.name, slots[column.slot]) }
    }

    /// An aggregating query: the groups one event's row belongs to (every combination of its key values,
    /// at most `limit`) and the values of each aggregate's argument.
    public func contributions(_ slots: [ESQLValue], document: some KQLDocument, now: Int64, limit: Int = 100) -> (groups: [[ESQLValue]], inputs: [ESQLValue]) {
        guard let stats else { return ([], []) }
        var context = Context(document: document, slots: slots, now: now)
        var combinations: [[ESQLValue]] = [[]]
        for group in stats.groups {
            let value = group.expression.evaluate(&context)
            let elements = value.isNull ? [ESQLValue.null] : Array(Set(value.elements)).sorted(by: ESQLValue.sortsBefore)
            combinations = Array(combinations.lazy.flatMap { prefix in elements.map { prefix + [$0] } }.prefix(limit))
        }
        let inputs = stats.aggregates.map { aggregate in aggregate.argument.map { $0.evaluate(&context) } ?? .null }
        return (combinations, inputs)
    }

    /// The partial aggregates of one row, from its inputs.
    public func partials(_ inputs: [ESQLValue]) -> [ESQLPartialAggregate] {
        guard let stats else { return [] }
        return zip(stats.aggregates, inputs).map { aggregate, input in
            var partial = ESQLPartialAggregate.empty(aggregate.function)
            partial.add(input, star: aggregate.argument == nil, function: aggregate.function)
            return partial
        }
    }

    /// One execution's result: the commands after STATS on its groups (their key values and merged
    /// aggregates), with `NOW()` the execution time. Returns, in result order, the index of each group
    /// whose row survives and the row's columns.
    public func finish(_ groups: [(keys: [ESQLValue], aggregates: [ESQLPartialAggregate])], now: Int64)
        -> [(group: Int, columns: [(name: String, value: ESQLValue)])]
    {
        guard let stats else { return [] }
        var rows: [(Int, Context)] = []
        for (index, group) in groups.enumerated() {
            var slots = [ESQLValue](repeating: .null, count: afterStatsSlots)
            for (slot, aggregate) in stats.aggregates.enumerated() { slots[slot] = group.aggregates[slot].result(aggregate.function) }
            for (offset, key) in group.keys.enumerated() { slots[stats.aggregates.count + offset] = key }
            var context = Context(document: nil, slots: slots, now: now)
            var kept = true
            for stage in afterStats {
                if case .sort = stage { continue }
                if case .limit = stage { continue }
                kept = stage.run(&context)
                if !kept { break }
            }
            if kept { rows.append((index, context)) }
        }
        // SORT and LIMIT act on the execution's rows as a whole, in command order.
        for stage in afterStats {
            switch stage {
            case .sort(let orders):
                rows = Self.sorted(rows, by: orders)
            case .limit(let count):
                rows = Array(rows.prefix(count))
            default: continue
            }
        }
        return rows.map { index, context in
            (index, resultColumns.map { ($0.name, context.slots[$0.slot]) })
        }
    }

    static func sorted(_ rows: [(Int, Context)], by orders: [(expression: Expr, descending: Bool, nullsFirst: Bool)]) -> [(Int, Context)] {
        var keyed = rows.map { row -> (Int, Context, [ESQLValue]) in
            var context = row.1
            return (row.0, row.1, orders.map { $0.expression.evaluate(&context) })
        }
        keyed.sort { left, right in
            for (index, order) in orders.enumerated() {
                let (a, b) = (left.2[index], right.2[index])
                if a == b { continue }
                if a.isNull || b.isNull { return a.isNull == order.nullsFirst }
                let before = ESQLValue.sortsBefore(a, b)
                return order.descending ? !before : before
            }
            return left.0 < right.0
        }
        return keyed.map { ($0.0, $0.1) }
    }

    // MARK: Compiling commands

    /// Column names to slots as the commands define, drop and rename them.
    struct Schema {
        var columns: [(name: String, slot: Int)] = []
        var hasSource: Bool
        /// KEEP and DROP patterns applied to source fields, in order; names EVAL or RENAME shadowed.
        var sourceFilters: [(keep: Bool, patterns: [String])] = []
        var shadowed: Set<String> = []
        var slotCount = 0

        init(hasSource: Bool) { self.hasSource = hasSource }

        @discardableResult mutating func define(_ name: String) -> Int {
            columns.removeAll { $0.name == name }
            shadowed.insert(name)
            columns.append((name, slotCount))
            slotCount += 1
            return slotCount - 1
        }

        func sourceVisible(_ name: String) -> Bool {
            guard hasSource, !shadowed.contains(name) else { return false }
            for filter in sourceFilters where filter.patterns.contains(where: { ESQLProgram.matches(pattern: $0, name) }) != filter.keep {
                return false
            }
            return true
        }

        func resolve(_ name: String) throws(ESQLCompileError) -> Expr {
            if let column = columns.last(where: { $0.name == name }) { return .slot(column.slot) }
            if sourceVisible(name) { return .field(FieldPath(name), isDate: ESQLProgram.dateFields.contains(name)) }
            throw ESQLCompileError(message: "unknown column [\(name)]" + (hasSource ? " (dropped or renamed earlier in the query)" : " (after STATS only its columns exist)"))
        }
    }

    /// Fields Elastic's Kubernetes integration maps as `date`.
    static let dateFields: Set<String> = ["@timestamp", "event.ingested", "event.created", "event.start", "event.end",
                                          "kubernetes.audit.requestReceivedTimestamp", "kubernetes.audit.stageTimestamp"]

    static func matches(pattern: String, _ name: String) -> Bool {
        guard pattern.contains("*") else { return pattern == name }
        let regex = try? LinearRegex(lucene: pattern.split(separator: "*", omittingEmptySubsequences: false).map { Self.luceneLiteral(String($0)) }.joined(separator: ".*"))
        return regex?.matches(name) ?? false
    }

    /// Text matched literally in Lucene's syntax: every character but letters and digits escaped.
    static func luceneLiteral(_ text: String) -> String {
        var output = ""
        for scalar in text.unicodeScalars {
            if !(scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar))) { output += "\\" }
            output.unicodeScalars.append(scalar)
        }
        return output
    }

    static func compile(_ command: ESQLCommand, schema: inout Schema, afterStats: Bool) throws(ESQLCompileError) -> Stage? {
        switch command {
        case .where(let condition):
            return .filter(try compile(condition, schema: schema, afterStats: afterStats))
        case .eval(let assignments):
            var steps: [(Int, Expr)] = []
            for assignment in assignments {
                let expression = try compile(assignment.expression, schema: schema, afterStats: afterStats)
                steps.append((schema.define(assignment.name ?? assignment.expression.description), expression))
            }
            return .assign(steps)
        case .grok(let input, let pattern):
            let source = try compile(input, schema: schema, afterStats: afterStats)
            let grok: Grok
            do throws(RegexSyntaxError) {
                grok = try Grok(pattern)
            } catch {
                throw ESQLCompileError(message: "GROK pattern: \(error)")
            }
            return .grok(source, grok, grok.fields.map { schema.define($0.name) })
        case .dissect(let input, let pattern, let separator):
            let source = try compile(input, schema: schema, afterStats: afterStats)
            let dissect = try Dissect(pattern, appendSeparator: separator ?? "")
            return .dissect(source, dissect, dissect.keys.map { schema.define($0) })
        case .keep(let patterns):
            var kept: [(name: String, slot: Int)] = []
            for pattern in patterns {
                for column in schema.columns where matches(pattern: pattern, column.name) && !kept.contains(where: { $0.name == column.name }) {
                    kept.append(column)
                }
            }
            schema.columns = kept
            schema.sourceFilters.append((true, patterns))
            return nil
        case .drop(let patterns):
            schema.columns.removeAll { column in patterns.contains { matches(pattern: $0, column.name) } }
            schema.sourceFilters.append((false, patterns))
            return nil
        case .rename(let pairs):
            var steps: [(Int, Expr)] = []
            for (from, to) in pairs {
                if let index = schema.columns.lastIndex(where: { $0.name == from }) {
                    let slot = schema.columns[index].slot
                    schema.columns.removeAll { $0.name == to }
                    schema.columns[schema.columns.firstIndex { $0.slot == slot }!].name = to
                    schema.shadowed.insert(to)
                } else {
                    let value = try schema.resolve(from)
                    schema.sourceFilters.append((false, [from]))
                    steps.append((schema.define(to), value))
                }
            }
            return steps.isEmpty ? nil : .assign(steps)
        case .sort(let orders):
            guard afterStats else {
                throw ESQLCompileError(message: "SORT before STATS: a stream has no order to sort by but arrival (SORT is supported after STATS)")
            }
            var compiled: [(Expr, Bool, Bool)] = []
            for order in orders {
                compiled.append((try compile(order.expression, schema: schema, afterStats: true), order.descending, order.nullsFirst ?? order.descending))
            }
            return .sort(compiled)
        case .limit(let count):
            guard afterStats else {
                throw ESQLCompileError(message: "LIMIT before STATS: a stream has no first rows to keep (LIMIT is supported after STATS)")
            }
            return .limit(Int(clamping: count))
        case .stats:
            return nil  // handled by the caller
        }
    }

    static func compileStats(_ aggregates: [ESQLAssignment], by: [ESQLExpression], schema: Schema) throws(ESQLCompileError) -> Stats {
        var compiled: [(String, ESQLAggregateFunction, Expr?)] = []
        for assignment in aggregates {
            guard case .function(let name, let arguments) = assignment.expression, let function = ESQLAggregateFunction(rawValue: name) else {
                throw ESQLCompileError(message: "STATS \(assignment.expression): each STATS column is one aggregate function of "
                                       + ESQLAggregateFunction.allCases.map(\.rawValue).joined(separator: ", "))
            }
            var argument: Expr?
            switch (function, arguments.first) {
            case (.count, nil), (.count, .star?): argument = nil
            case (_, let first?) where arguments.count == 1 && first != .star:
                argument = try compile(first, schema: schema, afterStats: false, inAggregate: true)
            case (.countDistinct, let first?) where arguments.count == 2 && first != .star:
                // The precision threshold: counts here are exact up to the distinct-value bound.
                argument = try compile(first, schema: schema, afterStats: false, inAggregate: true)
            default:
                throw ESQLCompileError(message: "\(name) takes one argument" + (function == .count ? " (or *)" : ""))
            }
            compiled.append((assignment.name ?? assignment.expression.description, function, argument))
        }
        var groups: [(String, Expr)] = []
        for expression in by {
            let name: String
            if case .field(let field) = expression { name = field } else { name = expression.description }
            groups.append((name, try compile(expression, schema: schema, afterStats: false, inAggregate: true)))
        }
        return Stats(aggregates: compiled, groups: groups)
    }

    // MARK: Compiling expressions

    static func compile(_ expression: ESQLExpression, schema: Schema, afterStats: Bool, inAggregate: Bool = false) throws(ESQLCompileError) -> Expr {
        func sub(_ inner: ESQLExpression) throws(ESQLCompileError) -> Expr {
            try compile(inner, schema: schema, afterStats: afterStats, inAggregate: inAggregate)
        }
        switch expression {
        case .literal(let literal):
            switch literal {
            case .string(let text): return .constant(.string(text))
            case .integer(let value): return .constant(.integer(value))
            case .double(let value): return .constant(.double(value))
            case .boolean(let value): return .constant(.boolean(value))
            case .null: return .constant(.null)
            case .timeSpan(let quantity, let unit): return .constant(try span(quantity, unit))
            }
        case .field(let name): return try schema.resolve(name)
        case .star: throw ESQLCompileError(message: "'*' is only an argument of COUNT")
        case .not(let inner): return .not(try sub(inner))
        case .and(let left, let right): return .and(try sub(left), try sub(right))
        case .or(let left, let right): return .or(try sub(left), try sub(right))
        case .compare(let left, let op, let right): return .compare(try sub(left), op, try sub(right))
        case .arithmetic(let left, let op, let right): return .arithmetic(try sub(left), op, try sub(right))
        case .negate(let inner): return .arithmetic(.constant(.integer(0)), .subtract, try sub(inner))
        case .membership(let value, let list, let negated):
            var items: [Expr] = []
            for item in list { items.append(try sub(item)) }
            let membership = Expr.membership(try sub(value), items)
            return negated ? .not(membership) : membership
        case .like(let value, let pattern, let regex, let negated):
            // A LIKE of one literal with end wildcards is a byte search; anything else is an automaton.
            if !regex, let (shape, literal) = WildcardShape.parse(pattern) {
                let test = Expr.wildcard(try sub(value), shape, literal)
                return negated ? .not(test) : test
            }
            let compiled: LinearRegex
            do throws(RegexSyntaxError) {
                compiled = try LinearRegex(lucene: regex ? pattern : wildcardToLucene(pattern))
            } catch {
                throw ESQLCompileError(message: "\(regex ? "RLIKE" : "LIKE") \(ESQLExpression.quote(pattern)): \(error)")
            }
            let test = Expr.matches(try sub(value), compiled)
            return negated ? .not(test) : test
        case .isNull(let value, let negated): return .isNull(try sub(value), negated: negated)
        case .function(let name, let arguments):
            if ESQLAggregateFunction(rawValue: name) != nil {
                throw ESQLCompileError(message: "\(name)() is an aggregate: it belongs in STATS")
            }
            if name == "NOW" {
                guard arguments.isEmpty else { throw ESQLCompileError(message: "NOW takes no arguments") }
                return .now
            }
            if name == "KQL" {
                guard schema.hasSource, arguments.count == 1, case .literal(.string(let text)) = arguments[0] else {
                    throw ESQLCompileError(message: "KQL takes one string literal, before STATS (it queries the event)")
                }
                do {
                    return .kql(try CompiledQuery(parsing: text))
                } catch {
                    throw ESQLCompileError(message: "KQL(\(ESQLExpression.quote(text))): \(error)")
                }
            }
            if name == "REPLACE" {
                guard arguments.count == 3, case .literal(.string(let pattern)) = arguments[1] else {
                    throw ESQLCompileError(message: "REPLACE takes a string, a regular expression as a string literal, and a replacement")
                }
                let regex: CapturingRegex
                do throws(RegexSyntaxError) {
                    regex = try CapturingRegex(pattern, dialect: .java)
                } catch {
                    throw ESQLCompileError(message: "REPLACE pattern \(ESQLExpression.quote(pattern)): \(error)")
                }
                return .replace(try sub(arguments[0]), regex, try sub(arguments[2]))
            }
            guard let function = ScalarFunction(rawValue: name) else {
                throw ESQLCompileError(message: "function \(name) is not supported; supported: "
                                       + (ScalarFunction.allCases.map(\.rawValue) + ["KQL", "NOW", "REPLACE"]).sorted().joined(separator: ", "))
            }
            guard function.arity.contains(arguments.count) else {
                throw ESQLCompileError(message: "\(name) takes \(function.arity.lowerBound == function.arity.upperBound ? "\(function.arity.lowerBound)" : "\(function.arity.lowerBound) to \(function.arity.upperBound == Int.max ? "any number of" : "\(function.arity.upperBound)")") arguments, not \(arguments.count)")
            }
            var compiled: [Expr] = []
            for argument in arguments { compiled.append(try sub(argument)) }
            return .call(function, compiled)
        }
    }

    static func span(_ quantity: Int64, _ unit: String) throws(ESQLCompileError) -> ESQLValue {
        let milliseconds: [String: Int64] = ["milliseconds": 1, "seconds": 1000, "minutes": 60_000, "hours": 3_600_000, "days": 86_400_000, "weeks": 604_800_000]
        if let factor = milliseconds[unit] {
            let (value, overflow) = quantity.multipliedReportingOverflow(by: factor)
            guard !overflow else { throw ESQLCompileError(message: "time span \(quantity) \(unit) overflows") }
            return .span(milliseconds: value, months: 0)
        }
        let (months, overflow) = quantity.multipliedReportingOverflow(by: unit == "years" ? 12 : 1)
        guard !overflow else { throw ESQLCompileError(message: "time span \(quantity) \(unit) overflows") }
        return .span(milliseconds: 0, months: months)
    }

    /// LIKE's pattern (`*`, `?`, `\` escaping the next character) in Lucene's syntax.
    static func wildcardToLucene(_ pattern: String) -> String {
        var output = ""
        var escaped = false
        for scalar in pattern.unicodeScalars {
            if escaped {
                output += luceneLiteral(String(scalar))
                escaped = false
            } else if scalar == "\\" {
                escaped = true
            } else if scalar == "*" {
                output += ".*"
            } else if scalar == "?" {
                output += "."
            } else {
                output += luceneLiteral(String(scalar))
            }
        }
        if escaped { output += "\\\\" }
        return output
    }

    /// Literals a record must hold for a WHERE before STATS to pass (its fields the source's, not the
    /// `defined` columns).
    static func literals(_ expression: ESQLExpression, defined: Set<String>) -> [[String]] {
        func literals(_ expression: ESQLExpression) -> [[String]] { Self.literals(expression, defined: defined) }
        func verbatim(_ expression: ESQLExpression) -> Bool {
            if case .field(let name) = expression { return !defined.contains(name) && FieldPath(name).valuesAreVerbatim }
            return false
        }
        func selective(_ strings: [String]) -> [[String]] {
            strings.isEmpty || strings.contains { $0.utf8.count < 3 } ? [] : [Array(Set(strings)).sorted()]
        }
        switch expression {
        case .and(let left, let right): return literals(left) + literals(right)
        case .or(let left, let right): return PrefilterLiterals.disjunction([literals(left), literals(right)])
        case .compare(let left, .equal, let right):
            for (field, value) in [(left, right), (right, left)] where verbatim(field) {
                if case .literal(.string(let text)) = value { return selective([text]) }
            }
            return []
        case .membership(let field, let list, negated: false) where verbatim(field):
            var strings: [String] = []
            for item in list {
                guard case .literal(.string(let text)) = item else { return [] }
                strings.append(text)
            }
            return selective(strings)
        case .like(let field, let pattern, regex: false, negated: false) where verbatim(field) && !pattern.contains("\\"):
            let longest = pattern.split(whereSeparator: { $0 == "*" || $0 == "?" }).max { $0.utf8.count < $1.utf8.count }
            return longest.map { selective([String($0)]) } ?? []
        case .function("STARTS_WITH", let arguments) where arguments.count == 2 && verbatim(arguments[0]):
            if case .literal(.string(let text)) = arguments[1] { return selective([text]) }
            return []
        case .function("KQL", let arguments):
            guard case .literal(.string(let text))? = arguments.first, let query = try? CompiledQuery(parsing: text) else { return [] }
            return query.requiredLiterals ?? []
        default: return []
        }
    }
}

// MARK: Compiled commands and expressions

extension ESQLProgram {
    struct Context {
        var document: (any KQLDocument)?
        var slots: [ESQLValue]
        var now: Int64
    }

    enum Stage: Sendable {
        case filter(Expr)
        case assign([(Int, Expr)])
        case grok(Expr, Grok, [Int])
        case dissect(Expr, Dissect, [Int])
        case sort([(expression: Expr, descending: Bool, nullsFirst: Bool)])
        case limit(Int)

        /// Runs on one row; false when the row is dropped.
        func run(_ context: inout Context) -> Bool {
            switch self {
            case .filter(let condition):
                return condition.evaluate(&context) == .boolean(true)
            case .assign(let steps):
                for (slot, expression) in steps { context.slots[slot] = expression.evaluate(&context) }
            case .grok(let input, let grok, let slots):
                let captured: [String?]? = if case .string(let text) = input.evaluate(&context) { grok.captures(text) } else { nil }
                for (index, slot) in slots.enumerated() {
                    guard let text = captured?[index] else {
                        context.slots[slot] = .null
                        continue
                    }
                    context.slots[slot] = Self.typed(text, grok.fields[index].type)
                }
            case .dissect(let input, let dissect, let slots):
                let parsed: [String]? = if case .string(let text) = input.evaluate(&context) { dissect.parse(text) } else { nil }
                for (index, slot) in slots.enumerated() { context.slots[slot] = parsed.map { .string($0[index]) } ?? .null }
            case .sort, .limit:
                break
            }
            return true
        }

        static func typed(_ text: String, _ type: Grok.FieldType) -> ESQLValue {
            switch type {
            case .string: .string(text)
            case .int, .long: Int64(text).map(ESQLValue.integer) ?? .null
            case .float, .double: Double(text).map(ESQLValue.double) ?? .null
            case .boolean: text.lowercased() == "true" ? .boolean(true) : (text.lowercased() == "false" ? .boolean(false) : .null)
            }
        }
    }

    enum ScalarFunction: String, Sendable, CaseIterable {
        case caseWhen = "CASE", coalesce = "COALESCE", startsWith = "STARTS_WITH", endsWith = "ENDS_WITH"
        case toString = "TO_STRING", toLower = "TO_LOWER", toUpper = "TO_UPPER", length = "LENGTH"
        case trim = "TRIM", ltrim = "LTRIM", rtrim = "RTRIM", concat = "CONCAT", substring = "SUBSTRING"
        case urlDecode = "URL_DECODE", urlEncode = "URL_ENCODE", dateTrunc = "DATE_TRUNC"
        case mvCount = "MV_COUNT", mvFirst = "MV_FIRST", mvLast = "MV_LAST", mvMin = "MV_MIN", mvMax = "MV_MAX"
        case mvDedupe = "MV_DEDUPE", mvConcat = "MV_CONCAT", mvSum = "MV_SUM"
        case toInteger = "TO_INTEGER", toLong = "TO_LONG", toDouble = "TO_DOUBLE", toBoolean = "TO_BOOLEAN", toDatetime = "TO_DATETIME"
        case abs = "ABS", locate = "LOCATE"

        var arity: ClosedRange<Int> {
            switch self {
            case .caseWhen: 1...Int.max
            case .coalesce, .concat: 1...Int.max
            case .startsWith, .endsWith, .dateTrunc, .mvConcat: 2...2
            case .substring, .locate: 2...3
            default: 1...1
            }
        }
    }

    indirect enum Expr: Sendable {
        case constant(ESQLValue)
        case field(FieldPath, isDate: Bool)
        case slot(Int)
        case now
        case not(Expr)
        case and(Expr, Expr)
        case or(Expr, Expr)
        case compare(Expr, ESQLComparison, Expr)
        case arithmetic(Expr, ESQLArithmetic, Expr)
        case membership(Expr, [Expr])
        case matches(Expr, LinearRegex)
        /// `LIKE` with `*` only at its ends (`*x*`, `x*`, `*x`, `x`): a byte search instead of the automaton.
        case wildcard(Expr, WildcardShape, [UInt8])
        case isNull(Expr, negated: Bool)
        case kql(CompiledQuery)
        case replace(Expr, CapturingRegex, Expr)
        case call(ScalarFunction, [Expr])

        func evaluate(_ context: inout Context) -> ESQLValue {
            switch self {
            case .constant(let value): return value
            case .slot(let slot): return context.slots[slot]
            case .now: return .date(context.now)
            case .field(let path, let isDate):
                guard let document = context.document else { return .null }
                return Self.read(document, path, isDate: isDate)
            case .not(let inner):
                if case .boolean(let value) = inner.evaluate(&context) { return .boolean(!value) }
                return .null
            case .and(let left, let right):
                let a = left.evaluate(&context)
                if a == .boolean(false) { return a }
                let b = right.evaluate(&context)
                if b == .boolean(false) { return b }
                return a == .boolean(true) && b == .boolean(true) ? .boolean(true) : .null
            case .or(let left, let right):
                let a = left.evaluate(&context)
                if a == .boolean(true) { return a }
                let b = right.evaluate(&context)
                if b == .boolean(true) { return b }
                return a == .boolean(false) && b == .boolean(false) ? .boolean(false) : .null
            case .compare(let left, let op, let right):
                guard let order = ESQLValue.compare(left.evaluate(&context), right.evaluate(&context)) else { return .null }
                switch op {
                case .equal: return .boolean(order == 0)
                case .notEqual: return .boolean(order != 0)
                case .less: return .boolean(order < 0)
                case .lessOrEqual: return .boolean(order <= 0)
                case .greater: return .boolean(order > 0)
                case .greaterOrEqual: return .boolean(order >= 0)
                }
            case .arithmetic(let left, let op, let right):
                return Self.arithmetic(left.evaluate(&context), op, right.evaluate(&context))
            case .membership(let value, let list):
                let subject = value.evaluate(&context)
                guard !subject.isNull, !subject.isMulti else { return .null }
                var sawNull = false
                for item in list {
                    let candidate = item.evaluate(&context)
                    guard let order = ESQLValue.compare(subject, candidate) else {
                        sawNull = sawNull || candidate.isNull
                        continue
                    }
                    if order == 0 { return .boolean(true) }
                }
                return sawNull ? .null : .boolean(false)
            case .matches(let value, let regex):
                guard case .string(let text) = value.evaluate(&context) else { return .null }
                return .boolean(regex.matches(text))
            case .wildcard(let value, let shape, let literal):
                guard case .string(let text) = value.evaluate(&context) else { return .null }
                return .boolean(shape.matches(Array(text.utf8), literal))
            case .isNull(let value, let negated):
                return .boolean(value.evaluate(&context).isNull != negated)
            case .kql(let query):
                guard let document = context.document else { return .null }
                return .boolean(query.matches(document))
            case .replace(let input, let regex, let replacement):
                guard case .string(let text) = input.evaluate(&context), case .string(let with) = replacement.evaluate(&context) else { return .null }
                return .string(regex.replacingAll(in: text, with: with))
            case .call(let function, let arguments):
                return Self.call(function, arguments, &context)
            }
        }

        static func read(_ document: any KQLDocument, _ path: FieldPath, isDate: Bool) -> ESQLValue {
            var values: [ESQLValue] = []
            document.forEachValue(of: path) { value in
                switch value.kind {
                case .string:
                    let text = value.stringValue
                    if isDate, let milliseconds = Timestamp.milliseconds(fromRFC3339: text) {
                        values.append(.date(milliseconds))
                    } else {
                        values.append(.string(text))
                    }
                case .number:
                    let text = value.stringValue
                    if let integer = Int64(text) { values.append(.integer(integer)) } else if let double = Double(text) { values.append(.double(double)) }
                case .bool: values.append(.boolean(value.boolValue ?? false))
                case .object: break
                }
                return true
            }
            return .from(values)
        }

        static func arithmetic(_ a: ESQLValue, _ op: ESQLArithmetic, _ b: ESQLValue) -> ESQLValue {
            switch (a, b) {
            case (.integer(let x), .integer(let y)):
                let result: (Int64, Bool)
                switch op {
                case .add: result = x.addingReportingOverflow(y)
                case .subtract: result = x.subtractingReportingOverflow(y)
                case .multiply: result = x.multipliedReportingOverflow(by: y)
                case .divide: guard y != 0 else { return .null }; result = x.dividedReportingOverflow(by: y)
                case .modulo: guard y != 0 else { return .null }; result = x.remainderReportingOverflow(dividingBy: y)
                }
                return result.1 ? .null : .integer(result.0)
            case (.integer, .double), (.double, .integer), (.double, .double):
                let x = a.asDouble!, y = b.asDouble!
                let value: Double
                switch op {
                case .add: value = x + y
                case .subtract: value = x - y
                case .multiply: value = x * y
                case .divide: guard y != 0 else { return .null }; value = x / y
                case .modulo: guard y != 0 else { return .null }; value = x.truncatingRemainder(dividingBy: y)
                }
                return value.isFinite ? .double(value) : .null
            case (.date(let time), .span(let milliseconds, let months)) where op == .add || op == .subtract:
                let sign: Int64 = op == .add ? 1 : -1
                return Calendar.add(months: sign * months, milliseconds: sign * milliseconds, to: time).map(ESQLValue.date) ?? .null
            case (.span(let milliseconds, let months), .date(let time)) where op == .add:
                return Calendar.add(months: months, milliseconds: milliseconds, to: time).map(ESQLValue.date) ?? .null
            case (.span(let m1, let mo1), .span(let m2, let mo2)) where op == .add || op == .subtract:
                let sign: Int64 = op == .add ? 1 : -1
                return .span(milliseconds: m1 &+ sign &* m2, months: mo1 &+ sign &* mo2)
            default:
                return .null
            }
        }

        static func call(_ function: ScalarFunction, _ arguments: [Expr], _ context: inout Context) -> ESQLValue {
            switch function {
            case .caseWhen:
                var index = 0
                while index + 1 < arguments.count {
                    if arguments[index].evaluate(&context) == .boolean(true) { return arguments[index + 1].evaluate(&context) }
                    index += 2
                }
                return index < arguments.count ? arguments[index].evaluate(&context) : .null
            case .coalesce:
                for argument in arguments {
                    let value = argument.evaluate(&context)
                    if !value.isNull { return value }
                }
                return .null
            default: break
            }
            let values = arguments.map { $0.evaluate(&context) }
            // Functions of several values.
            switch function {
            case .mvCount: return values[0].isNull ? .null : .integer(Int64(values[0].elements.count))
            case .mvFirst: return values[0].elements.first ?? .null
            case .mvLast: return values[0].elements.last ?? .null
            case .mvMin, .mvMax:
                var extreme = ESQLPartialAggregate.empty(.min)
                extreme.add(values[0], star: false, function: function == .mvMin ? .min : .max)
                return extreme.result(.min)
            case .mvSum:
                var sum = ESQLPartialAggregate.empty(.sum)
                sum.add(values[0], star: false, function: .sum)
                return sum.result(.sum)
            case .mvDedupe:
                var seen = Set<ESQLValue>()
                return .from(values[0].elements.filter { seen.insert($0).inserted })
            case .mvConcat:
                guard case .string(let separator) = values[1] else { return .null }
                let texts = values[0].elements.compactMap(\.text)
                return texts.isEmpty ? .null : .string(texts.joined(separator: separator))
            case .toString, .toLower, .toUpper, .toInteger, .toLong, .toDouble, .toBoolean, .toDatetime:
                // Conversions apply value by value.
                return .from(values[0].elements.compactMap { convert($0, function) })
            default: break
            }
            // Single-value functions: null for a null or multi-valued argument.
            guard !values.contains(where: { $0.isNull || $0.isMulti }) else { return .null }
            switch function {
            case .startsWith, .endsWith:
                guard case .string(let text) = values[0], case .string(let affix) = values[1] else { return .null }
                return .boolean(function == .startsWith ? text.utf8.starts(with: affix.utf8) : text.utf8.reversed().starts(with: affix.utf8.reversed()))
            case .length:
                guard case .string(let text) = values[0] else { return .null }
                return .integer(Int64(text.unicodeScalars.count))
            case .trim, .ltrim, .rtrim:
                guard case .string(let text) = values[0] else { return .null }
                var scalars = Substring(text).unicodeScalars[...]
                if function != .rtrim { while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() } }
                if function != .ltrim { while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() } }
                return .string(String(String.UnicodeScalarView(scalars)))
            case .concat:
                var output = ""
                for value in values {
                    guard let text = value.text else { return .null }
                    output += text
                }
                return .string(output)
            case .substring:
                guard case .string(let text) = values[0], case .integer(let start) = values[1] else { return .null }
                let scalars = Array(text.unicodeScalars)
                // 1-based; a negative start counts from the end.
                var from = start > 0 ? Int(clamping: start - 1) : max(0, scalars.count + Int(clamping: start))
                from = min(from, scalars.count)
                var count = scalars.count - from
                if values.count == 3 {
                    guard case .integer(let length) = values[2], length >= 0 else { return .null }
                    count = min(count, Int(clamping: length))
                }
                return .string(String(String.UnicodeScalarView(scalars[from..<(from + count)])))
            case .locate:
                guard case .string(let text) = values[0], case .string(let needle) = values[1] else { return .null }
                let scalars = Array(text.unicodeScalars), wanted = Array(needle.unicodeScalars)
                var start = 0
                if values.count == 3 {
                    guard case .integer(let from) = values[2] else { return .null }
                    start = max(0, Int(clamping: from) - 1)
                }
                guard !wanted.isEmpty else { return .integer(Int64(min(start, scalars.count) + 1)) }
                var index = start
                while index + wanted.count <= scalars.count {
                    if scalars[index..<(index + wanted.count)].elementsEqual(wanted) { return .integer(Int64(index + 1)) }
                    index += 1
                }
                return .integer(0)
            case .urlDecode:
                guard case .string(let text) = values[0] else { return .null }
                return URLCoding.decode(text).map(ESQLValue.string) ?? .null
            case .urlEncode:
                guard case .string(let text) = values[0] else { return .null }
                return .string(URLCoding.encode(text))
            case .dateTrunc:
                guard case .span(let milliseconds, let months) = values[0], case .date(let time) = values[1] else { return .null }
                return Calendar.truncate(time, milliseconds: milliseconds, months: months).map(ESQLValue.date) ?? .null
            case .abs:
                switch values[0] {
                case .integer(let value): return value == .min ? .null : .integer(Swift.abs(value))
                case .double(let value): return .double(Swift.abs(value))
                default: return .null
                }
            default: return .null
            }
        }

        static func convert(_ value: ESQLValue, _ function: ScalarFunction) -> ESQLValue? {
            switch function {
            case .toString: return value.text.map(ESQLValue.string)
            case .toLower: return value.stringValue.map { .string($0.lowercased()) }
            case .toUpper: return value.stringValue.map { .string($0.uppercased()) }
            case .toInteger, .toLong:
                switch value {
                case .integer: return value
                case .double(let x): return x.isFinite && Swift.abs(x) < 9.2e18 ? .integer(Int64(x)) : nil
                case .string(let text): return Int64(text).map(ESQLValue.integer) ?? Double(text).flatMap { Swift.abs($0) < 9.2e18 ? .integer(Int64($0)) : nil }
                case .boolean(let flag): return .integer(flag ? 1 : 0)
                case .date(let time): return .integer(time)
                default: return nil
                }
            case .toDouble:
                switch value {
                case .string(let text): return Double(text).map(ESQLValue.double)
                case .boolean(let flag): return .double(flag ? 1 : 0)
                case .date(let time): return .double(Double(time))
                default: return value.asDouble.map(ESQLValue.double)
                }
            case .toBoolean:
                switch value {
                case .boolean: return value
                case .string(let text): return .boolean(text.lowercased() == "true")
                case .integer(let x): return .boolean(x != 0)
                case .double(let x): return .boolean(x != 0)
                default: return nil
                }
            case .toDatetime:
                switch value {
                case .date: return value
                case .string(let text): return Timestamp.milliseconds(fromRFC3339: text).map(ESQLValue.date)
                case .integer(let time): return .date(time)
                default: return nil
                }
            default: return nil
            }
        }
    }
}

/// The shape of a `LIKE` pattern whose only wildcards are `*` at its ends, and its literal part.
enum WildcardShape: Sendable {
    case equals, prefix, suffix, contains

    static func parse(_ pattern: String) -> (WildcardShape, [UInt8])? {
        var body = Substring(pattern)
        let leading = body.hasPrefix("*")
        if leading { body = body.dropFirst() }
        let trailing = body.hasSuffix("*") && !body.isEmpty
        if trailing { body = body.dropLast() }
        guard !body.contains(where: { $0 == "*" || $0 == "?" || $0 == "\\" }) else { return nil }
        let shape: WildcardShape = leading ? (trailing ? .contains : .suffix) : (trailing ? .prefix : .equals)
        return (shape, Array(body.utf8))
    }

    func matches(_ text: [UInt8], _ literal: [UInt8]) -> Bool {
        switch self {
        case .equals: return text == literal
        case .prefix: return text.starts(with: literal)
        case .suffix: return text.count >= literal.count && text[(text.count - literal.count)...].elementsEqual(literal)
        case .contains:
            guard !literal.isEmpty else { return true }
            guard text.count >= literal.count else { return false }
            let first = literal[0]
            var index = 0
            while index <= text.count - literal.count {
                if text[index] == first, text[index..<(index + literal.count)].elementsEqual(literal) { return true }
                index += 1
            }
            return false
        }
    }
}

extension ESQLValue {
    var asDouble: Double? {
        switch self {
        case .integer(let value): Double(value)
        case .double(let value): value
        default: nil
        }
    }
}

/// UTC calendar arithmetic for dates: month arithmetic and truncation.
enum Calendar {
    static let day: Int64 = 86_400_000

    static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }

    static func add(months: Int64, milliseconds: Int64, to time: Int64) -> Int64? {
        var result = time
        if months != 0 {
            guard Swift.abs(months) < 1_000_000 else { return nil }
            let dayIndex = floorDivide(time, day)
            let within = time - dayIndex * day
            let (year, month, dayOfMonth) = Timestamp.civilFromDays(dayIndex)
            let total = year * 12 + (month - 1) + months
            let (newYear, newMonth) = (floorDivide(total, 12), total - floorDivide(total, 12) * 12 + 1)
            let lastDay = Timestamp.daysFromCivil(year: newMonth == 12 ? newYear + 1 : newYear, month: newMonth == 12 ? 1 : newMonth + 1, day: 1)
                - Timestamp.daysFromCivil(year: newYear, month: newMonth, day: 1)
            result = Timestamp.daysFromCivil(year: newYear, month: newMonth, day: min(dayOfMonth, lastDay)) * day + within
        }
        let (sum, overflow) = result.addingReportingOverflow(milliseconds)
        return overflow ? nil : sum
    }

    /// DATE_TRUNC: to a multiple of a fixed span since the epoch (one week: to its Monday), or to the start
    /// of a multiple of months since year 0.
    static func truncate(_ time: Int64, milliseconds: Int64, months: Int64) -> Int64? {
        if months > 0 {
            let (year, month, _) = Timestamp.civilFromDays(floorDivide(time, day))
            let total = floorDivide(year * 12 + month - 1, months) * months
            return Timestamp.daysFromCivil(year: floorDivide(total, 12), month: total - floorDivide(total, 12) * 12 + 1, day: 1) * day
        }
        guard milliseconds > 0 else { return nil }
        if milliseconds == 7 * day {
            // 1970-01-05 was a Monday.
            return floorDivide(time - 4 * day, milliseconds) * milliseconds + 4 * day
        }
        return floorDivide(time, milliseconds) * milliseconds
    }
}

/// `URL_DECODE` and `URL_ENCODE` as Java's `URLDecoder`/`URLEncoder` with UTF-8: `+` is a space, `%XX` a
/// byte; an incomplete escape makes the whole value undecodable (null), malformed UTF-8 decodes to U+FFFD.
enum URLCoding {
    static func decode(_ text: String) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = Array(text.utf8)[...]
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        while let byte = iterator.popFirst() {
            switch byte {
            case UInt8(ascii: "+"): bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.popFirst().flatMap(hex), let low = iterator.popFirst().flatMap(hex) else { return nil }
                bytes.append(high << 4 | low)
            default: bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func encode(_ text: String) -> String {
        var output = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "*"), UInt8(ascii: "_"):
                output.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: " "): output += "+"
            default: output += String(format: "%%%02X", byte)
            }
        }
        return output
    }
}

/// DISSECT's pattern: `%{key}` fields between literal delimiters; `%{}` and `%{?name}` skip a field,
/// `%{+key}` appends to a key (joined by the append separator), a `->` suffix skips repeated delimiters.
/// Parsing scans for each delimiter once, left to right: linear in the text.
struct Dissect: Sendable {
    struct Field: Sendable {
        var key: String?
        var append: Bool
        var padded: Bool
    }
    let leading: String
    /// Each field and the delimiter that follows it ("" for the last).
    let parts: [(field: Field, delimiter: String)]
    let appendSeparator: String
    /// The output keys, in first-appearance order.
    let keys: [String]

    init(_ pattern: String, appendSeparator: String) throws(ESQLCompileError) {
        self.appendSeparator = appendSeparator
        var rest = Substring(pattern)
        var leading = ""
        var parts: [(Field, String)] = []
        if let open = rest.range(of: "%{") {
            leading = String(rest[..<open.lowerBound])
            rest = rest[open.lowerBound...]
        } else {
            throw ESQLCompileError(message: "DISSECT pattern \(ESQLExpression.quote(pattern)) has no %{key}")
        }
        var keys: [String] = []
        while rest.hasPrefix("%{") {
            guard let close = rest.firstIndex(of: "}") else { throw ESQLCompileError(message: "DISSECT pattern: unclosed %{") }
            var name = String(rest[rest.index(rest.startIndex, offsetBy: 2)..<close])
            rest = rest[rest.index(after: close)...]
            var field = Field(key: nil, append: false, padded: false)
            if name.hasSuffix("->") {
                field.padded = true
                name.removeLast(2)
            }
            if name.hasPrefix("+") {
                field.append = true
                name.removeFirst()
            } else if name.hasPrefix("?") {
                name = ""
            } else if name.hasPrefix("*") || name.hasPrefix("&") {
                throw ESQLCompileError(message: "DISSECT reference keys (%{*…}, %{&…}) are not supported")
            }
            if !name.isEmpty {
                field.key = name
                if !keys.contains(name) { keys.append(name) }
            }
            let next = rest.range(of: "%{")?.lowerBound ?? rest.endIndex
            let delimiter = String(rest[..<next])
            if delimiter.isEmpty && next != rest.endIndex {
                throw ESQLCompileError(message: "DISSECT pattern: two fields with no delimiter between them")
            }
            parts.append((field, delimiter))
            rest = rest[next...]
        }
        self.leading = leading
        self.parts = parts
        self.keys = keys
    }

    /// The keys' values in ``keys`` order, or nil when the text does not fit the pattern.
    func parse(_ text: String) -> [String]? {
        var rest = Substring(text)
        guard rest.hasPrefix(leading) else { return nil }
        rest = rest.dropFirst(leading.count)
        var values: [String: String] = [:]
        for (field, delimiter) in parts {
            let value: Substring
            if delimiter.isEmpty {
                value = rest
                rest = rest[rest.endIndex...]
            } else {
                guard let found = rest.range(of: delimiter) else { return nil }
                value = rest[..<found.lowerBound]
                rest = rest[found.upperBound...]
                if field.padded { while rest.hasPrefix(delimiter) { rest = rest.dropFirst(delimiter.count) } }
            }
            guard let key = field.key else { continue }
            if field.append, let existing = values[key] {
                values[key] = existing + appendSeparator + value
            } else {
                values[key] = String(value)
            }
        }
        return keys.map { values[$0] ?? "" }
    }
}
