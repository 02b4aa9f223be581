/// RFC 3339 timestamps as audit logs write them, to and from milliseconds since the epoch, without Foundation
/// formatters on the hot path.
public enum Timestamp {
    /// Parses `2025-03-04T06:22:18.819232Z` or `…+02:00` (any fraction length; truncated to milliseconds).
    public static func milliseconds(fromRFC3339 text: some Collection<UInt8>) -> Int64? {
        if let parsed = text.withContiguousStorageIfAvailable({ milliseconds(fromRFC3339: UnsafeRawBufferPointer($0)) }) { return parsed }
        return Array(text).withUnsafeBytes { milliseconds(fromRFC3339: $0) }
    }

    public static func milliseconds(fromRFC3339 bytes: UnsafeRawBufferPointer) -> Int64? {
        guard bytes.count >= 20 else { return nil }
        func number(_ from: Int, _ length: Int) -> Int64? {
            var value: Int64 = 0
            for index in from..<(from + length) {
                guard isDigit(bytes[index]) else { return nil }
                value = value * 10 + Int64(bytes[index] - UInt8(ascii: "0"))
            }
            return value
        }
        guard let year = number(0, 4), bytes[4] == UInt8(ascii: "-"), let month = number(5, 2), bytes[7] == UInt8(ascii: "-"),
            let day = number(8, 2), bytes[10] | 0x20 == UInt8(ascii: "t") || bytes[10] == UInt8(ascii: " "),
            let hour = number(11, 2), bytes[13] == UInt8(ascii: ":"), let minute = number(14, 2),
            bytes[16] == UInt8(ascii: ":"), let second = number(17, 2),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var index = 19
        var millis: Int64 = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            var digits = 0
            while index < bytes.count, isDigit(bytes[index]) {
                if digits < 3 { millis = millis * 10 + Int64(bytes[index] - UInt8(ascii: "0")) }
                digits += 1
                index += 1
            }
            guard digits > 0 else { return nil }
            if digits < 3 { for _ in digits..<3 { millis *= 10 } }
        }
        guard index < bytes.count else { return nil }
        var offsetMinutes: Int64 = 0
        switch bytes[index] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            index += 1
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard index + 6 == bytes.count, let hours = number(index + 1, 2), bytes[index + 3] == UInt8(ascii: ":"),
                let minutes = number(index + 4, 2)
            else { return nil }
            offsetMinutes = (hours * 60 + minutes) * (bytes[index] == UInt8(ascii: "-") ? -1 : 1)
            index += 6
        default: return nil
        }
        guard index == bytes.count else { return nil }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetMinutes * 60
        return seconds * 1000 + millis
    }

    public static func milliseconds(fromRFC3339 text: String) -> Int64? {
        var text = text
        return text.withUTF8 { milliseconds(fromRFC3339: UnsafeRawBufferPointer($0)) }
    }

    /// Appends ``rfc3339(milliseconds:)``'s text as bytes, without making a string (years 0–9999).
    public static func appendRFC3339(milliseconds: Int64, to output: inout some ByteSink) {
        let (totalSeconds, millis) = floorDivision(milliseconds, 1000)
        let secondsOfDay = ((totalSeconds % 86_400) + 86_400) % 86_400
        let (year, month, day) = civilFromDays((totalSeconds - secondsOfDay) / 86_400)
        guard (0...9999).contains(year) else {
            for byte in widerRFC3339(milliseconds: milliseconds).utf8 { output.append(byte) }
            return
        }
        // The 24 bytes formed in place, each digit a division by a constant, and handed over at once: a
        // match's documents carry several of these.
        var text: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &text) { bytes in
            @inline(__always) func two(_ value: Int64, at offset: Int) {
                bytes[offset] = UInt8(truncatingIfNeeded: value / 10) &+ UInt8(ascii: "0")
                bytes[offset &+ 1] = UInt8(truncatingIfNeeded: value % 10) &+ UInt8(ascii: "0")
            }
            two(year / 100, at: 0)
            two(year % 100, at: 2)
            bytes[4] = UInt8(ascii: "-")
            two(month, at: 5)
            bytes[7] = UInt8(ascii: "-")
            two(day, at: 8)
            bytes[10] = UInt8(ascii: "T")
            two(secondsOfDay / 3600, at: 11)
            bytes[13] = UInt8(ascii: ":")
            two(secondsOfDay / 60 % 60, at: 14)
            bytes[16] = UInt8(ascii: ":")
            two(secondsOfDay % 60, at: 17)
            bytes[19] = UInt8(ascii: ".")
            bytes[20] = UInt8(truncatingIfNeeded: millis / 100) &+ UInt8(ascii: "0")
            two(millis % 100, at: 21)
            bytes[23] = UInt8(ascii: "Z")
            output.append(contentsOf: UnsafeRawBufferPointer(bytes))
        }
    }

    /// `2025-03-04T06:22:18.819Z`: UTC, millisecond precision (Elasticsearch's `date` rendering).
    public static func rfc3339(milliseconds: Int64) -> String {
        // Alerts carry several of these: written as bytes, not built from interpolated pieces.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(24)
        appendRFC3339(milliseconds: milliseconds, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// ``rfc3339(milliseconds:)`` for years outside 0–9999 (padded to four digits, signed as Swift prints).
    private static func widerRFC3339(milliseconds: Int64) -> String {
        let (totalSeconds, millis) = floorDivision(milliseconds, 1000)
        let secondsOfDay = ((totalSeconds % 86_400) + 86_400) % 86_400
        let (year, month, day) = civilFromDays((totalSeconds - secondsOfDay) / 86_400)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondsOfDay / 3600, 2)):"
            + "\(pad(secondsOfDay / 60 % 60, 2)):\(pad(secondsOfDay % 60, 2)).\(pad(millis, 3))Z"
    }

    /// Quotient rounded down and a remainder that is never negative, for any value (no overflow at the edges).
    private static func floorDivision(_ value: Int64, _ divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        let (quotient, remainder) = value.quotientAndRemainder(dividingBy: divisor)
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }

    // Howard Hinnant's days-from-civil algorithms (proleptic Gregorian calendar).
    public static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    public static func civilFromDays(_ days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

/// Where bytes are appended, one at a time or a run at once (an array, or the document writers' buffer).
///
/// No default for the run: as an extension on the protocol it would also be `[UInt8]`'s most specific
/// `append(contentsOf:)` for raw buffers everywhere, a byte at a time (a replay took three times the
/// instructions), in place of the array's own copy.
public protocol ByteSink {
    mutating func append(_ byte: UInt8)
    mutating func append(contentsOf bytes: UnsafeRawBufferPointer)
}

extension Array: ByteSink where Element == UInt8 {}
