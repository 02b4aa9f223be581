// ES|QL's run-time values and the partial aggregates of STATS: typed, ordered, mergeable, and encoded as JSON.
import AuditEvents

/// A value in an ES|QL row. A field with several values is one multi-valued value (ES|QL's single-value
/// functions and operators give null for it); a field with one value is that value.
public enum ESQLValue: Hashable, Sendable, CustomStringConvertible {
    case null
    case boolean(Bool)
    case integer(Int64)
    case double(Double)
    /// `keyword`, `text` and `ip` values.
    case string(String)
    /// A `date`: milliseconds since the epoch.
    case date(Int64)
    /// A time span literal (`9 minutes`): fixed milliseconds, or calendar months.
    case span(milliseconds: Int64, months: Int64)
    /// At least two values.
    indirect case multi([ESQLValue])

    /// One value from several: null for none, the value itself for one.
    public static func from(_ values: [ESQLValue]) -> ESQLValue {
        switch values.count {
        case 0: .null
        case 1: values[0]
        default: .multi(values)
        }
    }

    /// The values one by one (none for null).
    public var elements: [ESQLValue] {
        switch self {
        case .null: []
        case .multi(let values): values
        default: [self]
        }
    }

    public var isNull: Bool { if case .null = self { true } else { false } }
    var isMulti: Bool { if case .multi = self { true } else { false } }

    public var stringValue: String? { if case .string(let text) = self { text } else { nil } }

    /// ES|QL's ordering within a type (numbers across integer and double): nil when the two cannot be
    /// compared (different types, null, several values).
    public static func compare(_ left: ESQLValue, _ right: ESQLValue) -> Int? {
        func order<T: Comparable>(_ a: T, _ b: T) -> Int { a < b ? -1 : (a == b ? 0 : 1) }
        switch (left, right) {
        case (.integer(let a), .integer(let b)): return order(a, b)
        case (.integer(let a), .double(let b)): return order(Double(a), b)
        case (.double(let a), .integer(let b)): return order(a, Double(b))
        case (.double(let a), .double(let b)): return order(a, b)
        case (.date(let a), .date(let b)): return order(a, b)
        // A string compared with a date is read as a date, as ES|QL casts string literals.
        case (.date(let a), .string(let b)): return Timestamp.milliseconds(fromRFC3339: b).map { order(a, $0) }
        case (.string(let a), .date(let b)): return Timestamp.milliseconds(fromRFC3339: a).map { order($0, b) }
        case (.boolean(let a), .boolean(let b)): return order(a ? 1 : 0, b ? 1 : 0)
        case (.string(let a), .string(let b)):
            // Keywords order by their UTF-8 bytes, as Lucene's BytesRef.
            if a == b { return 0 }
            return a.utf8.lexicographicallyPrecedes(b.utf8) ? -1 : 1
        default: return nil
        }
    }

    /// A total order for sorting values of any types (VALUES, SORT): by type, then by ``compare(_:_:)``.
    static func sortsBefore(_ left: ESQLValue, _ right: ESQLValue) -> Bool {
        func rank(_ value: ESQLValue) -> Int {
            switch value {
            case .null: 6
            case .boolean: 0
            case .integer, .double: 1
            case .string: 2
            case .date: 3
            case .span: 4
            case .multi: 5
            }
        }
        let (a, b) = (rank(left), rank(right))
        if a != b { return a < b }
        if case .string(let x) = left, case .string(let y) = right { return x.utf8.lexicographicallyPrecedes(y.utf8) }
        return (compare(left, right) ?? 0) < 0
    }

    /// As ES|QL's `TO_STRING` writes it (dates as ISO 8601 with milliseconds).
    public var text: String? {
        switch self {
        case .null, .multi: nil
        case .boolean(let value): value ? "true" : "false"
        case .integer(let value): String(value)
        case .double(let value): Self.javaDouble(value)
        case .string(let text): text
        case .date(let milliseconds): Timestamp.rfc3339(milliseconds: milliseconds)
        case .span(let milliseconds, let months): months != 0 ? "P\(months)M" : "PT\(Double(milliseconds) / 1000)S"
        }
    }

    /// Java's `Double.toString` for the common cases: `1.0`, `0.5`, `1.0E10`.
    static func javaDouble(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
        let magnitude = abs(value)
        if magnitude != 0, magnitude < 1e-3 || magnitude >= 1e7 {
            let text = "\(value)"  // Swift writes 1e+10
            guard let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) else { return text }
            var mantissa = String(text[..<e])
            if !mantissa.contains(".") { mantissa += ".0" }
            let exponent = Int(text[text.index(after: e)...].replacingOccurrences(of: "+", with: "")) ?? 0
            return mantissa + "E\(exponent)"
        }
        let text = "\(value)"
        return text.contains(".") ? text : text + ".0"
    }

    public var description: String {
        switch self {
        case .null: "null"
        case .multi(let values): "[" + values.map(\.description).joined(separator: ", ") + "]"
        case .string(let text): "\"\(text)\""
        default: text ?? "null"
        }
    }

    /// The value in a JSON document (an alert, a result row): dates as ISO 8601, several values as an array.
    public var json: JSONValue {
        switch self {
        case .null: .null
        case .boolean(let value): .bool(value)
        case .integer(let value): .number(JSONNumber(value))
        case .double(let value): value.isFinite ? .number(JSONNumber(Self.javaDouble(value).replacingOccurrences(of: "E", with: "e"))) : .null
        case .string(let text): .string(text)
        case .date, .span: .string(text ?? "")
        case .multi(let values): .array(values.map(\.json))
        }
    }

    // MARK: State encoding

    /// A self-describing JSON form that reads back to the same value (changelog and repartition records):
    /// strings, integers, booleans and null as themselves; doubles, dates, spans and lists tagged.
    public var encoded: JSONValue {
        switch self {
        case .null: .null
        case .boolean(let value): .bool(value)
        case .integer(let value): .number(JSONNumber(value))
        case .string(let text): .string(text)
        case .double(let value): ["f": .string(String(value.bitPattern, radix: 16))]
        case .date(let milliseconds): ["d": .number(JSONNumber(milliseconds))]
        case .span(let milliseconds, let months): ["ms": .number(JSONNumber(milliseconds)), "mo": .number(JSONNumber(months))]
        case .multi(let values): .array(values.map(\.encoded))
        }
    }

    public init?(encoded: JSONValue) {
        switch encoded {
        case .null: self = .null
        case .bool(let value): self = .boolean(value)
        case .number(let number):
            guard let value = Int64(number.text) else { return nil }
            self = .integer(value)
        case .string(let text): self = .string(text)
        case .array(let items):
            var values: [ESQLValue] = []
            for item in items {
                guard let value = ESQLValue(encoded: item) else { return nil }
                values.append(value)
            }
            self = .multi(values)
        case .object(let object):
            if case .string(let bits)? = object["f"], let pattern = UInt64(bits, radix: 16) {
                self = .double(Double(bitPattern: pattern))
            } else if case .number(let number)? = object["d"], let milliseconds = Int64(number.text) {
                self = .date(milliseconds)
            } else if case .number(let ms)? = object["ms"], case .number(let mo)? = object["mo"], let a = Int64(ms.text), let b = Int64(mo.text) {
                self = .span(milliseconds: a, months: b)
            } else {
                return nil
            }
        }
    }
}

/// The aggregate functions STATS runs.
public enum ESQLAggregateFunction: String, Sendable, CaseIterable {
    case count = "COUNT", countDistinct = "COUNT_DISTINCT", values = "VALUES", min = "MIN", max = "MAX", sum = "SUM", avg = "AVG"
}

/// One aggregate's partial state over some rows (one pane of a window): mergeable, so that a window's value
/// is the merge of its panes'. Distinct-value sets hold at most ``distinctCapacity`` values; beyond it new
/// values are not kept (COUNT_DISTINCT and VALUES then report the first ones, and `overflowed` says so) —
/// Elasticsearch's COUNT_DISTINCT is approximate beyond its precision threshold (3 000) as well.
public enum ESQLPartialAggregate: Sendable, Equatable {
    case count(Int64)
    case distinct(Set<ESQLValue>, overflowed: Bool)
    case extreme(ESQLValue)
    /// SUM and AVG: an integer sum while every input is an integer (and it does not overflow), else a double.
    case sum(integer: Int64?, double: Double, count: Int64)

    public static let distinctCapacity = 10_000

    public static func empty(_ function: ESQLAggregateFunction) -> ESQLPartialAggregate {
        switch function {
        case .count: .count(0)
        case .countDistinct, .values: .distinct([], overflowed: false)
        case .min, .max: .extreme(.null)
        case .sum, .avg: .sum(integer: 0, double: 0, count: 0)
        }
    }

    /// Adds one row's value of the aggregate's argument (`star` for `COUNT(*)`: the row itself).
    public mutating func add(_ value: ESQLValue, star: Bool, function: ESQLAggregateFunction) {
        switch self {
        case .count(let count):
            // COUNT(*) counts rows; COUNT(x) counts x's values (several for a multi-valued x).
            self = .count(count + (star ? 1 : Int64(value.elements.count)))
        case .distinct(var set, var overflowed):
            for element in value.elements where !set.contains(element) {
                if set.count >= Self.distinctCapacity {
                    overflowed = true
                    break
                }
                set.insert(element)
            }
            self = .distinct(set, overflowed: overflowed)
        case .extreme(var best):
            for element in value.elements {
                if best.isNull {
                    best = element
                } else if let order = ESQLValue.compare(element, best), function == .min ? order < 0 : order > 0 {
                    best = element
                }
            }
            self = .extreme(best)
        case .sum(var integer, var double, var count):
            for element in value.elements {
                switch element {
                case .integer(let addend):
                    if let sum = integer {
                        let (result, overflow) = sum.addingReportingOverflow(addend)
                        integer = overflow ? nil : result
                    }
                    double += Double(addend)
                case .double(let addend):
                    integer = nil
                    double += addend
                default: continue
                }
                count += 1
            }
            self = .sum(integer: integer, double: double, count: count)
        }
    }

    public mutating func merge(_ other: ESQLPartialAggregate, function: ESQLAggregateFunction) {
        switch (self, other) {
        case (.count(let a), .count(let b)): self = .count(a + b)
        case (.distinct(var a, let overflowA), .distinct(let b, let overflowB)):
            var overflowed = overflowA || overflowB
            for value in b where !a.contains(value) {
                if a.count >= Self.distinctCapacity {
                    overflowed = true
                    break
                }
                a.insert(value)
            }
            self = .distinct(a, overflowed: overflowed)
        case (.extreme, .extreme(let value)): add(value, star: false, function: function)
        case (.sum(let ia, let da, let ca), .sum(let ib, let db, let cb)):
            var integer: Int64?
            if let ia, let ib {
                let (result, overflow) = ia.addingReportingOverflow(ib)
                integer = overflow ? nil : result
            }
            self = .sum(integer: integer, double: da + db, count: ca + cb)
        default: break
        }
    }

    /// The aggregate's value: COUNT and COUNT_DISTINCT an integer, VALUES its values sorted, MIN/MAX the
    /// extreme (null over no values), SUM an integer or a double (null over no values), AVG a double.
    public func result(_ function: ESQLAggregateFunction) -> ESQLValue {
        switch self {
        case .count(let count): return .integer(count)
        case .distinct(let set, _):
            if function == .countDistinct { return .integer(Int64(set.count)) }
            return .from(set.sorted(by: ESQLValue.sortsBefore))
        case .extreme(let value): return value
        case .sum(let integer, let double, let count):
            guard count > 0 else { return .null }
            if function == .avg { return .double(double / Double(count)) }
            return integer.map(ESQLValue.integer) ?? .double(double)
        }
    }

    // MARK: State encoding

    public var encoded: JSONValue {
        switch self {
        case .count(let count): ["n": .number(JSONNumber(count))]
        case .distinct(let set, let overflowed):
            ["v": .array(set.sorted(by: ESQLValue.sortsBefore).map(\.encoded)), "o": .bool(overflowed)]
        case .extreme(let value): ["x": value.encoded]
        case .sum(let integer, let double, let count):
            ["i": integer.map { .number(JSONNumber($0)) } ?? .null, "f": .string(String(double.bitPattern, radix: 16)), "n": .number(JSONNumber(count))]
        }
    }

    public init?(encoded: JSONValue) {
        guard case .object(let object) = encoded else { return nil }
        if case .array(let items)? = object["v"] {
            var set = Set<ESQLValue>()
            for item in items {
                guard let value = ESQLValue(encoded: item) else { return nil }
                set.insert(value)
            }
            self = .distinct(set, overflowed: object["o"] == .bool(true))
        } else if let extreme = object["x"] {
            guard let value = ESQLValue(encoded: extreme) else { return nil }
            self = .extreme(value)
        } else if case .string(let bits)? = object["f"], let pattern = UInt64(bits, radix: 16), case .number(let count)? = object["n"],
            let n = Int64(count.text)
        {
            var integer: Int64?
            if case .number(let value)? = object["i"] { integer = Int64(value.text) }
            self = .sum(integer: integer, double: Double(bitPattern: pattern), count: n)
        } else if case .number(let count)? = object["n"], let n = Int64(count.text) {
            self = .count(n)
        } else {
            return nil
        }
    }
}
