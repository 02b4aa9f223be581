// The offline commands' input layer: record framing against a model over random inputs and read sizes,
// gzip against the gzip tool, the progress line's text.
import AuditEvents
import Foundation
import Kafka
import Pipeline
import TestSupport
import Testing

@testable import audit_sentinel

@Suite("streaming input")
struct StreamingInputTests {
    /// A record as the reader framed it, copied out of its buffer.
    enum Framed: Equatable, CustomStringConvertible {
        case record(String, line: Int)
        case oversized(line: Int)
        var description: String {
            switch self {
            case .record(let text, let line): "\(line): \(text)"
            case .oversized(let line): "\(line): oversized"
            }
        }
    }

    func temporaryFile(_ bytes: [UInt8], suffix: String = ".log") throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("input-\(UUID().uuidString)\(suffix)").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func frame(_ bytes: [UInt8], readSize: Int, maxRecordBytes: Int = 1 << 20) throws -> (records: [Framed], layout: RecordReader.Layout) {
        let path = try temporaryFile(bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let reader = RecordReader(source: try InputSource(path: path, follow: false), maxRecordBytes: maxRecordBytes, readSize: readSize)
        var records: [Framed] = []
        try reader.forEach(whileWaiting: {}) { framed in
            switch framed {
            case .record(let bytes, let line): records.append(.record(String(decoding: bytes, as: UTF8.self), line: line))
            case .oversized(let line, _): records.append(.oversized(line: line))
            }
        }
        return (records, reader.layout)
    }

    static let seed = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_FRAMING_SEED"].flatMap(UInt64.init) ?? 20_261_204

    /// A compact JSON object whose strings hold what could fool a framer: brackets, escaped quotes and
    /// backslashes, escaped newlines.
    static func compactObject(_ random: inout SyntheticAuditTraffic.Generator) -> String {
        let pieces = ["{", "}", "[", "]", "\\\"", "\\\\", "\\n", "a", "é", " ", ":"]
        var members: [String] = []
        for index in 0..<Int(random.next() % 4 + 1) {
            var text = ""
            for _ in 0..<Int(random.next() % 8) { text += pieces[Int(random.next() % UInt64(pieces.count))] }
            members.append("\"k\(index)\":\(random.next() % 3 == 0 ? "[{\"s\":\"\(text)\"},1]" : "\"\(text)\"")")
        }
        return "{" + members.joined(separator: ",") + "}"
    }

    /// NDJSON with blank lines, CRLF endings, surrounding blanks and malformed lines: every non-blank line
    /// is a record of its own, trimmed, with its line number, whatever the read size.
    @Test func ndjsonLinesAreRecordsWithTheirLineNumbers() throws {
        print("framing property: seed \(Self.seed) (AUDIT_SENTINEL_FRAMING_SEED reruns it)")
        var random = SyntheticAuditTraffic.Generator(seed: Self.seed)
        for iteration in 0..<60 {
            var lines: [String] = []
            var expected: [Framed] = []
            for number in 1...Int(random.next() % 40 + 1) {
                let text: String
                switch random.next() % 10 {
                case 0: text = ""
                case 1: text = "  \t"
                case 2: text = "{broken"
                case 3: text = "[1, {\"a\":"
                default: text = Self.compactObject(&random)
                }
                // (An indented line continuing an unclosed one is what pretty-printed JSON looks like.)
                let padded = (text.hasPrefix("{\"") && random.next() % 4 == 0 ? " " : "") + text + (random.next() % 3 == 0 ? "\r" : "")
                lines.append(padded)
                if !text.trimmingCharacters(in: .whitespaces).isEmpty { expected.append(.record(text, line: number)) }
            }
            let input = lines.joined(separator: "\n") + (random.next() % 2 == 0 ? "\n" : "")
            let readSize = [16, 23, 64, 100, 1000, 1 << 16][Int(random.next() % 6)]
            let framed = try frame(Array(input.utf8), readSize: readSize)
            #expect(framed.layout == .lines, "iteration \(iteration)")
            #expect(framed.records == expected, "iteration \(iteration), read size \(readSize)")
        }
    }

    /// Pretty-printed documents one after another (Foundation's printer, not ours), with text that is not
    /// JSON between them: each document is one record equal to what was printed, at its first line.
    @Test func prettyPrintedDocumentsAreRecordsOfTheirOwn() throws {
        var random = SyntheticAuditTraffic.Generator(seed: Self.seed &+ 1)
        for iteration in 0..<40 {
            var text = ""
            var expected: [Framed] = []
            func append(_ record: String, then separator: String) {
                expected.append(.record(record, line: text.count { $0 == "\n" } + 1))
                text += record + separator
            }
            for _ in 0..<Int(random.next() % 5 + 1) {
                if random.next() % 4 == 0 { append("not json here", then: "\n") }
                let compact = Self.compactObject(&random)
                let object = try JSONSerialization.jsonObject(with: Data(compact.utf8))
                let pretty = String(decoding: try JSONSerialization.data(withJSONObject: ["kind": "EventList", "items": [object, object]], options: [.prettyPrinted, .sortedKeys]), as: UTF8.self)
                append(pretty, then: random.next() % 2 == 0 ? "\n\n  " : "\n")
            }
            let readSize = [16, 37, 128, 1 << 16][Int(random.next() % 4)]
            let framed = try frame(Array(text.utf8), readSize: readSize)
            #expect(framed.layout == .documents, "iteration \(iteration)")
            #expect(framed.records == expected, "iteration \(iteration), read size \(readSize)")
        }
    }

    /// A document that never closes ends where a line starts with a bracket in the first column, so the
    /// documents after it are still read; a raw newline ends a string.
    @Test func anUnclosedDocumentDoesNotSwallowTheNextOne() throws {
        let input = "{\n  \"kind\": \"Event\",\n  \"user\": {\"username\": \"unterminated\n{\n  \"kind\": \"Event\"\n}\n"
        let framed = try frame(Array(input.utf8), readSize: 16)
        #expect(framed.records == [.record("{\n  \"kind\": \"Event\",\n  \"user\": {\"username\": \"unterminated", line: 1),
                                   .record("{\n  \"kind\": \"Event\"\n}", line: 4)])
    }

    /// A record over the limit is reported at its line and skipped without being buffered; the records
    /// around it are intact, in both layouts.
    @Test func oversizedRecordsAreSkippedInBoundedMemory() throws {
        let long = "{\"k\":\"" + String(repeating: "x", count: 20_000) + "\"}"
        let lines = try frame(Array("{\"a\":1}\n\(long)\n{\"b\":2}\n".utf8), readSize: 256, maxRecordBytes: 2048)
        #expect(lines.records == [.record("{\"a\":1}", line: 1), .oversized(line: 2), .record("{\"b\":2}", line: 3)])
        let pretty = "{\n  \"a\": 1\n}\n{\n  \"k\": \"" + String(repeating: "x", count: 20_000) + "\"\n}\n{\n  \"b\": 2\n}\n"
        let documents = try frame(Array(pretty.utf8), readSize: 256, maxRecordBytes: 2048)
        #expect(documents.records == [.record("{\n  \"a\": 1\n}", line: 1), .oversized(line: 4), .record("{\n  \"b\": 2\n}", line: 7)])
    }

    func gzip(_ text: String) throws -> [UInt8] {
        let plain = try temporaryFile(Array(text.utf8))
        defer { try? FileManager.default.removeItem(atPath: plain) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["gzip", "-c", plain]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Array(data)
    }

    func readAll(_ path: String) throws -> [UInt8] {
        let source = try InputSource(path: path, follow: false)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4093)
        while true {
            let count = try chunk.withUnsafeMutableBytes { buffer in try source.read(into: buffer, whileWaiting: {}) }
            if count == 0 { return bytes }
            bytes += chunk[..<count]
        }
    }

    /// Members concatenated as logrotate and cloud exports write them read as one stream, equal to the
    /// plain text; a damaged member and a cut file are errors naming the path and a byte offset.
    @Test func gzipMembersAreInflatedInProcess() throws {
        var random = SyntheticAuditTraffic.Generator(seed: Self.seed &+ 2)
        let parts = (0..<3).map { _ in (0..<3000).map { _ in Self.compactObject(&random) }.joined(separator: "\n") + "\n" }
        let members = try parts.map(gzip)
        let path = try temporaryFile(members.flatMap { $0 }, suffix: ".gz")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try readAll(path) == Array(parts.joined().utf8))

        var damaged = members[0] + members[1]
        damaged[members[0].count + members[1].count / 2] ^= 0x55
        let damagedPath = try temporaryFile(damaged)
        defer { try? FileManager.default.removeItem(atPath: damagedPath) }
        #expect { try readAll(damagedPath) } throws: { error in
            guard case .badGzip(let name, let offset, _) = error as? InputError else { return false }
            return name == damagedPath && offset > Int64(members[0].count) && offset <= Int64(damaged.count)
        }

        let cut = Array(members[0].prefix(members[0].count / 2))
        let cutPath = try temporaryFile(cut)
        defer { try? FileManager.default.removeItem(atPath: cutPath) }
        #expect { try readAll(cutPath) } throws: { error in
            guard case .truncatedGzip(_, let offset) = error as? InputError else { return false }
            return offset == Int64(cut.count)
        }
        let trailing = try temporaryFile(members[0] + Array("trailing text".utf8))
        defer { try? FileManager.default.removeItem(atPath: trailing) }
        #expect(throws: InputError.self) { try readAll(trailing) }
        #expect("\(InputError.badGzip(path: "a.gz", offset: 12, reason: "incorrect header check"))" == "a.gz: bad gzip data at byte 12: incorrect header check")
    }

    @Test func inputsAreCheckedBeforeAnythingIsRead() throws {
        #expect(throws: InputError.self) { try InputList(["/nonexistent/audit.log"]) }
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("empty-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        do {
            _ = try InputList([empty.path])
            Issue.record("an empty directory was accepted")
        } catch {
            #expect("\(error)" == "\(empty.path): directory holds no files to read")
        }
        // A directory stands for its files, sorted and recursively, hidden ones skipped.
        for name in ["b.log", "a.log", ".hidden", "sub/c.log.gz"] {
            let url = empty.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data("{}\n".utf8).write(to: url)
        }
        #expect(try InputList([empty.path, "-"]).paths == ["a.log", "b.log", "sub/c.log.gz"].map { empty.appendingPathComponent($0).path } + ["-"])
        #expect(try InputList([empty.path]).totalBytes == 9)
        #expect(try InputList(["-"]).totalBytes == nil)
    }

    @Test func progressLineSaysHowFarAndHowLong() {
        #expect(ProgressLine.text(bytesRead: 50_000_000, totalBytes: 200_000_000, events: 40_000, alerts: 3, elapsedSeconds: 2)
                == "50 of 200 MB (25 %), 20000 events/s, 3 alerts, 0:06 left")
        #expect(ProgressLine.text(bytesRead: 1_500_000, totalBytes: nil, events: 10, alerts: 0, elapsedSeconds: 1)
                == "1.5 MB, 10 events/s, 0 alerts")
        #expect(ProgressLine.text(bytesRead: 1_000_000, totalBytes: 4_000_000_000, events: 1, alerts: 0, elapsedSeconds: 1).hasSuffix(", 1:06:39 left"))
    }

    /// A replay batch piped in two parts before it runs (records read, piped, more read, piped again) puts
    /// each record in the driver's input log once, in order: the second part is sliced from where the first
    /// ended, not from the buffer's start.
    @Test func aBatchPipedTwiceLogsEachRecordOnce() throws {
        let rules = try loadRuleSet([packageRoot.appendingPathComponent("Config/rules").path])
        let driver = InMemoryDriver(configuration: PipelineConfiguration(applicationID: "batch", kafka: KafkaConfiguration(), inputTopics: ["in"], alertsTopic: "alerts"), rules: rules)
        var batch = ReplayBatch()
        let lines = ["{\"a\":1}", "{\"b\":22}", "{\"c\":333}", "{\"d\":4444}"]
        func add(_ line: String, _ number: Int) {
            var bytes = Array(line.utf8)
            bytes.withUnsafeMutableBytes { buffer in
                _ = batch.add(InputList.Record(bytes: UnsafeRawBufferPointer(buffer), path: "in.log", name: "in.log", line: number, bytesRead: 0), topicName: { _ in "in" })
            }
        }
        add(lines[0], 1)
        add(lines[1], 2)
        batch.pipe(into: driver)
        add(lines[2], 3)
        add(lines[3], 4)
        batch.pipe(into: driver)
        #expect(driver.records(of: "in").map { String(decoding: $0.record.value ?? [], as: UTF8.self) } == lines)
        #expect(batch.firstOffset == 0 && batch.lines == [1, 2, 3, 4])
    }
}
