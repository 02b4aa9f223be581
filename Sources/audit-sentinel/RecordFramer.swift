// Audit records out of a stream of bytes, in bounded memory: one per line (NDJSON), or whole JSON documents
// spread over lines (an EventList or an event pretty-printed by kubectl or jq).
import Foundation

/// What the reader hands its caller: a record (valid only during the call) with the line it starts on,
/// or a record that was longer than the limit, skipped without being buffered.
enum FramedInput {
    case record(UnsafeRawBufferPointer, line: Int)
    case oversized(line: Int, bytes: Int)
}

/// Reads one input and frames its records.
///
/// The layout is decided on the first lines read: NDJSON (a malformed line is then a record of its own),
/// or documents, each a top-level value framed by its brackets, when the input starts as pretty-printed
/// JSON does. A document that never closes cannot swallow the ones after it: a line
/// starting with `{` or `[` in the first column ends it (pretty-printers indent what is nested), and a raw
/// newline ends any string (JSON has none). Memory is the read buffer plus the longest record.
final class RecordReader {
    enum Layout { case undecided, lines, documents }

    let source: InputSource
    let maxRecordBytes: Int
    private(set) var layout: Layout = .undecided
    private var buffer: UnsafeMutableRawBufferPointer
    private let readSize: Int
    /// The unconsumed bytes are `start..<end`; `scanned` is where framing resumes.
    private var start = 0
    private var end = 0
    private var scanned = 0
    /// The line `scanned` is on (1-based).
    private var line = 1
    // Documents layout: the value being framed.
    private var inValue = false
    private var inGarbage = false
    private var depth = 0
    private var inString = false
    private var escaped = false
    private var recordLine = 0
    // A record over the limit, being skipped.
    private var skipping = false
    private var skippedBytes = 0

    init(source: InputSource, maxRecordBytes: Int, readSize: Int = 1 << 20) {
        self.source = source
        self.maxRecordBytes = maxRecordBytes
        self.readSize = readSize
        buffer = .allocate(byteCount: readSize * 2, alignment: 16)
    }

    deinit { buffer.deallocate() }

    /// Every record of the input, in order; returns at the end of the input (or on a stop signal).
    func forEach(whileWaiting: () -> Void, _ body: (FramedInput) -> Void) throws(InputError) {
        while true {
            if StopSignals.requested {
                frame(atEnd: true, body)
                return
            }
            makeRoom()
            let count = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[end...]), whileWaiting: whileWaiting)
            if count == 0 {
                frame(atEnd: true, body)
                return
            }
            end += count
            frame(atEnd: false, body)
        }
    }

    /// Moves the unconsumed bytes to the front; grows the buffer for a long record, or starts skipping
    /// one that reached the limit.
    private func makeRoom() {
        if start > 0 {
            let kept = end - start
            if kept > 0 { memmove(buffer.baseAddress!, buffer.baseAddress! + start, kept) }
            scanned -= start
            end = kept
            start = 0
        }
        guard buffer.count - end < readSize / 4 else { return }
        if end >= maxRecordBytes {
            // Drop what is framed of the record so far and keep only its count.
            if !skipping { skipping = true; skippedBytes = 0; if layout == .lines { recordLine = line } }
            skippedBytes += scanned
            let kept = end - scanned
            if kept > 0 { memmove(buffer.baseAddress!, buffer.baseAddress! + scanned, kept) }
            end = kept
            scanned = 0
            return
        }
        let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: min(buffer.count * 2, maxRecordBytes + readSize * 2), alignment: 16)
        grown.baseAddress!.copyMemory(from: buffer.baseAddress!, byteCount: end)
        buffer.deallocate()
        buffer = grown
    }

    private func frame(atEnd: Bool, _ body: (FramedInput) -> Void) {
        if layout == .undecided {
            guard let decided = decideLayout(atEnd: atEnd) else { return }
            layout = decided
        }
        switch layout {
        case .lines: frameLines(atEnd: atEnd, body)
        case .documents, .undecided: frameDocuments(atEnd: atEnd, body)
        }
    }

    /// Documents when a line opening a value it does not close is followed by an indented line that
    /// continues it (a member name, a closing bracket, a nested opening), as every pretty-printer writes;
    /// NDJSON as soon as a line holds a whole value (so a stream's first event decides). Nil while the
    /// lines read so far cannot tell and more may come.
    private func decideLayout(atEnd: Bool) -> Layout? {
        var position = start
        var lines = 0
        var previousOpens = false
        while position < end, lines < 1000 {
            let newline = memchr(buffer.baseAddress! + position, 0x0A, end - position)
                .map { $0 - UnsafeMutableRawPointer(buffer.baseAddress!) }
            guard let lineEnd = newline ?? (atEnd ? end : nil) else { break }
            let trimmed = trim(position..<lineEnd)
            let indented = trimmed.lowerBound > position
            position = lineEnd + 1
            guard !trimmed.isEmpty else { continue }
            lines += 1
            let first = buffer[trimmed.lowerBound]
            let opens = opensWithoutClosing(trimmed)
            if previousOpens, indented, first == UInt8(ascii: "\"") || first == UInt8(ascii: "}") || first == UInt8(ascii: "]") || opens {
                return .documents
            }
            if (first == UInt8(ascii: "{") || first == UInt8(ascii: "[")) && !opens { return .lines }
            previousOpens = opens
        }
        return atEnd || lines >= 1000 || buffer.count - end < readSize / 4 ? .lines : nil
    }

    /// Whether a line starts a JSON object or array that it leaves open (strings taken into account).
    private func opensWithoutClosing(_ range: Range<Int>) -> Bool {
        guard buffer[range.lowerBound] == UInt8(ascii: "{") || buffer[range.lowerBound] == UInt8(ascii: "[") else { return false }
        var depth = 0
        var inString = false
        var escaped = false
        for index in range {
            let byte = buffer[index]
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 { return false }
            default: break
            }
        }
        return depth > 0
    }

    private func frameLines(atEnd: Bool, _ body: (FramedInput) -> Void) {
        let base = UnsafeMutableRawPointer(buffer.baseAddress!)
        while scanned < end {
            guard let found = memchr(base + scanned, 0x0A, end - scanned) else { scanned = end; break }
            let newline = found - base
            emit(start..<newline, line: line, body)
            line += 1
            start = newline + 1
            scanned = start
        }
        if atEnd, start < end || skipping {
            emit(start..<end, line: line, body)
            start = end
            scanned = end
        }
    }

    private func frameDocuments(atEnd: Bool, _ body: (FramedInput) -> Void) {
        var i = scanned
        scan: while i < end {
            let byte = buffer[i]
            if !inValue && !inGarbage {
                switch byte {
                case 0x0A:
                    line += 1
                case 0x20, 0x09, 0x0D:
                    break
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    inValue = true
                    depth = 1
                    inString = false
                    escaped = false
                    recordLine = line
                    start = i
                default:
                    inGarbage = true
                    recordLine = line
                    start = i
                }
                i += 1
                if !inValue && !inGarbage { start = i }
                continue
            }
            if inGarbage {
                // Text that is not JSON runs to the end of its line: one record, which the decoder rejects.
                if byte == 0x0A {
                    emit(start..<i, line: recordLine, body)
                    inGarbage = false
                    line += 1
                    start = i + 1
                }
                i += 1
                continue
            }
            if inString && byte != 0x0A {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                i += 1
                continue
            }
            switch byte {
            case UInt8(ascii: "\""):
                inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 {
                    emit(start..<(i + 1), line: recordLine, body)
                    inValue = false
                    start = i + 1
                }
            case 0x0A:
                // A raw newline ends any string; a bracket in the next line's first column ends the value.
                inString = false
                escaped = false
                guard i + 1 < end else {
                    if atEnd { break }
                    break scan  // look again when the next byte is here
                }
                if buffer[i + 1] == UInt8(ascii: "{") || buffer[i + 1] == UInt8(ascii: "[") {
                    emit(start..<i, line: recordLine, body)
                    inValue = false
                    start = i + 1
                }
                line += 1
            default:
                break
            }
            i += 1
        }
        scanned = i
        if atEnd, (inValue || inGarbage) {
            emit(start..<end, line: recordLine, body)
            inValue = false
            inGarbage = false
            start = end
            scanned = end
        }
    }

    private func trim(_ range: Range<Int>) -> Range<Int> {
        func blank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A }
        var lower = range.lowerBound
        var upper = range.upperBound
        while lower < upper, blank(buffer[lower]) { lower += 1 }
        while upper > lower, blank(buffer[upper - 1]) { upper -= 1 }
        return lower..<upper
    }

    private func emit(_ range: Range<Int>, line: Int, _ body: (FramedInput) -> Void) {
        if skipping {
            skipping = false
            body(.oversized(line: recordLine, bytes: skippedBytes + range.count))
            return
        }
        let trimmed = trim(range)
        guard !trimmed.isEmpty else { return }
        body(.record(UnsafeRawBufferPointer(rebasing: buffer[trimmed]), line: line))
    }
}
